#include "csrc/python/hit/all_reduce.h"

#include "csrc/python/hit/collective_output.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace torchshard {
namespace {

const c10::OperatorHandle& all_reduce_op() {
  static const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("_c10d_functional::all_reduce", "");
  return handle;
}

const c10::OperatorHandle& wait_tensor_op() {
  static const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("_c10d_functional::wait_tensor", "");
  return handle;
}

} // namespace

void require_all_reduce_ops() {
  all_reduce_op();
  wait_tensor_op();
}

bool native_all_reduce_unavailable() {
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::PythonDispatcher);
}

at::Tensor run_native_all_reduce(const NativeAllReduce& plan, const at::Tensor& local) {
  torch::jit::Stack stack{local, plan.reduce_op, plan.group_name};
  // Without the GIL, as torch.ops calls run: the collective's work may need
  // Python on another thread (gloo's) before wait_tensor returns.
  py::gil_scoped_release no_gil;
  all_reduce_op().callBoxed(stack);
  wait_tensor_op().callBoxed(stack);
  // Never given a Python object: the backend's work may still hold the output
  // (collective_output.h).
  return tensor_impl_of_its_own(stack.back().toTensor());
}

} // namespace torchshard
