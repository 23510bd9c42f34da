#include "csrc/python/hit/dtensor_wrap.h"

#include "csrc/python/interop/dtensor_factory.h"
#include "csrc/python/interop/py_refs.h"

#include <torch/csrc/autograd/python_variable.h>

namespace torchshard {
namespace {

const Failure kLayoutMismatch = Failure::decline(DeclineReason::kUnsupportedOutput);

// A DTensor over `local`, as OpDispatcher.wrap builds it.
Outcome<py::object> wrap_tensor(at::Tensor&& local, PyObject* spec) {
  const bool requires_grad = local.requires_grad();
  auto local_object = py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(local)));
  if (!local_object) {
    return Failure::python_error();
  }
  auto dtensor = py::reinterpret_steal<py::object>(make_dtensor(local_object.ptr(), spec, requires_grad));
  if (!dtensor) {
    return Failure::python_error();
  }
  return dtensor;
}

// The Python value of one schema return.
Outcome<py::object> wrap_return(c10::IValue&& value, ReturnKind kind,
                                const std::vector<py::object>& specs) {
  if (kind == ReturnKind::kTensor) {
    if (specs.size() == 1 && specs[0].is_none()) {
      // An output the op did not compute (output_mask): stock returns None.
      const bool undefined = value.isNone() || (value.isTensor() && !value.toTensor().defined());
      return undefined ? Outcome<py::object>(py::none()) : kLayoutMismatch;
    }
    if (!value.isTensor() || !value.toTensor().defined() || specs.size() != 1) {
      return kLayoutMismatch;
    }
    return wrap_tensor(std::move(value).toTensor(), specs[0].ptr());
  }
  if (!value.isTensorList() || value.toTensorList().size() != specs.size()) {
    return kLayoutMismatch;
  }
  c10::List<at::Tensor> tensors = std::move(value).toTensorList();
  auto list = py::reinterpret_steal<py::object>(PyList_New(static_cast<Py_ssize_t>(specs.size())));
  if (!list) {
    return Failure::python_error();
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    Outcome<py::object> wrapped = wrap_tensor(tensors.extract(i), specs[i].ptr());
    if (!wrapped) {
      return wrapped;
    }
    PyList_SET_ITEM(list.ptr(), static_cast<Py_ssize_t>(i), std::move(wrapped).value().release().ptr());
  }
  return list;
}

// A view's DTensor result shares the storage of the DTensor it aliases.
void share_view_storage(const OpDescriptor& op, size_t return_index, PyObject* args,
                        PyObject* kwargs, const py::object& wrapped) {
  const auto& source_index = op.view_sources()[return_index];
  if (!source_index || wrapped.is_none()) {
    return;
  }
  PyObject* source = op.argument_value(args, kwargs, *source_index);
  if (source == nullptr || Py_TYPE(source) != py_refs().dtensor_type) {
    return;
  }
  const at::Tensor& view = THPVariable_Unpack(wrapped.ptr());
  view.unsafeGetTensorImpl()->set_storage_keep_dtype(THPVariable_Unpack(source).storage());
}

} // namespace

Outcome<py::object> wrap_local_results(const OpDescriptor& op, const WrapResults& plan,
                                       PyObject* args, PyObject* kwargs, torch::jit::Stack& stack) {
  const auto& returns = op.returns();
  if (stack.size() != returns.size() || plan.specs.size() != returns.size()) {
    return kLayoutMismatch;
  }
  if (returns.size() == 1) {
    Outcome<py::object> wrapped = wrap_return(std::move(stack[0]), returns[0], plan.specs[0]);
    if (wrapped && plan.shares_view_storage) {
      share_view_storage(op, 0, args, kwargs, wrapped.value());
    }
    return wrapped;
  }
  auto tuple = py::reinterpret_steal<py::object>(PyTuple_New(static_cast<Py_ssize_t>(returns.size())));
  if (!tuple) {
    return Failure::python_error();
  }
  for (size_t i = 0; i < returns.size(); ++i) {
    Outcome<py::object> wrapped = wrap_return(std::move(stack[i]), returns[i], plan.specs[i]);
    if (!wrapped) {
      return wrapped;
    }
    if (plan.shares_view_storage) {
      share_view_storage(op, i, args, kwargs, wrapped.value());
    }
    PyTuple_SET_ITEM(tuple.ptr(), static_cast<Py_ssize_t>(i), std::move(wrapped).value().release().ptr());
  }
  return tuple;
}

} // namespace torchshard
