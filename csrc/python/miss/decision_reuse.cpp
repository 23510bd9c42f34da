#include "csrc/python/miss/decision_reuse.h"

#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"
#include "csrc/python/interop/spec_equality.h"
#include "csrc/python/interop/spec_factory.h"
#include "csrc/python/miss/argument_change_reuse.h"
#include "csrc/python/miss/tensor_meta_propagation.h"

#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

namespace torchshard {
namespace {

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

// A conversion that raised leaves the call to stock's propagation, unless the
// error is an interrupt, which the call must raise.
Outcome<std::optional<CacheEntryPtr>> unavailable_unless_interrupt() {
  if (clear_unless_interrupt()) {
    return Failure::python_error();
  }
  return std::optional<CacheEntryPtr>();
}

} // namespace

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
    Outcome<bool> replayable = changes_are_replayable(op, *run, args);
    if (!replayable) {
      return replayable.failure();
    }
    if (!replayable.value()) {
      return decision;
    }
    decision->replayed_changes = *run;
  }
  decision->reusable = plan.result;
  return decision;
}

Outcome<std::optional<CacheEntryPtr>> entry_from_decision(const OpDescriptor& op,
                                                          const Decision& decision,
                                                          const OpKey& exact_key, PyObject* args,
                                                          PyObject* kwargs) {
  Outcome<std::optional<RunLocally>> local = replay_changes(op, decision.replayed_changes, args);
  if (!local) {
    return local.failure();
  }
  if (!local.value()) {
    return std::optional<CacheEntryPtr>();
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
      NativePlan{std::move(*local.value()), std::move(*result)}, key_spec_objects(exact_key)));
  return std::optional<CacheEntryPtr>(std::move(entry));
}

} // namespace torchshard
