// Counters of one thread's dispatch activity. Written only by the owning
// thread and read by torchshard.stats() from any thread; both happen with the
// GIL held, which orders them.
#pragma once

#include "csrc/core/decision_miss.h"
#include "csrc/core/decline_reason.h"

#include <array>
#include <cstdint>
#include <optional>

namespace torchshard {

// What happened to one call, recorded once when dispatch ends.
struct CallOutcome {
  // kHit: the exact key was cached. kDecisionHit: it was not, and a
  // shape-generic decision made its entry without stock's propagation.
  // kMiss: stock's propagation ran (for `miss_reason`, when the op is keyed
  // by decisions at all).
  enum class Lookup : uint8_t { kNone, kHit, kDecisionHit, kMiss };
  Lookup lookup = Lookup::kNone;
  std::optional<DeclineReason> decline;  // why the call was not served natively
  bool native = false;                   // served natively (a result was returned)
  std::optional<DecisionMiss> miss_reason;  // why a kMiss did not reuse a decision
};

struct DispatchCounters {
  uint64_t calls = 0;         // calls that reached a torchshard rule
  uint64_t hits = 0;          // cache lookups that found an entry
  uint64_t decision_hits = 0; // exact misses served by a shape-generic decision
  uint64_t misses = 0;        // cache lookups that ran sharding propagation
  uint64_t native_calls = 0;  // calls served entirely by torchshard
  uint64_t evictions = 0;     // entries dropped because the cache was full
  uint64_t decision_evictions = 0;  // decisions dropped because their store was full
  std::array<uint64_t, kDeclineReasonCount> declines{};
  std::array<uint64_t, kDecisionMissCount> miss_reasons{};

  void count_decline(DeclineReason reason) { ++declines[static_cast<size_t>(reason)]; }

  void record(const CallOutcome& outcome) {
    ++calls;
    hits += outcome.lookup == CallOutcome::Lookup::kHit ? 1 : 0;
    decision_hits += outcome.lookup == CallOutcome::Lookup::kDecisionHit ? 1 : 0;
    misses += outcome.lookup == CallOutcome::Lookup::kMiss ? 1 : 0;
    if (outcome.miss_reason) {
      ++miss_reasons[static_cast<size_t>(*outcome.miss_reason)];
    }
    if (outcome.decline) {
      count_decline(*outcome.decline);
    }
    native_calls += outcome.native ? 1 : 0;
  }

  DispatchCounters& operator+=(const DispatchCounters& other) {
    calls += other.calls;
    hits += other.hits;
    decision_hits += other.decision_hits;
    misses += other.misses;
    native_calls += other.native_calls;
    evictions += other.evictions;
    decision_evictions += other.decision_evictions;
    for (size_t i = 0; i < declines.size(); ++i) {
      declines[i] += other.declines[i];
    }
    for (size_t i = 0; i < miss_reasons.size(); ++i) {
      miss_reasons[i] += other.miss_reasons[i];
    }
    return *this;
  }
};

} // namespace torchshard
