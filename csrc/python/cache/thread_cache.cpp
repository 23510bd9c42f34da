#include "csrc/python/cache/thread_cache.h"

#include "csrc/core/cache_config.h"

#include <Python.h>
#include <pythread.h>

#include <absl/container/flat_hash_set.h>

#include <atomic>
#include <mutex>

namespace torchshard {

class ThreadCacheRegistry {
 public:
  static ThreadCacheRegistry& instance() {
    // Leaked on purpose: thread caches may be retired during finalization,
    // after static destructors could have run.
    static auto* registry = new ThreadCacheRegistry();
    return *registry;
  }

  ThreadCache* create_for_current_thread();
  void retire(ThreadCache* cache);
  void release_all_entries();
  CacheStatsSnapshot snapshot();
  void reset_counters();

  // Whether `cache` is still the live cache of the calling thread.
  bool owned_by_current_thread(ThreadCache* cache);

  std::atomic<bool> shut_down{false};
  std::atomic<uint64_t> declines_without_cache{0};
  // Counts caches retired by a thread other than their owner (finalization
  // and fork clear other threads' states), whose owners' thread-locals then
  // dangle: ThreadCache::current() revalidates its pointer when this moved.
  std::atomic<uint64_t> foreign_retirements{0};

 private:
  std::mutex mutex_;
  absl::flat_hash_set<ThreadCache*> live_;
  DispatchCounters retired_;
};

namespace {

thread_local ThreadCache* current_thread_cache = nullptr;
// The foreign_retirements count current_thread_cache was last checked at.
thread_local uint64_t current_thread_cache_checked_at = 0;

constexpr const char* kCapsuleName = "torchshard.ThreadCache";
constexpr const char* kThreadDictKey = "torchshard.thread_cache";

void destroy_thread_cache_capsule(PyObject* capsule) {
  auto* cache = static_cast<ThreadCache*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  if (cache != nullptr) {
    ThreadCacheRegistry::instance().retire(cache);
  } else {
    PyErr_Clear();
  }
}

} // namespace

ThreadCache* ThreadCacheRegistry::create_for_current_thread() {
  PyObject* thread_dict = PyThreadState_GetDict();
  if (thread_dict == nullptr) {
    return nullptr;
  }
  auto* cache = new ThreadCache(PyThread_get_thread_ident());
  PyObject* capsule = PyCapsule_New(cache, kCapsuleName, &destroy_thread_cache_capsule);
  if (capsule == nullptr) {
    delete cache;
    PyErr_Clear();
    return nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    live_.insert(cache);
  }
  // From here the capsule owns the cache: if storing it fails, dropping the
  // capsule retires the cache again.
  const int stored = PyDict_SetItemString(thread_dict, kThreadDictKey, capsule);
  Py_DECREF(capsule);
  if (stored != 0) {
    PyErr_Clear();
    return nullptr;
  }
  current_thread_cache = cache;
  current_thread_cache_checked_at = foreign_retirements.load(std::memory_order_acquire);
  return cache;
}

void ThreadCacheRegistry::retire(ThreadCache* cache) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    live_.erase(cache);
    retired_ += cache->counters_;
  }
  // The capsule may be destroyed on another thread during finalization; only
  // the owning thread may touch its own thread_local.
  if (current_thread_cache == cache) {
    current_thread_cache = nullptr;
  } else {
    foreign_retirements.fetch_add(1, std::memory_order_release);
  }
  delete cache;  // releases entries; the GIL is held while thread dicts are cleared
}

bool ThreadCacheRegistry::owned_by_current_thread(ThreadCache* cache) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Membership first: a retired pointer may not be read. The ident then tells
  // a new cache at a reused address apart (it belongs to another thread).
  return live_.contains(cache) && cache->thread_ident_ == PyThread_get_thread_ident();
}

void ThreadCacheRegistry::release_all_entries() {
  std::vector<BoundedCache<CacheEntryPtr>::Map> doomed;
  std::vector<DecisionStore::Contents> doomed_decisions;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    doomed.reserve(live_.size());
    doomed_decisions.reserve(live_.size());
    for (ThreadCache* cache : live_) {
      doomed.push_back(cache->take_entries_or_defer());
      // No lookup of a decision runs Python, so none can be in progress here.
      doomed_decisions.push_back(cache->decisions_.take_all());
    }
  }
  // Destroyed here, outside the mutex, with the GIL held.
}

