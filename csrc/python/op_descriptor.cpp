#include "csrc/python/op_descriptor.h"

#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <atomic>

namespace torchshard {
namespace {

std::atomic<uint64_t> next_key_id{1};

c10::OperatorHandle find_handle(PyObject* overload) {
  py::handle op(overload);
  py::object schema = op.attr("_schema");
  const auto name = schema.attr("name").cast<std::string>();
  const auto overload_name = schema.attr("overload_name").cast<std::string>();
  return c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), overload_name.c_str());
}

bool is_tensor_type(const c10::TypePtr& type) {
  return type->kind() == c10::TypeKind::TensorType;
}

bool is_tensor_list_type(const c10::TypePtr& type) {
  const auto list = type->cast<c10::ListType>();
  return list && is_tensor_type(list->getElementType());
}

} // namespace

OpDescriptor::OpDescriptor(PyObject* overload, RuntimeSchemaInfo info, bool is_random,
                           bool has_custom_handler)
    : overload_(overload),
      handle_(find_handle(overload)),
      info_(std::move(info)),
      key_id_(next_key_id.fetch_add(1, std::memory_order_relaxed)) {
  Py_INCREF(overload_);
  const auto& arguments = schema().arguments();
  static_argument_.resize(arguments.size());
  argument_names_.reserve(arguments.size());
  for (size_t i = 0; i < arguments.size(); ++i) {
    const auto& name = arguments[i].name();
    static_argument_[i] = std::find(info_.static_kwargkey.begin(), info_.static_kwargkey.end(),
                                    name) != info_.static_kwargkey.end();
    argument_names_.push_back(PyUnicode_InternFromString(name.c_str()));
    if (argument_names_.back() == nullptr) {
      throw py::error_already_set();
    }
  }
  op_decline_ = classify(is_random, has_custom_handler);
}

OpDescriptor::~OpDescriptor() {
  // Descriptors die with their rule object, i.e. with the GIL held.
  for (PyObject* name : argument_names_) {
    Py_XDECREF(name);
  }
  Py_DECREF(overload_);
}

std::optional<DeclineReason> OpDescriptor::classify(bool is_random, bool has_custom_handler) {
  if (is_random) {
    return DeclineReason::kRandomOp;
  }
  if (has_custom_handler) {
    return DeclineReason::kCustomHandler;
  }
  const auto& fn_schema = schema();
  const auto& arguments = fn_schema.arguments();
  if (std::any_of(arguments.begin(), arguments.end(), [](const c10::Argument& a) { return a.is_out(); })) {
    return DeclineReason::kOutVariantOp;
  }
  const bool writes_input = std::any_of(arguments.begin(), arguments.end(), [](const c10::Argument& a) {
    return a.alias_info() && a.alias_info()->isWrite();
  });
  // Stock DTensor treats a trailing underscore as in-place too.
  if (writes_input || (!fn_schema.name().empty() && fn_schema.name().back() == '_')) {
    return DeclineReason::kInplaceOp;
  }
  const auto& schema_returns = fn_schema.returns();
  if (std::any_of(schema_returns.begin(), schema_returns.end(),
                  [](const c10::Argument& r) { return r.alias_info() != nullptr; })) {
    return DeclineReason::kViewOp;
  }
  if (schema_returns.empty()) {
    return DeclineReason::kNonTensorReturn;
  }
  for (const auto& ret : schema_returns) {
    if (is_tensor_type(ret.real_type())) {
      returns_.push_back(ReturnKind::kTensor);
    } else if (is_tensor_list_type(ret.real_type())) {
      returns_.push_back(ReturnKind::kTensorList);
    } else {
      returns_.clear();
      return DeclineReason::kNonTensorReturn;
    }
  }
  return std::nullopt;
}

std::optional<size_t> OpDescriptor::argument_index(PyObject* name) const {
  for (size_t i = 0; i < argument_names_.size(); ++i) {
    // Interned names usually match by identity; fall back to comparing text.
    if (argument_names_[i] == name ||
        (PyUnicode_Check(name) && PyUnicode_Compare(argument_names_[i], name) == 0)) {
      return i;
    }
  }
  return std::nullopt;
}

} // namespace torchshard
