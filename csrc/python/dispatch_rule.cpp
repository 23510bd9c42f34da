#include "csrc/python/dispatch_rule.h"

#include "csrc/core/cache_config.h"
#include "csrc/python/dtensor_wrap.h"
#include "csrc/python/key_builder.h"
#include "csrc/python/local_call.h"
#include "csrc/python/local_redistribution.h"
#include "csrc/python/mutated_result.h"
#include "csrc/python/op_descriptor.h"
#include "csrc/python/op_tally.h"
#include "csrc/python/sharding_miss.h"
#include "csrc/python/thread_cache.h"
#include "csrc/python/vectorcall_type.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>

#include <memory>

namespace torchshard {
namespace {

struct NativeRuleObject : VectorcallObject {
  OpDescriptor* op;
};

PyObject* decline(CallOutcome& outcome, DeclineReason reason) {
  outcome.decline = reason;
  Py_RETURN_NOTIMPLEMENTED;
}

// Runs the local op, or (off the mesh) stands in for its results. Returns
// false with `outcome` set when the call must not continue natively: either
// declined (*result is NotImplemented) or raising (*result is nullptr).
bool compute_local_results(const OpDescriptor& op, const CacheEntry& entry, PyObject* args,
                           PyObject* kwargs, torch::jit::Stack& stack, CallOutcome& outcome,
                           PyObject** result) {
  if (!entry.participating) {
    if (op.kind() == OpKind::kFunctional || op.kind() == OpKind::kView) {
      // Stock builds the stand-ins with torch factory calls, which a torch
      // function mode (e.g. a default device) would see; leave those to it.
      if (at::impl::torch_function_mode_enabled()) {
        *result = decline(outcome, DeclineReason::kNotParticipating);
        return false;
      }
      absent_local_results(entry, op.returns(), stack);
    }
    return true;
  }
  const bool mutates = op.writes_arguments();
  std::vector<py::object> overrides;
  if (!entry.local_arguments.empty()) {
    DeclineReason reason{};
    if (!local_arguments_for_call(entry, args, overrides, &reason)) {
      *result = decline(outcome, reason);
      return false;
    }
  }
  try {
    run_local_op(op, args, kwargs, overrides, stack);
    return true;
  } catch (py::error_already_set& error) {
    if (mutates) {
      error.restore();
    }
  } catch (const std::exception&) {
    if (mutates) {
      torch::translate_exception_to_python(std::current_exception());
    }
  }
  if (mutates) {
    // An input may already be partly written, so stock must not run the
    // call again: raise the local op's own exception, which is what stock
    // raises from the same kernel.
    outcome.decline = DeclineReason::kLocalComputeFailed;
    *result = nullptr;
    return false;
  }
  // Nothing was modified: stock runs the call again and raises its own
  // exception, type and message.
  PyErr_Clear();
  *result = decline(outcome, DeclineReason::kLocalComputeFailed);
  return false;
}

PyObject* run_native(const OpDescriptor& op, const CacheEntry& entry, PyObject* func,
                     PyObject* args, PyObject* kwargs, CallOutcome& outcome) {
  torch::jit::Stack stack;
  PyObject* result = nullptr;
  if (!compute_local_results(op, entry, args, kwargs, stack, outcome, &result)) {
    return result;
  }
  switch (op.kind()) {
    case OpKind::kInplace:
      result = inplace_result(entry, func, args, kwargs);
      break;
    case OpKind::kOutVariant:
      result = out_variant_result(op, entry, args, kwargs);
      break;
    case OpKind::kFunctional:
    case OpKind::kView:
      switch (wrap_local_results(op, entry, args, kwargs, stack, &result)) {
        case WrapStatus::kOk:
          break;
        case WrapStatus::kLayoutMismatch:
          return decline(outcome, DeclineReason::kUnsupportedOutput);
        case WrapStatus::kPythonError:
          return nullptr;
      }
      break;
  }
  outcome.native = result != nullptr;
  return result;
}

PyObject* dispatch(const OpDescriptor& op, ThreadCache& cache, PyObject* func, PyObject* args,
                   PyObject* kwargs, CallOutcome& outcome) {
  if (const auto reason = op.op_decline()) {
    return decline(outcome, *reason);
  }
  if (cache_capacity() == 0) {
    return decline(outcome, DeclineReason::kCacheDisabled);
  }
  if (c10::impl::TorchDispatchModeTLS::any_modes_set()) {
    return decline(outcome, DeclineReason::kDispatchModeActive);
  }
  OpKey& key = cache.probe_key();
  if (const auto reason = build_op_key(op, args, kwargs, key)) {
    if (PyErr_Occurred()) {
      return nullptr;  // an interrupt raised inside DTensorSpec.__hash__ (spec_equality.h)
    }
    return decline(outcome, *reason);
  }
  CacheEntryPtr entry = cache.find(key);
  if (PyErr_Occurred()) {
    return nullptr;  // an interrupt raised inside a structural spec comparison
  }
  outcome.lookup = entry ? CallOutcome::Lookup::kHit : CallOutcome::Lookup::kMiss;
  if (!entry) {
    // The miss path runs Python, which may re-enter dispatch on this thread
    // and reuse the probe key: keep a copy for the insert.
    const OpKey miss_key = key;
    MissOutcome miss = propagate_on_miss(op, miss_key, func, args, kwargs);
    if (miss.python_error_pending) {
      outcome.decline = DeclineReason::kPropagationFailed;
      return nullptr;
    }
    if (!miss.entry) {
      return decline(outcome, DeclineReason::kDecomposed);
    }
    entry = std::move(miss.entry);
    cache.insert(miss_key, entry);
  }
  if (entry->decline) {
    return decline(outcome, *entry->decline);
  }
  return run_native(op, *entry, func, args, kwargs, outcome);
}

// Dispatches one call and records what happened to it.
PyObject* dispatch_and_record(const OpDescriptor& op, PyObject* func, PyObject* args,
                              PyObject* kwargs) {
  ThreadCache* cache = ThreadCache::current();
  CallOutcome outcome;
  if (cache == nullptr) {
    ThreadCache::count_decline_without_cache();
    if (op_tallies_enabled()) {
      record_op_call(op, CallOutcome{CallOutcome::Lookup::kNone, DeclineReason::kNoThreadCache, false});
    }
    Py_RETURN_NOTIMPLEMENTED;
  }
  PyObject* result = dispatch(op, *cache, func, args, kwargs, outcome);
  cache->counters().record(outcome);
  if (op_tallies_enabled()) {
    record_op_call(op, outcome);
  }
  return result;
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

py::object make_rule(py::handle overload, int64_t static_argnum,
                     bool value_blind_scalars,
                     bool is_random, bool has_custom_handler) {
  RuntimeSchemaInfo info{static_argnum, value_blind_scalars};
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
             py::arg("has_custom_handler"),
             "Create the native torch_dispatch rule for one DTensor OpOverload.");
  module.def("op_decline_reason", &op_decline_reason, py::arg("rule"),
             "Why no call of the rule's op is served natively, or None.");
}

} // namespace torchshard
