// Why torchshard handed an op call back to stock DTensor (by returning
// NotImplemented from its dispatch rule). Every decline is counted under one
// of these; the names are the keys of torchshard.stats()["declines"] and are
// listed in docs/design.md.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace torchshard {

enum class DeclineReason : uint8_t {
  kCacheDisabled,        // TORCHSHARD_CACHE_CAPACITY=0
  kNoThreadCache,        // interpreter exit has begun, or the thread has no Python state
  kDispatchModeActive,   // a TorchDispatchMode is on the stack (tracing, debug modes)
  kNonPlainLocalTensor,  // a local tensor is a subclass (FakeTensor, LocalTensor, ...)
  kDTensorSubclassArg,   // an argument is a DTensor subclass
  kPlainTensorArg,       // a plain torch.Tensor stock would reject or warn about
  kSymbolicArg,          // a SymInt/SymFloat/SymBool argument
  kUnsupportedArg,       // an argument type the key cannot encode
  kOutVariantOp,         // an out= op whose returns are not one tensor per out= argument
  kViewOp,               // a view whose alias matches no tensor argument
  kRandomOp,             // consumes the DTensor RNG tracker
  kCustomHandler,        // stock dispatches it through a custom op handler
  kNonTensorReturn,      // returns something other than Tensor / Tensor[]
  kNeedsRedistribute,    // the chosen sharding needs a collective first
  kNotParticipating,     // this rank is not in the op's mesh
  kPropagationFailed,    // sharding propagation raised; stock re-raises it
  kDecomposed,           // stock decomposes the op instead of propagating
  kUnsupportedOutput,    // an output spec stock wraps in a special way
  kLocalComputeFailed,   // the local op raised; stock re-runs it and raises
  kCount,
};

inline constexpr size_t kDeclineReasonCount = static_cast<size_t>(DeclineReason::kCount);

std::string_view decline_reason_name(DeclineReason reason);

} // namespace torchshard
