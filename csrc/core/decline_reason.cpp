#include "csrc/core/decline_reason.h"

#include "csrc/core/enum_names.h"

namespace torchshard {

std::string_view decline_reason_name(DeclineReason reason) {
  static constexpr std::array<std::string_view, kDeclineReasonCount> kNames = {
      "cache_disabled",
      "no_thread_cache",
      "dispatch_mode_active",
      "non_plain_local_tensor",
      "dtensor_subclass_arg",
      "plain_tensor_arg",
      "symbolic_arg",
      "unsupported_arg",
      "out_variant_op",
      "view_op",
      "random_op",
      "custom_handler",
      "non_tensor_return",
      "needs_redistribute",
      "not_participating",
      "propagation_failed",
      "decomposed",
      "unsupported_output",
      "local_compute_failed",
  };
  return enum_name(kNames, reason);
}

} // namespace torchshard
