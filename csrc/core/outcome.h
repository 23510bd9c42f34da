// Outcome<T>: how one stage of a dispatch ended. Every stage on the call path
// (key, lookup, propagation, planning, local call, redistribution, wrap)
// returns one, so "decline" and "error" travel the same way from the stage
// that noticed them to the rule that answers torch:
//
//  - a value: the stage succeeded and the call continues natively;
//  - Failure::decline(reason): the call goes to stock DTensor (the rule
//    returns NotImplemented) and is counted under `reason`;
//  - Failure::python_error(): a Python error is set and the call raises it
//    (optionally counted under a reason, e.g. a propagation that raised).
//
// A stage that produces nothing returns Status (Outcome<Done>). Plain C++;
// the Python side of an error (which exception is set) lives with CPython.
#pragma once

#include "csrc/core/decline_reason.h"

#include <optional>
#include <utility>
#include <variant>

namespace torchshard {

class Failure {
 public:
  static Failure decline(DeclineReason reason) { return Failure(Kind::kDecline, reason); }
  static Failure python_error() { return Failure(Kind::kPythonError, std::nullopt); }
  static Failure python_error(DeclineReason counted_as) {
    return Failure(Kind::kPythonError, counted_as);
  }

  bool is_python_error() const { return kind_ == Kind::kPythonError; }
  // What the call is counted under; always set for a decline.
  std::optional<DeclineReason> reason() const { return reason_; }

 private:
  enum class Kind : uint8_t { kDecline, kPythonError };
  Failure(Kind kind, std::optional<DeclineReason> reason) : kind_(kind), reason_(reason) {}

  Kind kind_;
  std::optional<DeclineReason> reason_;
};

// The value of a stage that produces nothing but its success.
struct Done {};

template <class T = Done>
class [[nodiscard]] Outcome {
 public:
  Outcome(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  Outcome(Failure failure) : state_(std::in_place_index<1>, failure) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // Only when ok().
  T& value() & { return *std::get_if<0>(&state_); }
  T&& value() && { return std::move(*std::get_if<0>(&state_)); }
  // Only when !ok().
  const Failure& failure() const { return *std::get_if<1>(&state_); }

 private:
  std::variant<T, Failure> state_;
};

using Status = Outcome<Done>;

inline Status success() {
  return Done{};
}

} // namespace torchshard
