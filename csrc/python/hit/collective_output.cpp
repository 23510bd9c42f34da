#include "csrc/python/hit/collective_output.h"

#include <torch/csrc/autograd/python_variable.h>

#include <mutex>
#include <utility>
#include <vector>

namespace torchshard {
namespace {

// Outputs whose TensorImpl another owner still referenced when the hit was
// done with them, each held by one C++ reference of ours. Allocated once and
// never destroyed: an entry still shared at exit must never reach a static
// destructor, which would run without the GIL.
struct KeptOutputs {
  std::mutex mutex;  // never held while calling Python or waiting for the GIL
  std::vector<at::Tensor> tensors;
};

KeptOutputs& kept_outputs() {
  static auto* kept = new KeptOutputs();
  return *kept;
}

bool shared_with_another_owner(PyObject* tensor) {
  return THPVariable_Unpack(tensor).use_count() > 1;
}

// Only the tensor's Python object and our reference are left: dropping ours
// now takes the count from 2 to 1, the step that releases the Python object,
// on this thread, with the GIL.
bool let_go_by_other_owners(const at::Tensor& kept) {
  return kept.use_count() <= 2;
}

// A subclass instance could behave differently from the plain tensor its
// second TensorImpl would be wrapped as.
bool plain_tensor(PyObject* tensor) {
  return Py_TYPE(tensor) == reinterpret_cast<PyTypeObject*>(THPVariableClass);
}

} // namespace

at::Tensor tensor_impl_of_its_own(const at::Tensor& tensor) {
  if (tensor.requires_grad()) {
    return tensor;  // the detached copy would lose its autograd history
  }
  const c10::TensorImpl* impl = tensor.unsafeGetTensorImpl();
  return at::Tensor(impl->shallow_copy_and_detach(impl->version_counter(),
                                                  impl->allow_tensor_metadata_change()));
}

void release_let_go_outputs() {
  KeptOutputs& kept = kept_outputs();
  std::vector<at::Tensor> released;
  {
    std::lock_guard<std::mutex> lock(kept.mutex);
    if (kept.tensors.empty()) {
      return;
    }
    auto still_shared = kept.tensors.begin();
    for (at::Tensor& tensor : kept.tensors) {
      if (let_go_by_other_owners(tensor)) {
        released.push_back(std::move(tensor));
      } else {
        *still_shared++ = std::move(tensor);
      }
    }
    kept.tensors.erase(still_shared, kept.tensors.end());
  }
  // Outside the mutex: freeing a tensor's Python object can run Python
  // (weakref callbacks), which may switch threads.
  released.clear();
}

py::object local_safe_to_drop(py::object redistributed, PyObject* input_local) {
  if (redistributed.ptr() == input_local || !plain_tensor(redistributed.ptr()) ||
      THPVariable_Unpack(redistributed.ptr()).requires_grad() ||
      !shared_with_another_owner(redistributed.ptr())) {
    return redistributed;
  }
  const at::Tensor& output = THPVariable_Unpack(redistributed.ptr());
  auto own = py::reinterpret_steal<py::object>(THPVariable_Wrap(tensor_impl_of_its_own(output)));
  if (!own) {
    throw py::error_already_set();
  }
  KeptOutputs& kept = kept_outputs();
  std::lock_guard<std::mutex> lock(kept.mutex);
  kept.tensors.push_back(output);
  return own;
}

size_t kept_collective_outputs() {
  KeptOutputs& kept = kept_outputs();
  std::lock_guard<std::mutex> lock(kept.mutex);
  return kept.tensors.size();
}

} // namespace torchshard
