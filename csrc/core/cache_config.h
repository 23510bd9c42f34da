// Process-wide cache settings. torchshard/_config.py reads the environment
// (TORCHSHARD_CACHE_CAPACITY, TORCHSHARD_SHAPE_GENERIC,
// TORCHSHARD_VERIFY_DECISIONS, TORCHSHARD_NATIVE_ALL_REDUCE) and sets them;
// C++ never reads the environment.
#pragma once

#include <cstddef>
#include <cstdint>

namespace torchshard {

// Default bound on entries per thread. An entry is ~200 bytes plus references
// to spec objects that are alive anyway, so the default costs at most a few MB
// per thread while holding every distinct op signature of large models.
inline constexpr size_t kDefaultCacheCapacity = 16384;

size_t cache_capacity();
void set_cache_capacity(size_t capacity);

// Whether an exact miss may reuse a shape-generic decision
// (csrc/python/miss/shape_generic_miss.h). On by default.
bool shape_generic_decisions_enabled();
void set_shape_generic_decisions_enabled(bool enabled);

// When a reused decision is checked against stock's own propagation:
//  kFirst: the first time it is reused (the default); trusted once it agreed;
//  kAlways: every reuse (tests, debugging); a reuse then costs a full miss;
//  kNever: never (the caller vouches for the decision keys).
enum class DecisionVerification : uint8_t { kFirst, kAlways, kNever };
DecisionVerification decision_verification();
void set_decision_verification(DecisionVerification policy);

// Whether a Partial -> Replicate redistribution planned on a miss runs the
// all-reduce natively without the GIL (hit/all_reduce.h) or through stock's
// redistribute_local_tensor. On by default; off isolates the native
// collective when chasing a fault (docs/reliability.md).
bool native_all_reduce_enabled();
void set_native_all_reduce_enabled(bool enabled);

// For tests of the safety net only (torchshard.testing.coarse_decision_keys):
// decision keys leave the size classes out, a key deliberately too coarse.
bool coarse_decision_keys_for_testing();
void set_coarse_decision_keys_for_testing(bool coarse);

} // namespace torchshard
