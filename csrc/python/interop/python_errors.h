// catch_python_errors: the boundary where C++ exceptions become Outcomes.
//
// Code that calls Python through pybind11, or libtorch code that throws
// c10::Error, reports failure by throwing. A stage that runs such code wraps
// it in catch_python_errors, so what leaves the stage is an Outcome: the
// exception is set as the Python error stock would raise from the same code
// (pybind11's error as it was; c10 errors through torch's own translation,
// e.g. c10::TypeError -> TypeError) and the stage fails with
// Failure::python_error().
//
// Requires the GIL.
#pragma once

#include "csrc/core/outcome.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>

#include <exception>

namespace torchshard {

template <class Body>
auto catch_python_errors(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (py::error_already_set& error) {
    error.restore();
  } catch (const std::exception&) {
    // Only std::exceptions: a forced unwind (pthread_exit, thread
    // cancellation) must pass through untouched.
    torch::translate_exception_to_python(std::current_exception());
  }
  return Failure::python_error();
}

// For Python code a key runs (DTensorSpec.__hash__, DeviceMesh.__eq__): an
// Exception is the call's, and clears (the call declines and stock, running
// the same code, raises its own); anything else (KeyboardInterrupt or
// SystemExit from a signal handler) arrives only once and stays set for the
// rule to raise. Whether the error is still set after.
inline bool clear_unless_interrupt() {
  if (PyErr_ExceptionMatches(PyExc_Exception)) {
    PyErr_Clear();
    return false;
  }
  return true;
}

} // namespace torchshard
