#include "csrc/python/interop/spec_equality.h"

#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

namespace torchshard {
namespace {

// Compares one attribute of both specs with ==. -1 means a Python error.
int attribute_equal(PyObject* lhs, PyObject* rhs, PyObject* name) {
  PyObject* left = PyObject_GetAttr(lhs, name);
  if (left == nullptr) {
    return -1;
  }
  PyObject* right = PyObject_GetAttr(rhs, name);
  if (right == nullptr) {
    Py_DECREF(left);
    return -1;
  }
  // RichCompareBool short-circuits on identity, the common case for meshes.
  const int equal = PyObject_RichCompareBool(left, right, Py_EQ);
  Py_DECREF(left);
  Py_DECREF(right);
  return equal;
}

int tensor_meta_equal(PyObject* lhs, PyObject* rhs) {
  const PyRefs& refs = py_refs();
  PyObject* left = PyObject_GetAttr(lhs, refs.str_tensor_meta);
  if (left == nullptr) {
    return -1;
  }
  PyObject* right = PyObject_GetAttr(rhs, refs.str_tensor_meta);
  if (right == nullptr) {
    Py_DECREF(left);
    return -1;
  }
  int equal;
  if (left == Py_None || right == Py_None) {
    equal = left == right;
  } else {
    equal = attribute_equal(left, right, refs.str_shape);
    if (equal == 1) {
      equal = attribute_equal(left, right, refs.str_stride);
    }
    if (equal == 1) {
      equal = attribute_equal(left, right, refs.str_dtype);
    }
  }
  Py_DECREF(left);
  Py_DECREF(right);
  return equal;
}

int structurally_equal(PyObject* lhs, PyObject* rhs) {
  const PyRefs& refs = py_refs();
  if (!PyObject_TypeCheck(lhs, refs.dtensor_spec_type) ||
      !PyObject_TypeCheck(rhs, refs.dtensor_spec_type)) {
    return 0;
  }
  for (PyObject* name : {refs.str_mesh, refs.str_placements, refs.str_shard_order}) {
    const int equal = attribute_equal(lhs, rhs, name);
    if (equal != 1) {
      return equal;
    }
  }
  return tensor_meta_equal(lhs, rhs);
}

} // namespace

std::vector<py::object> key_spec_objects(const OpKey& key) {
  std::vector<py::object> specs;
  specs.reserve(key.specs().size());
  for (const SpecHandle spec : key.specs()) {
    specs.push_back(py::reinterpret_borrow<py::object>(spec_object(spec)));
  }
  return specs;
}

Outcome<uint64_t> spec_structural_hash(PyObject* spec) {
  const auto failed = [] {
    return clear_unless_interrupt() ? Failure::python_error()
                                    : Failure::decline(DeclineReason::kSymbolicArg);
  };
  PyObject* cached = PyObject_GetAttr(spec, py_refs().str_hash);
  if (cached == nullptr) {
    return failed();
  }
  Py_hash_t hash = -1;
  if (PyLong_CheckExact(cached)) {
    hash = PyLong_AsSsize_t(cached);
  } else {
    // First use of this spec object: DTensorSpec.__hash__ fills `_hash`.
    hash = PyObject_Hash(spec);
  }
  Py_DECREF(cached);
  if (hash == -1 && PyErr_Occurred()) {
    return failed();
  }
  return static_cast<uint64_t>(hash);
}

SpecMatch match_specs(PyObject* lhs, PyObject* rhs) {
  if (lhs == rhs) {
    return SpecMatch::kEqual;
  }
  if (PyErr_Occurred()) {
    return SpecMatch::kInterrupted;
  }
  const int equal = structurally_equal(lhs, rhs);
  if (equal < 0) {
    return clear_unless_interrupt() ? SpecMatch::kInterrupted : SpecMatch::kDifferent;
  }
  return equal == 1 ? SpecMatch::kEqual : SpecMatch::kDifferent;
}

SpecMatch match_spec_handles(SpecHandle lhs, SpecHandle rhs) {
  return match_specs(spec_object(lhs), spec_object(rhs));
}

} // namespace torchshard
