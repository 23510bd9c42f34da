#include "csrc/core/cache_config.h"

#include <atomic>

namespace torchshard {
namespace {

// A process-wide setting read on every call and written rarely. Relaxed: no
// other data is published through a setting, so a thread only needs to see
// the new value eventually (the next call), not in order with anything else.
template <class T>
class Setting {
 public:
  constexpr explicit Setting(T initial) : value_(initial) {}
  T get() const { return value_.load(std::memory_order_relaxed); }
  void set(T value) { value_.store(value, std::memory_order_relaxed); }

 private:
  std::atomic<T> value_;
};

Setting<size_t> capacity{kDefaultCacheCapacity};
Setting<bool> decisions_enabled{true};
Setting<DecisionVerification> verification{DecisionVerification::kFirst};
Setting<bool> coarse_decision_keys{false};
Setting<bool> all_reduce_natively{true};

} // namespace

size_t cache_capacity() { return capacity.get(); }
void set_cache_capacity(size_t value) { capacity.set(value); }

bool shape_generic_decisions_enabled() { return decisions_enabled.get(); }
void set_shape_generic_decisions_enabled(bool enabled) { decisions_enabled.set(enabled); }

DecisionVerification decision_verification() { return verification.get(); }
void set_decision_verification(DecisionVerification policy) { verification.set(policy); }

bool native_all_reduce_enabled() { return all_reduce_natively.get(); }
void set_native_all_reduce_enabled(bool enabled) { all_reduce_natively.set(enabled); }

bool coarse_decision_keys_for_testing() { return coarse_decision_keys.get(); }
void set_coarse_decision_keys_for_testing(bool coarse) { coarse_decision_keys.set(coarse); }

} // namespace torchshard
