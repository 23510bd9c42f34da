#include "csrc/python/cache/key_builder.h"

#include "csrc/python/cache/decision_key.h"
#include "csrc/python/interop/int_sequence.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/spec_equality.h"

#include <ATen/DTensorState.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Layout.h>
#include <torch/csrc/MemoryFormat.h>
#include <torch/csrc/autograd/python_variable.h>

#include <bit>

namespace torchshard {
namespace {

// Kinds of enum-like values, the first payload word of KeyTag::kEnumLike.
enum class EnumKind : uint64_t { kDtype = 1, kLayout, kMemoryFormat, kDevice };

// Kinds of Python numbers, the payload of KeyTag::kNumberKind. The kind is
// all type promotion reads from a number, so it is all a value-blind op keys.
enum class NumberKind : uint64_t { kBool = 1, kInt, kFloat };

// Builds an exact key, or with a DecisionKeyEncoder a decision key: the same
// traversal, with DTensors and sizes encoded by class (decision_key.h).
class KeyBuilder {
 public:
  KeyBuilder(OpKey& key, bool value_blind_scalars, DecisionKeyEncoder* decision)
      : key_(key), value_blind_scalars_(value_blind_scalars), decision_(decision) {}

  bool builds_decision_key() const { return decision_ != nullptr; }

  // A view's shape argument of a decision key: by its grouping of the input's
  // dimensions where it has one (decision_key.h), else as any size argument.
  Status add_view_shape_argument(PyObject* value) {
    const std::optional<ViewShape> requested = exact_int_sequence(value);
    if (requested && decision_->add_view_shape(key_, *requested)) {
      return success();
    }
    return add_size_argument(value);
  }

  // A size argument of a decision key: ints relative to the inputs' sizes.
  Status add_size_argument(PyObject* value) {
    if (PyLong_CheckExact(value)) {
      return add_size(value);
    }
    if (value == Py_None) {
      key_.add(KeyTag::kNone);
      return success();
    }
    if (PyList_Check(value) || PyTuple_Check(value)) {
      const Py_ssize_t length = PySequence_Fast_GET_SIZE(value);
      key_.add(KeyTag::kList, static_cast<uint64_t>(length));
      for (Py_ssize_t i = 0; i < length; ++i) {
        PyObject* item = PySequence_Fast_ITEMS(value)[i];
        if (!PyLong_CheckExact(item)) {
          return Failure::decline(DeclineReason::kUnsupportedArg);
        }
        if (Status added = add_size(item); !added) {
          return added;
        }
      }
      return success();
    }
    return Failure::decline(DeclineReason::kUnsupportedArg);  // SymInts and the like
  }

  Status add_argument(PyObject* value, bool keyed_if_scalar) {
    const PyRefs& refs = py_refs();
    PyTypeObject* type = Py_TYPE(value);
    if (type == refs.dtensor_type) {
      return decision_ ? decision_->add_dtensor(key_, value) : add_dtensor(value);
    }
    if (value == Py_None) {
      key_.add(KeyTag::kNone);
      return success();
    }
    if (PyType_IsSubtype(type, refs.dtensor_type)) {
      return Failure::decline(DeclineReason::kDTensorSubclassArg);
    }
    if (THPVariable_Check(value)) {
      // Stock replicates it by its shape; no decision covers that.
      return decision_ ? Failure::decline(DeclineReason::kPlainTensorArg) : add_plain_tensor(value);
    }
    if (type == &PyList_Type || type == &PyTuple_Type || PyTuple_Check(value)) {
      return add_sequence(value, keyed_if_scalar);
    }
    if (is_symbolic(type)) {
      return Failure::decline(DeclineReason::kSymbolicArg);
    }
    if (!keyed_if_scalar) {
      return success();
    }
    if (value_blind_scalars_) {
      if (const std::optional<NumberKind> kind = number_kind(type)) {
        key_.add(KeyTag::kNumberKind, static_cast<uint64_t>(*kind));
        return success();
      }
    }
    return add_scalar(value);
  }

