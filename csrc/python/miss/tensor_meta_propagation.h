// The global metadata (shape, stride, dtype) of an op's outputs, computed
// natively: the op runs through the dispatcher on meta tensors of its
// DTensor arguments' global sizes and strides, which is what stock's
// _propagate_tensor_meta_non_cached does under FakeTensorMode (fake tensors
// of the same sizes and strides run the same meta kernels). Where the two
// could differ, a reused decision's first check against stock catches it
// (shape_generic_miss.h).
//
// Pointwise ops (OpDescriptor::is_elementwise) skip the op itself: many have
// Python meta kernels (torch/_refs) that cost 50-200 us. Their output has the
// broadcast shape and the strides TensorIterator computes for the inputs (the
// refs compute the same: compute_elementwise_output_strides), and the dtype
// the caller passes (a decision's; its key fixes every input's dtype and
// every number's kind, so type promotion answers alike).
//
// Requires the GIL (reads Python arguments).
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/op_descriptor.h"

#include <c10/core/ScalarType.h>
#include <Python.h>

#include <optional>
#include <vector>

namespace torchshard {

struct OutputMeta {
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  c10::ScalarType dtype;
};

// Per schema return: one entry for a Tensor, one per element for a Tensor[]
// (nullopt for an undefined tensor).
using ReturnMetas = std::vector<std::vector<std::optional<OutputMeta>>>;

// nullopt when the op does not run on meta tensors (no meta kernel, a
// data-dependent op): the call then propagates in Python, as stock does. A
// Python error only for an interrupt raised while converting arguments.
Outcome<std::optional<ReturnMetas>> propagate_tensor_meta(const OpDescriptor& op, PyObject* args,
                                                          PyObject* kwargs);

// The one output of an elementwise op, of dtype `dtype`; nullopt when the
// inputs do not broadcast (stock then raises its own error) or an argument
// is not a DTensor or a Python number.
std::optional<ReturnMetas> elementwise_tensor_meta(const OpDescriptor& op, PyObject* args,
                                                   PyObject* kwargs, c10::ScalarType dtype);

} // namespace torchshard
