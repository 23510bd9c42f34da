// Runs an op's local (per-shard) computation through the libtorch
// dispatcher: the call's arguments, in schema order, with every DTensor
// replaced by its local tensor and omitted arguments filled with their
// schema defaults, passed to OperatorHandle::callBoxed.
//
// Requires the GIL (reads Python arguments). Throws on conversion or op errors.
#pragma once

#include "csrc/python/cache_entry.h"
#include "csrc/python/op_descriptor.h"

#include <ATen/core/stack.h>
#include <Python.h>

namespace torchshard {

// Leaves the op's returns on `stack`. A non-null positional_overrides[i]
// replaces the caller's positional argument i (see local_redistribution.h).
void run_local_op(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                  const std::vector<py::object>& positional_overrides, torch::jit::Stack& stack);

// What a rank outside the op's mesh returns instead of computing (stock's
// default_tensor): per output spec, a 0-d zero or an empty 1-d tensor of the
// spec's dtype. Leaves one IValue per schema return on `stack`.
void absent_local_results(const CacheEntry& entry, const std::vector<ReturnKind>& returns,
                          torch::jit::Stack& stack);

} // namespace torchshard
