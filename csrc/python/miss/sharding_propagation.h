// The cache miss: asks stock DTensor's own sharding propagation (the Python
// OpDispatcher, exactly as the built-in path does) what to do with a call,
// and turns the answer into a CacheEntry: a cached decline, or a NativePlan
// made by the planners beside this file.
//
// Requires the GIL; calls Python.
#pragma once

#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

namespace torchshard {

// The entry to cache and act on, or:
//  - decline(kDecomposed): stock decomposed the op (inference mode) instead
//    of propagating; the call goes to stock, uncached;
//  - python_error(kPropagationFailed): stock's propagation raised. The error
//    is the one stock raises for this call, from the same code, so raising it
//    here (instead of declining and letting stock propagate again) gives the
//    same type and message while running propagation, and logging its
//    failure, once.
Outcome<CacheEntryPtr> propagate_on_miss(const OpDescriptor& op, const OpKey& key, PyObject* func,
                                         PyObject* args, PyObject* kwargs);

} // namespace torchshard
