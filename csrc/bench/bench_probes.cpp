#include "csrc/bench/bench_probes.h"

#include "csrc/python/cache/key_builder.h"
#include "csrc/python/cache/thread_cache.h"
#include "csrc/python/interop/dtensor_factory.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/vectorcall_type.h"
#include "csrc/python/module/native_rule.h"

#include <chrono>
#include <limits>

// Valgrind's client requests are no-ops outside valgrind; without the header
// (valgrind not installed at build time) repeat_call simply does not dump.
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define TORCHSHARD_CALLGRIND_DUMP(label) CALLGRIND_DUMP_STATS_AT(label)
#else
#define TORCHSHARD_CALLGRIND_DUMP(label) ((void)(label))
#endif

namespace torchshard {
namespace {

struct FloorRuleObject : VectorcallObject {
  PyObject* result;
};

PyObject* floor_rule_vectorcall(PyObject* self, PyObject* const*, size_t, PyObject*) {
  return Py_NewRef(reinterpret_cast<FloorRuleObject*>(self)->result);
}

// A view op's result must be a tensor autograd has not seen yet (it makes the
// result a view of the input), so the floor of a view op returns a new DTensor
// over the prebuilt result's local tensor and spec: the one allocation any
// rule serving a view pays.
PyObject* fresh_wrapper_floor_rule_vectorcall(PyObject* self, PyObject* const*, size_t, PyObject*) {
  PyObject* prebuilt = reinterpret_cast<FloorRuleObject*>(self)->result;
  return make_dtensor(dtensor_local_tensor(prebuilt), dtensor_spec(prebuilt), /*requires_grad=*/false);
}

void floor_rule_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  Py_DECREF(reinterpret_cast<FloorRuleObject*>(self)->result);
  type->tp_free(self);
  Py_DECREF(type);  // instances of heap types own a reference to their type
}

PyTypeObject* floor_rule_type = nullptr;  // created once, lives as long as the module

py::object make_floor_rule(py::object result, bool fresh_wrapper) {
  if (!init_py_refs()) {  // a floor rule may be the process's first rule (py_refs.h)
    throw py::error_already_set();
  }
  if (fresh_wrapper && Py_TYPE(result.ptr()) != py_refs().dtensor_type) {
    throw py::type_error("a fresh-wrapper floor rule needs one DTensor result");
  }
  auto* rule = PyObject_New(FloorRuleObject, floor_rule_type);
  if (rule == nullptr) {
    throw py::error_already_set();
  }
  rule->vectorcall = fresh_wrapper ? fresh_wrapper_floor_rule_vectorcall : floor_rule_vectorcall;
  rule->result = result.release().ptr();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(rule));
}

ThreadCache& current_cache() {
  ThreadCache* cache = ThreadCache::current();
  if (cache == nullptr) {
    throw std::runtime_error("no thread cache (torchshard is shut down)");
  }
  return *cache;
}

PyObject* kwargs_or_null(const py::object& kwargs) {
  return kwargs.is_none() ? nullptr : kwargs.ptr();
}

template <class Body>
double nanoseconds_per_iteration(int64_t iterations, Body body) {
  TORCH_CHECK(iterations > 0, "iterations must be positive");
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) {
    body();
  }
  const std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count() / static_cast<double>(iterations);
}

// {"key_ns", "key_lookup_ns", "hit"} for the rule's op called with (args, kwargs)
// as torch passes them to a rule. The cache is left as it was.
py::dict time_key_lookup(py::handle rule, py::tuple args, py::object kwargs, int64_t iterations) {
  const OpDescriptor& op = native_rule_op(rule);
  ThreadCache& cache = current_cache();
  OpKey key;
  bool keyed = true;
  bool hit = false;
  const double key_ns = nanoseconds_per_iteration(iterations, [&] {
    keyed = build_op_key(op, args.ptr(), kwargs_or_null(kwargs), key).ok();
  });
  TORCH_CHECK(keyed, "this call cannot be keyed natively");
  const double key_lookup_ns = nanoseconds_per_iteration(iterations, [&] {
    (void)build_op_key(op, args.ptr(), kwargs_or_null(kwargs), key);
    Outcome<CacheEntryPtr> found = cache.find(key);
    hit = found && found.value() != nullptr;
  });
  py::dict result;
  result["key_ns"] = key_ns;
  result["key_lookup_ns"] = key_lookup_ns;
  result["hit"] = hit;
  return result;
}

