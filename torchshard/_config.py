"""Every TORCHSHARD_* environment variable, read in this one place.

TORCHSHARD_DISABLE=1          ``import torchshard`` does not enable the fast path.
TORCHSHARD_CACHE_CAPACITY=N   entries per thread cache (default 16384; 0 sends every
                              call to stock DTensor). When a cache is full, the next
                              insert empties it first ("flush when full").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Config:
    disabled: bool
    cache_capacity: int | None  # None: the native default


def _parse_capacity(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"TORCHSHARD_CACHE_CAPACITY must be a non-negative integer, got {raw!r}"
        ) from None
    if value < 0:
        raise ValueError(f"TORCHSHARD_CACHE_CAPACITY must be >= 0, got {value}")
    return value


def from_environment() -> Config:
    return Config(
        disabled=os.environ.get("TORCHSHARD_DISABLE", "").strip().lower() in _TRUE,
        cache_capacity=_parse_capacity(os.environ.get("TORCHSHARD_CACHE_CAPACITY")),
    )
