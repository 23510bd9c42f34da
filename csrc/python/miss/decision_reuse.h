// Making a shape-generic decision from stock's answer, and an exact entry
// from a decision (cache/decision_store.h).
//
// Requires the GIL.
#pragma once

#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/decision_store.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

#include <optional>

namespace torchshard {

// The decision stock's entry for this call makes for its decision key.
// Reusable only when no choice in the plan depends on sizes: the op runs
// locally on the arguments as called, or with changes whose choice reads no
// size (argument_change_reuse.h: a view's local shape, rebuilt from each
// call's sizes; redistributions of replicated arguments; stock selects any
// other redistribution by a cost that reads sizes); and its results are
// wrapped or returned in place. A failure is a Python error (an interrupt
// while reading the arguments), which the call raises.
Outcome<DecisionPtr> decision_from_entry(const CacheEntry& entry, const OpDescriptor& op, PyObject* args);

// The exact entry a reusable decision makes for this call: the output specs
// of the decision with this call's tensor metadata
// (tensor_meta_propagation.h), and its changes of arguments replayed.
// nullopt when that metadata cannot be computed natively or does not match
// the decision's outputs, or when the call's arguments do not fit the
// decided changes (the call then propagates; both are counted as
// meta_unavailable).
Outcome<std::optional<CacheEntryPtr>> entry_from_decision(const OpDescriptor& op,
                                                          const Decision& decision,
                                                          const OpKey& exact_key, PyObject* args,
                                                          PyObject* kwargs);

} // namespace torchshard
