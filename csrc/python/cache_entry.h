// CacheEntry: what one sharding-propagation cache miss decided for a key.
//
// Either a cached decline (the call goes to stock DTensor, cheaply, for the
// recorded reason) or a native plan: the output spec objects to attach to each
// result. Reusing the same spec objects for every hit makes the next op's key
// compare them by identity.
//
// Invariants: immutable once built; holds strong references to every spec its
// key points at (key_specs) so the key's borrowed handles stay valid; is
// destroyed with the GIL held (see thread_cache.h).
#pragma once

#include "csrc/core/decline_reason.h"

#include <torch/csrc/utils/pybind.h>

#include <memory>
#include <optional>
#include <vector>

namespace torchshard {

struct CacheEntry {
  std::optional<DeclineReason> decline;
  // One vector per schema return: one spec for a Tensor, one per element for
  // a Tensor[].
  std::vector<std::vector<py::object>> return_specs;
  std::vector<py::object> key_specs;
};

using CacheEntryPtr = std::shared_ptr<const CacheEntry>;

} // namespace torchshard
