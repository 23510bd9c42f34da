#include "csrc/core/cache_config.h"

#include <atomic>

namespace torchshard {
namespace {
std::atomic<size_t> configured_capacity{kDefaultCacheCapacity};
} // namespace

size_t cache_capacity() {
  return configured_capacity.load(std::memory_order_relaxed);
}

void set_cache_capacity(size_t capacity) {
  configured_capacity.store(capacity, std::memory_order_relaxed);
}

} // namespace torchshard
