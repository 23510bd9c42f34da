#include "csrc/python/interop/vectorcall_type.h"

#include <structmember.h>

#include <vector>

namespace torchshard {
namespace {

PyTypeObject* create_vectorcall_type(const VectorcallTypeSpec& spec) {
  // Kept for the type's lifetime (the module's): the type may point at them.
  auto* members = new PyMemberDef[2]{
      {"__vectorcalloffset__", T_PYSSIZET, offsetof(VectorcallObject, vectorcall), READONLY, nullptr},
      {nullptr, 0, 0, 0, nullptr},
  };
  std::vector<PyType_Slot> slots = {
      {Py_tp_dealloc, reinterpret_cast<void*>(spec.dealloc)},
      {Py_tp_call, reinterpret_cast<void*>(&PyVectorcall_Call)},
      {Py_tp_members, members},
      {Py_tp_doc, const_cast<char*>(spec.doc)},
  };
  if (spec.repr != nullptr) {
    slots.push_back({Py_tp_repr, reinterpret_cast<void*>(spec.repr)});
  }
  slots.push_back({0, nullptr});
  PyType_Spec type_spec = {
      spec.name,
      static_cast<int>(spec.basic_size),
      0,
      Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
      slots.data(),
  };
  return reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&type_spec));
}

} // namespace

PyTypeObject* add_vectorcall_type(pybind11::module_& module, const char* attribute,
                                  const VectorcallTypeSpec& spec) {
  PyTypeObject* type = create_vectorcall_type(spec);
  if (type == nullptr) {
    throw pybind11::error_already_set();
  }
  Py_INCREF(type);  // one reference for the module attribute, one for the caller
  module.add_object(attribute, reinterpret_cast<PyObject*>(type));
  return type;
}

} // namespace torchshard
