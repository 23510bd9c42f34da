// The cache-miss path: asks stock DTensor's own sharding propagation (the
// Python OpDispatcher, exactly as the built-in path does) what to do with a
// call, and turns the answer into a CacheEntry.
//
// Requires the GIL; calls Python.
#pragma once

#include "csrc/core/op_key.h"
#include "csrc/python/cache_entry.h"
#include "csrc/python/op_descriptor.h"

#include <Python.h>

namespace torchshard {

struct MissOutcome {
  // The entry to cache and act on. Null with no error pending means stock
  // decomposed the op (inference mode) instead of propagating: the call goes
  // to stock, uncached.
  CacheEntryPtr entry;
  // Stock's propagation raised: the error is left set and must propagate.
  // It is the exception stock raises for this call, from the same code, so
  // raising it here (instead of declining and letting stock propagate again)
  // gives the same type and message while running propagation, and logging
  // its failure, once.
  bool python_error_pending = false;
};

MissOutcome propagate_on_miss(const OpDescriptor& op, const OpKey& key, PyObject* func,
                              PyObject* args, PyObject* kwargs);

} // namespace torchshard
