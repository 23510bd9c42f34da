#include "csrc/python/cache/op_descriptor.h"

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

// Tensor, Tensor?, Scalar, and the numbers and bools a Scalar can be.
bool is_elementwise_argument_type(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
    case c10::TypeKind::NumberType:
    case c10::TypeKind::FloatType:
    case c10::TypeKind::IntType:
    case c10::TypeKind::BoolType:
      return true;
    case c10::TypeKind::OptionalType:
      return type->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::TensorType;
    default:
      return false;
  }
}

bool is_symint_type(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::SymIntType) {
    return true;
  }
  if (const auto* optional = type->castRaw<c10::OptionalType>()) {
    return is_symint_type(optional->getElementType());
  }
  if (const auto* list = type->castRaw<c10::ListType>()) {
    return is_symint_type(list->getElementType());
  }
  return false;
}

// Index 1 of a default-overload view op whose argument 1 is its SymInt[] shape.
std::optional<size_t> view_shape_index(const c10::FunctionSchema& schema) {
  const auto& name = schema.operator_name();
  const bool view_op = name.overload_name.empty() &&
      (name.name == "aten::view" || name.name == "aten::_unsafe_view" || name.name == "aten::reshape");
  const auto& arguments = schema.arguments();
  if (!view_op || arguments.size() != 2 || arguments[1].real_type()->kind() != c10::TypeKind::ListType ||
      !is_symint_type(arguments[1].real_type())) {
    return std::nullopt;
  }
  return 1;
}

} // namespace

OpDescriptor::OpDescriptor(PyObject* overload, RuntimeSchemaInfo info, OpTraits traits)
    : overload_(overload),
      handle_(find_handle(overload)),
      info_(std::move(info)),
      key_id_(next_key_id.fetch_add(1, std::memory_order_relaxed)) {
  Py_INCREF(overload_);
  const auto& arguments = schema().arguments();
  argument_names_.reserve(arguments.size());
  for (size_t i = 0; i < arguments.size(); ++i) {
    const auto& name = arguments[i].name();
    argument_names_.push_back(PyUnicode_InternFromString(name.c_str()));
    if (argument_names_.back() == nullptr) {
      throw py::error_already_set();
    }
    size_arguments_.push_back(is_symint_type(arguments[i].real_type()));
    has_size_arguments_ = has_size_arguments_ || size_arguments_.back();
  }
  view_shape_argument_ = view_shape_index(schema());
  shape_generic_ = traits.shape_generic;
  op_decline_ = classify(traits);
  elementwise_ = !op_decline_ && kind_ == OpKind::kFunctional && info_.value_blind_scalars &&
      returns_.size() == 1 && returns_[0] == ReturnKind::kTensor &&
      std::all_of(arguments.begin(), arguments.end(),
                  [](const c10::Argument& a) { return is_elementwise_argument_type(a.real_type()); });
}

std::string OpDescriptor::display_name() const {
  const auto& name = schema().operator_name();
  if (name.overload_name.empty()) {
    return name.name;
  }
  std::string text = name.name;
  text += '.';
  text += name.overload_name;
  return text;
}

OpDescriptor::~OpDescriptor() {
  // Descriptors die with their rule object, i.e. with the GIL held.
  for (PyObject* name : argument_names_) {
    Py_XDECREF(name);
  }
  Py_DECREF(overload_);
}

std::optional<DeclineReason> OpDescriptor::classify(const OpTraits& traits) {
  if (traits.is_random) {
    return DeclineReason::kRandomOp;
  }
  if (traits.has_custom_handler) {
    return DeclineReason::kCustomHandler;
  }
  const auto& fn_schema = schema();
  const auto& arguments = fn_schema.arguments();
  is_inplace_view_ = handle_.hasTag(at::Tag::inplace_view);
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (arguments[i].is_out()) {
      out_arguments_.push_back(i);
    }
  }
  if (!out_arguments_.empty()) {
    kind_ = OpKind::kOutVariant;
    writes_arguments_ = true;
    // Stock returns the out= tensors themselves, one per Tensor return.
    const auto& schema_returns = fn_schema.returns();
    const bool one_tensor_per_out =
        schema_returns.size() == out_arguments_.size() &&
        std::all_of(schema_returns.begin(), schema_returns.end(),
                    [](const c10::Argument& r) { return is_tensor_type(r.real_type()); });
    if (!one_tensor_per_out) {
      return DeclineReason::kOutVariantOp;
    }
    returns_.assign(schema_returns.size(), ReturnKind::kTensor);
    return std::nullopt;
  }
  writes_arguments_ = std::any_of(arguments.begin(), arguments.end(), [](const c10::Argument& a) {
    return a.alias_info() && a.alias_info()->isWrite();
  });
  // Stock's rule (OpSchema.is_inplace_op): in-place means a trailing
  // underscore, nothing else. Ops that write an argument without one
  // (rrelu_with_noise's noise, batch norm's running stats) return their own
  // fresh results, wrapped like any functional op's.
  if (!fn_schema.name().empty() && fn_schema.name().back() == '_') {
    // Stock returns None or args[0] whatever the schema says it returns.
    kind_ = OpKind::kInplace;
    writes_arguments_ = true;
    return std::nullopt;
  }
  const auto& schema_returns = fn_schema.returns();
  const bool returns_alias = std::any_of(schema_returns.begin(), schema_returns.end(),
                                         [](const c10::Argument& r) { return r.alias_info() != nullptr; });
  if (auto reason = classify_returns()) {
    return reason;
  }
  if (returns_alias) {
    kind_ = OpKind::kView;
    return classify_view_sources();
  }
  return std::nullopt;
}

std::optional<DeclineReason> OpDescriptor::classify_returns() {
  const auto& schema_returns = schema().returns();
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

std::optional<DeclineReason> OpDescriptor::classify_view_sources() {
  const auto& arguments = schema().arguments();
  for (size_t r = 0; r < returns_.size(); ++r) {
    const c10::AliasInfo* alias = schema().returns()[r].alias_info();
    if (returns_[r] == ReturnKind::kTensorList || alias == nullptr) {
      view_sources_.push_back(std::nullopt);
      continue;
    }
    if (alias->isWrite()) {
      return DeclineReason::kViewOp;
    }
    const auto source = std::find_if(arguments.begin(), arguments.end(), [&](const c10::Argument& a) {
      const c10::AliasInfo* arg_alias = a.alias_info();
      if (arg_alias == nullptr || arg_alias->isWrite() || !is_tensor_type(a.real_type())) {
        return false;
      }
      return std::any_of(alias->beforeSets().begin(), alias->beforeSets().end(),
                         [&](const c10::Symbol& set) { return arg_alias->beforeSets().count(set) > 0; });
    });
    if (source == arguments.end()) {
      return DeclineReason::kViewOp;
    }
    view_sources_.push_back(static_cast<size_t>(source - arguments.begin()));
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

PyObject* OpDescriptor::argument_value(PyObject* args, PyObject* kwargs, size_t index) const {
  if (static_cast<Py_ssize_t>(index) < PyTuple_GET_SIZE(args)) {
    return PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(index));
  }
  if (kwargs == nullptr || PyDict_GET_SIZE(kwargs) == 0) {
    return nullptr;
  }
  PyObject* value = PyDict_GetItemWithError(kwargs, argument_names_[index]);
  if (value == nullptr && PyErr_Occurred()) {
    throw py::error_already_set();
  }
  return value;
}

} // namespace torchshard