 private:
  Status add_size(PyObject* value) {
    int overflow = 0;
    const long long size = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow != 0) {
      return Failure::decline(DeclineReason::kUnsupportedArg);
    }
    decision_->add_size(key_, size);
    return success();
  }

  static std::optional<NumberKind> number_kind(PyTypeObject* type) {
    if (type == &PyBool_Type) {
      return NumberKind::kBool;
    }
    if (type == &PyLong_Type) {
      return NumberKind::kInt;
    }
    if (type == &PyFloat_Type) {
      return NumberKind::kFloat;
    }
    // Complex numbers are left to stock, which fails to hash them where it
    // keys values (pow.Tensor_Scalar(x, 1j) raises there).
    return std::nullopt;
  }

  static bool is_symbolic(PyTypeObject* type) {
    const PyRefs& refs = py_refs();
    return type == refs.symint_type || type == refs.symfloat_type || type == refs.symbool_type;
  }

  Status add_dtensor(PyObject* dtensor) {
    // Local compute must be plain ATen: FakeTensor, FunctionalTensor,
    // LocalTensor and friends mean tracing or simulation; stock handles them.
    if (Py_TYPE(dtensor_local_tensor(dtensor)) != reinterpret_cast<PyTypeObject*>(THPVariableClass)) {
      return Failure::decline(DeclineReason::kNonPlainLocalTensor);
    }
    PyObject* spec = dtensor_spec(dtensor);
    Outcome<uint64_t> hash = spec_structural_hash(spec);
    if (!hash) {
      return hash.failure();
    }
    key_.add_spec(spec_handle(spec), hash.value());
    return success();
  }

  // Stock treats a plain tensor as replicated if it has one element, or any
  // plain tensor while implicit replication is on; otherwise it raises. A
  // one-element 1-d tensor makes stock warn on every call, so it stays with
  // stock.
  Status add_plain_tensor(PyObject* object) {
    if (Py_TYPE(object) != reinterpret_cast<PyTypeObject*>(THPVariableClass)) {
      return Failure::decline(DeclineReason::kPlainTensorArg);
    }
    const at::Tensor& tensor = THPVariable_Unpack(object);
    if (tensor.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
      return Failure::decline(DeclineReason::kSymbolicArg);
    }
    const int64_t numel = tensor.numel();
    const int64_t ndim = tensor.dim();
    if (numel == 1 && ndim == 1) {
      return Failure::decline(DeclineReason::kPlainTensorArg);
    }
    if (numel != 1 && !at::get_dtensor_allow_implicit_replication()) {
      return Failure::decline(DeclineReason::kPlainTensorArg);
    }
    key_.add(KeyTag::kPlainTensor, static_cast<uint64_t>(tensor.scalar_type()), static_cast<uint64_t>(ndim));
    for (const int64_t size : tensor.sizes()) {
      key_.add_raw(static_cast<uint64_t>(size));
    }
    for (const int64_t stride : tensor.strides()) {
      key_.add_raw(static_cast<uint64_t>(stride));
    }
    return success();
  }

  Status add_sequence(PyObject* sequence, bool keyed_if_scalar) {
    const Py_ssize_t length = PySequence_Fast_GET_SIZE(sequence);
    key_.add(KeyTag::kList, static_cast<uint64_t>(length));
    PyObject** items = PySequence_Fast_ITEMS(sequence);
    for (Py_ssize_t i = 0; i < length; ++i) {
      if (Status added = add_argument(items[i], keyed_if_scalar); !added) {
        return added;
      }
    }
    return success();
  }

