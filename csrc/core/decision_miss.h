// Why a call whose exact key missed did not reuse a shape-generic sharding
// decision (csrc/python/miss/shape_generic_miss.h) and ran stock's full
// propagation instead. Every such call is counted under one of these; the
// names are the keys of torchshard.stats()["miss_reasons"] and are listed in
// docs/design.md.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace torchshard {

enum class DecisionMiss : uint8_t {
  kNewLayout,            // no decision yet for this op, these meshes and placements
  kNewSizeClass,         // decisions exist for the layout, not for these size classes
  kOpNotShapeGeneric,    // the op is outside the shape-generic families (or decisions are off)
  kCallNotShapeGeneric,  // an argument the decision key cannot encode without sizes
  kPlanNotReusable,      // stock's plan for this decision key reads sizes (redistribution, off-mesh, out=)
  kMetaUnavailable,      // the op has no meta kernel that gives the output metadata
  kVerification,         // the decision was found and stock's answer was computed to check it
  kConflict,             // that check disagreed: stock's answer was used, the decision retired
  kRetiredDecision,      // the decision had disagreed with stock before
  kCount,
};

inline constexpr size_t kDecisionMissCount = static_cast<size_t>(DecisionMiss::kCount);

std::string_view decision_miss_name(DecisionMiss reason);

} // namespace torchshard
