// The name of an enum value from its table of names, for the reason enums
// whose names are the keys of torchshard.stats().
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace torchshard {

template <class Enum, size_t N>
std::string_view enum_name(const std::array<std::string_view, N>& names, Enum value) {
  const auto index = static_cast<size_t>(value);
  return index < names.size() ? names[index] : std::string_view("unknown");
}

} // namespace torchshard
