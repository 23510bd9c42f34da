// OpDescriptor: everything torchshard needs to know about one OpOverload,
// computed once when its dispatch rule is created: the dispatcher handle, the
// runtime schema info that decides which arguments are keyed, how arguments
// map to schema positions, the return layout, and whether the op can be run
// natively at all.
//
// The op classification mirrors stock DTensor (torch/distributed/tensor/
// _dispatch.py and python_variable.cpp's dispatchDTensorOp): random ops come
// from OpDispatcher._random_ops, custom handlers from _custom_op_handlers
// (both passed in from Python), in-place/out=/view flags from the schema.
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
  std::vector<std::string> static_kwargkey;
};

enum class ReturnKind : uint8_t { kTensor, kTensorList };

class OpDescriptor {
 public:
  // `overload` is the OpOverload; a strong reference is kept.
  OpDescriptor(PyObject* overload, RuntimeSchemaInfo info, bool is_random, bool has_custom_handler);
  ~OpDescriptor();
  OpDescriptor(const OpDescriptor&) = delete;
  OpDescriptor& operator=(const OpDescriptor&) = delete;

  const c10::OperatorHandle& handle() const { return handle_; }
  const c10::FunctionSchema& schema() const { return handle_.schema(); }
  PyObject* overload() const { return overload_; }
  // Unique for the life of the process (never reused, unlike an address).
  uint64_t key_id() const { return key_id_; }

  // Set when no call of this op can run natively; then no key is built.
  std::optional<DeclineReason> op_decline() const { return op_decline_; }

  bool is_static_positional(size_t index) const {
    return static_cast<int64_t>(index) >= info_.static_argnum;
  }
  bool is_static_argument(size_t schema_index) const { return static_argument_[schema_index]; }
  // Interned name of every schema argument, for kwargs lookups.
  PyObject* argument_name(size_t schema_index) const { return argument_names_[schema_index]; }
  // Schema index of a keyword argument, or nullopt for an unknown name.
  std::optional<size_t> argument_index(PyObject* name) const;

  const std::vector<ReturnKind>& returns() const { return returns_; }

 private:
  std::optional<DeclineReason> classify(bool is_random, bool has_custom_handler);

  PyObject* overload_;
  c10::OperatorHandle handle_;
  RuntimeSchemaInfo info_;
  uint64_t key_id_;
  std::vector<bool> static_argument_;
  std::vector<PyObject*> argument_names_;
  std::vector<ReturnKind> returns_;
  std::optional<DeclineReason> op_decline_;
};

} // namespace torchshard
