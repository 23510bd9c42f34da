#include "csrc/core/decision_miss.h"

#include "csrc/core/enum_names.h"

namespace torchshard {

std::string_view decision_miss_name(DecisionMiss reason) {
  static constexpr std::array<std::string_view, kDecisionMissCount> kNames = {
      "new_layout",
      "new_size_class",
      "op_not_shape_generic",
      "call_not_shape_generic",
      "plan_not_reusable",
      "meta_unavailable",
      "verification",
      "conflict",
      "retired_decision",
  };
  return enum_name(kNames, reason);
}

} // namespace torchshard
