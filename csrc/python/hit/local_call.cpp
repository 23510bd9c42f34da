#include "csrc/python/hit/local_call.h"

#include "csrc/core/assertions.h"
#include "csrc/python/interop/boxed_arguments.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

#include <torch/csrc/autograd/python_variable.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

namespace torchshard {
namespace {

at::Tensor local_tensor(PyObject* dtensor) {
  return THPVariable_Unpack(dtensor_local_tensor(dtensor));
}

void call_local_op(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                   const std::vector<py::object>& positional_overrides, torch::jit::Stack& stack) {
  auto value_of = [&](size_t i) -> PyObject* {
    return i < positional_overrides.size() && positional_overrides[i]
        ? positional_overrides[i].ptr()
        : op.argument_value(args, kwargs, i);
  };
  push_boxed_arguments(op.schema(), value_of, &local_tensor, stack);
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
