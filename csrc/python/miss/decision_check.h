// The safety net of shape-generic decisions: a reused decision's entry is
// compared with the entry stock's own propagation makes for the same call
// (TORCHSHARD_VERIFY_DECISIONS decides when; shape_generic_miss.h).
//
// Requires the GIL (compares specs with DTensorSpec.__eq__).
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

namespace torchshard {

// Whether both entries plan the same call alike: the same local step and the
// same results, every output spec equal (mesh, placements, shard order,
// shape, stride, dtype). A comparison that raises an Exception counts as a
// disagreement; an interrupt is a Python error.
Outcome<bool> entries_agree(const CacheEntry& reused, const CacheEntry& stock);

// Logs, once per retired decision, the op and both answers (logger
// "torchshard", level WARNING). A logging failure is dropped; an interrupt
// raised meanwhile is a Python error.
Status log_conflict(const OpDescriptor& op, const CacheEntry& reused, const CacheEntry& stock);

} // namespace torchshard
