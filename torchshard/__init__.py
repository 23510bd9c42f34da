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
    "reset_stats",
    "set_cache_capacity",
    "stats",
]


def stats() -> dict[str, Any]:
    """Dispatch counters: totals over all threads (ended ones included), and per live thread.

    Keys: ``calls``, ``hits``, ``misses``, ``native_calls``, ``declined``, ``declines`` (count per
    reason), ``evictions``, ``entries``, ``capacity``, and ``threads`` (thread ident ->
    the same counters for that thread).
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


def _initialize() -> None:
    config = _config.from_environment()
    if config.cache_capacity is not None:
        _C.set_cache_capacity(config.cache_capacity)
    # Caches hold Python objects: release them while the interpreter is whole.
    atexit.register(_C.shutdown)
    if not config.disabled:
        enable()


_initialize()
