"""Installs and removes torchshard's native torch_dispatch rules for DTensor.

torch consults rules registered with ``torch.library.register_torch_dispatch(op,
DTensor, rule)`` before its built-in DTensor path, and falls through to that path
when a rule returns ``NotImplemented`` (evidence: docs/design.md). torchshard
registers one native rule per op that DTensor has a sharding strategy or rule
for (in the same registry ``register_torch_dispatch`` writes to, keeping each
registration's handle so it can be removed alone), and follows ops registered later.

The rules are installed once ``torch.distributed.tensor`` has been imported, by the
program, never by torchshard: until then ``enable()`` only arms an import hook
(torchshard/_after_import.py), so importing torchshard changes nothing stock can
observe (that import registers DTensor as a weights_only-safe global for
``torch.load``; docs/design.md).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Iterator

from torch._library import simple_registry
from torch._ops import OpOverload

from torchshard._after_import import AfterImport
from torchshard._families import is_shape_generic
from torchshard._native import _C, TorchshardWarning

log = logging.getLogger("torchshard")

_lock = threading.RLock()
_rules: dict[OpOverload, object] = {}  # built once per op, reused across enable/disable
_enabled = False  # what enable()/disable() asked for; the rules follow once DTensor is imported
# One registration handle per op we installed a rule for; destroying it removes
# exactly that rule (torch.library.register_torch_dispatch registers the same way).
_registrations: dict[OpOverload, object] = {}


_DTENSOR_MODULE = "torch.distributed.tensor"


def _dtensor() -> type:
    # Reached only once the program has imported torch.distributed.tensor.
    return sys.modules[_DTENSOR_MODULE].DTensor


def _propagator():
    return _dtensor()._op_dispatcher.sharding_propagator


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


# The strategy every pointwise op gets from stock's _register_single_dim_pointwise
# (torch/distributed/tensor/_ops/_pointwise_ops.py). It reads tensor metadata only,
# never a Python number's value, so such ops key numbers by kind (see
# csrc/python/cache/key_builder.h). Ops with a shape adjuster are left out: those read values.
_POINTWISE_STRATEGY = (
    "torch.distributed.tensor._ops._pointwise_ops",
    "_register_single_dim_pointwise.<locals>.strategy_fn",
)


def _has_value_blind_strategy(op: OpOverload) -> bool:
    propagator = _propagator()
    if op in propagator.op_to_scalar_shape_adjuster or op in propagator.op_to_shape_and_stride_idx:
        return False
    strategy = getattr(propagator.op_single_dim_strategy_funcs.get(op), "func", None)
    where = (getattr(strategy, "__module__", None), getattr(strategy, "__qualname__", None))
    return where == _POINTWISE_STRATEGY


_INT_TYPES = ("int", "List[int]", "Optional[int]", "Optional[List[int]]")  # SymInt prints as int


def _keyed_from(op: OpOverload, static_argnum: int) -> int:
    """The first positional index whose non-tensor values the key holds.

    Stock keys values only from ``static_argnum`` on, and some schema infos start too
    late: ``topk(x, k)`` and ``histc(x, bins)`` register 2, so stock's cache hands
    ``topk(x, 3)`` the spec of an earlier ``topk(x, 2)`` (a (8, 2) DTensor around an
    (8, 3) local tensor). An int argument can always decide a shape, so keying starts
    at the first one at the latest. Keying more never changes a result; ints do not
    vary per optimizer step the way the scalars static_argnum leaves out do.
    """
    for index, argument in enumerate(op._schema.arguments[:static_argnum]):
        if not argument.kwarg_only and str(argument.type) in _INT_TYPES:
            return index
    return static_argnum


def _rule_for(op: OpOverload):
    rule = _rules.get(op)
    if rule is None:
        propagator = _propagator()
        dispatcher = _dtensor()._op_dispatcher
        info = propagator.op_to_schema_info.get(op) or (
            propagator.op_to_schema_info_for_single_dim_strategy.get(op)
        )
        pointwise = _has_value_blind_strategy(op)
        rule = _C.make_rule(
            op,
            static_argnum=_keyed_from(op, info.static_argnum if info is not None else 100),
            value_blind_scalars=pointwise,
            is_random=op in dispatcher._random_ops,
            has_custom_handler=op in dispatcher._custom_op_handlers,
            shape_generic=is_shape_generic(op, pointwise),
        )
        _rules[op] = rule
    return rule


def _install(op: OpOverload) -> None:
    if op in _registrations:
        return
    dtensor = _dtensor()
    if simple_registry.find_torch_dispatch_rule(op, dtensor) is not None:
        # Someone else owns this (op, DTensor) rule; never override it.
        log.debug("torchshard: %s already has a DTensor rule; leaving it alone", op)
        return
    rules = simple_registry.singleton.find(op.__qualname__).torch_dispatch_rules
    _registrations[op] = rules.register(dtensor, _rule_for(op))


def _uninstall(op: OpOverload) -> None:
    registration = _registrations.pop(op, None)
    if registration is not None:
        registration.destroy()


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
                if isinstance(op, OpOverload):
                    # Re-registration may change the op's schema info: rebuild its rule.
                    _rules.pop(op, None)
                    if _enabled:
                        _uninstall(op)
                        _install(op)
                        _C.clear_cache()  # entries keyed with the old schema info
            return result

        setattr(propagator, name, follow)
    propagator._torchshard_follows = True


def _install_all() -> None:
    """A rule for every op DTensor has a strategy for, if still enabled (ops that have
    one already are skipped)."""
    with _lock:
        if not _enabled:
            return
        _follow_registrations()
        for op in _strategy_ops():
            _install(op)
        log.debug("torchshard: enabled for %d DTensor ops", len(_registrations))


def _install_after_dtensor_import() -> None:
    # Runs inside the program's `import torch.distributed.tensor`: an exception here
    # would fail that import, so a failure leaves DTensor stock and says why.
    global _enabled
    try:
        _install_all()
    except Exception as error:  # noqa: BLE001 - reported as a warning, DTensor stays stock
        with _lock:
            for op in list(_registrations):
                _uninstall(op)
            _enabled = False
        warnings.warn(f"torchshard could not install its DTensor rules and is disabled: "
                      f"{type(error).__name__}: {error}", TorchshardWarning)


_install_on_dtensor_import = AfterImport(_DTENSOR_MODULE, _install_after_dtensor_import)


def enable() -> None:
    """Route DTensor ops through torchshard's native path (idempotent).

    If ``torch.distributed.tensor`` has not been imported yet, the rules are installed
    right after the program imports it; ``enable()`` itself never imports it.
    """
    global _enabled
    with _lock:
        if _enabled:
            return
        _enabled = True
    # Outside _lock: arm() takes the module's import lock, which an import in progress
    # holds while its hook takes _lock.
    if not _install_on_dtensor_import.arm():
        _install_all()  # imported already (and completely: see AfterImport.arm)


def disable() -> None:
    """Remove every torchshard rule: DTensor behaves exactly as stock (idempotent)."""
    global _enabled
    with _lock:
        if not _enabled:
            return
        _install_on_dtensor_import.disarm()
        for op in list(_registrations):
            _uninstall(op)
        _enabled = False
        _C.clear_cache()


def is_enabled() -> bool:
    """Whether torchshard is on: its rules are installed, or will be as soon as
    ``torch.distributed.tensor`` is imported."""
    return _enabled


def enabled_ops() -> frozenset[OpOverload]:
    """The ops that currently have a torchshard rule."""
    with _lock:
        return frozenset(_registrations)


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
