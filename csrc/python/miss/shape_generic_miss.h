// An exact-key miss, resolved through shape-generic decisions where the op
// allows it (docs/design.md, "Shape-generic decisions").
//
// The call's decision key (cache/decision_key.h) is looked up in the
// thread's decision store:
//  - a reusable decision: its entry is made natively (output specs with this
//    call's tensor metadata, miss/decision_reuse.h), without stock's
//    propagation; the call counts as a decision hit;
//  - none: stock propagates (sharding_propagation.h), and its answer becomes
//    the decision for that key;
//  - one that must be checked first (TORCHSHARD_VERIFY_DECISIONS: the first
//    reuse by default, every reuse with "always"): stock propagates too and
//    its entry is the one used. Agreement trusts the decision from then on;
//    a disagreement retires it for good and is logged once (decision_check.h).
// Every call that runs stock's propagation records why (DecisionMiss).
//
// Requires the GIL.
#pragma once

#include "csrc/core/dispatch_counters.h"
#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"
#include "csrc/python/cache/thread_cache.h"

#include <Python.h>

namespace torchshard {

// The entry for a call whose exact key `key` missed; sets outcome.lookup to
// kDecisionHit when no propagation ran, else outcome.miss_reason.
Outcome<CacheEntryPtr> resolve_miss(const OpDescriptor& op, ThreadCache& cache, const OpKey& key,
                                    PyObject* func, PyObject* args, PyObject* kwargs,
                                    CallOutcome& outcome);

} // namespace torchshard
