// The boxed stack an op is called with through the libtorch dispatcher, made
// from the Python arguments a DTensor dispatch rule receives: one IValue per
// schema argument, in schema order, omitted arguments filled with their
// schema defaults, and every DTensor (alone or in a tensor list) replaced by
// the tensor `as_tensor` gives for it: its local tensor for the local call
// (hit/local_call.h), a meta tensor of its global shape for output metadata
// (miss/tensor_meta_propagation.h).
//
// Requires the GIL. Throws (c10::Error, py::error_already_set) when a value
// does not convert; callers wrap it in catch_python_errors.
#pragma once

#include <ATen/core/function_schema.h>
#include <ATen/core/stack.h>
#include <Python.h>
#include <absl/functional/function_ref.h>

namespace torchshard {

// The tensor a DTensor argument stands for in the call.
using DTensorAsTensor = at::Tensor (*)(PyObject* dtensor);
// The value the call passed for schema argument i (borrowed), or nullptr
// when it was omitted.
using ArgumentValue = absl::FunctionRef<PyObject*(size_t)>;

void push_boxed_arguments(const c10::FunctionSchema& schema, ArgumentValue value_of,
                          DTensorAsTensor as_tensor, torch::jit::Stack& stack);

} // namespace torchshard
