// How a decision key encodes a call's tensors and sizes: by everything stock's
// strategies read, never by the concrete sizes (docs/design.md, "Shape-generic
// decisions"). The traversal of the arguments is the exact key's
// (key_builder.h, build_decision_key); this file holds what differs.
//
// Per DTensor argument (KeyTag::kDTensorClass):
//  - its layout: mesh, placements and shard_order (what DTensorSpec equality
//    compares besides tensor_meta), as an id interned in this thread's
//    LayoutTable. Ids are never reused, so a key built before a clear can
//    never match a decision made after it;
//  - dtype and ndim;
//  - a size class per dimension: the size itself up to the mesh's size P
//    (size 1, and sizes smaller than any mesh dimension, which
//    is_tensor_shardable filters), else the size modulo P (every mesh
//    dimension's size and every product of them divides P, so whether the
//    size shards evenly over any of them is fixed);
//  - a stride class: contiguous or not, the dimensions' order by stride,
//    which strides are 0 (expanded) and which are dense in that order.
// Per size argument (SymInt, SymInt[]; op_descriptor.h): each int that equals a
// dimension of an earlier DTensor argument as a reference to the first such
// dimension (KeyTag::kDimRef), so x.view(B, L, H, D) maps every L to one key;
// any other int as itself.
// A view's shape argument (view, _unsafe_view, reshape) instead as the way it
// regroups the input's dimensions (core/view_shape.h): per group its input
// and output dimension counts and, unless it keeps one dimension, the size
// class of each output size; and which entries were -1. So the flatten and
// unflatten of x.view(B * L, D) and y.view(B, L, D) map every L to one key.
//
// Requires the GIL (reads specs; interning runs DeviceMesh.__hash__/__eq__).
#pragma once

#include "csrc/core/op_key.h"
#include "csrc/core/outcome.h"

#include <Python.h>
#include <absl/container/inlined_vector.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <span>

namespace torchshard {

// One thread's interned layouts: (mesh, placements, shard_order) -> id and
// mesh size. Bounded: past kMaxLayouts it starts afresh (new ids).
class LayoutTable {
 public:
  struct Layout {
    uint64_t id;
    int64_t mesh_size;  // P: the product of the mesh's dimension sizes
  };
  static constexpr Py_ssize_t kMaxLayouts = 4096;

  LayoutTable() = default;
  ~LayoutTable();
  LayoutTable(const LayoutTable&) = delete;
  LayoutTable& operator=(const LayoutTable&) = delete;

  // Declines (kUnsupportedArg) when a mesh cannot be hashed or compared; a
  // Python error for an interrupt raised while doing so.
  Outcome<Layout> layout_of(PyObject* spec);
  // Hands the table's Python objects to the caller (to drop with the GIL,
  // outside any lock); the next layout starts a new table.
  PyObject* release();

 private:
  PyObject* table_ = nullptr;  // dict; owned
};

class DecisionKeyEncoder {
 public:
  explicit DecisionKeyEncoder(LayoutTable& layouts) : layouts_(layouts) {}

  Status add_dtensor(OpKey& key, PyObject* dtensor);
  void add_size(OpKey& key, int64_t size) const;
  // Adds a view's shape argument as its grouping of the first DTensor
  // argument's dimensions; false (nothing added) when the shapes have no
  // grouping, and the caller then adds the sizes one by one.
  bool add_view_shape(OpKey& key, std::span<const int64_t> requested) const;
  // A hash of the op and the layouts seen, sizes left out: tells a key that
  // is new only by its size classes from one with new placements.
  uint64_t layout_signature() const { return layout_signature_; }
  void start(uint64_t op_id) { layout_signature_ = op_id; }

 private:
  LayoutTable& layouts_;
  absl::InlinedVector<c10::IntArrayRef, 4> dtensor_sizes_;  // global sizes, argument order
  int64_t first_mesh_size_ = 0;                            // P of the first DTensor argument
  uint64_t layout_signature_ = 0;
};

} // namespace torchshard
