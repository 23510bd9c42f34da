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

#include "csrc/core/export.h"
#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

namespace torchshard {

// Fills `key` (reset first, sealed at the end). Declines when the call cannot
// be keyed and must go to stock DTensor; a Python error when an interrupt was
// raised inside DTensorSpec.__hash__ (interop/spec_equality.h).
TORCHSHARD_API Status build_op_key(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                                   OpKey& key);

class DecisionKeyEncoder;

// Fills `key` with the call's decision key (decision_key.h): the same words,
// except that DTensors and size arguments are encoded by class. Declines
// when the call has an argument no decision covers (a plain tensor, a
// SymInt); the caller then propagates as for any miss.
Status build_decision_key(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                          DecisionKeyEncoder& encoder, OpKey& key);

} // namespace torchshard
