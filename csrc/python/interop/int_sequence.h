// A Python list or tuple of exact ints as int64 values (a shape argument).
//
// Requires the GIL.
#pragma once

#include "csrc/core/view_shape.h"

#include <Python.h>

#include <optional>

namespace torchshard {

// nullopt for anything else: another type, an item that is not an exact int
// (a SymInt, a bool), or one that does not fit in int64.
inline std::optional<ViewShape> exact_int_sequence(PyObject* value) {
  if (!PyList_Check(value) && !PyTuple_Check(value)) {
    return std::nullopt;
  }
  ViewShape ints;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(value); ++i) {
    PyObject* item = PySequence_Fast_ITEMS(value)[i];
    if (!PyLong_CheckExact(item)) {
      return std::nullopt;
    }
    int overflow = 0;
    ints.push_back(PyLong_AsLongLongAndOverflow(item, &overflow));
    if (overflow != 0) {
      return std::nullopt;
    }
  }
  return ints;
}

} // namespace torchshard
