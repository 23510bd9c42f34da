// NativeRule: the callable torchshard registers as DTensor's torch_dispatch
// rule for one OpOverload (torch.library.register_torch_dispatch). torch calls
// it as rule(cls, func, types, args, kwargs) before its built-in DTensor path;
// returning NotImplemented hands the call to that path unchanged.
//
// The call reads top to bottom: op-level decline -> build key -> look up
// (propagate on a miss) -> cached decline -> local compute -> wrap. On a hit
// nothing on this path calls into Python code.
#pragma once

#include "csrc/python/op_descriptor.h"

#include <torch/csrc/utils/pybind.h>

namespace torchshard {

// The op a NativeRule serves; raises TypeError for anything else.
const OpDescriptor& native_rule_op(py::handle rule);

// Adds NativeRule and make_rule(...) to the module.
void init_rule_bindings(py::module_& module);

} // namespace torchshard
