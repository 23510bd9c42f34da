// Making a shape-generic decision from stock's answer, and an exact entry
// from a decision (cache/decision_store.h).
//
// Requires the GIL.
#pragma once

#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"
#include "csrc/core/view_shape.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/decision_store.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

#include <optional>

namespace torchshard {

// The decision stock's entry for this call makes for its decision key.
// Reusable only when nothing in the plan depends on sizes: the op runs
// locally on the arguments as called (stock selects redistributions by cost,
// which reads sizes), or, for a view, with its local shape where
// local_view_shape() gives exactly stock's; and its results are wrapped or
// returned in place.
Outcome<DecisionPtr> decision_from_entry(const CacheEntry& entry, const OpDescriptor& op, PyObject* args);

// The local shape a view (OpDescriptor::view_shape_argument) of a DTensor
// runs with, as stock's view rule makes it: a dimension the view keeps takes
// the local tensor's size (it may be sharded), every other dimension group
// (core/view_shape.h) the requested sizes, which requires that no input
// dimension of such a group is sharded. nullopt for any other call.
Outcome<std::optional<ViewShape>> local_view_shape(const OpDescriptor& op, PyObject* args);

// The exact entry a reusable decision makes for this call: the output specs
// of the decision with this call's tensor metadata
// (tensor_meta_propagation.h), and a sharded view's local shape.
// nullopt when that metadata cannot be computed natively or does not match
// the decision's outputs (the call then propagates).
Outcome<std::optional<CacheEntryPtr>> entry_from_decision(const OpDescriptor& op,
                                                          const Decision& decision,
                                                          const OpKey& exact_key, PyObject* args,
                                                          PyObject* kwargs);

} // namespace torchshard
