#include "csrc/python/interop/spec_factory.h"

#include "csrc/python/interop/py_refs.h"

#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Size.h>

namespace torchshard {

py::tuple int_tuple(c10::IntArrayRef values) {
  py::tuple tuple(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    tuple[i] = py::int_(values[i]);
  }
  return tuple;
}

py::object tensor_meta(c10::IntArrayRef sizes, c10::IntArrayRef strides, c10::ScalarType dtype) {
  py::object shape = py::handle(reinterpret_cast<PyObject*>(&THPSizeType))(int_tuple(sizes));
  py::handle dtype_object(reinterpret_cast<PyObject*>(torch::getTHPDtype(dtype)));
  return py::handle(py_refs().tensor_meta_type)(shape, int_tuple(strides), dtype_object);
}

// The spec is a copy of the template's fields (DTensorSpec is a dataclass
// whose fields live in its __dict__) with tensor_meta replaced and the cached
// hash reset, exactly what DTensorSpec(mesh, placements, meta, shard_order,
// use_strided_shard_as_shard_order) makes: __post_init__ only normalizes the
// placements and shard order, and the template's are normalized already. A
// fifth of the constructor's cost (1 us instead of 7).
py::object spec_like(py::handle spec_template, py::object meta) {
  const PyRefs& refs = py_refs();
  auto* type = refs.dtensor_spec_type;
  PyObject** template_dict = _PyObject_GetDictPtr(spec_template.ptr());
  if (Py_TYPE(spec_template.ptr()) != type || template_dict == nullptr || *template_dict == nullptr) {
    return py::handle(reinterpret_cast<PyObject*>(type))(
        spec_template.attr(refs.str_mesh), spec_template.attr(refs.str_placements), meta,
        spec_template.attr(refs.str_shard_order), spec_template.attr(refs.str_use_strided_shard));
  }
  py::object fields = py::reinterpret_steal<py::object>(PyDict_Copy(*template_dict));
  if (!fields || PyDict_SetItem(fields.ptr(), refs.str_tensor_meta, meta.ptr()) != 0 ||
      PyDict_SetItem(fields.ptr(), refs.str_hash, Py_None) != 0) {
    throw py::error_already_set();
  }
  py::object spec = py::reinterpret_steal<py::object>(type->tp_alloc(type, 0));
  if (!spec || PyObject_GenericSetDict(spec.ptr(), fields.ptr(), nullptr) != 0) {
    throw py::error_already_set();
  }
  return spec;
}

} // namespace torchshard
