"""Every TORCHSHARD_* environment variable, read in this one place.

TORCHSHARD_DISABLE=1          ``import torchshard`` does not enable the fast path.
TORCHSHARD_CACHE_CAPACITY=N   entries per thread cache (default 16384; 0 sends every
                              call to stock DTensor). When a cache is full, the next
                              insert empties it first ("flush when full").
TORCHSHARD_SHAPE_GENERIC=0    exact keys only: a new shape always runs stock's propagation.
TORCHSHARD_VERIFY_DECISIONS=P when a decision reused for a new shape is checked against
                              stock's propagation: ``first`` (default: its first reuse),
                              ``always`` (every reuse) or ``never``.
TORCHSHARD_NATIVE_ALL_REDUCE=0
                              a Partial -> Replicate redistribution runs through
                              stock's redistribute_local_tensor instead of the native
                              all-reduce (for isolating faults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Config:
    disabled: bool
    cache_capacity: int | None  # None: the native default
    shape_generic: bool = True
    verify_decisions: str = "first"
    native_all_reduce: bool = True


_VERIFY_POLICIES = ("first", "always", "never")


def _parse_verify(raw: str | None) -> str:
    policy = (raw or "first").strip().lower() or "first"
    if policy not in _VERIFY_POLICIES:
        raise ValueError(
            f"TORCHSHARD_VERIFY_DECISIONS must be one of {', '.join(_VERIFY_POLICIES)}, got {raw!r}"
        )
    return policy


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


def _parse_switch(raw: str | None) -> bool:
    """A switch that is on unless set to 0/false/no/off."""
    return (raw or "1").strip().lower() not in {"0", "false", "no", "off"}


def from_environment() -> Config:
    return Config(
        disabled=os.environ.get("TORCHSHARD_DISABLE", "").strip().lower() in _TRUE,
        cache_capacity=_parse_capacity(os.environ.get("TORCHSHARD_CACHE_CAPACITY")),
        shape_generic=_parse_switch(os.environ.get("TORCHSHARD_SHAPE_GENERIC")),
        verify_decisions=_parse_verify(os.environ.get("TORCHSHARD_VERIFY_DECISIONS")),
        native_all_reduce=_parse_switch(os.environ.get("TORCHSHARD_NATIVE_ALL_REDUCE")),
    )
