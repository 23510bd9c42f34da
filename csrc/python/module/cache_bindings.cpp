#include "csrc/python/module/cache_bindings.h"

#include "csrc/core/cache_config.h"
#include "csrc/core/decision_miss.h"
#include "csrc/core/decline_reason.h"
#include "csrc/python/cache/miss_alarm.h"
#include "csrc/python/cache/op_tally.h"
#include "csrc/python/cache/thread_cache.h"

namespace torchshard {
namespace {

py::dict miss_reasons_to_dict(const DispatchCounters& counters) {
  py::dict reasons;
  for (size_t i = 0; i < kDecisionMissCount; ++i) {
    if (counters.miss_reasons[i] != 0) {
      reasons[py::str(std::string(decision_miss_name(static_cast<DecisionMiss>(i))))] =
          counters.miss_reasons[i];
    }
  }
  return reasons;
}

py::dict counters_to_dict(const DispatchCounters& counters, size_t entries, size_t decisions) {
  py::dict declines;
  uint64_t total_declines = 0;
  for (size_t i = 0; i < kDeclineReasonCount; ++i) {
    if (counters.declines[i] != 0) {
      declines[py::str(std::string(decline_reason_name(static_cast<DeclineReason>(i))))] =
          counters.declines[i];
      total_declines += counters.declines[i];
    }
  }
  py::dict result;
  result["calls"] = counters.calls;
  result["hits"] = counters.hits;
  result["decision_hits"] = counters.decision_hits;
  result["misses"] = counters.misses;
  result["miss_reasons"] = miss_reasons_to_dict(counters);
  result["native_calls"] = counters.native_calls;
  result["declined"] = total_declines;
  result["declines"] = declines;
  result["evictions"] = counters.evictions;
  result["entries"] = entries;
  result["decisions"] = decisions;
  result["decision_evictions"] = counters.decision_evictions;
  return result;
}

py::dict stats() {
  const CacheStatsSnapshot snapshot = snapshot_cache_stats();
  DispatchCounters totals = snapshot.retired;
  size_t total_entries = 0;
  size_t total_decisions = 0;
  py::dict threads;
  for (const ThreadCacheSnapshot& thread : snapshot.threads) {
    totals += thread.counters;
    total_entries += thread.entries;
    total_decisions += thread.decisions;
    threads[py::int_(thread.thread_ident)] =
        counters_to_dict(thread.counters, thread.entries, thread.decisions);
  }
  py::dict result = counters_to_dict(totals, total_entries, total_decisions);
  result["threads"] = threads;
  result["capacity"] = cache_capacity();
  return result;
}

py::dict op_tallies() {
  py::dict result;
  for (const auto& [name, counters] : snapshot_op_tallies()) {
    py::dict tally = counters_to_dict(counters, 0, 0);
    for (const char* store_only : {"entries", "evictions", "decisions", "decision_evictions"}) {
      tally.attr("pop")(store_only);
    }
    result[py::str(name)] = tally;
  }
  return result;
}

std::vector<std::string> decline_reason_names() {
  std::vector<std::string> names;
  for (size_t i = 0; i < kDeclineReasonCount; ++i) {
    names.emplace_back(decline_reason_name(static_cast<DeclineReason>(i)));
  }
  return names;
}

} // namespace

void init_cache_bindings(py::module_& module) {
  module.def("stats", &stats,
             "Totals (live and ended threads) and per-live-thread figures, keyed by thread ident.");
  module.def("reset_stats", &reset_cache_stats, "Zero every counter; cached entries stay.");
  module.def("clear_cache", &clear_all_thread_caches, "Drop every thread's cached entries.");
  module.def("cache_capacity", &cache_capacity);
  module.def("set_cache_capacity", &set_cache_capacity, py::arg("capacity"));
  module.def("shutdown", &shutdown_thread_caches,
             "Release every cache and stop caching; runs at interpreter exit.");
  module.def("is_shut_down", &thread_caches_shut_down);
  module.def("decline_reason_names", &decline_reason_names);
  module.def("begin_op_tallies", &begin_op_tallies,
             "Start (or nest) per-op recording for torchshard.explain().");
  module.def("end_op_tallies", &end_op_tallies, "Close one begin_op_tallies().");
  module.def("op_tallies", &op_tallies,
             "Per-op counters recorded since the outermost begin_op_tallies().");
  module.attr("DEFAULT_CACHE_CAPACITY") = kDefaultCacheCapacity;
  module.def("shape_generic_decisions_enabled", &shape_generic_decisions_enabled);
  module.def("set_shape_generic_decisions_enabled", &set_shape_generic_decisions_enabled,
             py::arg("enabled"), "Whether an exact miss may reuse a shape-generic decision.");
  module.def("native_all_reduce_enabled", &native_all_reduce_enabled);
  module.def("set_native_all_reduce_enabled", &set_native_all_reduce_enabled,
             py::arg("enabled"),
             "Whether Partial -> Replicate redistributions planned from now on run the "
             "all-reduce natively.");
  module.def("decision_verification", [] {
    switch (decision_verification()) {
      case DecisionVerification::kAlways:
        return "always";
      case DecisionVerification::kNever:
        return "never";
      case DecisionVerification::kFirst:
        break;
    }
    return "first";
  });
  module.def("set_decision_verification", [](const std::string& policy) {
    if (policy == "first") {
      set_decision_verification(DecisionVerification::kFirst);
    } else if (policy == "always") {
      set_decision_verification(DecisionVerification::kAlways);
    } else if (policy == "never") {
      set_decision_verification(DecisionVerification::kNever);
    } else {
      throw py::value_error("decision verification must be 'first', 'always' or 'never', got '" +
                            policy + "'");
    }
  }, py::arg("policy"), "When a reused decision is checked against stock's propagation.");
  module.def("set_coarse_decision_keys_for_testing", &set_coarse_decision_keys_for_testing,
             py::arg("coarse"), "Decision keys without size classes (tests of the safety net).");
  module.def("coarse_decision_keys_for_testing", &coarse_decision_keys_for_testing);
  module.def("set_miss_alarm_armed", &set_miss_alarm_armed, py::arg("armed"),
             "Whether the once-per-process silent-miss warning can still fire.");
  module.def("miss_alarm_armed", &miss_alarm_armed);
  module.def("decision_miss_names", [] {
    std::vector<std::string> names;
    for (size_t i = 0; i < kDecisionMissCount; ++i) {
      names.emplace_back(decision_miss_name(static_cast<DecisionMiss>(i)));
    }
    return names;
  });
}

} // namespace torchshard
