#include "csrc/python/interop/boxed_arguments.h"

#include "csrc/python/interop/py_refs.h"

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/python/pybind_utils.h>

namespace torchshard {
namespace {

bool is_dtensor(PyObject* value) {
  return Py_TYPE(value) == py_refs().dtensor_type;
}

// The tensor an element of a tensor-list argument stands for.
at::Tensor list_item_tensor(PyObject* item, DTensorAsTensor as_tensor) {
  if (is_dtensor(item)) {
    return as_tensor(item);
  }
  TORCH_CHECK_TYPE(THPVariable_Check(item), "torchshard: expected a tensor in a tensor list, got ",
                   Py_TYPE(item)->tp_name);
  return THPVariable_Unpack(item);
}

// Tensor[] / Tensor?[] arguments holding DTensors: converted element-wise.
// Other values go through torch's own Python-to-IValue conversion, which is
// what stock DTensor's local call (OpOverload.__call__) uses too.
c10::IValue tensor_list_ivalue(PyObject* sequence, const c10::ListType& list_type,
                               DTensorAsTensor as_tensor) {
  const Py_ssize_t length = PySequence_Fast_GET_SIZE(sequence);
  PyObject** items = PySequence_Fast_ITEMS(sequence);
  const bool optional_items = list_type.getElementType()->kind() == c10::TypeKind::OptionalType;
  if (optional_items) {
    c10::List<std::optional<at::Tensor>> list;
    list.reserve(length);
    for (Py_ssize_t i = 0; i < length; ++i) {
      if (items[i] == Py_None) {
        list.push_back(std::nullopt);
      } else {
        list.push_back(list_item_tensor(items[i], as_tensor));
      }
    }
    return list;
  }
  c10::List<at::Tensor> list;
  list.reserve(length);
  for (Py_ssize_t i = 0; i < length; ++i) {
    list.push_back(list_item_tensor(items[i], as_tensor));
  }
  return list;
}

const c10::ListType* tensor_list_type(const c10::TypePtr& type) {
  const auto* list = type->castRaw<c10::ListType>();
  if (list == nullptr) {
    return nullptr;
  }
  const c10::TypePtr& element = list->getElementType();
  if (element->kind() == c10::TypeKind::TensorType) {
    return list;
  }
  const auto* optional = element->castRaw<c10::OptionalType>();
  return optional && optional->getElementType()->kind() == c10::TypeKind::TensorType ? list : nullptr;
}

c10::IValue to_ivalue(PyObject* value, const c10::Argument& argument, DTensorAsTensor as_tensor) {
  if (is_dtensor(value)) {
    return as_tensor(value);
  }
  if (PyList_Check(value) || PyTuple_Check(value)) {
    if (const c10::ListType* list_type = tensor_list_type(argument.real_type())) {
      return tensor_list_ivalue(value, *list_type, as_tensor);
    }
  }
  return torch::jit::toIValue(value, argument.real_type());
}

} // namespace

void push_boxed_arguments(const c10::FunctionSchema& schema, ArgumentValue value_of,
                          DTensorAsTensor as_tensor, torch::jit::Stack& stack) {
  const auto& arguments = schema.arguments();
  stack.clear();
  stack.reserve(arguments.size());
  // Python numbers in Tensor slots (`dtensor + 2` arrives as add.Tensor(x, 2))
  // become wrapped-number tensors, exactly as OpOverload.__call__ converts them.
  torch::jit::ToIValueAllowNumbersAsTensors numbers_as_tensors(true);
  for (size_t i = 0; i < arguments.size(); ++i) {
    PyObject* value = value_of(i);
    if (value == nullptr) {
      const auto& default_value = arguments[i].default_value();
      TORCH_CHECK(default_value.has_value(), "torchshard: ", schema.name(),
                  " called without its required argument '", arguments[i].name(), "'");
      stack.push_back(*default_value);
    } else {
      stack.push_back(to_ivalue(value, arguments[i], as_tensor));
    }
  }
}

} // namespace torchshard
