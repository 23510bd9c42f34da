// Process-wide cache settings. torchshard/_config.py reads the environment
// (TORCHSHARD_CACHE_CAPACITY) and sets them; C++ never reads the environment.
#pragma once

#include <cstddef>

namespace torchshard {

// Default bound on entries per thread. An entry is ~200 bytes plus references
// to spec objects that are alive anyway, so the default costs at most a few MB
// per thread while holding every distinct op signature of large models.
inline constexpr size_t kDefaultCacheCapacity = 16384;

size_t cache_capacity();
void set_cache_capacity(size_t capacity);

} // namespace torchshard