  Status add_scalar(PyObject* value) {
    PyTypeObject* type = Py_TYPE(value);
    if (type == &PyBool_Type) {
      key_.add(KeyTag::kBool, value == Py_True ? 1 : 0);
    } else if (type == &PyLong_Type) {
      int overflow = 0;
      const long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
      if (overflow != 0) {
        return Failure::decline(DeclineReason::kUnsupportedArg);
      }
      key_.add(KeyTag::kInt, static_cast<uint64_t>(number));
    } else if (type == &PyFloat_Type) {
      key_.add(KeyTag::kDouble, std::bit_cast<uint64_t>(PyFloat_AS_DOUBLE(value)));
    } else if (type == &PyUnicode_Type) {
      Py_ssize_t size = 0;
      const char* text = PyUnicode_AsUTF8AndSize(value, &size);
      if (text == nullptr) {
        PyErr_Clear();
        return Failure::decline(DeclineReason::kUnsupportedArg);
      }
      key_.add(KeyTag::kString, hash_bytes(text, static_cast<size_t>(size)), static_cast<uint64_t>(size));
    } else if (type == &THPDtypeType) {
      add_enum(EnumKind::kDtype, static_cast<uint64_t>(reinterpret_cast<THPDtype*>(value)->scalar_type));
    } else if (type == &THPLayoutType) {
      add_enum(EnumKind::kLayout, static_cast<uint64_t>(reinterpret_cast<THPLayout*>(value)->layout));
    } else if (type == &THPMemoryFormatType) {
      add_enum(EnumKind::kMemoryFormat,
               static_cast<uint64_t>(reinterpret_cast<THPMemoryFormat*>(value)->memory_format));
    } else if (type == &THPDeviceType) {
      const c10::Device& device = reinterpret_cast<THPDevice*>(value)->device;
      add_enum(EnumKind::kDevice, (static_cast<uint64_t>(device.type()) << 16) |
                                      static_cast<uint16_t>(device.index()));
    } else {
      return Failure::decline(DeclineReason::kUnsupportedArg);
    }
    return success();
  }

  void add_enum(EnumKind kind, uint64_t value) {
    key_.add(KeyTag::kEnumLike, static_cast<uint64_t>(kind), value);
  }

  OpKey& key_;
  const bool value_blind_scalars_;
  DecisionKeyEncoder* decision_;
};

Status add_keyed_argument(const OpDescriptor& op, KeyBuilder& builder, size_t index, PyObject* value,
                          bool keyed) {
  if (builder.builds_decision_key() && keyed && op.is_size_argument(index)) {
    return op.view_shape_argument() == index ? builder.add_view_shape_argument(value)
                                             : builder.add_size_argument(value);
  }
  return builder.add_argument(value, keyed);
}

Status build_key(const OpDescriptor& op, PyObject* args, PyObject* kwargs, OpKey& key,
                 DecisionKeyEncoder* decision) {
  const Py_ssize_t positional_count = PyTuple_GET_SIZE(args);
  key.reset(op.key_id(), static_cast<uint64_t>(positional_count));
  KeyBuilder builder(key, op.value_blind_scalars(), decision);
  for (Py_ssize_t i = 0; i < positional_count; ++i) {
    const auto index = static_cast<size_t>(i);
    if (Status added = add_keyed_argument(op, builder, index, PyTuple_GET_ITEM(args, i),
                                          op.is_static_positional(index));
        !added) {
      return added;
    }
  }
  if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) > 0) {
    Py_ssize_t position = 0;
    PyObject* name = nullptr;
    PyObject* value = nullptr;
    while (PyDict_Next(kwargs, &position, &name, &value)) {
      const auto index = op.argument_index(name);
      if (!index) {
        return Failure::decline(DeclineReason::kUnsupportedArg);
      }
      key.add(KeyTag::kKwarg, *index);
      // Every keyword value is keyed, static_kwargkey or not: stock's own key
      // skips the others, so `x.sum(1, dtype=torch.float64)` and `x.sum(1)`
      // share its entry and the second gets a float64 spec for a float32
      // result. Numbers of value-blind ops (alpha=-lr) still key by kind.
      if (Status added = add_keyed_argument(op, builder, *index, value, /*keyed=*/true);
          !added) {
        return added;
      }
    }
  }
  key.seal();
  return success();
}

} // namespace

Status build_op_key(const OpDescriptor& op, PyObject* args, PyObject* kwargs, OpKey& key) {
  return build_key(op, args, kwargs, key, nullptr);
}

Status build_decision_key(const OpDescriptor& op, PyObject* args, PyObject* kwargs,
                          DecisionKeyEncoder& encoder, OpKey& key) {
  encoder.start(op.key_id());
  return build_key(op, args, kwargs, key, &encoder);
}

} // namespace torchshard
