// Structural hashing and equality of DTensorSpec objects, as the native key
// needs them.
//
// Must stay in step with DTensorSpec.__hash__ / _check_equals in
// torch/distributed/tensor/_dtensor_spec.py: equal specs are those with equal
// mesh, placements and shard_order, and, when both have tensor_meta, equal
// shape, stride and dtype (a missing tensor_meta only equals a missing one).
// The hash is the spec's own cached Python hash, so it agrees with that
// equality by construction.
//
// All functions require the GIL.
#pragma once

#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"

#include <Python.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <vector>

namespace torchshard {

// Errors raised by the Python code these functions run (DTensorSpec.__hash__,
// DeviceMesh.__eq__, ...) are cleared when they are Exceptions: the call then
// declines and stock, running the same code, raises its own. Any other
// BaseException (KeyboardInterrupt or SystemExit from a signal handler) is not
// the call's and arrives only once, so it is left set for the rule to raise,
// as stock's own hash/eq would: a Failure::python_error() from the hash, a
// SpecMatch::kInterrupted from the comparison.

// Spec handles in keys are DTensorSpec objects.
inline PyObject* spec_object(SpecHandle handle) {
  return static_cast<PyObject*>(const_cast<void*>(handle));
}
inline SpecHandle spec_handle(PyObject* spec) {
  return spec;
}

// Strong references to the specs a key points at, for the entry that keeps
// them alive (cache_entry.h).
std::vector<py::object> key_spec_objects(const OpKey& key);

// The spec's hash: its cached `_hash` field, computed through hash(spec) the
// first time only. Declines (kSymbolicArg) if it cannot be hashed, e.g. a spec
// with symbolic shapes.
Outcome<uint64_t> spec_structural_hash(PyObject* spec);

// DTensorSpec equality without calling DTensorSpec.__eq__. A Python Exception
// raised by a component's comparison counts as "different"; with an error
// already set (an interrupt left by an earlier comparison of the same probe)
// it runs no Python and answers kInterrupted again.
SpecMatch match_specs(PyObject* lhs, PyObject* rhs);

// The SpecComparator installed into csrc/core/op_key.h at module init.
SpecMatch match_spec_handles(SpecHandle lhs, SpecHandle rhs);

} // namespace torchshard
