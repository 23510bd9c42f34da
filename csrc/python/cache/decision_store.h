// Shape-generic decisions: what stock decided for a decision key
// (decision_key.h), with the sizes left out, and one thread's store of them.
//
// A Decision holds either the result step to reuse, whose specs are
// templates (their mesh, placements and shard order are kept; tensor_meta is
// computed anew for every shape: miss/decision_reuse.h), or nothing: stock's
// plan for that key read sizes (it redistributes anything but a replicated
// argument, which stock chose by a cost that reads sizes; it runs off the
// mesh; it writes out= arguments), so those calls always propagate. The
// changes of arguments a decision keeps are those whose choice reads no size
// (miss/argument_change_reuse.h). A decision that disagreed with stock once
// is retired for good.
//
// Threads: each thread has its own store, inside its ThreadCache
// (thread_cache.h), bounded and flushed like the exact cache and cleared with
// it. A decision lookup compares words only and runs no Python.
//
// Invariants: destroyed with the GIL held (decisions hold spec objects).
#pragma once

#include "csrc/core/bounded_cache.h"
#include "csrc/core/op_key.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/decision_key.h"

#include <absl/container/flat_hash_set.h>

#include <memory>
#include <optional>

namespace torchshard {

struct Decision {
  std::optional<ResultStep> reusable;  // nullopt: stock's plan for this key reads sizes
  // How the local call's arguments change, as templates replayed for every
  // call (miss/argument_change_reuse.h): a sharded view's local shape, and
  // redistributions of replicated arguments.
  RunLocally replayed_changes;  // meaningful only with `reusable`
  bool verified = false;  // agreed with stock on a shape it was not made from
  bool retired = false;   // disagreed with stock: never reused again
};

using DecisionPtr = std::shared_ptr<Decision>;

class DecisionStore {
 public:
  DecisionPtr find(const OpKey& key) const {
    const DecisionPtr* found = decisions_.find(key);
    return found ? *found : nullptr;
  }
  // Returns how many decisions were evicted to make room.
  size_t insert(const OpKey& key, DecisionPtr decision, size_t capacity) {
    return decisions_.insert(key, std::move(decision), capacity);
  }
  size_t size() const { return decisions_.size(); }

  // Whether a decision was ever made for this op and these layouts
  // (DecisionKeyEncoder::layout_signature), whatever the sizes: tells
  // kNewSizeClass from kNewLayout. Bounded like the decisions.
  bool seen_layouts(uint64_t signature) const { return layout_signatures_.contains(signature); }
  void note_layouts(uint64_t signature, size_t capacity) {
    if (layout_signatures_.size() >= capacity) {
      layout_signatures_.clear();
    }
    layout_signatures_.insert(signature);
  }

  LayoutTable& layouts() { return layouts_; }

  // Everything the store holds, moved out so the caller can drop it with the
  // GIL and outside any lock.
  struct Contents {
    BoundedCache<DecisionPtr>::Map decisions;
    py::object layouts;
  };
  Contents take_all() {
    layout_signatures_.clear();
    return {decisions_.take_all(), py::reinterpret_steal<py::object>(layouts_.release())};
  }

 private:
  BoundedCache<DecisionPtr> decisions_;
  LayoutTable layouts_;
  absl::flat_hash_set<uint64_t> layout_signatures_;
};

} // namespace torchshard
