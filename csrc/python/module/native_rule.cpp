#include "csrc/python/module/native_rule.h"

#include "csrc/python/hit/dispatch.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/vectorcall_type.h"

#include <memory>

namespace torchshard {
namespace {

struct NativeRuleObject : VectorcallObject {
  OpDescriptor* op;
};

PyObject* native_rule_vectorcall(PyObject* self, PyObject* const* argv, size_t nargsf,
                                 PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (nargs != 5 || (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) != 0)) {
    PyErr_SetString(PyExc_TypeError,
                    "NativeRule expects (cls, func, types, args, kwargs), as torch calls "
                    "torch_dispatch rules");
    return nullptr;
  }
  PyObject* func = argv[1];
  PyObject* args = argv[3];
  PyObject* kwargs = argv[4] == Py_None ? nullptr : argv[4];
  if (!PyTuple_Check(args) || (kwargs != nullptr && !PyDict_Check(kwargs))) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  try {
    return dispatch_and_record(*reinterpret_cast<NativeRuleObject*>(self)->op, func, args, kwargs);
  } catch (py::error_already_set& error) {
    error.restore();
    return nullptr;
  } catch (const std::exception& error) {
    PyErr_Format(PyExc_RuntimeError, "torchshard internal error: %s", error.what());
    return nullptr;
  }
}

void native_rule_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  delete reinterpret_cast<NativeRuleObject*>(self)->op;
  type->tp_free(self);
  Py_DECREF(type);  // instances of heap types own a reference to their type
}

PyObject* native_rule_repr(PyObject* self) {
  const OpDescriptor& op = *reinterpret_cast<NativeRuleObject*>(self)->op;
  return PyUnicode_FromFormat("<torchshard.NativeRule %s>", op.handle().operator_name().name.c_str());
}

// Created once by init_rule_bindings(); lives as long as the module.
PyTypeObject* native_rule_type = nullptr;

py::object make_rule(py::handle overload, int64_t static_argnum, bool value_blind_scalars,
                     bool is_random, bool has_custom_handler, bool shape_generic) {
  if (!init_py_refs()) {  // the first rule: DTensor has been imported by now (py_refs.h)
    throw py::error_already_set();
  }
  RuntimeSchemaInfo info{static_argnum, value_blind_scalars};
  OpTraits traits{is_random, has_custom_handler, shape_generic};
  auto op = std::make_unique<OpDescriptor>(overload.ptr(), std::move(info), traits);
  auto* rule = PyObject_New(NativeRuleObject, native_rule_type);
  if (rule == nullptr) {
    throw py::error_already_set();
  }
  rule->vectorcall = native_rule_vectorcall;
  rule->op = op.release();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(rule));
}

std::optional<std::string> op_decline_reason(py::handle rule) {
  const auto reason = native_rule_op(rule).op_decline();
  return reason ? std::optional<std::string>(decline_reason_name(*reason)) : std::nullopt;
}

} // namespace

const OpDescriptor& native_rule_op(py::handle rule) {
  if (Py_TYPE(rule.ptr()) != native_rule_type) {
    throw py::type_error("expected a torchshard NativeRule");
  }
  return *reinterpret_cast<NativeRuleObject*>(rule.ptr())->op;
}

void init_rule_bindings(py::module_& module) {
  native_rule_type = add_vectorcall_type(module, "NativeRule", {
      "torchshard._C.NativeRule",
      sizeof(NativeRuleObject),
      &native_rule_dealloc,
      &native_rule_repr,
      "torchshard's native torch_dispatch rule for one DTensor op.",
  });
  module.def("make_rule", &make_rule, py::arg("op"), py::arg("static_argnum"),
             py::arg("value_blind_scalars"), py::arg("is_random"),
             py::arg("has_custom_handler"), py::arg("shape_generic") = false,
             "Create the native torch_dispatch rule for one DTensor OpOverload.");
  module.def("op_decline_reason", &op_decline_reason, py::arg("rule"),
             "Why no call of the rule's op is served natively, or None.");
}

} // namespace torchshard
