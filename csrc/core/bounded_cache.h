// BoundedCache: a flat_hash_map from OpKey to Value with a hard entry bound.
//
// Eviction policy, "flush when full": inserting into a cache that holds
// `capacity` entries first drops all of them. A hit costs one probe and no
// bookkeeping (an LRU would write on every hit), memory never exceeds the
// bound, and a workload whose working set fits (the normal case; the default
// bound is far above any model's signature count) never sees a flush. A
// workload that does not fit pays one propagation per entry per flush.
//
// One instance per thread; not synchronized. Values are destroyed by whoever
// calls clear()/take_all()/insert(), so callers that hold Python references
// in Value must hold the GIL (see csrc/python/cache/thread_cache.h).
#pragma once

#include "csrc/core/op_key.h"

#include <absl/container/flat_hash_map.h>

#include <cstddef>
#include <utility>

namespace torchshard {

template <class Value>
class BoundedCache {
 public:
  using Map = absl::flat_hash_map<OpKey, Value, OpKeyHash>;

  const Value* find(const OpKey& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
  }

  // Returns how many entries were evicted to make room (0 or the old size).
  // With capacity 0 nothing is stored.
  size_t insert(const OpKey& key, Value value, size_t capacity) {
    if (capacity == 0) {
      return 0;
    }
    size_t evicted = 0;
    if (map_.size() >= capacity) {
      evicted = map_.size();
      map_.clear();
    }
    map_.insert_or_assign(key, std::move(value));
    return evicted;
  }

  size_t size() const { return map_.size(); }

  // Moves every entry out, leaving the cache empty, so the caller can destroy
  // them after releasing any lock it holds.
  Map take_all() {
    Map taken;
    taken.swap(map_);
    return taken;
  }

 private:
  Map map_;
};

} // namespace torchshard
