// Python bindings that reach single pieces of the hit path for tests
// (torchshard/testing.py), in ways the DTensor ops cannot force: the native
// all-reduce on its own, and the keeping of collective outputs a backend
// still references (csrc/python/hit/collective_output.h).
#pragma once

#include <torch/csrc/utils/pybind.h>

namespace torchshard {

void init_testing_bindings(py::module_& module);

} // namespace torchshard
