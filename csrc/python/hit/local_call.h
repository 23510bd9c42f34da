// Runs an op's local (per-shard) computation through the libtorch
// dispatcher: the call's arguments, in schema order, with every DTensor
// replaced by its local tensor and omitted arguments filled with their
// schema defaults, passed to OperatorHandle::callBoxed.
//
// Requires the GIL (reads Python arguments).
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <ATen/core/stack.h>
#include <Python.h>

namespace torchshard {

// Leaves the op's returns on `stack`. A non-null positional_overrides[i]
// replaces the caller's positional argument i (see redistribution.h).
//
// When the conversion or the op raises (counted as kLocalComputeFailed):
//  - an op that writes its arguments fails with the local op's own error set:
//    an input may already be partly written, so stock must not run the call
//    again, and the error is what stock raises from the same kernel;
//  - any other op declines with the error cleared: nothing was modified, and
//    stock runs the call again and raises its own exception, type and message.
Status run_local_op(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                    const std::vector<py::object>& positional_overrides, torch::jit::Stack& stack);

// What a rank outside the op's mesh returns instead of computing (stock's
// default_tensor): per output spec, a 0-d zero or an empty 1-d tensor of the
// spec's dtype. Leaves one IValue per schema return on `stack`.
void stand_in_results(const StandIn& stand_in, const std::vector<ReturnKind>& returns,
                      torch::jit::Stack& stack);

} // namespace torchshard
