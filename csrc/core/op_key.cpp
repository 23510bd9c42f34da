#include "csrc/core/op_key.h"

#include <xxhash.h>

#include <atomic>
#include <cstring>

namespace torchshard {
namespace {

SpecMatch identity_only(SpecHandle lhs, SpecHandle rhs) {
  return lhs == rhs ? SpecMatch::kEqual : SpecMatch::kDifferent;
}

// Installed once at module init, before any key is compared.
std::atomic<SpecComparator> spec_comparator{&identity_only};

} // namespace

void set_spec_comparator(SpecComparator comparator) {
  spec_comparator.store(comparator ? comparator : &identity_only, std::memory_order_release);
}

void OpKey::reset(uint64_t op_id, uint64_t positional_count) {
  words_.clear();
  specs_.clear();
  hash_ = 0;
  add(KeyTag::kOp, op_id, positional_count);
}

void OpKey::seal() {
  hash_ = XXH3_64bits(words_.data(), words_.size() * sizeof(uint64_t));
}

bool OpKey::operator==(const OpKey& other) const {
  if (hash_ != other.hash_ || words_.size() != other.words_.size() ||
      specs_.size() != other.specs_.size()) {
    return false;
  }
  if (std::memcmp(words_.data(), other.words_.data(), words_.size() * sizeof(uint64_t)) != 0) {
    return false;
  }
  const SpecComparator structurally_equal = spec_comparator.load(std::memory_order_acquire);
  for (size_t i = 0; i < specs_.size(); ++i) {
    // Identity is the common case on a hit: outputs reuse cached spec objects.
    if (specs_[i] == other.specs_[i]) {
      continue;
    }
    const SpecMatch match = structurally_equal(specs_[i], other.specs_[i]);
    if (match != SpecMatch::kEqual) {
      if (match == SpecMatch::kInterrupted) {
        comparison_interrupted_ = true;
        other.comparison_interrupted_ = true;
      }
      return false;
    }
  }
  return true;
}

uint64_t hash_bytes(const void* data, size_t size) {
  return XXH3_64bits(data, size);
}

} // namespace torchshard
