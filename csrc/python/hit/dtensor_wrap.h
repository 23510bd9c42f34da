// Wraps an op's local results as DTensors the way stock DTensor's
// OpDispatcher.wrap does (torch/distributed/tensor/_dispatch.py): each
// Tensor becomes DTensor(local, spec, requires_grad=local.requires_grad)
// built by the same C++ constructor, a Tensor[] becomes a list of them, one
// return is returned as itself and several as a tuple. Output specs are the
// cached objects of the plan's WrapResults step.
//
// A view op's Tensor result also takes the storage of the DTensor it aliases,
// as the built-in path does when the rank participates, so the wrappers
// alias each other the way their local tensors do. (Tensor[] results of views
// such as split keep storages of their own there, and here.)
//
// Requires the GIL.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <ATen/core/stack.h>
#include <Python.h>

namespace torchshard {

// The wrapped result. Declines (kUnsupportedOutput) when the local results
// do not match the cached specs (the call then goes to stock).
Outcome<py::object> wrap_local_results(const OpDescriptor& op, const WrapResults& plan,
                                       PyObject* args, PyObject* kwargs, torch::jit::Stack& stack);

} // namespace torchshard
