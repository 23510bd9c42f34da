// One call of a DTensor op through torchshard, top to bottom: op-level
// decline -> build key -> look up (propagate on a miss) -> cached decline ->
// local step -> result step. Every stage answers with an Outcome
// (csrc/core/outcome.h); the first failure ends the call, as NotImplemented
// (stock DTensor serves it, unchanged) or as the Python error it carries. On
// a hit nothing on this path calls into Python code.
//
// Requires the GIL.
#pragma once

#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

namespace torchshard {

// The call's result (new reference), NotImplemented, or nullptr with a Python
// error set; the call's CallOutcome is recorded in the thread's counters (and
// the op's explain() tally when one is open).
PyObject* dispatch_and_record(const OpDescriptor& op, PyObject* func, PyObject* args,
                              PyObject* kwargs);

} // namespace torchshard
