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

// The decision stock's entry makes for its decision key. Reusable only when
// nothing in the plan depends on sizes: the op runs locally on the arguments
// as called (stock selects redistributions by cost, which reads sizes) and
// its results are wrapped or returned in place.
DecisionPtr decision_from_entry(const CacheEntry& entry);

// The exact entry `reusable` makes for this call: the output specs of the
// decision with this call's tensor metadata (tensor_meta_propagation.h).
// nullopt when that metadata cannot be computed natively or does not match
// the decision's outputs (the call then propagates).
Outcome<std::optional<CacheEntryPtr>> entry_from_decision(const OpDescriptor& op,
                                                          const ResultStep& reusable,
                                                          const OpKey& exact_key, PyObject* args,
                                                          PyObject* kwargs);

} // namespace torchshard
