// ThreadCache: one Python thread's sharding-propagation cache and counters.
//
// Lifetime (the part that must never crash):
//  - Created on a thread's first DTensor dispatch and owned by a capsule in
//    that thread's state dict. Python clears the dict, with the GIL held,
//    when the thread ends (or, for threads still alive, during interpreter
//    finalization); the capsule's destructor retires the cache: its counters
//    are folded into the process totals and its entries are released.
//  - Every live cache is listed in a process-wide registry guarded by a
//    mutex, so clear_cache(), stats() and shutdown reach all threads.
//  - shutdown_thread_caches() runs from atexit, before finalization: it
//    retires the calling (finalizing) thread's cache and stops every insert
//    and every new cache. Other threads keep serving the entries they have,
//    so a daemon thread still dispatching stays on the hit path until
//    finalization clears its thread state.
//
// Locking: everything here runs with the GIL held. The registry mutex is
// only held for short sections that never call Python and never wait for the
// GIL; entries (which hold Python references) are destroyed after the mutex
// is released, so a destructor that runs Python cannot deadlock against it.
//
// A probe or insert may compare specs structurally, which can run Python
// (DeviceMesh.__eq__) and so let another thread take the GIL. A clear from
// another thread must not pull the map out from under that probe: while the
// owner is inside the map, such a clear is only recorded, and the owner
// applies it as soon as it leaves the map. An interrupt raised inside such a
// comparison ends the lookup as a Failure::python_error().
#pragma once

#include "csrc/core/bounded_cache.h"
#include "csrc/core/dispatch_counters.h"
#include "csrc/core/export.h"
#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/decision_store.h"
#include "csrc/python/cache/miss_alarm.h"

#include <vector>

namespace torchshard {

class TORCHSHARD_API ThreadCache {
 public:
  // The calling thread's cache, created on first use; nullptr if the thread
  // has no Python thread state, or had no cache when shutdown began.
  static ThreadCache* current();
  // Counts a decline for a call that had no thread cache to count into.
  static void count_decline_without_cache();

  // Looks `key` up: the entry, or nullptr on a miss (the caller records
  // which).
  Outcome<CacheEntryPtr> find(const OpKey& key);
  // Stores an entry under the configured capacity (see bounded_cache.h for
  // the eviction policy); a no-op once shutdown has begun.
  Status insert(const OpKey& key, CacheEntryPtr entry);

  // This thread's shape-generic decisions (decision_store.h); cleared with
  // the entries.
  DecisionStore& decisions() { return decisions_; }
  // Stores a decision under the configured capacity; a no-op once shutdown
  // has begun.
  void insert_decision(const OpKey& key, DecisionPtr decision);

  DispatchCounters& counters() { return counters_; }
  MissAlarm& miss_alarm() { return miss_alarm_; }
  // Scratch key reused by every call on this thread, so building a key does
  // not allocate in steady state.
  OpKey& probe_key() { return probe_key_; }

 private:
  friend class ThreadCacheRegistry;
  explicit ThreadCache(unsigned long thread_ident) : thread_ident_(thread_ident) {}

  // Runs `operation` on the map with cross-thread clears deferred (see above).
  template <class Operation>
  auto with_map(Operation operation);
  // Moves the entries out now, or, if the owner is inside the map, asks it to.
  BoundedCache<CacheEntryPtr>::Map take_entries_or_defer();

  BoundedCache<CacheEntryPtr> cache_;
  DecisionStore decisions_;
  bool inside_map_ = false;
  bool clear_requested_ = false;
  DispatchCounters counters_;
  MissAlarm miss_alarm_;
  OpKey probe_key_;
  unsigned long thread_ident_;
};

struct ThreadCacheSnapshot {
  unsigned long thread_ident = 0;
  size_t entries = 0;
  size_t decisions = 0;
  DispatchCounters counters;
};

struct CacheStatsSnapshot {
  std::vector<ThreadCacheSnapshot> threads;  // live threads
  DispatchCounters retired;                  // threads that have ended
};

// All of these require the GIL.
CacheStatsSnapshot snapshot_cache_stats();
void reset_cache_stats();
void clear_all_thread_caches();
void shutdown_thread_caches();
bool thread_caches_shut_down();

} // namespace torchshard
