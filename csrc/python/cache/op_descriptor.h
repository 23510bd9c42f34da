// OpDescriptor: everything torchshard needs to know about one OpOverload,
// computed once when its dispatch rule is created: the dispatcher handle, the
// runtime schema info that decides which arguments are keyed, how arguments
// map to schema positions, the return layout, and whether the op can be run
// natively at all.
//
// The op classification mirrors stock DTensor (torch/distributed/tensor/
// _dispatch.py and python_variable.cpp's dispatchDTensorOp): random ops come
// from OpDispatcher._random_ops, custom handlers from _custom_op_handlers
// (both passed in from Python); in-place, out= and view ops are recognised
// from the schema's alias annotations (plus stock's trailing-underscore rule
// for in-place) and decide how results are returned (see OpKind).
//
// Immutable after construction; shared by all threads (GIL held when used).
#pragma once

#include "csrc/core/decline_reason.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <Python.h>

#include <optional>
#include <string>
#include <vector>

namespace torchshard {

// The parts of DTensor's RuntimeSchemaInfo (torch/distributed/tensor/
// _op_schema.py) that decide keying. needs_pytree is not needed: the key
// encodes lists item by item whatever that flag says.
struct RuntimeSchemaInfo {
  int64_t static_argnum = 100;  // non-tensor positional args from here on are keyed
  // static_kwargkey is not needed: every keyword value is keyed (key_builder.h).
  // Set for ops whose sharding strategy never reads a Python number's value
  // (stock's pointwise strategies look at tensor metadata only): numbers are
  // then keyed by kind (bool/int/float, which decides the output
  // dtype), so a changing learning rate or step count reuses one entry.
  // (Complex numbers are never value-blind: see key_builder.cpp.)
  bool value_blind_scalars = false;
};

// What torchshard's Python side knows about an op from stock's registries
// (torchshard/_hook.py).
struct OpTraits {
  bool is_random = false;           // in OpDispatcher._random_ops
  bool has_custom_handler = false;  // in OpDispatcher._custom_op_handlers
  // In a family whose stock strategy reads no more of a size than the size
  // classes of a decision key hold (docs/design.md, "Shape-generic decisions"):
  // an exact miss may reuse another shape's decision.
  bool shape_generic = false;
};

enum class ReturnKind : uint8_t { kTensor, kTensorList };

// How an op's results reach the caller, as stock DTensor returns them.
enum class OpKind : uint8_t {
  kFunctional,  // fresh DTensors wrapped around the local results
  kView,        // like kFunctional, and a Tensor result shares its input's storage
  kInplace,     // args[0] itself (its spec updated if the placements change), or None
  kOutVariant,  // the out= DTensors themselves, their specs set to the output specs
};

class OpDescriptor {
 public:
  // `overload` is the OpOverload; a strong reference is kept.
  OpDescriptor(PyObject* overload, RuntimeSchemaInfo info, OpTraits traits);
  ~OpDescriptor();
  OpDescriptor(const OpDescriptor&) = delete;
  OpDescriptor& operator=(const OpDescriptor&) = delete;

  const c10::OperatorHandle& handle() const { return handle_; }
  const c10::FunctionSchema& schema() const { return handle_.schema(); }
  // "aten::add.Tensor": the name explain(), warnings and logs use.
  std::string display_name() const;
  PyObject* overload() const { return overload_; }
  // Unique for the life of the process (never reused, unlike an address).
  uint64_t key_id() const { return key_id_; }

  // Set when no call of this op can run natively; then no key is built.
  std::optional<DeclineReason> op_decline() const { return op_decline_; }
  OpKind kind() const { return kind_; }
  // The local op writes one of its arguments (kInplace, kOutVariant, and the
  // few functional ops such as _native_batch_norm_legit that update running
  // statistics): a failure half-way must raise, not run the call again.
  bool writes_arguments() const { return writes_arguments_; }
  // Tagged inplace_view (squeeze_, ...): changing the spec also changes the
  // wrapper's sizes, which stock fixes through return_and_correct_aliasing.
  bool is_inplace_view() const { return is_inplace_view_; }
  bool value_blind_scalars() const { return info_.value_blind_scalars; }
  bool shape_generic() const { return shape_generic_; }
  // A functional pointwise op (value_blind_scalars) of Tensor and Scalar
  // arguments only, with one Tensor return: its output's shape and strides
  // are TensorIterator's for its tensor inputs (tensor_meta_propagation.h).
  bool is_elementwise() const { return elementwise_; }
  // Schema argument `index` is a size (SymInt, SymInt?, SymInt[]): the value
  // of a view's shape or a split's size follows the input's shape, so a
  // decision key encodes it relative to the input's sizes.
  bool is_size_argument(size_t index) const { return size_arguments_[index]; }
  // Some argument is a size: stock's strategy may then read sizes through it
  // (new_empty's negative cost), so its redistributions are not replayed
  // across shapes (miss/argument_change_reuse.h).
  bool has_size_arguments() const { return has_size_arguments_; }
  // The schema index of a view's shape argument (aten::view, _unsafe_view,
  // reshape: `size`/`shape`, SymInt[]), which a decision key encodes by how it
  // regroups the input's dimensions (core/view_shape.h).
  std::optional<size_t> view_shape_argument() const { return view_shape_argument_; }

  bool is_static_positional(size_t index) const {
    return static_cast<int64_t>(index) >= info_.static_argnum;
  }
  // Interned name of every schema argument, for kwargs lookups.
  PyObject* argument_name(size_t schema_index) const { return argument_names_[schema_index]; }
  // Schema index of a keyword argument, or nullopt for an unknown name.
  std::optional<size_t> argument_index(PyObject* name) const;
  // The value a call passed for schema argument `index`, positionally or by
  // keyword; nullptr when it was omitted. Borrowed. Throws
  // py::error_already_set if the kwargs lookup raises.
  PyObject* argument_value(PyObject* args, PyObject* kwargs, size_t index) const;

  // Schema layout of the results: one ReturnKind per return (empty for an
  // in-place op returning nothing).
  const std::vector<ReturnKind>& returns() const { return returns_; }
  // kView: per return, the schema index of the argument a Tensor result
  // aliases (nullopt for Tensor[] results, whose storage stock leaves alone).
  const std::vector<std::optional<size_t>>& view_sources() const { return view_sources_; }
  // kOutVariant: schema indices of the out= arguments, in schema order.
  const std::vector<size_t>& out_arguments() const { return out_arguments_; }

 private:
  std::optional<DeclineReason> classify(const OpTraits& traits);
  std::optional<DeclineReason> classify_returns();
  std::optional<DeclineReason> classify_view_sources();

  PyObject* overload_;
  c10::OperatorHandle handle_;
  RuntimeSchemaInfo info_;
  uint64_t key_id_;
  std::vector<PyObject*> argument_names_;
  std::vector<bool> size_arguments_;
  bool has_size_arguments_ = false;
  std::optional<size_t> view_shape_argument_;
  std::vector<ReturnKind> returns_;
  std::vector<std::optional<size_t>> view_sources_;
  std::vector<size_t> out_arguments_;
  OpKind kind_ = OpKind::kFunctional;
  bool is_inplace_view_ = false;
  bool writes_arguments_ = false;
  bool shape_generic_ = false;
  bool elementwise_ = false;
  std::optional<DeclineReason> op_decline_;
};

} // namespace torchshard
