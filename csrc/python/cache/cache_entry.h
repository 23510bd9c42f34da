// CacheEntry: what one sharding-propagation cache miss decided for a key.
//
// Either a cached decline (the call goes to stock DTensor, cheaply, for the
// recorded reason) or a NativePlan: how the local results come to be (run
// the op locally, possibly on redistributed arguments; stand in for it off
// the mesh; or nothing, for a mutating op off the mesh) and how they are
// returned (wrapped with cached output specs, the in-place argument, or the
// out= arguments). Each step is a type of its own, built on the miss (see
// csrc/python/miss/) and applied on every hit (csrc/python/hit/); a field
// exists only where its op kind uses it. Reusing the same spec objects for
// every hit makes the next op's key compare them by identity.
//
// Invariants: immutable once built; holds strong references to every spec its
// key points at (key_specs) so the key's borrowed handles stay valid; is
// destroyed with the GIL held (see thread_cache.h).
#pragma once

#include "csrc/core/decline_reason.h"

#include <c10/core/ScalarType.h>
#include <torch/csrc/utils/pybind.h>

#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace torchshard {

// Per schema return: one spec for a Tensor, one per element for a Tensor[]
// (None for an output the op did not compute).
using ReturnSpecs = std::vector<std::vector<py::object>>;

// ---- How the local results come to be -------------------------------------

// Partial -> Replicate on one mesh dimension, run as the all_reduce +
// wait_tensor stock's redistribute_local_tensor runs (hit/all_reduce.h).
struct NativeAllReduce {
  std::string reduce_op;   // lower-cased, as funcol passes it
  std::string group_name;  // the process group of (mesh, mesh_dim)
};

// A non-tensor positional argument the local call takes from stock's
// suggested schema instead of the caller's (a view's shape made local).
struct Replacement {
  size_t position;
  py::object value;
};

// A DTensor argument (or an item of a list argument, for the foreach ops)
// whose local tensor is redistributed from one spec to another first.
struct Redistribution {
  size_t position;
  std::optional<size_t> item;
  py::object from_spec;
  py::object to_spec;
  std::optional<NativeAllReduce> all_reduce;  // when stock runs it as one all_reduce
};

using ChangedArgument = std::variant<Replacement, Redistribution>;

// Run the op on this rank's local tensors. With changed arguments, the local
// call takes `positional_count` positional values, some of them changed.
struct RunLocally {
  std::vector<ChangedArgument> changed_arguments;
  size_t positional_count = 0;

  static RunLocally as_called() { return {}; }
  static RunLocally redistributed(std::vector<ChangedArgument> changed, size_t positional_count) {
    return {std::move(changed), positional_count};
  }
};

// The local result a rank outside the op's mesh stands in with, per output
// spec: torch.zeros((), dtype) for a 0-d spec, else torch.tensor([], dtype).
struct AbsentLocal {
  c10::ScalarType dtype;
  bool zero_dim;
};

// Off the mesh, a functional or view op: stock's stand-in results, shaped like
// ReturnSpecs.
struct StandIn {
  std::vector<std::vector<AbsentLocal>> locals;
};

// Off the mesh, an in-place or out= op: nothing runs locally.
struct SkipLocal {};

using LocalStep = std::variant<RunLocally, StandIn, SkipLocal>;

// ---- How the results are returned ------------------------------------------

// Functional and view ops: each local result becomes a DTensor of its spec.
struct WrapResults {
  ReturnSpecs specs;
  bool shares_view_storage = false;  // a participating view op
};

// In-place ops, as stock's _dispatch_fast_path_python_tail decides from the
// output spec: None without one, else args[0], respecced when the placements
// changed (then `new_spec` is set).
struct ReturnInplace {
  enum class Kind : uint8_t { kNone, kSelf, kRespecced };
  Kind kind = Kind::kNone;
  py::object new_spec;

  static ReturnInplace none() { return {Kind::kNone, {}}; }
  static ReturnInplace self() { return {Kind::kSelf, {}}; }
  static ReturnInplace respecced(py::object spec) { return {Kind::kRespecced, std::move(spec)}; }
};

// out= ops: each out= DTensor takes its output spec (one per out= argument).
struct ReturnOutArguments {
  std::vector<py::object> specs;
};

using ResultStep = std::variant<WrapResults, ReturnInplace, ReturnOutArguments>;

struct NativePlan {
  LocalStep local;
  ResultStep result;
};

// ---- The entry ---------------------------------------------------------------

class CacheEntry {
 public:
  static CacheEntry declined(DeclineReason reason, std::vector<py::object> key_specs) {
    return CacheEntry(reason, std::move(key_specs));
  }
  static CacheEntry native(NativePlan plan, std::vector<py::object> key_specs) {
    return CacheEntry(std::move(plan), std::move(key_specs));
  }

  // The reason every call of this key goes to stock, or nullptr.
  const DeclineReason* decline() const { return std::get_if<DeclineReason>(&decision_); }
  // The plan, when the entry is not a decline.
  const NativePlan& plan() const { return *std::get_if<NativePlan>(&decision_); }

 private:
  CacheEntry(std::variant<DeclineReason, NativePlan> decision, std::vector<py::object> key_specs)
      : decision_(std::move(decision)), key_specs_(std::move(key_specs)) {}

  std::variant<DeclineReason, NativePlan> decision_;
  std::vector<py::object> key_specs_;  // keeps the key's borrowed spec handles alive
};

using CacheEntryPtr = std::shared_ptr<const CacheEntry>;

} // namespace torchshard
