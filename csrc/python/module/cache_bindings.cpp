#include "csrc/python/module/cache_bindings.h"

#include "csrc/core/cache_config.h"
#include "csrc/core/decline_reason.h"
#include "csrc/python/cache/op_tally.h"
#include "csrc/python/cache/thread_cache.h"

namespace torchshard {
namespace {

py::dict counters_to_dict(const DispatchCounters& counters, size_t entries) {
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
  result["misses"] = counters.misses;
  result["native_calls"] = counters.native_calls;
  result["declined"] = total_declines;
  result["declines"] = declines;
  result["evictions"] = counters.evictions;
  result["entries"] = entries;
  return result;
}

py::dict stats() {
  const CacheStatsSnapshot snapshot = snapshot_cache_stats();
  DispatchCounters totals = snapshot.retired;
  size_t total_entries = 0;
  py::dict threads;
  for (const ThreadCacheSnapshot& thread : snapshot.threads) {
    totals += thread.counters;
    total_entries += thread.entries;
    threads[py::int_(thread.thread_ident)] = counters_to_dict(thread.counters, thread.entries);
  }
  py::dict result = counters_to_dict(totals, total_entries);
  result["threads"] = threads;
  result["capacity"] = cache_capacity();
  return result;
}

py::dict op_tallies() {
  py::dict result;
  for (const auto& [name, counters] : snapshot_op_tallies()) {
    py::dict tally = counters_to_dict(counters, 0);
    tally.attr("pop")("entries");
    tally.attr("pop")("evictions");
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
}

} // namespace torchshard
