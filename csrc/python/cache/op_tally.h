// Per-op dispatch tallies behind torchshard.explain().
//
// Recording is off unless an explain block is open, so the hot path pays a
// single relaxed atomic load. While on, every call's CallOutcome is added to
// its op's tally; tallies are process-wide (all threads) and guarded by a
// mutex. Blocks nest: the tallies are cleared only when the outermost block
// opens, and each block reports the difference between its end and start
// snapshots (torchshard/_explain.py).
#pragma once

#include "csrc/core/dispatch_counters.h"
#include "csrc/python/cache/op_descriptor.h"

#include <atomic>
#include <map>
#include <string>

namespace torchshard {

namespace detail {
extern std::atomic<int> open_explain_blocks;
}

inline bool op_tallies_enabled() {
  return detail::open_explain_blocks.load(std::memory_order_relaxed) > 0;
}

void record_op_call(const OpDescriptor& op, const CallOutcome& outcome);

void begin_op_tallies();
void end_op_tallies();

// Op name ("aten::add.Tensor") -> counters, summed over every rule the op
// has had since the outermost block opened.
std::map<std::string, DispatchCounters> snapshot_op_tallies();

} // namespace torchshard