// Nanoseconds per direct call of `rule(DTensor, func, (DTensor,), args, kwargs)`.
double time_rule_body(py::handle rule, py::handle dtensor_type, py::handle func, py::tuple args,
                      py::object kwargs, int64_t iterations) {
  py::tuple types = py::make_tuple(dtensor_type);
  PyObject* call_args[] = {dtensor_type.ptr(), func.ptr(), types.ptr(), args.ptr(), kwargs.ptr()};
  bool failed = false;
  const double ns = nanoseconds_per_iteration(iterations, [&] {
    PyObject* result = PyObject_Vectorcall(rule.ptr(), call_args, 5, nullptr);
    failed = failed || result == nullptr || result == Py_NotImplemented;
    Py_XDECREF(result);
  });
  if (PyErr_Occurred()) {
    throw py::error_already_set();
  }
  TORCH_CHECK(!failed, "the rule did not serve the call natively");
  return ns;
}

// Inserts `count` entries under keys no call produces (an op id above every
// real one), each shaped like a two-DTensor call's key.
void fill_synthetic_entries(int64_t count) {
  ThreadCache& cache = current_cache();
  constexpr uint64_t kSyntheticOpId = std::numeric_limits<uint64_t>::max();
  OpKey key;
  for (int64_t i = 0; i < count; ++i) {
    key.reset(kSyntheticOpId, 2);
    key.add(KeyTag::kInt, static_cast<uint64_t>(i));
    key.add(KeyTag::kInt, static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL);
    key.seal();
    if (!cache.insert(key, nullptr)) {
      throw py::error_already_set();
    }
  }
}

// Calls fn() `iterations` times. Under callgrind, --toggle-collect on this
// function's name counts exactly those calls, and each call of repeat_call
// ends with a dump named `label` (see benchmarks/callgrind.py).
void repeat_call(py::handle fn, int64_t iterations, const std::string& label) {
  for (int64_t i = 0; i < iterations; ++i) {
    PyObject* result = PyObject_CallNoArgs(fn.ptr());
    if (result == nullptr) {
      throw py::error_already_set();
    }
    Py_DECREF(result);
  }
  TORCHSHARD_CALLGRIND_DUMP(label.c_str());
}

} // namespace

void init_bench_probe_bindings(py::module_& module) {
  floor_rule_type = add_vectorcall_type(module, "FloorRule", {
      "torchshard._bench.FloorRule",
      sizeof(FloorRuleObject),
      &floor_rule_dealloc,
      nullptr,
      "Benchmark only: a torch_dispatch rule returning a prebuilt result.",
  });
  module.def("make_floor_rule", &make_floor_rule, py::arg("result"),
             py::arg("fresh_wrapper") = false,
             "Benchmark only: a torch_dispatch rule that returns `result` at once (with "
             "fresh_wrapper, a new DTensor over its local tensor and spec, as a view op needs).");
  module.def("key_lookup_ns", &time_key_lookup, py::arg("rule"), py::arg("args"),
             py::arg("kwargs"), py::arg("iterations"),
             "Benchmark only: ns per key build, and per key build + lookup, on this thread's cache.");
  module.def("rule_body_ns", &time_rule_body, py::arg("rule"), py::arg("dtensor_type"),
             py::arg("func"), py::arg("args"), py::arg("kwargs"), py::arg("iterations"),
             "Benchmark only: ns per direct call of a NativeRule that it serves natively.");
  module.def("repeat_call", &repeat_call, py::arg("fn"), py::arg("iterations"),
             py::arg("label") = "",
             "Benchmark only: call fn() `iterations` times, then dump callgrind stats as `label` "
             "(a no-op outside callgrind).");
  module.def("fill_synthetic_entries", &fill_synthetic_entries, py::arg("count"),
             "Benchmark only: add `count` entries no call can hit to this thread's cache.");
}

} // namespace torchshard
