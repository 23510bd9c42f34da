#include "csrc/core/cache_config.h"

#include <atomic>

namespace torchshard {
namespace {
std::atomic<size_t> configured_capacity{kDefaultCacheCapacity};
std::atomic<bool> decisions_enabled{true};
std::atomic<DecisionVerification> verification{DecisionVerification::kFirst};
std::atomic<bool> coarse_decision_keys{false};
std::atomic<bool> all_reduce_natively{true};
} // namespace

size_t cache_capacity() {
  return configured_capacity.load(std::memory_order_relaxed);
}

void set_cache_capacity(size_t capacity) {
  configured_capacity.store(capacity, std::memory_order_relaxed);
}

bool shape_generic_decisions_enabled() {
  return decisions_enabled.load(std::memory_order_relaxed);
}

void set_shape_generic_decisions_enabled(bool enabled) {
  decisions_enabled.store(enabled, std::memory_order_relaxed);
}

DecisionVerification decision_verification() {
  return verification.load(std::memory_order_relaxed);
}

void set_decision_verification(DecisionVerification policy) {
  verification.store(policy, std::memory_order_relaxed);
}

bool native_all_reduce_enabled() {
  return all_reduce_natively.load(std::memory_order_relaxed);
}

void set_native_all_reduce_enabled(bool enabled) {
  all_reduce_natively.store(enabled, std::memory_order_relaxed);
}

bool coarse_decision_keys_for_testing() {
  return coarse_decision_keys.load(std::memory_order_relaxed);
}

void set_coarse_decision_keys_for_testing(bool coarse) {
  coarse_decision_keys.store(coarse, std::memory_order_relaxed);
}

} // namespace torchshard
