// Results of in-place and out= calls, returned the way stock DTensor's
// _dispatch_fast_path_python_tail (torch/distributed/tensor/_dispatch.py)
// returns them: the caller's own DTensor objects, never new wrappers.
//
//  - in-place: None when the op has no output spec; otherwise args[0]. When
//    the placements change (squeeze_ dropping a dim before a sharded one),
//    args[0] takes the new spec and, as in stock, return_and_correct_aliasing
//    brings the wrapper's own sizes in line (inplace_view ops).
//  - out=: each out= DTensor takes its output spec; one is returned as
//    itself, several as a tuple.
//
// The local op has already written into the local tensors. Requires the GIL.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

namespace torchshard {

Outcome<py::object> inplace_result(const ReturnInplace& plan, PyObject* func, PyObject* args,
                                   PyObject* kwargs);

Outcome<py::object> out_arguments_result(const OpDescriptor& op, const ReturnOutArguments& plan,
                                         PyObject* args, PyObject* kwargs);

} // namespace torchshard
