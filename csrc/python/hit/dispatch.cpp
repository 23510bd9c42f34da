#include "csrc/python/hit/dispatch.h"

#include "csrc/core/cache_config.h"
#include "csrc/python/cache/key_builder.h"
#include "csrc/python/cache/op_tally.h"
#include "csrc/python/cache/thread_cache.h"
#include "csrc/python/hit/dtensor_wrap.h"
#include "csrc/python/hit/local_call.h"
#include "csrc/python/hit/mutated_result.h"
#include "csrc/python/hit/redistribution.h"
#include "csrc/python/miss/shape_generic_miss.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

namespace torchshard {
namespace {

Failure decline(DeclineReason reason) {
  return Failure::decline(reason);
}

// Leaves the local results on `stack` (nothing for a mutating op off the mesh).
Status run_local_step(const OpDescriptor& op, const LocalStep& step, PyObject* args,
                      PyObject* kwargs, torch::jit::Stack& stack) {
  if (const auto* run = std::get_if<RunLocally>(&step)) {
    if (run->changed_arguments.empty()) {
      return run_local_op(op, args, kwargs, {}, stack);
    }
    Outcome<std::vector<py::object>> overrides = changed_local_arguments(*run, args);
    if (!overrides) {
      return overrides.failure();
    }
    return run_local_op(op, args, kwargs, overrides.value(), stack);
  }
  if (const auto* stand_in = std::get_if<StandIn>(&step)) {
    // Stock builds the stand-ins with torch factory calls, which a torch
    // function mode (e.g. a default device) would see; leave those to it.
    if (at::impl::torch_function_mode_enabled()) {
      return decline(DeclineReason::kNotParticipating);
    }
    stand_in_results(*stand_in, op.returns(), stack);
  }
  return success();
}

Outcome<py::object> return_results(const OpDescriptor& op, const ResultStep& step, PyObject* func,
                                   PyObject* args, PyObject* kwargs, torch::jit::Stack& stack) {
  if (const auto* wrap = std::get_if<WrapResults>(&step)) {
    return wrap_local_results(op, *wrap, args, kwargs, stack);
  }
  if (const auto* inplace = std::get_if<ReturnInplace>(&step)) {
    return inplace_result(*inplace, func, args, kwargs);
  }
  return out_arguments_result(op, std::get<ReturnOutArguments>(step), args, kwargs);
}

Outcome<py::object> run_plan(const OpDescriptor& op, const NativePlan& plan, PyObject* func,
                             PyObject* args, PyObject* kwargs) {
  torch::jit::Stack stack;
  if (Status ran = run_local_step(op, plan.local, args, kwargs, stack); !ran) {
    return ran.failure();
  }
  return return_results(op, plan.result, func, args, kwargs, stack);
}

// The entry for this call's key: found, or made by a miss and inserted.
Outcome<CacheEntryPtr> find_or_propagate(const OpDescriptor& op, ThreadCache& cache, OpKey& key,
                                         PyObject* func, PyObject* args, PyObject* kwargs,
                                         CallOutcome& outcome) {
  Outcome<CacheEntryPtr> found = cache.find(key);
  if (!found || found.value()) {
    outcome.lookup = found ? CallOutcome::Lookup::kHit : CallOutcome::Lookup::kNone;
    return found;
  }
  outcome.lookup = CallOutcome::Lookup::kMiss;
  // The miss path runs Python, which may re-enter dispatch on this thread
  // and reuse the probe key: keep a copy for the insert.
  const OpKey miss_key = key;
  Outcome<CacheEntryPtr> made = resolve_miss(op, cache, miss_key, func, args, kwargs, outcome);
  if (!made) {
    return made;
  }
  if (Status inserted = cache.insert(miss_key, made.value()); !inserted) {
    return inserted.failure();
  }
  return made;
}

Outcome<py::object> dispatch(const OpDescriptor& op, ThreadCache& cache, PyObject* func,
                             PyObject* args, PyObject* kwargs, CallOutcome& outcome) {
  if (const auto reason = op.op_decline()) {
    return decline(*reason);
  }
  if (cache_capacity() == 0) {
    return decline(DeclineReason::kCacheDisabled);
  }
  if (c10::impl::TorchDispatchModeTLS::any_modes_set()) {
    return decline(DeclineReason::kDispatchModeActive);
  }
  OpKey& key = cache.probe_key();
  if (Status keyed = build_op_key(op, args, kwargs, key); !keyed) {
    return keyed.failure();
  }
  Outcome<CacheEntryPtr> entry = find_or_propagate(op, cache, key, func, args, kwargs, outcome);
  if (!entry) {
    return entry.failure();
  }
  if (const DeclineReason* reason = entry.value()->decline()) {
    return decline(*reason);
  }
  return run_plan(op, entry.value()->plan(), func, args, kwargs);
}

// What torch gets back for a call that ended with `result`.
PyObject* answer(Outcome<py::object>&& result, CallOutcome& outcome) {
  if (result) {
    outcome.native = true;
    return std::move(result).value().release().ptr();
  }
  outcome.decline = result.failure().reason();
  if (result.failure().is_python_error()) {
    return nullptr;
  }
  Py_RETURN_NOTIMPLEMENTED;
}

} // namespace

PyObject* dispatch_and_record(const OpDescriptor& op, PyObject* func, PyObject* args,
                              PyObject* kwargs) {
  ThreadCache* cache = ThreadCache::current();
  CallOutcome outcome;
  if (cache == nullptr) {
    ThreadCache::count_decline_without_cache();
    if (op_tallies_enabled()) {
      record_op_call(op, CallOutcome{CallOutcome::Lookup::kNone, DeclineReason::kNoThreadCache, false, std::nullopt});
    }
    Py_RETURN_NOTIMPLEMENTED;
  }
  PyObject* result = answer(dispatch(op, *cache, func, args, kwargs, outcome), outcome);
  cache->counters().record(outcome);
  if (op_tallies_enabled()) {
    record_op_call(op, outcome);
  }
  const std::optional<std::string> alarm = cache->miss_alarm().record(op, outcome);
  if (alarm && result == nullptr) {
    set_miss_alarm_armed(true);  // not over an error already raised: a later window fires it
  }
  // A warnings filter may make the alarm an exception, which the call then raises.
  if (alarm && result != nullptr && !warn_persistent_misses(*alarm)) {
    Py_DECREF(result);
    return nullptr;
  }
  return result;
}

} // namespace torchshard