CacheStatsSnapshot ThreadCacheRegistry::snapshot() {
  CacheStatsSnapshot result;
  std::lock_guard<std::mutex> lock(mutex_);
  result.retired = retired_;
  const uint64_t uncached = declines_without_cache.load(std::memory_order_relaxed);
  result.retired.calls += uncached;
  result.retired.declines[static_cast<size_t>(DeclineReason::kNoThreadCache)] += uncached;
  result.threads.reserve(live_.size());
  for (const ThreadCache* cache : live_) {
    result.threads.push_back(
        {cache->thread_ident_, cache->cache_.size(), cache->decisions_.size(), cache->counters_});
  }
  return result;
}

void ThreadCacheRegistry::reset_counters() {
  std::lock_guard<std::mutex> lock(mutex_);
  retired_ = DispatchCounters{};
  declines_without_cache.store(0, std::memory_order_relaxed);
  for (ThreadCache* cache : live_) {
    cache->counters_ = DispatchCounters{};
  }
}

ThreadCache* ThreadCache::current() {
  ThreadCacheRegistry& registry = ThreadCacheRegistry::instance();
  if (current_thread_cache != nullptr) {
    const uint64_t retirements = registry.foreign_retirements.load(std::memory_order_acquire);
    if (retirements == current_thread_cache_checked_at) {
      return current_thread_cache;
    }
    // Rare: some thread's cache was retired by another thread since this
    // thread last looked; this one's may be among them.
    current_thread_cache_checked_at = retirements;
    if (registry.owned_by_current_thread(current_thread_cache)) {
      return current_thread_cache;
    }
    current_thread_cache = nullptr;
  }
  if (registry.shut_down.load(std::memory_order_acquire)) {
    return nullptr;
  }
  return registry.create_for_current_thread();
}

void ThreadCache::count_decline_without_cache() {
  ThreadCacheRegistry::instance().declines_without_cache.fetch_add(1, std::memory_order_relaxed);
}

template <class Operation>
auto ThreadCache::with_map(Operation operation) {
  inside_map_ = true;
  auto result = operation(cache_);
  inside_map_ = false;
  if (clear_requested_) {
    clear_requested_ = false;
    auto doomed = cache_.take_all();  // released here, on the owner, with the GIL
  }
  return result;
}

BoundedCache<CacheEntryPtr>::Map ThreadCache::take_entries_or_defer() {
  if (inside_map_) {
    clear_requested_ = true;
    return {};
  }
  return cache_.take_all();
}

Outcome<CacheEntryPtr> ThreadCache::find(const OpKey& key) {
  key.clear_comparison_interrupted();
  // Copied out before a deferred clear can run: the entry outlives it.
  CacheEntryPtr entry = with_map([&](BoundedCache<CacheEntryPtr>& cache) {
    const CacheEntryPtr* found = cache.find(key);
    return found ? *found : nullptr;
  });
  if (key.comparison_interrupted()) {
    return Failure::python_error();
  }
  return entry;
}

Status ThreadCache::insert(const OpKey& key, CacheEntryPtr entry) {
  if (ThreadCacheRegistry::instance().shut_down.load(std::memory_order_acquire)) {
    return success();
  }
  key.clear_comparison_interrupted();
  counters_.evictions += with_map([&](BoundedCache<CacheEntryPtr>& cache) {
    return cache.insert(key, std::move(entry), cache_capacity());
  });
  if (key.comparison_interrupted()) {
    return Failure::python_error();
  }
  return success();
}

void ThreadCache::insert_decision(const OpKey& key, DecisionPtr decision) {
  if (ThreadCacheRegistry::instance().shut_down.load(std::memory_order_acquire)) {
    return;
  }
  counters_.decision_evictions += decisions_.insert(key, std::move(decision), cache_capacity());
}

CacheStatsSnapshot snapshot_cache_stats() {
  return ThreadCacheRegistry::instance().snapshot();
}

void reset_cache_stats() {
  ThreadCacheRegistry::instance().reset_counters();
}

void clear_all_thread_caches() {
  ThreadCacheRegistry::instance().release_all_entries();
}

void shutdown_thread_caches() {
  ThreadCacheRegistry::instance().shut_down.store(true, std::memory_order_release);
  // Only the finalizing thread's cache goes now: its thread state is cleared
  // last, after the modules. Other threads keep serving their entries until
  // they end or finalization clears their thread states (first, while the
  // interpreter is whole). Handing a daemon thread to stock here would put it
  // on stock's cold propagation path just as finalization kills it, and a
  // forced unwind from there crashes in torch's own cleanups
  // (docs/reliability.md).
  if (current_thread_cache == nullptr) {
    return;
  }
  PyObject* thread_dict = PyThreadState_GetDict();
  if (thread_dict == nullptr || PyDict_DelItemString(thread_dict, kThreadDictKey) != 0) {
    PyErr_Clear();
  }
}

bool thread_caches_shut_down() {
  return ThreadCacheRegistry::instance().shut_down.load(std::memory_order_acquire);
}

} // namespace torchshard
