// A collective's output, handed to the local op so that no communication
// backend's thread can ever be the one to free a Python object.
//
// The backend's work keeps its own references to the output (gloo's
// AsyncWork holds its output tensors; so does an NCCL work until its
// watchdog retires it) and drops them on its own thread, possibly after the
// wait has returned and after the hit has already dropped the local. If the
// output's TensorImpl had a Python object whose last Python reference went
// first, the TensorImpl now owns that object, and the backend's thread must
// take the GIL to free it. While the program runs that only costs a GIL
// switch; once interpreter finalization has begun, CPython ends such a
// thread with pthread_exit, and the forced unwind through the backend's
// noexcept frames aborts the process ("terminate called without an active
// exception"). docs/reliability.md, "The gloo abort", has the core dump.
//
// So the local op takes a second TensorImpl over the same storage whenever
// the output is still shared, and the output's own Python object is kept
// alive until the backend has let go of it: its last reference is then
// dropped on a Python thread with the GIL, or (for one still shared when the
// process ends) never, which is harmless at exit and keeps the backend's
// release free of Python.
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
// `redistributed` kept alive until its other owners let go.
py::object local_safe_to_drop(py::object redistributed, PyObject* input_local);

// Drops the kept outputs nothing else references any more (each hit that
// redistributes runs it first, so an output is kept at most until the next).
void release_let_go_outputs();

// How many outputs are kept now (tests).
size_t kept_collective_outputs();

} // namespace torchshard
