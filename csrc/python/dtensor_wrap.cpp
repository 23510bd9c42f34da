#include "csrc/python/dtensor_wrap.h"

#include "csrc/python/py_refs.h"

#include <torch/csrc/autograd/python_variable.h>

#include <array>

namespace torchshard {
namespace {

// New reference to a DTensor over `local`, or nullptr with a Python error.
PyObject* wrap_tensor(at::Tensor&& local, PyObject* spec) {
  const PyRefs& refs = py_refs();
  const bool requires_grad = local.requires_grad();
  PyObject* local_object = THPVariable_Wrap(std::move(local));
  if (local_object == nullptr) {
    return nullptr;
  }
  // torch.Tensor._dtensor__new__ is the C++ constructor DTensor.__new__ is
  // bound to; calling it directly skips only DTensor.__init__, which does
  // nothing. One C call, no Python frame.
  std::array<PyObject*, 5> call_args = {
      nullptr, reinterpret_cast<PyObject*>(refs.dtensor_type), local_object, spec,
      requires_grad ? Py_True : Py_False};
  PyObject* dtensor = PyObject_Vectorcall(refs.dtensor_new, call_args.data() + 1,
                                          4 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
  Py_DECREF(local_object);
  return dtensor;
}

// New reference to the Python value of one schema return, or nullptr.
PyObject* wrap_return(c10::IValue&& value, ReturnKind kind, const std::vector<py::object>& specs,
                      WrapStatus* status) {
  if (kind == ReturnKind::kTensor) {
    if (specs.size() == 1 && specs[0].is_none()) {
      // An output the op did not compute (output_mask): stock returns None.
      const bool undefined = value.isNone() || (value.isTensor() && !value.toTensor().defined());
      *status = undefined ? WrapStatus::kOk : WrapStatus::kLayoutMismatch;
      return undefined ? Py_NewRef(Py_None) : nullptr;
    }
    if (!value.isTensor() || !value.toTensor().defined() || specs.size() != 1) {
      *status = WrapStatus::kLayoutMismatch;
      return nullptr;
    }
    PyObject* wrapped = wrap_tensor(std::move(value).toTensor(), specs[0].ptr());
    *status = wrapped ? WrapStatus::kOk : WrapStatus::kPythonError;
    return wrapped;
  }
  if (!value.isTensorList() || value.toTensorList().size() != specs.size()) {
    *status = WrapStatus::kLayoutMismatch;
    return nullptr;
  }
  c10::List<at::Tensor> tensors = std::move(value).toTensorList();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(specs.size()));
  if (list == nullptr) {
    *status = WrapStatus::kPythonError;
    return nullptr;
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    PyObject* wrapped = wrap_tensor(tensors.extract(i), specs[i].ptr());
    if (wrapped == nullptr) {
      Py_DECREF(list);
      *status = WrapStatus::kPythonError;
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), wrapped);
  }
  *status = WrapStatus::kOk;
  return list;
}

// A view's DTensor result shares the storage of the DTensor it aliases.
void share_view_storage(const OpDescriptor& op, size_t return_index, PyObject* args,
                        PyObject* kwargs, PyObject* wrapped) {
  const auto& source_index = op.view_sources()[return_index];
  if (!source_index) {
    return;
  }
  PyObject* source = op.argument_value(args, kwargs, *source_index);
  if (source == nullptr || Py_TYPE(source) != py_refs().dtensor_type) {
    return;
  }
  const at::Tensor& view = THPVariable_Unpack(wrapped);
  view.unsafeGetTensorImpl()->set_storage_keep_dtype(THPVariable_Unpack(source).storage());
}

} // namespace

WrapStatus wrap_local_results(const OpDescriptor& op, const CacheEntry& entry, PyObject* args,
                              PyObject* kwargs, torch::jit::Stack& stack, PyObject** result) {
  const auto& returns = op.returns();
  if (stack.size() != returns.size() || entry.return_specs.size() != returns.size()) {
    return WrapStatus::kLayoutMismatch;
  }
  const bool shares_storage = op.kind() == OpKind::kView && entry.participating;
  WrapStatus status = WrapStatus::kOk;
  if (returns.size() == 1) {
    *result = wrap_return(std::move(stack[0]), returns[0], entry.return_specs[0], &status);
    if (shares_storage && status == WrapStatus::kOk && *result != Py_None) {
      share_view_storage(op, 0, args, kwargs, *result);
    }
    return status;
  }
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(returns.size()));
  if (tuple == nullptr) {
    return WrapStatus::kPythonError;
  }
  for (size_t i = 0; i < returns.size(); ++i) {
    PyObject* wrapped = wrap_return(std::move(stack[i]), returns[i], entry.return_specs[i], &status);
    if (wrapped == nullptr) {
      Py_DECREF(tuple);
      return status;
    }
    if (shares_storage && wrapped != Py_None) {
      share_view_storage(op, i, args, kwargs, wrapped);
    }
    PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), wrapped);
  }
  *result = tuple;
  return WrapStatus::kOk;
}

} // namespace torchshard
