// Builds the native cache key (csrc/core/op_key.h) for one call of a DTensor
// op from the Python arguments its dispatch rule receives.
//
// What is keyed mirrors DTensor's OpSchema comparison key: the op, the number
// of positional args (after trailing defaults were dropped), every DTensor's
// spec, every None, lists as length plus items, every plain tensor stock
// would replicate (by dtype/shape/stride, since stock builds a fresh
// replicated spec for it), non-tensor positional values only where the op's
// RuntimeSchemaInfo says they affect sharding (index >= static_argnum), and
// every keyword value (a dtype= changes the output spec even where stock's
// key ignores it). Ops whose strategy is
// value-blind (RuntimeSchemaInfo::value_blind_scalars) key a Python number by
// its kind only. Step-varying scalars such as a learning rate, a bias
// correction or a foreach scalar list therefore never grow the cache.
//
// Requires the GIL.
#pragma once

#include "csrc/core/decline_reason.h"
#include "csrc/core/op_key.h"
#include "csrc/python/op_descriptor.h"

#include <Python.h>

#include <optional>

namespace torchshard {

// Fills `key` (reset first, sealed at the end). Returns a reason instead when
// the call cannot be keyed and must go to stock DTensor.
std::optional<DeclineReason> build_op_key(const OpDescriptor& op, PyObject* args,
                                          PyObject* kwargs, OpKey& key);

} // namespace torchshard
