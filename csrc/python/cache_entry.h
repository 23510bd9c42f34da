// CacheEntry: what one sharding-propagation cache miss decided for a key.
//
// Either a cached decline (the call goes to stock DTensor, cheaply, for the
// recorded reason) or a native plan: the output spec objects to attach to each
// result, and how the op's kind returns them (see OpKind). Reusing the same
// spec objects for every hit makes the next op's key compare them by
// identity.
//
// Invariants: immutable once built; holds strong references to every spec its
// key points at (key_specs) so the key's borrowed handles stay valid; is
// destroyed with the GIL held (see thread_cache.h).
#pragma once

#include "csrc/core/decline_reason.h"
#include "csrc/python/native_all_reduce.h"

#include <c10/core/ScalarType.h>
#include <torch/csrc/utils/pybind.h>

#include <memory>
#include <optional>
#include <vector>

namespace torchshard {

// What an in-place call returns, as stock's _dispatch_fast_path_python_tail
// decides it from the output spec.
enum class InplaceResult : uint8_t {
  kNone,       // no output spec: None
  kSelf,       // placements unchanged: args[0], spec untouched
  kRespecced,  // args[0] with its spec replaced by the output spec
};

// The local result a rank outside the op's mesh stands in with, per output
// spec: torch.zeros((), dtype) for a 0-d spec, else torch.tensor([], dtype).
struct AbsentLocal {
  c10::ScalarType dtype;
  bool zero_dim;
};

// One positional argument of the local call that differs from the caller's
// (a call whose sharding needed redistribution; see local_redistribution.h).
struct LocalArgument {
  size_t position = 0;
  std::optional<size_t> item;  // an item of a list argument (foreach ops)
  py::object replacement;  // a non-tensor value from the suggested schema, or
  py::object from_spec;    // redistribute the DTensor's local tensor from
  py::object to_spec;      // this spec to that one
  // Set when that redistribution is one stock runs as a single all_reduce.
  std::optional<NativeAllReduce> native_all_reduce;
};

struct CacheEntry {
  std::optional<DeclineReason> decline;
  // Whether this rank is in the op's compute mesh; when it is not, nothing
  // runs locally and results are built from absent_locals.
  bool participating = true;
  InplaceResult inplace_result = InplaceResult::kNone;
  py::object inplace_spec;  // kRespecced: the spec args[0] takes
  // Functional, view and out= ops: one vector per schema return, holding one
  // spec for a Tensor and one per element for a Tensor[].
  std::vector<std::vector<py::object>> return_specs;
  std::vector<std::vector<AbsentLocal>> absent_locals;  // !participating only
  std::vector<LocalArgument> local_arguments;            // needs_redistribute only
  size_t local_positional_count = 0;                     // when local_arguments is set
  std::vector<py::object> key_specs;
};

using CacheEntryPtr = std::shared_ptr<const CacheEntry>;

} // namespace torchshard
