#include "csrc/python/cache/miss_alarm.h"

#include <Python.h>

#include <algorithm>
#include <atomic>
#include <sstream>
#include <vector>

namespace torchshard {
namespace {

std::atomic<bool> alarm_fired{false};
constexpr size_t kTopOps = 3;

} // namespace

void MissAlarm::record_miss(const OpDescriptor& op, const CallOutcome& outcome) {
  ++misses_;
  OpMisses& misses = op_misses_[op.key_id()];
  if (misses.count++ == 0) {
    misses.name = op.display_name();
  }
  if (outcome.miss_reason) {
    ++reasons_[static_cast<size_t>(*outcome.miss_reason)];
  }
}

std::optional<std::string> MissAlarm::close_window() {
  const bool fire = windows_ > 0 && 2 * misses_ > calls_ && !alarm_fired.load(std::memory_order_relaxed);
  std::optional<std::string> message;
  if (fire && !alarm_fired.exchange(true)) {
    std::vector<const OpMisses*> ops;
    ops.reserve(op_misses_.size());
    for (const auto& [key_id, misses] : op_misses_) {
      ops.push_back(&misses);
    }
    std::sort(ops.begin(), ops.end(), [](const OpMisses* a, const OpMisses* b) { return a->count > b->count; });
    std::ostringstream text;
    text << "torchshard: " << misses_ << " of the last " << calls_
         << " DTensor calls on this thread ran stock's sharding propagation (new shapes or "
            "layouts after warm-up). Top ops:";
    for (size_t i = 0; i < std::min(kTopOps, ops.size()); ++i) {
      text << ' ' << ops[i]->name << " (" << ops[i]->count << ')';
    }
    text << ". Reasons:";
    for (size_t i = 0; i < reasons_.size(); ++i) {
      if (reasons_[i] != 0) {
        text << ' ' << decision_miss_name(static_cast<DecisionMiss>(i)) << '=' << reasons_[i];
      }
    }
    text << ". torchshard.explain() gives them per op (its ops' miss_reasons); see docs/design.md.";
    message = text.str();
  }
  ++windows_;
  calls_ = misses_ = 0;
  op_misses_.clear();
  reasons_.fill(0);
  return message;
}

void set_miss_alarm_armed(bool armed) {
  alarm_fired.store(!armed);
}

bool miss_alarm_armed() {
  return !alarm_fired.load();
}

bool warn_persistent_misses(const std::string& message) {
  PyObject* module = PyImport_ImportModule("torchshard._native");
  if (module == nullptr) {
    return false;
  }
  PyObject* category = PyObject_GetAttrString(module, "TorchshardWarning");
  Py_DECREF(module);
  if (category == nullptr) {
    return false;
  }
  const int warned = PyErr_WarnEx(category, message.c_str(), 1);
  Py_DECREF(category);
  return warned == 0;
}

} // namespace torchshard
