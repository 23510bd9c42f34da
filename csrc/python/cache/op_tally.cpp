#include "csrc/python/cache/op_tally.h"

#include <absl/container/flat_hash_map.h>

#include <mutex>

namespace torchshard {
namespace detail {
std::atomic<int> open_explain_blocks{0};
}

namespace {

struct OpTallies {
  std::mutex mutex;
  // Keyed by OpDescriptor::key_id: a descriptor may be gone by the time the
  // report is read, so each tally keeps the op's name.
  absl::flat_hash_map<uint64_t, std::pair<std::string, DispatchCounters>> by_op;
};

OpTallies& tallies() {
  static auto* instance = new OpTallies();  // never destroyed: used until exit
  return *instance;
}

} // namespace

void record_op_call(const OpDescriptor& op, const CallOutcome& outcome) {
  OpTallies& state = tallies();
  std::lock_guard<std::mutex> lock(state.mutex);
  auto [it, inserted] = state.by_op.try_emplace(op.key_id());
  if (inserted) {
    it->second.first = op.display_name();
  }
  it->second.second.record(outcome);
}

void begin_op_tallies() {
  OpTallies& state = tallies();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (detail::open_explain_blocks.fetch_add(1, std::memory_order_relaxed) == 0) {
    state.by_op.clear();
  }
}

void end_op_tallies() {
  std::lock_guard<std::mutex> lock(tallies().mutex);
  if (detail::open_explain_blocks.load(std::memory_order_relaxed) > 0) {
    detail::open_explain_blocks.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::map<std::string, DispatchCounters> snapshot_op_tallies() {
  OpTallies& state = tallies();
  std::lock_guard<std::mutex> lock(state.mutex);
  std::map<std::string, DispatchCounters> result;
  for (const auto& [key_id, tally] : state.by_op) {
    result[tally.first] += tally.second;
  }
  return result;
}

} // namespace torchshard
