// A collective's output, handed to the local op so that no communication
// backend's thread ever has to take the GIL for it.
//
// The backend's work keeps its own references to the output (gloo's
// AsyncWork holds its output tensors, and so does an NCCL work until its
// watchdog retires it) and drops them on its own thread, possibly after the
// wait has returned and after the hit is done with the local. torch keeps a
// tensor's Python object alive while C++ holds other references to it
// (c10/util/intrusive_ptr.h, "PyObject preservation"): the reference count
// going from 2 to 1 releases the Python object, and whichever thread makes
// that step needs the GIL. If it is the backend's thread, it waits for the
// GIL, which is harmless while the program runs; once interpreter
// finalization has begun, CPython ends such a thread with pthread_exit, and
// the forced unwind through the backend's noexcept frames aborts the process
// ("terminate called without an active exception"; docs/reliability.md,
// "The gloo abort: cause and fix", has the core dump).
//
// So the backend's drop must never be the one from 2 to 1 on a tensor with a
// Python object:
//  - the native all-reduce never gives its output a Python object: the local
//    op gets a second TensorImpl over the same storage;
//  - an output of stock's redistribute_local_tensor (which has one) that is
//    still shared is given to the op as such a second TensorImpl too, and we
//    keep one C++ reference to it until the backend has let go; ours is then
//    the last reference besides the Python object, and dropping it releases
//    the Python object on a Python thread, with the GIL. One still shared
//    when the process ends is never dropped, which is harmless at exit.
//
// Requires the GIL.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

namespace torchshard {

// A second TensorImpl over `tensor`: the same storage, sizes, strides,
// storage offset and version counter, so an op computes, aliases and bumps
// versions through it exactly as through `tensor`. No other owner shares it.
// A tensor that requires grad is returned as it is: a detached copy would
// lose its autograd history (locals below DTensor's dispatch record none).
at::Tensor tensor_impl_of_its_own(const at::Tensor& tensor);

// The tensor the local op should take for `redistributed`, the Python tensor
// stock's redistribute_local_tensor returned for the DTensor local
// `input_local`: `redistributed` itself when nothing else references its
// TensorImpl (or when it is `input_local`, which the caller owns, a tensor
// subclass instance, or one that requires grad: replacing those could change
// what the op does), else a tensor_impl_of_its_own() of it, with
// a reference to `redistributed` kept until its other owners let go.
py::object local_safe_to_drop(py::object redistributed, PyObject* input_local);

// Drops the kept outputs nothing else references any more (each hit that
// redistributes runs it first, so an output is kept at most until the next).
void release_let_go_outputs();

// How many outputs are kept now (tests).
size_t kept_collective_outputs();

} // namespace torchshard
