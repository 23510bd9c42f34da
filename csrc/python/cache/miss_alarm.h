// The silent-miss alarm: a TorchshardWarning, once per process, when a
// thread's calls keep running stock's propagation after warm-up.
//
// Each thread counts its calls in consecutive windows of kWindowCalls. After
// the first window (warm-up), a window in which more than half of the calls
// missed (ran stock's propagation) fires the alarm, naming the ops that
// missed most and the reasons. A hit costs an increment and two compares;
// only misses record which op and why. Ops are counted by key_id with the
// name taken at their first miss, never by descriptor address: re-registering
// an op's strategy frees its descriptor within a window.
//
// Not synchronized: one per ThreadCache, used by its thread with the GIL.
#pragma once

#include "csrc/core/dispatch_counters.h"
#include "csrc/python/cache/op_descriptor.h"

#include <absl/container/flat_hash_map.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace torchshard {

class MissAlarm {
 public:
  static constexpr uint64_t kWindowCalls = 10000;

  // Records one call; returns the warning's text when this call closes a
  // window that fires the alarm (at most once per process).
  std::optional<std::string> record(const OpDescriptor& op, const CallOutcome& outcome) {
    if (outcome.lookup == CallOutcome::Lookup::kMiss) {
      record_miss(op, outcome);
    }
    if (++calls_ < kWindowCalls) {
      return std::nullopt;
    }
    return close_window();
  }

 private:
  void record_miss(const OpDescriptor& op, const CallOutcome& outcome);
  std::optional<std::string> close_window();

  uint64_t calls_ = 0;
  uint64_t misses_ = 0;
  uint64_t windows_ = 0;
  struct OpMisses {
    std::string name;
    uint64_t count = 0;
  };
  absl::flat_hash_map<uint64_t, OpMisses> op_misses_;  // by OpDescriptor::key_id()
  std::array<uint64_t, kDecisionMissCount> reasons_{};
};

// Whether the alarm can still fire in this process (tests re-arm it, or
// silence it for a suite whose tests miss on purpose; a call that fails
// before its alarm is issued re-arms it, so the alarm is not lost).
void set_miss_alarm_armed(bool armed);
bool miss_alarm_armed();

// Issues `message` as a TorchshardWarning. False with the error set when the
// warnings filter turned it into an exception.
bool warn_persistent_misses(const std::string& message);

} // namespace torchshard
