"""torchshard: a native fast path for DTensor (torch.distributed.tensor) eager dispatch.

``import torchshard`` enables it (unless TORCHSHARD_DISABLE=1). Results are always
those of stock DTensor; whatever torchshard does not run natively goes to stock
DTensor's own path unchanged.
"""

from __future__ import annotations

import atexit
from typing import Any

from torchshard import _config
from torchshard._explain import ExplainReport, OpReport, explain
from torchshard._native import _C, TorchshardWarning
from torchshard._hook import disable, disabled, enable, enabled_ops, is_enabled

__version__ = "0.1.0"

__all__ = [
    "ExplainReport",
    "OpReport",
    "TorchshardWarning",
    "cache_capacity",
    "clear_cache",
    "disable",
    "disabled",
    "enable",
    "enabled_ops",
    "explain",
    "is_enabled",
    "decision_verification",
    "reset_stats",
    "set_cache_capacity",
    "set_decision_verification",
    "set_shape_generic",
    "shape_generic",
    "stats",
]


def stats() -> dict[str, Any]:
    """Dispatch counters: totals over all threads (ended ones included), and per live thread.

    Keys: ``calls``; ``hits`` (exact cache hits), ``decision_hits`` (new shapes served by a
    shape-generic decision, no propagation) and ``misses`` (stock's propagation ran), with
    ``miss_reasons`` (count per reason); ``native_calls``, ``declined``, ``declines`` (count
    per reason); ``entries`` and ``evictions`` of the exact caches, ``decisions`` and
    ``decision_evictions`` of the decision stores; ``capacity``; and ``threads`` (thread
    ident -> the same counters for that thread).
    """
    return _C.stats()


def reset_stats() -> None:
    """Zero every counter (cached entries are kept)."""
    _C.reset_stats()


def clear_cache() -> None:
    """Drop the cached entries of every thread. Safe from any thread."""
    _C.clear_cache()


def cache_capacity() -> int:
    return _C.cache_capacity()


def set_cache_capacity(capacity: int) -> None:
    """Bound each thread's cache to ``capacity`` entries (0: everything goes to stock)."""
    if capacity < 0:
        raise ValueError(f"cache capacity must be >= 0, got {capacity}")
    _C.set_cache_capacity(capacity)


def shape_generic() -> bool:
    """Whether a call with a new shape may reuse another shape's sharding decision."""
    return _C.shape_generic_decisions_enabled()


def set_shape_generic(enabled: bool) -> None:
    """Turn shape-generic decisions on or off (off: a new shape always runs stock's
    propagation, as with TORCHSHARD_SHAPE_GENERIC=0)."""
    _C.set_shape_generic_decisions_enabled(bool(enabled))


def decision_verification() -> str:
    return _C.decision_verification()


def set_decision_verification(policy: str) -> None:
    """When a reused decision is checked against stock's propagation: ``"first"`` (its
    first reuse on a new shape), ``"always"`` or ``"never"``
    (TORCHSHARD_VERIFY_DECISIONS)."""
    _C.set_decision_verification(policy)


def _initialize() -> None:
    config = _config.from_environment()
    if config.cache_capacity is not None:
        _C.set_cache_capacity(config.cache_capacity)
    _C.set_shape_generic_decisions_enabled(config.shape_generic)
    _C.set_decision_verification(config.verify_decisions)
    _C.set_native_all_reduce_enabled(config.native_all_reduce)
    # Caches hold Python objects: release them while the interpreter is whole.
    atexit.register(_C.shutdown)
    if not config.disabled:
        enable()


_initialize()
