#include "csrc/python/cache/decision_key.h"

#include "csrc/core/cache_config.h"
#include "csrc/core/view_shape.h"

#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

#include <c10/util/accumulate.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <numeric>

namespace torchshard {
namespace {

// Process-wide, so an id is never reused by any thread's table.
std::atomic<uint64_t> next_layout_id{1};

constexpr uint64_t kLargeSize = uint64_t{1} << 63;  // marks "size modulo P" in a size class
constexpr size_t kMaxStrideClassDims = 16;          // the dimension order packs 4 bits per dim

Failure failed_python_call() {
  return clear_unless_interrupt() ? Failure::python_error()
                                  : Failure::decline(DeclineReason::kUnsupportedArg);
}

// New reference to (spec.mesh, spec.placements, spec.shard_order), or nullptr.
PyObject* layout_tuple(PyObject* spec) {
  const PyRefs& refs = py_refs();
  PyObject* tuple = PyTuple_New(3);
  if (tuple == nullptr) {
    return nullptr;
  }
  PyObject* names[] = {refs.str_mesh, refs.str_placements, refs.str_shard_order};
  for (Py_ssize_t i = 0; i < 3; ++i) {
    PyObject* item = PyObject_GetAttr(spec, names[i]);
    if (item == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, i, item);
  }
  return tuple;
}

// 1 if a placement is a _StridedShard, 0 if none is, -1 on error.
int has_strided_shard(PyObject* placements) {
  PyObject* sequence = PySequence_Fast(placements, "placements must be a sequence");
  if (sequence == nullptr) {
    return -1;
  }
  int found = 0;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sequence) && found == 0; ++i) {
    found = PyObject_IsInstance(PySequence_Fast_ITEMS(sequence)[i], py_refs().strided_shard_type);
  }
  Py_DECREF(sequence);
  return found;
}

// A new entry: (id, mesh.size()) as a tuple of two ints. A layout with a
// _StridedShard gets mesh size 0: whether its dimension shards evenly also
// depends on the split factor, which the size classes do not hold, so such
// calls keep exact keys.
PyObject* new_layout_entry(PyObject* layout) {
  const int strided = has_strided_shard(PyTuple_GET_ITEM(layout, 1));
  if (strided < 0) {
    return nullptr;
  }
  PyObject* mesh_size = strided ? PyLong_FromLong(0) : PyObject_CallMethod(PyTuple_GET_ITEM(layout, 0), "size", nullptr);
  if (mesh_size == nullptr) {
    return nullptr;
  }
  PyObject* id = PyLong_FromUnsignedLongLong(next_layout_id.fetch_add(1, std::memory_order_relaxed));
  if (id == nullptr) {
    Py_DECREF(mesh_size);
    return nullptr;
  }
  PyObject* entry = PyTuple_Pack(2, id, mesh_size);
  Py_DECREF(id);
  Py_DECREF(mesh_size);
  return entry;
}

uint64_t size_class(int64_t size, int64_t mesh_size) {
  if (size <= mesh_size) {
    return static_cast<uint64_t>(size);
  }
  return kLargeSize | static_cast<uint64_t>(size % mesh_size);
}

// Three words: contiguous (bit 0) and the mask of 0 strides (bits 1..); the
// dimension order by stride, 4 bits per dimension; the mask of dimensions
// whose stride is the product of the sizes after them in that order.
std::array<uint64_t, 3> stride_class(const at::Tensor& tensor) {
  const auto sizes = tensor.sizes();
  const auto strides = tensor.strides();
  const size_t ndim = sizes.size();
  std::array<size_t, kMaxStrideClassDims> order{};
  std::iota(order.begin(), order.begin() + ndim, size_t{0});
  std::stable_sort(order.begin(), order.begin() + ndim,
                   [&](size_t a, size_t b) { return strides[a] > strides[b]; });
  uint64_t zero_strides = 0;
  uint64_t packed_order = 0;
  uint64_t dense = 0;
  int64_t expected = 1;
  for (size_t k = ndim; k-- > 0;) {
    const size_t dim = order[k];
    packed_order |= static_cast<uint64_t>(dim) << (4 * k);
    if (strides[dim] == 0) {
      zero_strides |= uint64_t{1} << dim;
    }
    if (strides[dim] == expected) {
      dense |= uint64_t{1} << dim;
    }
    expected *= sizes[dim];
  }
  return {(tensor.is_contiguous() ? 1u : 0u) | (zero_strides << 1), packed_order, dense};
}

} // namespace

LayoutTable::~LayoutTable() {
  Py_XDECREF(table_);  // destroyed with its thread cache, GIL held (thread_cache.h)
}

PyObject* LayoutTable::release() {
  PyObject* table = table_;
  table_ = nullptr;
  return table;
}

