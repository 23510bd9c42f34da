"""Installs and removes torchshard's native torch_dispatch rules for DTensor.

torch consults rules registered with ``torch.library.register_torch_dispatch(op,
DTensor, rule)`` before its built-in DTensor path, and falls through to that path
when a rule returns ``NotImplemented`` (evidence: docs/design.md). torchshard
registers one native rule per op that DTensor has a sharding strategy or rule
for, and follows ops registered later.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import torch
from torch._ops import OpOverload
from torch.distributed.tensor import DTensor

from torchshard._native import _C

log = logging.getLogger("torchshard")

_lock = threading.RLock()
_rules: dict[OpOverload, object] = {}  # built once per op, reused across enable/disable
_library: torch.library.Library | None = None
_enabled_ops: set[OpOverload] = set()


def _propagator():
    return DTensor._op_dispatcher.sharding_propagator


def _strategy_ops() -> list[OpOverload]:
    propagator = _propagator()
    ops: dict[OpOverload, None] = {}
    for registry in (
        propagator.op_strategy_funcs,
        propagator.op_to_rules,
        propagator.op_single_dim_strategy_funcs,
    ):
        for op in registry:
            if isinstance(op, OpOverload):
                ops[op] = None
    return list(ops)


def _rule_for(op: OpOverload):
    rule = _rules.get(op)
    if rule is None:
        propagator = _propagator()
        dispatcher = DTensor._op_dispatcher
        info = propagator.op_to_schema_info.get(op) or (
            propagator.op_to_schema_info_for_single_dim_strategy.get(op)
        )
        rule = _C.make_rule(
            op,
            static_argnum=info.static_argnum if info is not None else 100,
            static_kwargkey=list(info.static_kwargkey or ()) if info is not None else [],
            needs_pytree=bool(info.needs_pytree) if info is not None else False,
            is_random=op in dispatcher._random_ops,
            has_custom_handler=op in dispatcher._custom_op_handlers,
        )
        _rules[op] = rule
    return rule


def _install(op: OpOverload) -> None:
    assert _library is not None
    if op in _enabled_ops:
        return
    if torch._library.simple_registry.find_torch_dispatch_rule(op, DTensor) is not None:
        # Someone else owns this (op, DTensor) rule; never override it.
        log.debug("torchshard: %s already has a DTensor rule; leaving it alone", op)
        return
    torch.library.register_torch_dispatch(op, DTensor, _rule_for(op), lib=_library)
    _enabled_ops.add(op)


def _follow_registrations() -> None:
    """Wrap the propagator's registration methods so later ops get a rule too."""
    propagator = _propagator()
    if getattr(propagator, "_torchshard_follows", False):
        return
    for name in (
        "register_op_strategy",
        "register_sharding_prop_rule",
        "register_single_dim_op_strategy",
    ):
        original = getattr(propagator, name, None)
        if original is None:
            continue

        def follow(op, *args, _original=original, **kwargs):
            result = _original(op, *args, **kwargs)
            with _lock:
                if _library is not None and isinstance(op, OpOverload):
                    _rules.pop(op, None)  # its schema info may have changed
                    _enabled_ops.discard(op)
                    _install(op)
            return result

        setattr(propagator, name, follow)
    propagator._torchshard_follows = True


def enable() -> None:
    """Route DTensor ops through torchshard's native path (idempotent)."""
    global _library
    with _lock:
        if _library is not None:
            return
        _follow_registrations()
        _library = torch.library.Library("aten", "FRAGMENT")
        for op in _strategy_ops():
            _install(op)
        log.debug("torchshard: enabled for %d DTensor ops", len(_enabled_ops))


def disable() -> None:
    """Remove every torchshard rule: DTensor behaves exactly as stock (idempotent)."""
    global _library
    with _lock:
        if _library is None:
            return
        _library._destroy()
        _library = None
        _enabled_ops.clear()
        _C.clear_cache()


def is_enabled() -> bool:
    return _library is not None


def enabled_ops() -> frozenset[OpOverload]:
    with _lock:
        return frozenset(_enabled_ops)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run a block on stock DTensor, restoring the previous state afterwards."""
    with _lock:
        was_enabled = is_enabled()
        disable()
    try:
        yield
    finally:
        if was_enabled:
            enable()
