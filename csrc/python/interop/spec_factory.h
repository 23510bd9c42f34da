// Building DTensorSpecs for new tensor metadata from template specs, as the
// shape-generic decisions do for every new shape (miss/decision_reuse.h).
//
// Requires the GIL; throws py::error_already_set on a Python error.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <torch/csrc/utils/pybind.h>

namespace torchshard {

// A tuple of Python ints.
py::tuple int_tuple(c10::IntArrayRef values);

// TensorMeta(shape=torch.Size, stride=tuple, dtype), as stock builds it.
py::object tensor_meta(c10::IntArrayRef sizes, c10::IntArrayRef strides, c10::ScalarType dtype);

// The template's mesh, placements and shard order, with `meta` as its
// tensor_meta: what DTensorSpec(mesh, placements, meta, shard_order,
// use_strided_shard_as_shard_order) makes, at a fifth of the cost.
py::object spec_like(py::handle spec_template, py::object meta);

} // namespace torchshard
