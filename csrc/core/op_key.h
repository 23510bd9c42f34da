// OpKey: torchshard's native op-schema key, the key of the per-thread
// sharding-propagation cache.
//
// A key is a flat sequence of 64-bit words (a prefix-free encoding of the op,
// the positional-argument count and every argument that matters for sharding
// propagation) plus, in order, the DTensorSpec handles it mentions. The words
// decide the hash (XXH3) and most of equality; spec handles are compared by
// identity first and structurally only when the identities differ, through the
// comparator installed with set_spec_comparator().
//
// Invariants:
//  - Every spec handle is accompanied by a word holding the spec's structural
//    hash, so structurally equal keys always have equal words and hashes.
//  - The key does not own its spec handles. A key stored in a cache is kept
//    valid by its cache entry, which holds strong references to the same specs.
//  - Keys never leave the process: the hash seed and handle values are local.
#pragma once

#include "csrc/core/export.h"

#include <absl/container/inlined_vector.h>

#include <cstdint>
#include <span>

namespace torchshard {

// Tags make the encoding prefix-free: each tag is followed by a fixed number
// of payload words, so two different argument lists never encode alike.
enum class KeyTag : uint64_t {
  kOp = 1,            // + op id, positional count
  kSpec,              // + structural hash; a spec handle is appended too
  kNone,              //
  kBool,              // + value
  kInt,               // + value
  kDouble,            // + bit pattern
  kString,            // + XXH3 of the UTF-8 bytes, + length
  kEnumLike,          // + kind, + value (dtype, layout, memory format, device)
  kList,              // + length; the items follow
  kKwarg,             // + schema argument index; the value follows
  kPlainTensor,       // + dtype, + ndim; then sizes and strides
  kNumberKind,        // + kind (bool/int/float), value not keyed
  // Decision keys only (csrc/python/cache/decision_key.h):
  kDTensorClass,      // + layout id, + dtype, + ndim; then ndim size classes and 3 stride-class words
  kDimRef,            // + ordinal of an earlier DTensor argument, + its dim: a size equal to it
  kViewShape,         // + length, + mask of -1 entries; then the dimension groups
};

using SpecHandle = const void*;
// The answer of a structural spec comparison. kInterrupted: the comparison
// ran code that raised an interrupt (KeyboardInterrupt, SystemExit), which
// must reach the caller; the specs count as different.
enum class SpecMatch : uint8_t { kEqual, kDifferent, kInterrupted };
// Structural spec equality; must agree with the hash stored next to a spec.
using SpecComparator = SpecMatch (*)(SpecHandle lhs, SpecHandle rhs);

void set_spec_comparator(SpecComparator comparator);

class TORCHSHARD_API OpKey {
 public:
  OpKey() = default;

  // Starts a new key for `op_id` (stable for the process) and the number of
  // positional arguments after trailing defaults were dropped: clamp(t, None,
  // t2) and clamp(t, t2) differ only there.
  void reset(uint64_t op_id, uint64_t positional_count);

  void add(KeyTag tag) { words_.push_back(static_cast<uint64_t>(tag)); }
  void add(KeyTag tag, uint64_t payload) {
    add(tag);
    words_.push_back(payload);
  }
  void add(KeyTag tag, uint64_t first, uint64_t second) {
    add(tag, first);
    words_.push_back(second);
  }
  void add_raw(uint64_t word) { words_.push_back(word); }
  void add_spec(SpecHandle spec, uint64_t structural_hash) {
    add(KeyTag::kSpec, structural_hash);
    specs_.push_back(spec);
  }

  // Hashes the words; call once after the last add and before any lookup.
  void seal();

  uint64_t hash() const { return hash_; }
  std::span<const SpecHandle> specs() const { return {specs_.data(), specs_.size()}; }

  // Equal words and structurally equal specs. A comparison the comparator
  // reports as interrupted answers false and marks both keys; the cache
  // checks the mark on its probe key after a lookup (see thread_cache.h).
  bool operator==(const OpKey& other) const;
  bool comparison_interrupted() const { return comparison_interrupted_; }
  void clear_comparison_interrupted() const { comparison_interrupted_ = false; }

 private:
  absl::InlinedVector<uint64_t, 16> words_;
  absl::InlinedVector<SpecHandle, 4> specs_;
  uint64_t hash_ = 0;
  mutable bool comparison_interrupted_ = false;
};

struct OpKeyHash {
  size_t operator()(const OpKey& key) const { return static_cast<size_t>(key.hash()); }
};

// XXH3 of arbitrary bytes, for string arguments.
uint64_t hash_bytes(const void* data, size_t size);

} // namespace torchshard
