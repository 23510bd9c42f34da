"""Private test support: what benchmarks and tests need beyond the public API.

Not part of torchshard's API and not for production code; it may change with any
release. The public switches (``enable``, ``disable``, ``disabled``) act on every op
at once: they re-register about 1,160 rules and empty every cache. A benchmark that
times stock against torchshard call by call needs to move only the ops it times,
in microseconds, and the native rule object itself for the C++ probes in
``torchshard._bench``:

- :func:`route` puts one op on stock DTensor's path or on torchshard's;
- :func:`native_rule` is the rule torchshard serves an op with;
- :func:`coarse_decision_keys` makes shape-generic decision keys deliberately too
  coarse (no size classes), so a test can show that verification catches the
  decisions such keys wrongly share;
- :func:`miss_alarm_armed` arms or silences the once-per-process warning about calls
  that keep missing after warm-up (a test suite misses on purpose all the time);
- :func:`native_all_reduce` turns the native Partial -> Replicate all-reduce on or off,
  and :func:`run_native_all_reduce` runs that all-reduce on its own;
- :func:`local_safe_to_drop`, :func:`release_let_go_outputs` and
  :func:`kept_collective_outputs` reach the keeping of collective outputs that a
  backend's thread still references.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch._ops import OpOverload

from torchshard import _hook
from torchshard._native import _C

__all__ = [
    "coarse_decision_keys",
    "decision_verification",
    "kept_collective_outputs",
    "local_safe_to_drop",
    "miss_alarm_armed",
    "native_all_reduce",
    "native_rule",
    "release_let_go_outputs",
    "route",
    "run_native_all_reduce",
]


def route(op: OpOverload, path: Literal["stock", "torchshard"]) -> None:
    """Serve `op` with stock DTensor (its torchshard rule removed) or with torchshard.

    Only `op` changes; every other op and every cache entry stays as it is (entries
    of `op` are simply not consulted while it is on stock's path). Routing to
    torchshard needs torchshard enabled, and an op torchshard has a rule for.
    """
    with _hook._lock:
        if path == "stock":
            _hook._uninstall(op)
        elif path == "torchshard":
            if not _hook.is_enabled():
                raise RuntimeError("torchshard is disabled; enable() it before routing an op to it")
            if op not in _hook._rules:
                raise LookupError(f"torchshard has no rule for {op}")
            _hook._install(op)
        else:
            raise ValueError(f"path must be 'stock' or 'torchshard', got {path!r}")


def native_rule(op: OpOverload) -> object:
    """The ``NativeRule`` torchshard serves `op` with (also while `op` is routed to stock).

    The argument ``torchshard._bench``'s probes (``key_lookup_ns``, ``rule_body_ns``)
    take: they time this rule's key build, lookup and body directly.
    """
    with _hook._lock:
        rule = _hook._rules.get(op)
    if rule is None:
        raise LookupError(f"torchshard has no rule for {op}; enable() it first")
    return rule


@contextlib.contextmanager
def _temporarily(get: Callable[[], Any], set_to: Callable[[Any], None], value: Any) -> Iterator[None]:
    before = get()
    set_to(value)
    try:
        yield
    finally:
        set_to(before)


def coarse_decision_keys() -> contextlib.AbstractContextManager[None]:
    """Within the block, decision keys leave out every size class: calls that differ
    only in sizes share one decision even where stock decides differently. Decisions
    made inside stay in the caches; clear_cache() before and after."""
    return _temporarily(_C.coarse_decision_keys_for_testing, _C.set_coarse_decision_keys_for_testing, True)


def miss_alarm_armed(armed: bool = True) -> contextlib.AbstractContextManager[None]:
    """Within the block, the silent-miss alarm can fire (``armed``) or cannot; the
    previous state is restored after."""
    return _temporarily(_C.miss_alarm_armed, _C.set_miss_alarm_armed, armed)


def decision_verification(policy: str) -> contextlib.AbstractContextManager[None]:
    """Within the block, reused decisions are checked against stock's propagation by
    ``policy`` (``torchshard.set_decision_verification``)."""
    return _temporarily(_C.decision_verification, _C.set_decision_verification, policy)


def native_all_reduce(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Whether Partial -> Replicate redistributions planned inside the block (on misses)
    run the native all-reduce (TORCHSHARD_NATIVE_ALL_REDUCE)."""
    return _temporarily(_C.native_all_reduce_enabled, _C.set_native_all_reduce_enabled, enabled)


def run_native_all_reduce(local: torch.Tensor, reduce_op: str, group_name: str) -> torch.Tensor:
    """The all-reduce a hit runs for a planned Partial -> Replicate of ``local`` over
    the process group named ``group_name`` (``reduce_op`` lower-cased, as funcol
    takes it): the functional collective and its wait, from C++."""
    return _C.native_all_reduce_for_testing(local, reduce_op, group_name)


def local_safe_to_drop(redistributed: torch.Tensor, input_local: torch.Tensor) -> torch.Tensor:
    """The tensor a hit's local op takes for ``redistributed``, what stock's
    ``redistribute_local_tensor`` returned for ``input_local``: ``redistributed``
    itself, or, while something else still references its TensorImpl (a backend's
    work), a tensor of its own over the same storage, with a C++ reference to
    ``redistributed`` kept until that other reference is gone
    (csrc/python/hit/collective_output.h)."""
    return _C.local_safe_to_drop_for_testing(redistributed, input_local)


def release_let_go_outputs() -> None:
    """Drop the kept collective outputs nothing else references any more (every
    redistributing hit does this first)."""
    _C.release_let_go_outputs_for_testing()


def kept_collective_outputs() -> int:
    """How many collective outputs torchshard holds a reference to until their backend
    lets go."""
    return _C.kept_collective_outputs_for_testing()
