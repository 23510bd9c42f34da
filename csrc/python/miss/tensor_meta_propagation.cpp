#include "csrc/python/miss/tensor_meta_propagation.h"

#include "csrc/python/interop/boxed_arguments.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

#include <ATen/TensorIterator.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/python_variable.h>

namespace torchshard {
namespace {

// A meta tensor of the DTensor's global sizes, strides and dtype (the
// wrapper tensor holds exactly those).
at::Tensor global_meta_tensor(PyObject* dtensor) {
  const at::Tensor& global = THPVariable_Unpack(dtensor);
  return at::empty_strided(global.sizes(), global.strides(),
                           at::TensorOptions().dtype(global.scalar_type()).device(at::kMeta));
}

std::optional<OutputMeta> meta_of(const at::Tensor& tensor) {
  if (!tensor.defined()) {
    return std::nullopt;
  }
  return OutputMeta{tensor.sizes().vec(), tensor.strides().vec(), tensor.scalar_type()};
}

// nullopt if a return is not what the schema says (then stock decides).
std::optional<ReturnMetas> metas_of(const OpDescriptor& op, const torch::jit::Stack& stack) {
  const auto& returns = op.returns();
  if (stack.size() != returns.size()) {
    return std::nullopt;
  }
  ReturnMetas metas(returns.size());
  for (size_t r = 0; r < returns.size(); ++r) {
    const c10::IValue& value = stack[r];
    if (returns[r] == ReturnKind::kTensor) {
      if (!value.isTensor() && !value.isNone()) {
        return std::nullopt;
      }
      metas[r].push_back(value.isTensor() ? meta_of(value.toTensor()) : std::nullopt);
      continue;
    }
    if (!value.isTensorList()) {
      return std::nullopt;
    }
    for (const at::Tensor& tensor : value.toTensorList().vec()) {
      metas[r].push_back(meta_of(tensor));
    }
  }
  return metas;
}

std::optional<ReturnMetas> run_on_meta(const OpDescriptor& op, PyObject* args, PyObject* kwargs) {
  torch::jit::Stack stack;
  push_boxed_arguments(op.schema(), [&](size_t i) { return op.argument_value(args, kwargs, i); },
                       &global_meta_tensor, stack);
  // Metadata only: no autograd graph for these throwaway tensors.
  c10::AutoGradMode no_grad(false);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  op.handle().callBoxed(stack);
  return metas_of(op, stack);
}

} // namespace

std::optional<ReturnMetas> elementwise_tensor_meta(const OpDescriptor& op, PyObject* args,
                                                   PyObject* kwargs, c10::ScalarType dtype) {
  at::TensorIteratorConfig config;
  config.check_all_same_dtype(false).set_check_mem_overlap(false).declare_static_dtype(dtype);
  config.add_owned_output(at::Tensor());
  bool any_tensor = false;
  for (size_t i = 0; i < op.schema().arguments().size(); ++i) {
    PyObject* value = op.argument_value(args, kwargs, i);
    if (value == nullptr || value == Py_None || PyLong_Check(value) || PyFloat_Check(value)) {
      continue;  // numbers are wrapped scalars: they take no part in shape or strides
    }
    if (Py_TYPE(value) != py_refs().dtensor_type) {
      return std::nullopt;
    }
    config.add_owned_const_input(global_meta_tensor(value));
    any_tensor = true;
  }
  if (!any_tensor) {
    return std::nullopt;
  }
  try {
    at::TensorIterator iter = config.build();
    return ReturnMetas{{meta_of(iter.output(0))}};
  } catch (const c10::Error&) {
    return std::nullopt;  // shapes that do not broadcast
  }
}

Outcome<std::optional<ReturnMetas>> propagate_tensor_meta(const OpDescriptor& op, PyObject* args,
                                                          PyObject* kwargs) {
  Outcome<std::optional<ReturnMetas>> metas =
      catch_python_errors([&]() -> Outcome<std::optional<ReturnMetas>> { return run_on_meta(op, args, kwargs); });
  if (metas) {
    return metas;
  }
  if (clear_unless_interrupt()) {
    return metas.failure();
  }
  return std::optional<ReturnMetas>();
}

} // namespace torchshard
