// torchshard._C: the one PYBIND11_MODULE. Loaded only through
// torchshard/_native.py, which checks the torch version first.
#include "csrc/core/op_key.h"
#include "csrc/python/bench_probes.h"
#include "csrc/python/bindings.h"
#include "csrc/python/dispatch_rule.h"
#include "csrc/python/py_refs.h"
#include "csrc/python/spec_equality.h"

#include <absl/base/config.h>
#include <xxhash.h>

#define TORCHSHARD_STRINGIFY_IMPL(x) #x
#define TORCHSHARD_STRINGIFY(x) TORCHSHARD_STRINGIFY_IMPL(x)

PYBIND11_MODULE(_C, module) {
  module.doc() = "torchshard native DTensor dispatch";
  if (!torchshard::init_py_refs()) {
    throw py::error_already_set();
  }
  torchshard::set_spec_comparator(&torchshard::spec_handles_equal);
  torchshard::init_rule_bindings(module);
  torchshard::init_cache_bindings(module);
  torchshard::init_bench_probe_bindings(module);
  py::dict build;
  build["torch"] = TORCHSHARD_BUILT_WITH_TORCH;
  build["compiler"] = __VERSION__;
  build["cplusplus"] = __cplusplus;
  build["abseil_lts"] = TORCHSHARD_STRINGIFY(ABSL_LTS_RELEASE_VERSION);
  build["xxhash"] = XXH_versionNumber();
#ifdef NDEBUG
  build["assertions"] = false;
#else
  build["assertions"] = true;
#endif
  module.attr("BUILD") = build;
}
