#include "csrc/python/dispatch_rule.h"

#include "csrc/core/cache_config.h"
#include "csrc/python/dtensor_wrap.h"
#include "csrc/python/key_builder.h"
#include "csrc/python/local_call.h"
#include "csrc/python/op_descriptor.h"
#include "csrc/python/sharding_miss.h"
#include "csrc/python/thread_cache.h"

#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <structmember.h>

#include <memory>

namespace torchshard {
namespace {

struct NativeRuleObject {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  OpDescriptor* op;
};

PyObject* decline(DispatchCounters& counters, DeclineReason reason) {
  counters.count_decline(reason);
  Py_RETURN_NOTIMPLEMENTED;
}

PyObject* run_native(const OpDescriptor& op, const CacheEntry& entry, DispatchCounters& counters,
                     PyObject* args, PyObject* kwargs) {
  torch::jit::Stack stack;
  try {
    run_local_op(op, args, kwargs, stack);
  } catch (const std::exception&) {
    // Only functional ops get here, so no input was modified: stock DTensor
    // can run the call again and raise its own exception, type and message.
    PyErr_Clear();
    return decline(counters, DeclineReason::kLocalComputeFailed);
  }
  PyObject* result = nullptr;
  switch (wrap_local_results(op, entry, stack, &result)) {
    case WrapStatus::kOk:
      ++counters.native_calls;
      return result;
    case WrapStatus::kLayoutMismatch:
      return decline(counters, DeclineReason::kUnsupportedOutput);
    case WrapStatus::kPythonError:
      return nullptr;
  }
  return nullptr;
}

PyObject* dispatch(const OpDescriptor& op, PyObject* func, PyObject* args, PyObject* kwargs) {
  ThreadCache* cache = ThreadCache::current();
  if (cache == nullptr) {
    ThreadCache::count_decline_without_cache();
    Py_RETURN_NOTIMPLEMENTED;
  }
  DispatchCounters& counters = cache->counters();
  if (const auto reason = op.op_decline()) {
    return decline(counters, *reason);
  }
  if (cache_capacity() == 0) {
    return decline(counters, DeclineReason::kCacheDisabled);
  }
  if (c10::impl::TorchDispatchModeTLS::any_modes_set()) {
    return decline(counters, DeclineReason::kDispatchModeActive);
  }
  OpKey& key = cache->probe_key();
  if (const auto reason = build_op_key(op, args, kwargs, key)) {
    return decline(counters, *reason);
  }
  CacheEntryPtr entry = cache->find(key);
  if (!entry) {
    // The miss path runs Python, which may re-enter dispatch on this thread
    // and reuse the probe key: keep a copy for the insert.
    const OpKey miss_key = key;
    MissOutcome outcome = propagate_on_miss(op, miss_key, func, args, kwargs);
    if (outcome.python_error_pending) {
      counters.count_decline(DeclineReason::kPropagationFailed);
      return nullptr;
    }
    if (!outcome.entry) {
      return decline(counters, DeclineReason::kDecomposed);
    }
    entry = std::move(outcome.entry);
    cache->insert(miss_key, entry);
  }
  if (entry->decline) {
    return decline(counters, *entry->decline);
  }
  return run_native(op, *entry, counters, args, kwargs);
}

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
    return dispatch(*reinterpret_cast<NativeRuleObject*>(self)->op, func, args, kwargs);
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

PyTypeObject* create_native_rule_type() {
  static PyMemberDef members[] = {
      {"__vectorcalloffset__", T_PYSSIZET, offsetof(NativeRuleObject, vectorcall), READONLY, nullptr},
      {nullptr, 0, 0, 0, nullptr},
  };
  static PyType_Slot slots[] = {
      {Py_tp_dealloc, reinterpret_cast<void*>(&native_rule_dealloc)},
      {Py_tp_repr, reinterpret_cast<void*>(&native_rule_repr)},
      {Py_tp_call, reinterpret_cast<void*>(&PyVectorcall_Call)},
      {Py_tp_members, members},
      {Py_tp_doc, const_cast<char*>("torchshard's native torch_dispatch rule for one DTensor op.")},
      {0, nullptr},
  };
  static PyType_Spec spec = {
      "torchshard._C.NativeRule",
      sizeof(NativeRuleObject),
      0,
      Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
      slots,
  };
  return reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec));
}

py::object make_rule(py::handle overload, int64_t static_argnum,
                     std::vector<std::string> static_kwargkey, bool is_random,
                     bool has_custom_handler) {
  RuntimeSchemaInfo info{static_argnum, std::move(static_kwargkey)};
  auto op = std::make_unique<OpDescriptor>(overload.ptr(), std::move(info), is_random, has_custom_handler);
  auto* rule = PyObject_New(NativeRuleObject, native_rule_type);
  if (rule == nullptr) {
    throw py::error_already_set();
  }
  rule->vectorcall = native_rule_vectorcall;
  rule->op = op.release();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(rule));
}

std::optional<std::string> op_decline_reason(py::handle rule) {
  if (Py_TYPE(rule.ptr()) != native_rule_type) {
    throw py::type_error("expected a torchshard NativeRule");
  }
  const auto reason = reinterpret_cast<NativeRuleObject*>(rule.ptr())->op->op_decline();
  return reason ? std::optional<std::string>(decline_reason_name(*reason)) : std::nullopt;
}

} // namespace

void init_rule_bindings(py::module_& module) {
  native_rule_type = create_native_rule_type();
  if (native_rule_type == nullptr) {
    throw py::error_already_set();
  }
  Py_INCREF(native_rule_type);  // one reference for the module attribute, one kept here
  module.add_object("NativeRule", reinterpret_cast<PyObject*>(native_rule_type));
  module.def("make_rule", &make_rule, py::arg("op"), py::arg("static_argnum"),
             py::arg("static_kwargkey"), py::arg("is_random"),
             py::arg("has_custom_handler"),
             "Create the native torch_dispatch rule for one DTensor OpOverload.");
  module.def("op_decline_reason", &op_decline_reason, py::arg("rule"),
             "Why no call of the rule's op is served natively, or None.");
}

} // namespace torchshard
