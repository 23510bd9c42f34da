// Python objects and attribute names torchshard looks up once and keeps for
// the life of the process: the DTensor type and its slot offsets, DTensor's
// constructor, the op dispatcher, and interned attribute names.
//
// Invariants: initialized by init_py_refs() under the GIL when the first rule
// is made (make_rule, and the benchmark's make_floor_rule), never at module
// import: importing torchshard must leave torch.distributed.tensor unimported
// until the program imports it (that import is observable: it registers
// DTensor as a weights_only-safe global for torch.load; docs/design.md). Every
// other use of py_refs() is reached only through a rule, so after that init.
// The references are deliberately never released (they must stay valid until
// the process ends, including during interpreter finalization, and are owned
// by modules that outlive us anyway).
#pragma once

#include "csrc/core/export.h"

#include <Python.h>

namespace torchshard {

struct PyRefs {
  PyTypeObject* dtensor_type = nullptr;
  PyTypeObject* dtensor_spec_type = nullptr;
  PyObject* tensor_meta_type = nullptr;  // _dtensor_spec.TensorMeta (a NamedTuple)
  PyObject* strided_shard_type = nullptr;  // placement_types._StridedShard
  PyObject* shard_type = nullptr;          // placement_types.Shard
  PyObject* replicate_type = nullptr;      // placement_types.Replicate
  PyTypeObject* output_sharding_type = nullptr;
  PyTypeObject* symint_type = nullptr;
  PyTypeObject* symfloat_type = nullptr;
  PyTypeObject* symbool_type = nullptr;
  // Byte offsets of DTensor.__slots__ ("_local_tensor", "_spec") in the
  // instance, read directly instead of through attribute lookup.
  Py_ssize_t local_tensor_offset = 0;
  Py_ssize_t spec_offset = 0;
  // torch.Tensor._dtensor__new__(cls, local_tensor, spec, requires_grad=...)
  PyObject* dtensor_new = nullptr;
  PyObject* op_dispatcher = nullptr;          // DTensor._op_dispatcher
  // Functions and state stock's dispatch module (torch.distributed.tensor.
  // _dispatch) uses, taken from that module so torchshard calls the same ones.
  PyObject* return_and_correct_aliasing = nullptr;
  PyObject* redistribute_local_tensor = nullptr;
  PyObject* explicit_redistribution_state = nullptr;  // ExplicitRedistributionContext._local

  // Interned attribute names.
  PyObject* str_hash = nullptr;  // "_hash"
  PyObject* str_mesh = nullptr;
  PyObject* str_placements = nullptr;
  PyObject* str_shard_order = nullptr;
  PyObject* str_use_strided_shard = nullptr;  // "use_strided_shard_as_shard_order"
  PyObject* str_tensor_meta = nullptr;
  PyObject* str_shape = nullptr;
  PyObject* str_stride = nullptr;
  PyObject* str_dtype = nullptr;
  PyObject* str_output_spec = nullptr;
  PyObject* str_needs_redistribute = nullptr;
  PyObject* str_compute_mesh = nullptr;
  PyObject* str_is_rank_in_mesh = nullptr;       // "_is_current_rank_part_of_mesh"
  PyObject* str_unwrap_to_op_info = nullptr;
  PyObject* str_propagate_slow_path = nullptr;   // "_propagate_op_sharding_dispatch_slow_path"
  PyObject* str_active = nullptr;                // "_active"
};

// Valid after init_py_refs() returned true.
TORCHSHARD_API const PyRefs& py_refs();

// Imports torch.distributed.tensor and fills PyRefs, once (later calls return
// true at once). Sets a Python error and returns false if DTensor does not
// look as torchshard expects; py_refs() stays empty then and the next call
// retries. (A failed attempt does not release the references it imported:
// a small leak per attempt on a torch this build does not support.)
TORCHSHARD_API bool init_py_refs();

inline PyObject** slot_address(PyObject* object, Py_ssize_t offset) {
  return reinterpret_cast<PyObject**>(reinterpret_cast<char*>(object) + offset);
}

// Reads an object slot at a byte offset; returns a borrowed reference.
inline PyObject* read_slot(PyObject* object, Py_ssize_t offset) {
  return *slot_address(object, offset);
}

inline PyObject* dtensor_spec(PyObject* dtensor) {
  return read_slot(dtensor, py_refs().spec_offset);
}
inline PyObject* dtensor_local_tensor(PyObject* dtensor) {
  return read_slot(dtensor, py_refs().local_tensor_offset);
}

} // namespace torchshard
