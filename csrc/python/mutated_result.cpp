#include "csrc/python/mutated_result.h"

#include "csrc/python/py_refs.h"

#include <array>

namespace torchshard {
namespace {

// DTensor._spec = spec, as a plain slot store (what `dt._spec = spec` does).
void set_dtensor_spec(PyObject* dtensor, PyObject* spec) {
  PyObject** slot = slot_address(dtensor, py_refs().spec_offset);
  Py_INCREF(spec);
  Py_XSETREF(*slot, spec);
}

} // namespace

PyObject* inplace_result(const CacheEntry& entry, PyObject* func, PyObject* args, PyObject* kwargs) {
  if (entry.inplace_result == InplaceResult::kNone) {
    Py_RETURN_NONE;
  }
  PyObject* self = PyTuple_GET_ITEM(args, 0);
  if (entry.inplace_result == InplaceResult::kSelf) {
    Py_INCREF(self);
    return self;
  }
  set_dtensor_spec(self, entry.inplace_spec.ptr());
  // Rare (the placements of an in-place op's input changed): hand the result
  // to the very function stock uses, which also fixes inplace_view metadata.
  PyObject* kwargs_dict = kwargs != nullptr ? kwargs : PyDict_New();
  if (kwargs_dict == nullptr) {
    return nullptr;
  }
  std::array<PyObject*, 4> call_args = {func, args, kwargs_dict, self};
  PyObject* result = PyObject_Vectorcall(py_refs().return_and_correct_aliasing, call_args.data(),
                                         call_args.size(), nullptr);
  if (kwargs == nullptr) {
    Py_DECREF(kwargs_dict);
  }
  return result;
}

PyObject* out_variant_result(const OpDescriptor& op, const CacheEntry& entry, PyObject* args,
                             PyObject* kwargs) {
  const auto& out_arguments = op.out_arguments();
  const auto count = static_cast<Py_ssize_t>(out_arguments.size());
  PyObject* tuple = count == 1 ? nullptr : PyTuple_New(count);
  if (count != 1 && tuple == nullptr) {
    return nullptr;
  }
  PyObject* out = nullptr;
  for (Py_ssize_t i = 0; i < count; ++i) {
    // The miss path checked that every out= argument is a DTensor keyword
    // argument; the key (which encodes keyword names and specs) keeps it so.
    out = op.argument_value(args, kwargs, out_arguments[i]);
    set_dtensor_spec(out, entry.return_specs[i][0].ptr());
    if (tuple != nullptr) {
      PyTuple_SET_ITEM(tuple, i, Py_NewRef(out));
    }
  }
  return tuple != nullptr ? tuple : Py_NewRef(out);
}

} // namespace torchshard
