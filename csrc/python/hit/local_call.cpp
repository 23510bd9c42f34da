#include "csrc/python/hit/local_call.h"

#include "csrc/core/assertions.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

namespace torchshard {
namespace {

bool is_dtensor(PyObject* value) {
  return Py_TYPE(value) == py_refs().dtensor_type;
}

// The tensor an element of a tensor-list argument stands for locally.
const at::Tensor& local_tensor_of(PyObject* item) {
  if (is_dtensor(item)) {
    return THPVariable_Unpack(dtensor_local_tensor(item));
  }
  TORCH_CHECK_TYPE(THPVariable_Check(item), "torchshard: expected a tensor in a tensor list, got ",
                   Py_TYPE(item)->tp_name);
  return THPVariable_Unpack(item);
}

// Tensor[] / Tensor?[] arguments holding DTensors: unwrap element-wise.
// Other values go through torch's own Python-to-IValue conversion, which is
// what stock DTensor's local call (OpOverload.__call__) uses too.
c10::IValue tensor_list_to_local(PyObject* sequence, const c10::ListType& list_type) {
  const Py_ssize_t length = PySequence_Fast_GET_SIZE(sequence);
  PyObject** items = PySequence_Fast_ITEMS(sequence);
  const bool optional_items = list_type.getElementType()->kind() == c10::TypeKind::OptionalType;
  if (optional_items) {
    c10::List<std::optional<at::Tensor>> list;
    list.reserve(length);
    for (Py_ssize_t i = 0; i < length; ++i) {
      PyObject* item = items[i];
      if (item == Py_None) {
        list.push_back(std::nullopt);
      } else {
        list.push_back(local_tensor_of(item));
      }
    }
    return list;
  }
  c10::List<at::Tensor> list;
  list.reserve(length);
  for (Py_ssize_t i = 0; i < length; ++i) {
    PyObject* item = items[i];
    list.push_back(local_tensor_of(item));
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

c10::IValue to_local_ivalue(PyObject* value, const c10::Argument& argument) {
  if (is_dtensor(value)) {
    return THPVariable_Unpack(dtensor_local_tensor(value));
  }
  if (PyList_Check(value) || PyTuple_Check(value)) {
    if (const c10::ListType* list_type = tensor_list_type(argument.real_type())) {
      return tensor_list_to_local(value, *list_type);
    }
  }
  return torch::jit::toIValue(value, argument.real_type());
}

void call_local_op(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                   const std::vector<py::object>& positional_overrides, torch::jit::Stack& stack) {
  const auto& arguments = op.schema().arguments();
  stack.clear();
  stack.reserve(arguments.size());
  // Python numbers in Tensor slots (`dtensor + 2` arrives as add.Tensor(x, 2))
  // become wrapped-number tensors, exactly as OpOverload.__call__ converts them.
  torch::jit::ToIValueAllowNumbersAsTensors numbers_as_tensors(true);
  for (size_t i = 0; i < arguments.size(); ++i) {
    PyObject* value = i < positional_overrides.size() && positional_overrides[i]
        ? positional_overrides[i].ptr()
        : op.argument_value(args, kwargs, i);
    if (value == nullptr) {
      const auto& default_value = arguments[i].default_value();
      TORCH_CHECK(default_value.has_value(), "torchshard: ", op.schema().name(),
                  " called without its required argument '", arguments[i].name(), "'");
      stack.push_back(*default_value);
    } else {
      stack.push_back(to_local_ivalue(value, arguments[i]));
    }
  }
  op.handle().callBoxed(stack);
}

} // namespace

Status run_local_op(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                    const std::vector<py::object>& positional_overrides, torch::jit::Stack& stack) {
  const Status ran = catch_python_errors([&] {
    call_local_op(op, args, kwargs, positional_overrides, stack);
    return success();
  });
  if (ran) {
    return ran;
  }
  if (op.writes_arguments()) {
    return Failure::python_error(DeclineReason::kLocalComputeFailed);
  }
  PyErr_Clear();
  return Failure::decline(DeclineReason::kLocalComputeFailed);
}

void stand_in_results(const StandIn& stand_in, const std::vector<ReturnKind>& returns,
                      torch::jit::Stack& stack) {
  auto absent = [](const AbsentLocal& local) {
    const auto options = at::TensorOptions().dtype(local.dtype);
    return local.zero_dim ? at::zeros({}, options) : at::empty({0}, options);
  };
  // Planned from the specs of these very returns (miss/result_planner.cpp).
  TORCHSHARD_ASSERT(stand_in.locals.size() == returns.size());
  stack.clear();
  for (size_t r = 0; r < returns.size(); ++r) {
    const auto& locals = stand_in.locals[r];
    if (returns[r] == ReturnKind::kTensor) {
      TORCHSHARD_ASSERT(locals.size() == 1);
      stack.emplace_back(absent(locals.front()));
      continue;
    }
    c10::List<at::Tensor> list;
    for (const auto& local : locals) {
      list.push_back(absent(local));
    }
    stack.emplace_back(std::move(list));
  }
}

} // namespace torchshard
