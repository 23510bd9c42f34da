#include "csrc/core/view_shape.h"

#include <algorithm>
#include <climits>

namespace torchshard {

std::optional<ViewShape> infer_view_shape(int64_t numel, std::span<const int64_t> requested) {
  ViewShape shape(requested.begin(), requested.end());
  std::optional<size_t> inferred;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (inferred) {
        return std::nullopt;
      }
      inferred = i;
    } else if (shape[i] < 0 || (shape[i] != 0 && known > INT64_MAX / shape[i])) {
      return std::nullopt;
    } else {
      known *= shape[i];
    }
  }
  if (inferred) {
    if (known == 0 || numel % known != 0) {
      return std::nullopt;
    }
    shape[*inferred] = numel / known;
  } else if (known != numel) {
    return std::nullopt;
  }
  return shape;
}

std::optional<ViewDimGroups> view_dim_groups(std::span<const int64_t> input,
                                             std::span<const int64_t> output) {
  ViewDimGroups groups;
  size_t in = 0;
  size_t out = 0;
  const auto positive = [](int64_t size) { return size > 0; };
  if (!std::all_of(input.begin(), input.end(), positive) ||
      !std::all_of(output.begin(), output.end(), positive)) {
    return std::nullopt;
  }
  while (in < input.size() && out < output.size()) {
    ViewDimGroup group{static_cast<uint32_t>(in), 1, static_cast<uint32_t>(out), 1};
    // Products stay below the input's numel, which fits in int64 (it is a tensor's).
    int64_t input_product = input[in++];
    int64_t output_product = output[out++];
    while (input_product != output_product) {
      if (input_product < output_product) {
        if (in == input.size()) {
          return std::nullopt;
        }
        input_product *= input[in++];
        ++group.input_count;
      } else {
        if (out == output.size()) {
          return std::nullopt;
        }
        output_product *= output[out++];
        ++group.output_count;
      }
    }
    groups.push_back(group);
  }
  for (; in < input.size(); ++in) {
    if (input[in] != 1) {
      return std::nullopt;
    }
    groups.push_back({static_cast<uint32_t>(in), 1, static_cast<uint32_t>(out), 0});
  }
  for (; out < output.size(); ++out) {
    if (output[out] != 1) {
      return std::nullopt;
    }
    groups.push_back({static_cast<uint32_t>(in), 0, static_cast<uint32_t>(out), 1});
  }
  return groups;
}

} // namespace torchshard
