#include "csrc/python/sharding_miss.h"

#include "csrc/python/py_refs.h"
#include "csrc/python/spec_equality.h"

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
      if (!is_wrappable_spec(per_return[i])) {
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
    py::object sharding = dispatcher.attr(refs.str_propagate_slow_path)(
        func_object, args_tuple, kwargs_dict, op_info, /*try_cache=*/true);
    if (Py_TYPE(sharding.ptr()) != refs.output_sharding_type) {
      // Inference mode decomposed a CompositeImplicitAutograd op: stock
      // returns that result directly; let it do so.
      return outcome;
    }
    if (sharding.attr(refs.str_needs_redistribute).cast<bool>()) {
      entry.decline = DeclineReason::kNeedsRedistribute;
      outcome.entry = decided(std::move(entry));
      return outcome;
    }
    py::object mesh = op_info.attr(refs.str_compute_mesh);
    if (!mesh.attr(refs.str_is_rank_in_mesh)().cast<bool>()) {
      entry.decline = DeclineReason::kNotParticipating;
      outcome.entry = decided(std::move(entry));
      return outcome;
    }
    auto return_specs = specs_per_return(op, sharding.attr(refs.str_output_spec));
    if (!return_specs) {
      entry.decline = DeclineReason::kUnsupportedOutput;
    } else {
      entry.return_specs = std::move(*return_specs);
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
