// make_dtensor: a new DTensor over a local tensor and a spec, built the way
// DTensor.__new__ builds one: torch.Tensor._dtensor__new__(cls, local, spec,
// requires_grad), the C++ constructor DTensor.__new__ is bound to (shape and
// stride from spec.tensor_meta, dtype and device from the local tensor).
// Calling it directly skips only DTensor.__init__, which does nothing: one C
// call, no Python frame.
//
// Requires the GIL.
#pragma once

#include "csrc/core/export.h"

#include <Python.h>

namespace torchshard {

// New reference, or nullptr with a Python error set.
TORCHSHARD_API PyObject* make_dtensor(PyObject* local_tensor, PyObject* spec, bool requires_grad);

} // namespace torchshard
