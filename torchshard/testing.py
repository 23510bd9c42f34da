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
  that keep missing after warm-up (a test suite misses on purpose all the time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

from torch._ops import OpOverload

from torchshard import _hook
from torchshard._native import _C

__all__ = ["coarse_decision_keys", "decision_verification", "miss_alarm_armed", "native_rule", "route"]


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
