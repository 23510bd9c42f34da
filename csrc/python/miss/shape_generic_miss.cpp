#include "csrc/python/miss/shape_generic_miss.h"

#include "csrc/core/cache_config.h"
#include "csrc/python/cache/decision_key.h"
#include "csrc/python/cache/key_builder.h"
#include "csrc/python/miss/decision_check.h"
#include "csrc/python/miss/decision_reuse.h"
#include "csrc/python/miss/sharding_propagation.h"

namespace torchshard {
namespace {

struct Call {
  const OpDescriptor& op;
  const OpKey& key;
  PyObject* func;
  PyObject* args;
  PyObject* kwargs;
};

Outcome<CacheEntryPtr> propagate_because(const Call& call, DecisionMiss reason, CallOutcome& outcome) {
  outcome.miss_reason = reason;
  return propagate_on_miss(call.op, call.key, call.func, call.args, call.kwargs);
}

bool needs_check(const Decision& decision) {
  switch (decision_verification()) {
    case DecisionVerification::kAlways:
      return true;
    case DecisionVerification::kNever:
      return false;
    case DecisionVerification::kFirst:
      break;
  }
  return !decision.verified;
}

// A reused decision's entry against stock's: stock's is the one returned.
Outcome<CacheEntryPtr> check_against_stock(const Call& call, Decision& decision,
                                           const CacheEntryPtr& reused, CallOutcome& outcome) {
  Outcome<CacheEntryPtr> stock = propagate_because(call, DecisionMiss::kVerification, outcome);
  if (!stock) {
    return stock;
  }
  Outcome<bool> agree = entries_agree(*reused, *stock.value());
  if (!agree) {
    return agree.failure();
  }
  if (agree.value()) {
    decision.verified = true;
    return stock;
  }
  decision.retired = true;
  outcome.miss_reason = DecisionMiss::kConflict;
  if (Status logged = log_conflict(call.op, *reused, *stock.value()); !logged) {
    return logged.failure();
  }
  return stock;
}

Outcome<CacheEntryPtr> reuse(const Call& call, Decision& decision, CallOutcome& outcome) {
  if (decision.retired) {
    return propagate_because(call, DecisionMiss::kRetiredDecision, outcome);
  }
  if (!decision.reusable) {
    return propagate_because(call, DecisionMiss::kPlanNotReusable, outcome);
  }
  Outcome<std::optional<CacheEntryPtr>> reused =
      entry_from_decision(call.op, decision, call.key, call.args, call.kwargs);
  if (!reused) {
    return reused.failure();
  }
  if (!reused.value()) {
    return propagate_because(call, DecisionMiss::kMetaUnavailable, outcome);
  }
  if (needs_check(decision)) {
    return check_against_stock(call, decision, *reused.value(), outcome);
  }
  outcome.lookup = CallOutcome::Lookup::kDecisionHit;
  return std::move(*reused.value());
}

} // namespace

Outcome<CacheEntryPtr> resolve_miss(const OpDescriptor& op, ThreadCache& cache, const OpKey& key,
                                    PyObject* func, PyObject* args, PyObject* kwargs,
                                    CallOutcome& outcome) {
  const Call call{op, key, func, args, kwargs};
  if (!op.shape_generic() || !shape_generic_decisions_enabled()) {
    return propagate_because(call, DecisionMiss::kOpNotShapeGeneric, outcome);
  }
  DecisionKeyEncoder encoder(cache.decisions().layouts());
  OpKey decision_key;
  if (Status keyed = build_decision_key(op, args, kwargs, encoder, decision_key); !keyed) {
    if (keyed.failure().is_python_error()) {
      return keyed.failure();
    }
    return propagate_because(call, DecisionMiss::kCallNotShapeGeneric, outcome);
  }
  // Held across the Python that reuse runs: a clear from another thread may
  // drop the store's reference meanwhile.
  if (DecisionPtr decision = cache.decisions().find(decision_key)) {
    return reuse(call, *decision, outcome);
  }
  const bool known_layouts = cache.decisions().seen_layouts(encoder.layout_signature());
  Outcome<CacheEntryPtr> made = propagate_because(
      call, known_layouts ? DecisionMiss::kNewSizeClass : DecisionMiss::kNewLayout, outcome);
  if (!made) {
    return made;
  }
  Outcome<DecisionPtr> decision = decision_from_entry(*made.value(), call.op, call.args);
  if (!decision) {
    return decision.failure();
  }
  cache.insert_decision(decision_key, std::move(decision).value());
  cache.decisions().note_layouts(encoder.layout_signature(), cache_capacity());
  return made;
}

} // namespace torchshard
