// NativeRule: the callable torchshard registers as DTensor's torch_dispatch
// rule for one OpOverload (torch.library.register_torch_dispatch), and its
// bindings. torch calls it as rule(cls, func, types, args, kwargs) before its
// built-in DTensor path; the rule checks that calling convention and hands
// the call to hit/dispatch.h, whose NotImplemented passes the call to that
// path unchanged.
#pragma once

#include "csrc/core/export.h"
#include "csrc/python/cache/op_descriptor.h"

#include <torch/csrc/utils/pybind.h>

namespace torchshard {

// The op a NativeRule serves; raises TypeError for anything else.
TORCHSHARD_API const OpDescriptor& native_rule_op(py::handle rule);

// Adds NativeRule and make_rule(...) to the module.
void init_rule_bindings(py::module_& module);

} // namespace torchshard
