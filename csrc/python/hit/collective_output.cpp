#include "csrc/python/hit/collective_output.h"

#include <torch/csrc/autograd/python_variable.h>

#include <mutex>
#include <utility>
#include <vector>

namespace torchshard {
namespace {

// Outputs whose TensorImpl another owner still referenced when the hit was
// done with them. Entries hold a strong reference each. Allocated once and
// never destroyed: entries still shared at exit must outlive the interpreter
// rather than be freed by a static destructor without the GIL.
struct KeptOutputs {
  std::mutex mutex;  // never held while calling Python or waiting for the GIL
  std::vector<PyObject*> objects;
};

KeptOutputs& kept_outputs() {
  static auto* kept = new KeptOutputs();
  return *kept;
}

bool shared_with_another_owner(PyObject* tensor) {
  return THPVariable_Unpack(tensor).use_count() > 1;
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
  std::vector<PyObject*> released;
  {
    std::lock_guard<std::mutex> lock(kept.mutex);
    if (kept.objects.empty()) {
      return;
    }
    auto still_shared = kept.objects.begin();
    for (PyObject* object : kept.objects) {
      if (shared_with_another_owner(object)) {
        *still_shared++ = object;
      } else {
        released.push_back(object);
      }
    }
    kept.objects.erase(still_shared, kept.objects.end());
  }
  // Outside the mutex: freeing a tensor can run Python (weakref callbacks),
  // which may switch threads.
  for (PyObject* object : released) {
    Py_DECREF(object);
  }
}

py::object local_safe_to_drop(py::object redistributed, PyObject* input_local) {
  if (redistributed.ptr() == input_local || !plain_tensor(redistributed.ptr()) ||
      THPVariable_Unpack(redistributed.ptr()).requires_grad() ||
      !shared_with_another_owner(redistributed.ptr())) {
    return redistributed;
  }
  auto own = py::reinterpret_steal<py::object>(
      THPVariable_Wrap(tensor_impl_of_its_own(THPVariable_Unpack(redistributed.ptr()))));
  if (!own) {
    throw py::error_already_set();
  }
  KeptOutputs& kept = kept_outputs();
  std::lock_guard<std::mutex> lock(kept.mutex);
  kept.objects.push_back(redistributed.release().ptr());
  return own;
}

size_t kept_collective_outputs() {
  KeptOutputs& kept = kept_outputs();
  std::lock_guard<std::mutex> lock(kept.mutex);
  return kept.objects.size();
}

} // namespace torchshard
