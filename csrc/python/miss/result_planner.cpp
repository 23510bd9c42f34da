#include "csrc/python/miss/result_planner.h"

#include "csrc/core/assertions.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

#include <torch/csrc/Dtype.h>

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
// OpDispatcher.wrap pairs them.
Outcome<ReturnSpecs> specs_per_return(const OpDescriptor& op, py::handle output_spec) {
  const auto unsupported = Failure::decline(DeclineReason::kUnsupportedOutput);
  const auto& returns = op.returns();
  std::vector<py::handle> per_return;
  if (returns.size() == 1) {
    per_return.push_back(output_spec);
  } else {
    if (!PyTuple_Check(output_spec.ptr()) && !PyList_Check(output_spec.ptr())) {
      return unsupported;
    }
    auto sequence = py::reinterpret_borrow<py::sequence>(output_spec);
    if (sequence.size() != returns.size()) {
      return unsupported;
    }
    for (auto item : sequence) {
      per_return.push_back(item);
    }
  }
  ReturnSpecs result(returns.size());
  for (size_t i = 0; i < returns.size(); ++i) {
    if (returns[i] == ReturnKind::kTensor) {
      // None: an output the op did not compute (output_mask); stock returns None.
      if (!per_return[i].is_none() && !is_wrappable_spec(per_return[i])) {
        return unsupported;
      }
      result[i].push_back(py::reinterpret_borrow<py::object>(per_return[i]));
      continue;
    }
    if (!PyTuple_Check(per_return[i].ptr()) && !PyList_Check(per_return[i].ptr())) {
      return unsupported;
    }
    for (auto spec : py::reinterpret_borrow<py::sequence>(per_return[i])) {
      if (!is_wrappable_spec(spec)) {
        return unsupported;
      }
      result[i].push_back(py::reinterpret_borrow<py::object>(spec));
    }
  }
  return result;
}

// Stock's in-place tail: None without an output spec, else args[0], whose
// spec is replaced when the placements changed. The key holds args[0]'s
// spec, so that comparison gives the same answer for every hit.
Outcome<ResultStep> plan_inplace(py::handle output_spec, PyObject* args) {
  if (output_spec.is_none()) {
    return ResultStep{ReturnInplace::none()};
  }
  PyObject* self = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : nullptr;
  if (!is_wrappable_spec(output_spec) || self == nullptr || Py_TYPE(self) != py_refs().dtensor_type) {
    return Failure::decline(DeclineReason::kUnsupportedOutput);  // stock asserts; let it
  }
  py::handle self_spec(dtensor_spec(self));
  const PyRefs& refs = py_refs();
  if (self_spec.attr(refs.str_placements).equal(output_spec.attr(refs.str_placements))) {
    return ResultStep{ReturnInplace::self()};
  }
  return ResultStep{ReturnInplace::respecced(py::reinterpret_borrow<py::object>(output_spec))};
}

// Stock reads every out= DTensor from kwargs by name (out= arguments are
// keyword-only, so argument_value finds them there); each takes the spec of
// its return (the op descriptor declines out= ops without one Tensor return
// per out= argument).
Outcome<ResultStep> plan_out_arguments(const OpDescriptor& op, py::handle output_spec,
                                       PyObject* args, PyObject* kwargs) {
  for (const size_t index : op.out_arguments()) {
    PyObject* value = op.argument_value(args, kwargs, index);
    if (value == nullptr || Py_TYPE(value) != py_refs().dtensor_type) {
      return Failure::decline(DeclineReason::kUnsupportedArg);
    }
  }
  Outcome<ReturnSpecs> specs = specs_per_return(op, output_spec);
  if (!specs) {
    return specs.failure();
  }
  ReturnOutArguments plan;
  for (auto& return_specs : specs.value()) {
    if (return_specs.size() != 1 || return_specs[0].is_none()) {
      return Failure::decline(DeclineReason::kUnsupportedOutput);
    }
    plan.specs.push_back(std::move(return_specs[0]));
  }
  TORCHSHARD_ASSERT(plan.specs.size() == op.out_arguments().size());
  return ResultStep{std::move(plan)};
}

std::vector<AbsentLocal> absent_locals_for(const std::vector<py::object>& specs) {
  const PyRefs& refs = py_refs();
  std::vector<AbsentLocal> locals;
  for (const auto& spec : specs) {
    py::object meta = spec.attr(refs.str_tensor_meta);
    py::object dtype = meta.attr(refs.str_dtype);
    if (Py_TYPE(dtype.ptr()) != &THPDtypeType) {
      throw py::type_error("torchshard: tensor_meta.dtype is not a torch.dtype");
    }
    locals.push_back({reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type,
                      py::len(meta.attr(refs.str_shape)) == 0});
  }
  return locals;
}

} // namespace

Outcome<ResultStep> plan_result_step(const OpDescriptor& op, py::handle output_spec,
                                     PyObject* args, PyObject* kwargs, bool participating) {
  return catch_python_errors([&]() -> Outcome<ResultStep> {
    switch (op.kind()) {
      case OpKind::kInplace:
        return plan_inplace(output_spec, args);
      case OpKind::kOutVariant:
        return plan_out_arguments(op, output_spec, args, kwargs);
      case OpKind::kFunctional:
      case OpKind::kView:
        break;
    }
    Outcome<ReturnSpecs> specs = specs_per_return(op, output_spec);
    if (!specs) {
      return specs.failure();
    }
    return ResultStep{WrapResults{std::move(specs).value(), op.kind() == OpKind::kView && participating}};
  });
}

Outcome<LocalStep> plan_off_mesh_step(const OpDescriptor& op, const ResultStep& result) {
  const auto* wrap = std::get_if<WrapResults>(&result);
  if (wrap == nullptr) {
    return LocalStep{SkipLocal{}};
  }
  TORCHSHARD_ASSERT(op.kind() == OpKind::kFunctional || op.kind() == OpKind::kView);
  return catch_python_errors([&]() -> Outcome<LocalStep> {
    StandIn stand_in;
    for (const auto& specs : wrap->specs) {
      for (const auto& spec : specs) {
        if (spec.is_none()) {
          return Failure::decline(DeclineReason::kNotParticipating);  // stock has no stand-in for it either
        }
      }
      stand_in.locals.push_back(absent_locals_for(specs));
    }
    return LocalStep{std::move(stand_in)};
  });
}

} // namespace torchshard
