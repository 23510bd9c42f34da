// Replaying a decision's changes of the local call's arguments for a new
// shape (miss/decision_reuse.h): the two kinds of change whose choice does
// not read sizes.
//  - A view's local shape. For a view of an input sharded only on dimensions
//    the view keeps (core/view_shape.h), stock's view rule runs the local
//    view with the kept dimensions' local sizes; every call of a decision key
//    has the same dimension grouping and placements, so the local shape is
//    rebuilt from the call's own local tensor.
//  - Redistributions of replicated arguments (the bias of a row-wise addmm,
//    Replicate -> Partial). Stock's strategy selection
//    (_sharding_prop._select_min_cost_strategy) takes a negative-cost
//    strategy first, then one needing no redistribution, then the first that
//    costs nothing, else the cheapest (docs/design.md); a transition from a
//    replicated spec costs 0 whatever the sizes (redistribute_cost's
//    shortcut) and every transition that communicates costs more than 0 (a
//    latency term), so which candidate that is follows from placements.
//    Ops with size arguments are left out: their strategies may return
//    negative costs, which are chosen first.
//
// Requires the GIL.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

#include <optional>

namespace torchshard {

// Whether stock's changes of this call's arguments are of the two kinds
// above, and for a view exactly the local shape replay_changes() makes: a
// dimension the view keeps takes the local tensor's size, every other
// dimension group the requested sizes with -1 inferred (no input dimension of
// such a group may be sharded: a size-1 dimension merged with a sharded one,
// [4, 1, 8] -> [4, 8] on Shard(2), is a group too and is not replayed).
Outcome<bool> changes_are_replayable(const OpDescriptor& op, const RunLocally& stock, PyObject* args);

// The decided changes for this call: the view's local shape, and each
// redistribution from the argument's own spec to the decided placements with
// the argument's tensor metadata. nullopt when the call's arguments do not
// fit (the call then propagates).
Outcome<std::optional<RunLocally>> replay_changes(const OpDescriptor& op, const RunLocally& decided,
                                                  PyObject* args);

} // namespace torchshard
