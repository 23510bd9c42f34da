#include "csrc/python/interop/dtensor_factory.h"

#include "csrc/python/interop/py_refs.h"

#include <array>

namespace torchshard {

PyObject* make_dtensor(PyObject* local_tensor, PyObject* spec, bool requires_grad) {
  const PyRefs& refs = py_refs();
  std::array<PyObject*, 5> call_args = {nullptr, reinterpret_cast<PyObject*>(refs.dtensor_type),
                                        local_tensor, spec, requires_grad ? Py_True : Py_False};
  return PyObject_Vectorcall(refs.dtensor_new, call_args.data() + 1,
                             4 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

} // namespace torchshard
