#include "csrc/python/interop/py_refs.h"

#include <structmember.h>

namespace torchshard {
namespace {

PyRefs refs;

// New reference to module.attr, or nullptr with a Python error set.
PyObject* import_attr(const char* module_name, const char* attr) {
  PyObject* module = PyImport_ImportModule(module_name);
  if (module == nullptr) {
    return nullptr;
  }
  PyObject* value = PyObject_GetAttrString(module, attr);
  Py_DECREF(module);
  return value;
}

PyTypeObject* import_type(const char* module_name, const char* attr) {
  PyObject* value = import_attr(module_name, attr);
  if (value != nullptr && !PyType_Check(value)) {
    PyErr_Format(PyExc_ImportError, "torchshard: %s.%s is not a type", module_name, attr);
    Py_CLEAR(value);
  }
  return reinterpret_cast<PyTypeObject*>(value);
}

// DTensor keeps _local_tensor/_spec in __slots__; torchshard reads them at
// their offsets. Fails loudly if a torch release changes that layout.
bool slot_offset(PyTypeObject* type, const char* name, Py_ssize_t* offset) {
  PyObject* descriptor = PyDict_GetItemString(type->tp_dict, name);
  if (descriptor == nullptr || Py_TYPE(descriptor) != &PyMemberDescr_Type) {
    PyErr_Format(PyExc_ImportError,
                 "torchshard: DTensor.%s is no longer a __slots__ member; this torch "
                 "is not supported",
                 name);
    return false;
  }
  const PyMemberDef* member = reinterpret_cast<PyMemberDescrObject*>(descriptor)->d_member;
  if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
    PyErr_Format(PyExc_ImportError, "torchshard: DTensor.%s has an unexpected slot type", name);
    return false;
  }
  *offset = member->offset;
  return true;
}

bool intern(PyObject** target, const char* text) {
  *target = PyUnicode_InternFromString(text);
  return *target != nullptr;
}

} // namespace

const PyRefs& py_refs() {
  return refs;
}

bool init_py_refs() {
  if (refs.dtensor_type != nullptr) {
    return true;
  }
  PyRefs loaded;
  loaded.dtensor_type = import_type("torch.distributed.tensor", "DTensor");
  loaded.dtensor_spec_type = import_type("torch.distributed.tensor._dtensor_spec", "DTensorSpec");
  loaded.output_sharding_type = import_type("torch.distributed.tensor._op_schema", "OutputSharding");
  loaded.tensor_meta_type = import_attr("torch.distributed.tensor._dtensor_spec", "TensorMeta");
  loaded.strided_shard_type = import_attr("torch.distributed.tensor.placement_types", "_StridedShard");
  loaded.shard_type = import_attr("torch.distributed.tensor.placement_types", "Shard");
  loaded.replicate_type = import_attr("torch.distributed.tensor.placement_types", "Replicate");
  loaded.symint_type = import_type("torch", "SymInt");
  loaded.symfloat_type = import_type("torch", "SymFloat");
  loaded.symbool_type = import_type("torch", "SymBool");
  if (!loaded.dtensor_type || !loaded.dtensor_spec_type || !loaded.output_sharding_type ||
      !loaded.tensor_meta_type || !loaded.strided_shard_type || !loaded.shard_type ||
      !loaded.replicate_type ||
      !loaded.symint_type || !loaded.symfloat_type || !loaded.symbool_type) {
    return false;
  }
  if (!slot_offset(loaded.dtensor_type, "_local_tensor", &loaded.local_tensor_offset) ||
      !slot_offset(loaded.dtensor_type, "_spec", &loaded.spec_offset)) {
    return false;
  }
  loaded.dtensor_new = import_attr("torch", "Tensor");
  if (loaded.dtensor_new == nullptr) {
    return false;
  }
  PyObject* tensor_type = loaded.dtensor_new;
  loaded.dtensor_new = PyObject_GetAttrString(tensor_type, "_dtensor__new__");
  Py_DECREF(tensor_type);
  loaded.op_dispatcher =
      PyObject_GetAttrString(reinterpret_cast<PyObject*>(loaded.dtensor_type), "_op_dispatcher");
  constexpr const char* kDispatchModule = "torch.distributed.tensor._dispatch";
  loaded.return_and_correct_aliasing = import_attr(kDispatchModule, "return_and_correct_aliasing");
  loaded.redistribute_local_tensor = import_attr(kDispatchModule, "redistribute_local_tensor");
  PyObject* explicit_context = import_attr(kDispatchModule, "ExplicitRedistributionContext");
  if (explicit_context != nullptr) {
    loaded.explicit_redistribution_state = PyObject_GetAttrString(explicit_context, "_local");
    Py_DECREF(explicit_context);
  }
  if (!loaded.dtensor_new || !loaded.op_dispatcher || !loaded.return_and_correct_aliasing ||
      !loaded.redistribute_local_tensor || !loaded.explicit_redistribution_state) {
    return false;
  }
  const bool interned = intern(&loaded.str_hash, "_hash") && intern(&loaded.str_mesh, "mesh") &&
      intern(&loaded.str_placements, "placements") &&
      intern(&loaded.str_shard_order, "shard_order") &&
      intern(&loaded.str_use_strided_shard, "use_strided_shard_as_shard_order") &&
      intern(&loaded.str_tensor_meta, "tensor_meta") && intern(&loaded.str_shape, "shape") &&
      intern(&loaded.str_stride, "stride") && intern(&loaded.str_dtype, "dtype") &&
      intern(&loaded.str_output_spec, "output_spec") &&
      intern(&loaded.str_needs_redistribute, "needs_redistribute") &&
      intern(&loaded.str_compute_mesh, "compute_mesh") &&
      intern(&loaded.str_is_rank_in_mesh, "_is_current_rank_part_of_mesh") &&
      intern(&loaded.str_unwrap_to_op_info, "unwrap_to_op_info") &&
      intern(&loaded.str_propagate_slow_path, "_propagate_op_sharding_dispatch_slow_path") &&
      intern(&loaded.str_active, "_active");
  if (!interned) {
    return false;
  }
  refs = loaded;
  return true;
}

} // namespace torchshard
