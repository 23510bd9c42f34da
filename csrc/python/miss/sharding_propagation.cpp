#include "csrc/python/miss/sharding_propagation.h"

#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"
#include "csrc/python/interop/spec_equality.h"
#include "csrc/python/miss/redistribution_planner.h"
#include "csrc/python/miss/result_planner.h"

namespace torchshard {
namespace {

// Stock's decision for one call, as its OpDispatcher reaches it.
struct StockDecision {
  py::object op_info;   // OpInfo of unwrap_to_op_info
  py::object sharding;  // OutputSharding, or the decomposed result
};

// The plan for a call stock would run locally (or stand in for, off the
// mesh) and wrap, or why it must go to stock instead. The order of the
// checks decides which reason a call that fails several is counted under.
Outcome<NativePlan> plan_native(const OpDescriptor& op, const StockDecision& decision,
                                bool participating, PyObject* args, PyObject* kwargs) {
  const PyRefs& refs = py_refs();
  const bool needs_redistribute = decision.sharding.attr(refs.str_needs_redistribute).cast<bool>();
  if (needs_redistribute && !participating) {
    return Failure::decline(DeclineReason::kNeedsRedistribute);
  }
  LocalStep local = RunLocally::as_called();
  if (needs_redistribute) {
    Outcome<RunLocally> redistributed =
        plan_redistribution(op, decision.op_info, decision.sharding, args, kwargs);
    if (!redistributed) {
      return redistributed.failure();
    }
    local = std::move(redistributed).value();
  }
  Outcome<ResultStep> result = plan_result_step(
      op, decision.sharding.attr(refs.str_output_spec), args, kwargs, participating);
  if (!result) {
    return result.failure();
  }
  if (!participating) {
    Outcome<LocalStep> off_mesh = plan_off_mesh_step(op, result.value());
    if (!off_mesh) {
      return off_mesh.failure();
    }
    local = std::move(off_mesh).value();
  }
  return NativePlan{std::move(local), std::move(result).value()};
}

Outcome<CacheEntryPtr> propagate(const OpDescriptor& op, const OpKey& key, PyObject* func,
                                 PyObject* args, PyObject* kwargs) {
  const PyRefs& refs = py_refs();
  py::handle dispatcher(refs.op_dispatcher);
  py::handle func_object(func);
  py::handle args_tuple(args);
  py::object kwargs_dict = kwargs ? py::reinterpret_borrow<py::object>(kwargs) : py::dict();
  std::vector<py::object> key_specs = key_spec_objects(key);
  StockDecision decision;
  decision.op_info = dispatcher.attr(refs.str_unwrap_to_op_info)(func_object, args_tuple, kwargs_dict);
  // try_cache=False, as the built-in path passes after a miss of its own
  // native key: stock's Python propagation cache matches scalars with ==,
  // so `x * 2.0` would get the entry (and output dtype) of `x * 2`.
  decision.sharding = dispatcher.attr(refs.str_propagate_slow_path)(
      func_object, args_tuple, kwargs_dict, decision.op_info, /*try_cache=*/false);
  if (Py_TYPE(decision.sharding.ptr()) != refs.output_sharding_type) {
    // Inference mode decomposed a CompositeImplicitAutograd op: stock
    // returns that result directly; let it do so.
    return Failure::decline(DeclineReason::kDecomposed);
  }
  py::object mesh = decision.op_info.attr(refs.str_compute_mesh);
  const bool participating = mesh.attr(refs.str_is_rank_in_mesh)().cast<bool>();
  Outcome<NativePlan> plan = plan_native(op, decision, participating, args, kwargs);
  if (plan) {
    return std::make_shared<const CacheEntry>(
        CacheEntry::native(std::move(plan).value(), std::move(key_specs)));
  }
  if (plan.failure().is_python_error()) {
    return plan.failure();
  }
  return std::make_shared<const CacheEntry>(
      CacheEntry::declined(*plan.failure().reason(), std::move(key_specs)));
}

} // namespace

Outcome<CacheEntryPtr> propagate_on_miss(const OpDescriptor& op, const OpKey& key, PyObject* func,
                                         PyObject* args, PyObject* kwargs) {
  Outcome<CacheEntryPtr> entry =
      catch_python_errors([&] { return propagate(op, key, func, args, kwargs); });
  if (!entry && entry.failure().is_python_error()) {
    return Failure::python_error(DeclineReason::kPropagationFailed);
  }
  return entry;
}

} // namespace torchshard
