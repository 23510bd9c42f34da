// TORCHSHARD_ASSERT(condition, message...): an invariant of torchshard's own
// (never a user error; those are TORCH_CHECK). Compiled in when
// TORCHSHARD_ASSERTIONS is defined: Debug builds and any build made with
// TORCHSHARD_ASSERTIONS=1 (scripts/sanitize.sh builds that way);
// torchshard._C.BUILD["assertions"] reports it. A failed assertion raises
// RuntimeError through TORCH_INTERNAL_ASSERT (the rule turns it into a
// Python error); it never aborts the process. Release builds compile the
// checks out of the hit path, where the plan types already rule out most of
// what they test.
#pragma once

#include <c10/util/Exception.h>

#ifdef TORCHSHARD_ASSERTIONS
#define TORCHSHARD_ASSERT(...) TORCH_INTERNAL_ASSERT(__VA_ARGS__)
#else
// Unevaluated, so variables used only by assertions are not unused.
#define TORCHSHARD_ASSERT(condition, ...) ((void)sizeof(!(condition)))
#endif

namespace torchshard {
#ifdef TORCHSHARD_ASSERTIONS
inline constexpr bool kTorchshardAssertions = true;
#else
inline constexpr bool kTorchshardAssertions = false;
#endif
} // namespace torchshard
