// Runs an op's local (per-shard) computation through the libtorch
// dispatcher: the call's arguments, in schema order, with every DTensor
// replaced by its local tensor and omitted arguments filled with their
// schema defaults, passed to OperatorHandle::callBoxed.
//
// Requires the GIL (reads Python arguments). Throws on conversion or op errors.
#pragma once

#include "csrc/python/op_descriptor.h"

#include <ATen/core/stack.h>
#include <Python.h>

namespace torchshard {

// Leaves the op's returns on `stack`.
void run_local_op(const OpDescriptor& op, PyObject* args, PyObject* kwargs, torch::jit::Stack& stack);

} // namespace torchshard
