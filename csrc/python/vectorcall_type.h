// Heap types for the C callables torchshard registers as torch_dispatch rules.
//
// torch calls a rule as rule(cls, func, types, args, kwargs) on every DTensor
// op call, so rules are called through PEP 590 vectorcall: no argument tuple
// is packed. Every instance struct of such a type starts with
// VectorcallObject's layout (PyObject_HEAD, then the vectorcall pointer).
// NativeRule (dispatch_rule.cpp) and the benchmark-only FloorRule
// (bench_probes.cpp) are built here.
//
// Requires the GIL.
#pragma once

#include <Python.h>

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

// A new heap type, or nullptr with a Python error set. Types made here live as
// long as the module that made them.
PyTypeObject* create_vectorcall_type(const VectorcallTypeSpec& spec);

} // namespace torchshard
