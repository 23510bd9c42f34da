// torchshard._C: the module torchshard uses, and the one place its bindings
// are added. Loaded only through torchshard/_native.py, which checks the torch
// version first. (The benchmark probes are a module of their own,
// torchshard._bench: csrc/bench/.)
#include "csrc/core/assertions.h"
#include "csrc/core/op_key.h"
#include "csrc/python/module/cache_bindings.h"
#include "csrc/python/module/native_rule.h"
#include "csrc/python/module/testing_bindings.h"
#include "csrc/python/interop/spec_equality.h"

#include <absl/base/config.h>
#include <xxhash.h>

#define TORCHSHARD_STRINGIFY_IMPL(x) #x
#define TORCHSHARD_STRINGIFY(x) TORCHSHARD_STRINGIFY_IMPL(x)

PYBIND11_MODULE(_C, module) {
  module.doc() = "torchshard native DTensor dispatch";
  // DTensor's objects are looked up when the first rule is made, not here:
  // importing torchshard must not import torch.distributed.tensor (py_refs.h).
  torchshard::set_spec_comparator(&torchshard::match_spec_handles);
  torchshard::init_rule_bindings(module);
  torchshard::init_cache_bindings(module);
  torchshard::init_testing_bindings(module);
  py::dict build;
  build["torch"] = TORCHSHARD_BUILT_WITH_TORCH;
  build["compiler"] = __VERSION__;
  build["cplusplus"] = __cplusplus;
  build["abseil_lts"] = TORCHSHARD_STRINGIFY(ABSL_LTS_RELEASE_VERSION);
  build["xxhash"] = XXH_versionNumber();
  // Whether TORCHSHARD_ASSERT checks are compiled in (csrc/core/assertions.h).
  build["assertions"] = torchshard::kTorchshardAssertions;
  module.attr("BUILD") = build;
}
