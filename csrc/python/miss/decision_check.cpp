#include "csrc/python/miss/decision_check.h"

#include "csrc/python/interop/int_sequence.h"
#include "csrc/python/interop/python_errors.h"

namespace torchshard {
namespace {

bool specs_equal(const py::object& lhs, const py::object& rhs) {
  if (lhs.is_none() || rhs.is_none()) {
    return lhs.is_none() && rhs.is_none();
  }
  return lhs.equal(rhs);
}

bool results_agree(const ResultStep& reused, const ResultStep& stock) {
  if (reused.index() != stock.index()) {
    return false;
  }
  if (const auto* wrap = std::get_if<WrapResults>(&reused)) {
    const auto& other = std::get<WrapResults>(stock);
    if (wrap->shares_view_storage != other.shares_view_storage || wrap->specs.size() != other.specs.size()) {
      return false;
    }
    for (size_t r = 0; r < wrap->specs.size(); ++r) {
      if (wrap->specs[r].size() != other.specs[r].size()) {
        return false;
      }
      for (size_t i = 0; i < wrap->specs[r].size(); ++i) {
        if (!specs_equal(wrap->specs[r][i], other.specs[r][i])) {
          return false;
        }
      }
    }
    return true;
  }
  if (const auto* inplace = std::get_if<ReturnInplace>(&reused)) {
    const auto& other = std::get<ReturnInplace>(stock);
    return inplace->kind == other.kind &&
        (inplace->kind != ReturnInplace::Kind::kRespecced || specs_equal(inplace->new_spec, other.new_spec));
  }
  return false;  // out= results are never reused
}

bool changes_agree(const ChangedArgument& reused, const ChangedArgument& stock) {
  if (reused.index() != stock.index()) {
    return false;
  }
  if (const auto* shape = std::get_if<Replacement>(&reused)) {
    const auto& other = std::get<Replacement>(stock);
    const std::optional<ViewShape> sizes = exact_int_sequence(shape->value.ptr());
    return shape->position == other.position && sizes && sizes == exact_int_sequence(other.value.ptr());
  }
  const auto& ours = std::get<Redistribution>(reused);
  const auto& theirs = std::get<Redistribution>(stock);
  return ours.position == theirs.position && ours.item == theirs.item &&
      ours.all_reduce.has_value() == theirs.all_reduce.has_value() &&
      specs_equal(ours.from_spec, theirs.from_spec) && specs_equal(ours.to_spec, theirs.to_spec);
}

// Reused plans run locally, as called or with replayed changes
// (argument_change_reuse.h).
bool local_steps_agree(const LocalStep& reused, const LocalStep& stock) {
  const auto* ours = std::get_if<RunLocally>(&reused);
  const auto* theirs = std::get_if<RunLocally>(&stock);
  if (!ours || !theirs || ours->changed_arguments.size() != theirs->changed_arguments.size() ||
      (!ours->changed_arguments.empty() && ours->positional_count != theirs->positional_count)) {
    return false;
  }
  for (size_t i = 0; i < ours->changed_arguments.size(); ++i) {
    if (!changes_agree(ours->changed_arguments[i], theirs->changed_arguments[i])) {
      return false;
    }
  }
  return true;
}

py::object describe_result(const ResultStep& step) {
  if (const auto* wrap = std::get_if<WrapResults>(&step)) {
    py::list specs;
    for (const auto& per_return : wrap->specs) {
      for (const auto& spec : per_return) {
        specs.append(spec);
      }
    }
    return py::str(specs);
  }
  if (const auto* inplace = std::get_if<ReturnInplace>(&step)) {
    return inplace->kind == ReturnInplace::Kind::kRespecced ? py::str(inplace->new_spec)
                                                           : py::str("in place, as called");
  }
  return py::str("out= arguments");
}

py::object describe(const CacheEntry& entry) {
  if (const DeclineReason* reason = entry.decline()) {
    return py::str("declined: " + std::string(decline_reason_name(*reason)));
  }
  const NativePlan& plan = entry.plan();
  const auto* run = std::get_if<RunLocally>(&plan.local);
  std::string local = run && run->changed_arguments.empty() ? "" : "redistributed or off the mesh, ";
  return py::str(local) + describe_result(plan.result);
}

} // namespace

Outcome<bool> entries_agree(const CacheEntry& reused, const CacheEntry& stock) {
  if (stock.decline() != nullptr || reused.decline() != nullptr) {
    return stock.decline() != nullptr && reused.decline() != nullptr &&
        *stock.decline() == *reused.decline();
  }
  Outcome<bool> agree = catch_python_errors([&]() -> Outcome<bool> {
    return local_steps_agree(reused.plan().local, stock.plan().local) &&
        results_agree(reused.plan().result, stock.plan().result);
  });
  if (!agree && !clear_unless_interrupt()) {
    return false;
  }
  return agree;
}

Status log_conflict(const OpDescriptor& op, const CacheEntry& reused, const CacheEntry& stock) {
  Status logged = catch_python_errors([&] {
    py::module_::import("logging").attr("getLogger")("torchshard").attr("warning")(
        "torchshard: a shape-generic decision for %s disagreed with stock DTensor's propagation; "
        "stock's answer is used and the decision is never reused. decision: %s; stock: %s",
        op.display_name(),
        describe(reused), describe(stock));
    return success();
  });
  if (!logged && clear_unless_interrupt()) {
    return logged;
  }
  return success();
}

} // namespace torchshard
