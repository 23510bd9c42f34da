// Python bindings of torchshard's cache controls and statistics:
// stats(), reset_stats(), clear_cache(), cache capacity, shutdown().
#pragma once

#include <torch/csrc/utils/pybind.h>

namespace torchshard {

void init_cache_bindings(py::module_& module);

} // namespace torchshard
