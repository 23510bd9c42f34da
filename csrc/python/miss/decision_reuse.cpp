#include "csrc/python/miss/decision_reuse.h"

#include "csrc/python/interop/int_sequence.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"
#include "csrc/python/interop/spec_equality.h"
#include "csrc/python/miss/tensor_meta_propagation.h"

#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Size.h>
#include <torch/csrc/autograd/python_variable.h>

namespace torchshard {
namespace {

py::tuple int_tuple(c10::IntArrayRef values) {
  py::tuple tuple(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    tuple[i] = py::int_(values[i]);
  }
  return tuple;
}

// TensorMeta(shape=torch.Size, stride=tuple, dtype), as stock builds it.
py::object tensor_meta(c10::IntArrayRef sizes, c10::IntArrayRef strides, c10::ScalarType dtype) {
  py::object shape = py::handle(reinterpret_cast<PyObject*>(&THPSizeType))(int_tuple(sizes));
  py::handle dtype_object(reinterpret_cast<PyObject*>(torch::getTHPDtype(dtype)));
  return py::handle(py_refs().tensor_meta_type)(shape, int_tuple(strides), dtype_object);
}

// The template's mesh, placements and shard order, with new tensor metadata.
// The spec is a copy of the template's fields (DTensorSpec is a dataclass
// whose fields live in its __dict__) with tensor_meta replaced and the cached
// hash reset, exactly what DTensorSpec(mesh, placements, meta, shard_order,
// use_strided_shard_as_shard_order) makes: __post_init__ only normalizes the
// placements and shard order, and the template's are normalized already. A
// fifth of the constructor's cost (1 us instead of 7).
py::object spec_like(py::handle spec_template, py::object meta) {
  const PyRefs& refs = py_refs();
  auto* type = refs.dtensor_spec_type;
  PyObject** template_dict = _PyObject_GetDictPtr(spec_template.ptr());
  if (Py_TYPE(spec_template.ptr()) != type || template_dict == nullptr || *template_dict == nullptr) {
    return py::handle(reinterpret_cast<PyObject*>(type))(
        spec_template.attr(refs.str_mesh), spec_template.attr(refs.str_placements), meta,
        spec_template.attr(refs.str_shard_order), spec_template.attr(refs.str_use_strided_shard));
  }
  py::object fields = py::reinterpret_steal<py::object>(PyDict_Copy(*template_dict));
  if (!fields || PyDict_SetItem(fields.ptr(), refs.str_tensor_meta, meta.ptr()) != 0 ||
      PyDict_SetItem(fields.ptr(), refs.str_hash, Py_None) != 0) {
    throw py::error_already_set();
  }
  py::object spec = py::reinterpret_steal<py::object>(type->tp_alloc(type, 0));
  if (!spec || PyObject_GenericSetDict(spec.ptr(), fields.ptr(), nullptr) != 0) {
    throw py::error_already_set();
  }
  return spec;
}

std::optional<c10::ScalarType> spec_dtype(py::handle spec) {
  const PyRefs& refs = py_refs();
  py::object dtype = spec.attr(refs.str_tensor_meta).attr(refs.str_dtype);
  if (Py_TYPE(dtype.ptr()) != &THPDtypeType) {
    return std::nullopt;
  }
  return reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type;
}

// An elementwise op's one output takes the dtype of the decision's output.
Outcome<std::optional<ReturnMetas>> output_metas(const OpDescriptor& op, const WrapResults& templates,
                                                 PyObject* args, PyObject* kwargs) {
  if (op.is_elementwise() && templates.specs.size() == 1 && templates.specs[0].size() == 1 &&
      !templates.specs[0][0].is_none()) {
    Outcome<std::optional<c10::ScalarType>> dtype = catch_python_errors(
        [&]() -> Outcome<std::optional<c10::ScalarType>> { return spec_dtype(templates.specs[0][0]); });
    if (!dtype) {
      return dtype.failure();
    }
    if (dtype.value()) {
      return elementwise_tensor_meta(op, args, kwargs, *dtype.value());
    }
  }
  return propagate_tensor_meta(op, args, kwargs);
}

// nullopt when the metadata does not have the shape of the decision's outputs.
std::optional<WrapResults> wrap_with_metas(const WrapResults& templates, const ReturnMetas& metas) {
  if (metas.size() != templates.specs.size()) {
    return std::nullopt;
  }
  WrapResults wrap{ReturnSpecs(templates.specs.size()), templates.shares_view_storage};
  for (size_t r = 0; r < metas.size(); ++r) {
    const auto& return_templates = templates.specs[r];
    if (metas[r].size() != return_templates.size()) {
      return std::nullopt;
    }
    for (size_t i = 0; i < metas[r].size(); ++i) {
      const py::object& spec_template = return_templates[i];
      if (spec_template.is_none() != !metas[r][i].has_value()) {
        return std::nullopt;
      }
      if (spec_template.is_none()) {
        wrap.specs[r].push_back(spec_template);
        continue;
      }
      const OutputMeta& meta = *metas[r][i];
      wrap.specs[r].push_back(spec_like(spec_template, tensor_meta(meta.sizes, meta.strides, meta.dtype)));
    }
  }
  return wrap;
}

// In place, the output spec is args[0]'s own metadata with the decision's placements.
ReturnInplace inplace_with_meta(const ReturnInplace& decided, PyObject* args) {
  if (decided.kind != ReturnInplace::Kind::kRespecced) {
    return decided;
  }
  const at::Tensor& self = THPVariable_Unpack(PyTuple_GET_ITEM(args, 0));
  return ReturnInplace::respecced(
      spec_like(decided.new_spec, tensor_meta(self.sizes(), self.strides(), self.scalar_type())));
}

// The input dimensions a Shard placement of `spec` shards (every placement
// of a decision key's layout is normalized: dims are non-negative).
absl::InlinedVector<int64_t, 4> sharded_dims(PyObject* spec) {
  absl::InlinedVector<int64_t, 4> dims;
  for (py::handle placement : py::tuple(py::handle(spec).attr(py_refs().str_placements))) {
    if (PyObject_IsInstance(placement.ptr(), py_refs().shard_type) == 1) {
      dims.push_back(placement.attr("dim").cast<int64_t>());
    }
  }
  if (PyErr_Occurred()) {
    throw py::error_already_set();
  }
  return dims;
}

std::optional<ViewShape> view_shape_of(const OpDescriptor& op, PyObject* args) {
  const std::optional<size_t> index = op.view_shape_argument();
  if (!index || PyTuple_GET_SIZE(args) != static_cast<Py_ssize_t>(*index) + 1 ||
      Py_TYPE(PyTuple_GET_ITEM(args, 0)) != py_refs().dtensor_type) {
    return std::nullopt;
  }
  PyObject* self = PyTuple_GET_ITEM(args, 0);
  const std::optional<ViewShape> requested = exact_int_sequence(PyTuple_GET_ITEM(args, *index));
  if (!requested) {
    return std::nullopt;
  }
  const at::Tensor& global = THPVariable_Unpack(self);
  const at::Tensor& local = THPVariable_Unpack(dtensor_local_tensor(self));
  const std::optional<ViewShape> output = infer_view_shape(global.numel(), *requested);
  if (!output) {
    return std::nullopt;
  }
  const std::optional<ViewDimGroups> groups = view_dim_groups(global.sizes(), *output);
  if (!groups || local.dim() != global.dim()) {
    return std::nullopt;
  }
  const auto sharded = sharded_dims(dtensor_spec(self));
  ViewShape shape = *output;
  for (const ViewDimGroup& group : *groups) {
    if (group.keeps_dim()) {
      shape[group.output_begin] = local.size(group.input_begin);
      continue;
    }
    for (uint32_t i = group.input_begin; i < group.input_begin + group.input_count; ++i) {
      if (std::find(sharded.begin(), sharded.end(), static_cast<int64_t>(i)) != sharded.end()) {
        return std::nullopt;
      }
    }
  }
  return shape;
}

// A view whose plan is stock's local shape, when local_view_shape() makes
// exactly that shape for this call.
Outcome<bool> localizes_like_stock(const OpDescriptor& op, const RunLocally& run, PyObject* args) {
  const auto* replacement = run.changed_arguments.size() == 1
      ? std::get_if<Replacement>(&run.changed_arguments[0])
      : nullptr;
  if (replacement == nullptr || op.view_shape_argument() != replacement->position) {
    return false;
  }
  Outcome<std::optional<ViewShape>> ours = local_view_shape(op, args);
  if (!ours) {
    return ours.failure();
  }
  return ours.value().has_value() && exact_int_sequence(replacement->value.ptr()) == ours.value();
}

// A conversion that raised leaves the call to stock's propagation, unless the
// error is an interrupt, which the call must raise.
Outcome<std::optional<CacheEntryPtr>> unavailable_unless_interrupt() {
  if (clear_unless_interrupt()) {
    return Failure::python_error();
  }
  return std::optional<CacheEntryPtr>();
}

} // namespace

Outcome<std::optional<ViewShape>> local_view_shape(const OpDescriptor& op, PyObject* args) {
  Outcome<std::optional<ViewShape>> shape = catch_python_errors(
      [&]() -> Outcome<std::optional<ViewShape>> { return view_shape_of(op, args); });
  if (!shape && !clear_unless_interrupt()) {
    return std::optional<ViewShape>();
  }
  return shape;
}

Outcome<DecisionPtr> decision_from_entry(const CacheEntry& entry, const OpDescriptor& op, PyObject* args) {
  auto decision = std::make_shared<Decision>();
  if (entry.decline() != nullptr) {
    return decision;
  }
  const NativePlan& plan = entry.plan();
  const auto* run = std::get_if<RunLocally>(&plan.local);
  if (run == nullptr || std::holds_alternative<ReturnOutArguments>(plan.result)) {
    return decision;
  }
  if (!run->changed_arguments.empty()) {
    Outcome<bool> localizes = localizes_like_stock(op, *run, args);
    if (!localizes) {
      return localizes.failure();
    }
    if (!localizes.value()) {
      return decision;
    }
    decision->localizes_view_shape = true;
    decision->positional_count = run->positional_count;
  }
  decision->reusable = plan.result;
  return decision;
}

Outcome<std::optional<CacheEntryPtr>> entry_from_decision(const OpDescriptor& op,
                                                          const Decision& decision,
                                                          const OpKey& exact_key, PyObject* args,
                                                          PyObject* kwargs) {
  RunLocally local = RunLocally::as_called();
  if (decision.localizes_view_shape) {
    Outcome<std::optional<ViewShape>> shape = local_view_shape(op, args);
    if (!shape) {
      return shape.failure();
    }
    if (!shape.value()) {
      return std::optional<CacheEntryPtr>();
    }
    std::vector<ChangedArgument> changed;
    changed.emplace_back(Replacement{*op.view_shape_argument(), int_tuple(*shape.value())});
    local = RunLocally::redistributed(std::move(changed), decision.positional_count);
  }
  const ResultStep& reusable = *decision.reusable;
  std::optional<ResultStep> result;
  if (const auto* templates = std::get_if<WrapResults>(&reusable)) {
    Outcome<std::optional<ReturnMetas>> metas = output_metas(op, *templates, args, kwargs);
    if (!metas) {
      return metas.failure();
    }
    if (!metas.value()) {
      return std::optional<CacheEntryPtr>();
    }
    Outcome<std::optional<WrapResults>> wrap = catch_python_errors(
        [&]() -> Outcome<std::optional<WrapResults>> { return wrap_with_metas(*templates, *metas.value()); });
    if (!wrap) {
      return unavailable_unless_interrupt();
    }
    if (!wrap.value()) {
      return std::optional<CacheEntryPtr>();
    }
    result = std::move(*wrap.value());
  } else {
    const auto& decided = std::get<ReturnInplace>(reusable);
    Outcome<ReturnInplace> inplace = catch_python_errors(
        [&]() -> Outcome<ReturnInplace> { return inplace_with_meta(decided, args); });
    if (!inplace) {
      return unavailable_unless_interrupt();
    }
    result = std::move(inplace).value();
  }
  auto entry = std::make_shared<const CacheEntry>(CacheEntry::native(
      NativePlan{std::move(local), std::move(*result)}, key_spec_objects(exact_key)));
  return std::optional<CacheEntryPtr>(std::move(entry));
}

} // namespace torchshard
