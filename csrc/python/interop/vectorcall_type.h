// Heap types for the C callables torchshard registers as torch_dispatch rules.
//
// torch calls a rule as rule(cls, func, types, args, kwargs) on every DTensor
// op call, so rules are called through PEP 590 vectorcall: no argument tuple
// is packed. Every instance struct of such a type starts with
// VectorcallObject's layout (PyObject_HEAD, then the vectorcall pointer).
// NativeRule (module/native_rule.cpp) and the benchmark-only FloorRule
// (csrc/bench/bench_probes.cpp) are built here.
//
// Requires the GIL.
#pragma once

#include "csrc/core/export.h"

#include <torch/csrc/utils/pybind.h>

#include <cstddef>

namespace torchshard {

struct VectorcallObject {
  PyObject_HEAD
  vectorcallfunc vectorcall;
};

struct VectorcallTypeSpec {
  const char* name;       // "torchshard._C.Name"; must outlive the type (a literal)
  size_t basic_size;      // sizeof the instance struct
  destructor dealloc;     // frees the instance and drops its reference to the type
  reprfunc repr;          // nullptr for the default
  const char* doc;
};

// Creates the heap type and adds it to `module` as `attribute`; throws the
// Python error if it cannot be made. The returned reference is the caller's to
// keep: the type lives as long as the module that made it.
TORCHSHARD_API PyTypeObject* add_vectorcall_type(pybind11::module_& module, const char* attribute,
                                                 const VectorcallTypeSpec& spec);

} // namespace torchshard