Outcome<LayoutTable::Layout> LayoutTable::layout_of(PyObject* spec) {
  if (table_ == nullptr || PyDict_GET_SIZE(table_) >= kMaxLayouts) {
    Py_XDECREF(release());
    table_ = PyDict_New();
    if (table_ == nullptr) {
      return Failure::python_error();
    }
  }
  // Held for the lookup: DeviceMesh.__eq__ may let another thread clear the
  // caches, which releases table_.
  py::object table = py::reinterpret_borrow<py::object>(table_);
  py::object layout = py::reinterpret_steal<py::object>(layout_tuple(spec));
  if (!layout) {
    return failed_python_call();
  }
  PyObject* entry = PyDict_GetItemWithError(table.ptr(), layout.ptr());
  py::object owned_entry;
  if (entry == nullptr) {
    if (PyErr_Occurred()) {
      return failed_python_call();
    }
    owned_entry = py::reinterpret_steal<py::object>(new_layout_entry(layout.ptr()));
    if (!owned_entry || PyDict_SetItem(table.ptr(), layout.ptr(), owned_entry.ptr()) != 0) {
      return failed_python_call();
    }
    entry = owned_entry.ptr();
  }
  const auto id = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(entry, 0));
  const auto mesh_size = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 1));
  if (PyErr_Occurred()) {
    return failed_python_call();
  }
  if (mesh_size < 1) {
    return Failure::decline(DeclineReason::kUnsupportedArg);  // a _StridedShard layout
  }
  return Layout{id, mesh_size};
}

Status DecisionKeyEncoder::add_dtensor(OpKey& key, PyObject* dtensor) {
  const at::Tensor& global = THPVariable_Unpack(dtensor);  // the wrapper: global sizes and strides
  const size_t ndim = static_cast<size_t>(global.dim());
  if (ndim > kMaxStrideClassDims || global.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
    return Failure::decline(DeclineReason::kUnsupportedArg);
  }
  Outcome<LayoutTable::Layout> layout = layouts_.layout_of(dtensor_spec(dtensor));
  if (!layout) {
    return layout.failure();
  }
  const auto [id, mesh_size] = layout.value();
  key.add(KeyTag::kDTensorClass, id, static_cast<uint64_t>(global.scalar_type()));
  key.add_raw(static_cast<uint64_t>(ndim));
  const bool coarse = coarse_decision_keys_for_testing();
  for (const int64_t size : global.sizes()) {
    key.add_raw(coarse ? 0 : size_class(size, mesh_size));
  }
  for (const uint64_t word : stride_class(global)) {
    key.add_raw(word);
  }
  layout_signature_ = hash_bytes(&layout_signature_, sizeof(layout_signature_)) ^ id;
  if (dtensor_sizes_.empty()) {
    first_mesh_size_ = mesh_size;
  }
  dtensor_sizes_.push_back(global.sizes());
  return success();
}

void DecisionKeyEncoder::add_size(OpKey& key, int64_t size) const {
  for (size_t ordinal = 0; ordinal < dtensor_sizes_.size(); ++ordinal) {
    const auto sizes = dtensor_sizes_[ordinal];
    const auto found = std::find(sizes.begin(), sizes.end(), size);
    if (found != sizes.end()) {
      key.add(KeyTag::kDimRef, ordinal, static_cast<uint64_t>(found - sizes.begin()));
      return;
    }
  }
  key.add(KeyTag::kInt, static_cast<uint64_t>(size));
}

bool DecisionKeyEncoder::add_view_shape(OpKey& key, std::span<const int64_t> requested) const {
  if (dtensor_sizes_.empty()) {
    return false;
  }
  const c10::IntArrayRef input = dtensor_sizes_[0];
  const std::optional<ViewShape> output = infer_view_shape(c10::multiply_integers(input), requested);
  if (!output) {
    return false;
  }
  const std::optional<ViewDimGroups> groups = view_dim_groups(input, *output);
  if (!groups) {
    return false;
  }
  uint64_t inferred = 0;
  for (size_t i = 0; i < requested.size() && i < 64; ++i) {
    inferred |= static_cast<uint64_t>(requested[i] == -1) << i;
  }
  key.add(KeyTag::kViewShape, static_cast<uint64_t>(requested.size()), inferred);
  const bool coarse = coarse_decision_keys_for_testing();
  for (const ViewDimGroup& group : *groups) {
    key.add_raw((uint64_t{group.input_count} << 32) | group.output_count);
    if (group.keeps_dim()) {
      continue;  // the input's size class is in the key already
    }
    for (uint32_t i = 0; i < group.output_count; ++i) {
      key.add_raw(coarse ? 0 : size_class((*output)[group.output_begin + i], first_mesh_size_));
    }
  }
  return true;
}

} // namespace torchshard
