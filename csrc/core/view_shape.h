// How a view's requested shape regroups its input's dimensions, from sizes
// alone (for aten::view, aten::_unsafe_view, aten::reshape).
//
// Walking both shapes from the left, a group is the shortest run of input
// dimensions and run of output dimensions with equal size products: 1 -> 1
// keeps a dimension (it may stay sharded), n -> 1 flattens, 1 -> n splits,
// n -> m does both. Trailing size-1 dimensions left on one side form groups
// of their own (0 -> 1 or 1 -> 0). Shapes with a 0 size, or whose products
// differ, have no grouping: those views keep exact keys.
//
// Decision keys hold the grouping (cache/decision_key.h), so stock's view
// rule, which maps dimensions by the same products, sees the same structure
// for every call of one key; the local shape a sharded view runs with is
// rebuilt per call from it (miss/decision_reuse.cpp).
#pragma once

#include <absl/container/inlined_vector.h>

#include <cstdint>
#include <optional>
#include <span>

namespace torchshard {

struct ViewDimGroup {
  uint32_t input_begin;
  uint32_t input_count;
  uint32_t output_begin;
  uint32_t output_count;

  bool keeps_dim() const { return input_count == 1 && output_count == 1; }
};

using ViewShape = absl::InlinedVector<int64_t, 8>;
using ViewDimGroups = absl::InlinedVector<ViewDimGroup, 8>;

// The requested shape with its one -1 (if any) inferred from `numel`, as
// view's own infer_size does; nullopt if it cannot hold `numel` elements.
std::optional<ViewShape> infer_view_shape(int64_t numel, std::span<const int64_t> requested);

// The grouping described above; nullopt for shapes that have none.
std::optional<ViewDimGroups> view_dim_groups(std::span<const int64_t> input,
                                             std::span<const int64_t> output);

} // namespace torchshard
