#include "csrc/python/sharding_miss.h"

#include "csrc/python/local_redistribution.h"
#include "csrc/python/py_refs.h"
#include "csrc/python/spec_equality.h"

#include <torch/csrc/Dtype.h>

#include <optional>

namespace torchshard {
namespace {

// A spec torchshard can attach to a native output as is.
bool is_wrappable_spec(py::handle spec) {
  if (Py_TYPE(spec.ptr()) != py_refs().dtensor_spec_type) {
    return false;
  }
  return !spec.attr(py_refs().str_tensor_meta).is_none();
}

// Matches OutputSharding.output_spec against the schema's returns, as
// OpDispatcher.wrap pairs them. nullopt when stock would wrap a result
// specially (a None spec, a mismatched layout).
std::optional<std::vector<std::vector<py::object>>> specs_per_return(const OpDescriptor& op,
                                                                      py::handle output_spec) {
  const auto& returns = op.returns();
  std::vector<py::handle> per_return;
  if (returns.size() == 1) {
    per_return.push_back(output_spec);
  } else {
    if (!PyTuple_Check(output_spec.ptr()) && !PyList_Check(output_spec.ptr())) {
      return std::nullopt;
    }
    auto sequence = py::reinterpret_borrow<py::sequence>(output_spec);
    if (sequence.size() != returns.size()) {
      return std::nullopt;
    }
    for (auto item : sequence) {
      per_return.push_back(item);
    }
  }
  std::vector<std::vector<py::object>> result(returns.size());
  for (size_t i = 0; i < returns.size(); ++i) {
    if (returns[i] == ReturnKind::kTensor) {
      // None: an output the op did not compute (output_mask); stock returns None.
      if (!per_return[i].is_none() && !is_wrappable_spec(per_return[i])) {
        return std::nullopt;
      }
      result[i].push_back(py::reinterpret_borrow<py::object>(per_return[i]));
      continue;
    }
    if (!PyTuple_Check(per_return[i].ptr()) && !PyList_Check(per_return[i].ptr())) {
      return std::nullopt;
    }
    for (auto spec : py::reinterpret_borrow<py::sequence>(per_return[i])) {
      if (!is_wrappable_spec(spec)) {
        return std::nullopt;
      }
      result[i].push_back(py::reinterpret_borrow<py::object>(spec));
    }
  }
  return result;
}

// The stand-in local results of a rank outside the mesh, per output spec.
std::vector<std::vector<AbsentLocal>> absent_locals_for(
    const std::vector<std::vector<py::object>>& return_specs) {
  const PyRefs& refs = py_refs();
  std::vector<std::vector<AbsentLocal>> result;
  for (const auto& specs : return_specs) {
    auto& locals = result.emplace_back();
    for (const auto& spec : specs) {
      py::object meta = spec.attr(refs.str_tensor_meta);
      py::object dtype = meta.attr(refs.str_dtype);
      if (Py_TYPE(dtype.ptr()) != &THPDtypeType) {
        throw py::type_error("torchshard: tensor_meta.dtype is not a torch.dtype");
      }
      locals.push_back({reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type,
                        py::len(meta.attr(refs.str_shape)) == 0});
    }
  }
  return result;
}

// Stock's in-place tail: None without an output spec, else args[0], whose
// spec is replaced when the placements changed. The key holds args[0]'s
// spec, so that comparison gives the same answer for every hit.
std::optional<DeclineReason> plan_inplace(py::handle output_spec, PyObject* args, CacheEntry& entry) {
  if (output_spec.is_none()) {
    entry.inplace_result = InplaceResult::kNone;
    return std::nullopt;
  }
  PyObject* self = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : nullptr;
  if (!is_wrappable_spec(output_spec) || self == nullptr || Py_TYPE(self) != py_refs().dtensor_type) {
    return DeclineReason::kUnsupportedOutput;  // stock asserts; let it
  }
  py::handle self_spec(dtensor_spec(self));
  const PyRefs& refs = py_refs();
  if (self_spec.attr(refs.str_placements).equal(output_spec.attr(refs.str_placements))) {
    entry.inplace_result = InplaceResult::kSelf;
  } else {
    entry.inplace_result = InplaceResult::kRespecced;
    entry.inplace_spec = py::reinterpret_borrow<py::object>(output_spec);
  }
  return std::nullopt;
}

// Stock reads every out= DTensor from kwargs by name (out= arguments are
// keyword-only, so argument_value finds them there).
bool out_arguments_are_dtensors(const OpDescriptor& op, PyObject* args, PyObject* kwargs) {
  for (const size_t index : op.out_arguments()) {
    PyObject* value = op.argument_value(args, kwargs, index);
    if (value == nullptr || Py_TYPE(value) != py_refs().dtensor_type) {
      return false;
    }
  }
  return true;
}

// Fills the entry for a call stock would run locally (or stand in for, off
// the mesh) and wrap; returns a reason when the call must go to stock instead.
std::optional<DeclineReason> plan_results(const OpDescriptor& op, py::handle output_spec,
                                          PyObject* args, PyObject* kwargs, CacheEntry& entry) {
  if (op.kind() == OpKind::kInplace) {
    return plan_inplace(output_spec, args, entry);
  }
  if (op.kind() == OpKind::kOutVariant && !out_arguments_are_dtensors(op, args, kwargs)) {
    return DeclineReason::kUnsupportedArg;
  }
  auto return_specs = specs_per_return(op, output_spec);
  if (!return_specs) {
    return DeclineReason::kUnsupportedOutput;
  }
  entry.return_specs = std::move(*return_specs);
  if (!entry.participating && op.kind() != OpKind::kOutVariant) {
    for (const auto& specs : entry.return_specs) {
      for (const auto& spec : specs) {
        if (spec.is_none()) {
          return DeclineReason::kNotParticipating;  // stock has no stand-in for it either
        }
      }
    }
    entry.absent_locals = absent_locals_for(entry.return_specs);
  }
  return std::nullopt;
}

CacheEntryPtr decided(CacheEntry&& entry) {
  return std::make_shared<const CacheEntry>(std::move(entry));
}

} // namespace

MissOutcome propagate_on_miss(const OpDescriptor& op, const OpKey& key, PyObject* func,
                              PyObject* args, PyObject* kwargs) {
  const PyRefs& refs = py_refs();
  py::handle dispatcher(refs.op_dispatcher);
  py::handle func_object(func);
  py::handle args_tuple(args);
  py::object kwargs_dict = kwargs ? py::reinterpret_borrow<py::object>(kwargs) : py::dict();
  MissOutcome outcome;
  CacheEntry entry;
  for (const SpecHandle spec : key.specs()) {
    entry.key_specs.push_back(py::reinterpret_borrow<py::object>(spec_object(spec)));
  }
  try {
    py::object op_info = dispatcher.attr(refs.str_unwrap_to_op_info)(func_object, args_tuple, kwargs_dict);
    // try_cache=False, as the built-in path passes after a miss of its own
    // native key: stock's Python propagation cache matches scalars with ==,
    // so `x * 2.0` would get the entry (and output dtype) of `x * 2`.
    py::object sharding = dispatcher.attr(refs.str_propagate_slow_path)(
        func_object, args_tuple, kwargs_dict, op_info, /*try_cache=*/false);
    if (Py_TYPE(sharding.ptr()) != refs.output_sharding_type) {
      // Inference mode decomposed a CompositeImplicitAutograd op: stock
      // returns that result directly; let it do so.
      return outcome;
    }
    py::object mesh = op_info.attr(refs.str_compute_mesh);
    entry.participating = mesh.attr(refs.str_is_rank_in_mesh)().cast<bool>();
    if (sharding.attr(refs.str_needs_redistribute).cast<bool>()) {
      entry.decline = entry.participating
          ? plan_local_redistribution(op, op_info, sharding, args, kwargs, entry)
          : DeclineReason::kNeedsRedistribute;
    }
    if (!entry.decline) {
      entry.decline = plan_results(op, sharding.attr(refs.str_output_spec), args, kwargs, entry);
    }
    outcome.entry = decided(std::move(entry));
    return outcome;
  } catch (py::error_already_set& error) {
    error.restore();
    outcome.python_error_pending = true;
    return outcome;
  }
}

} // namespace torchshard
