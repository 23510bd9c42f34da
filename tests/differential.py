"""The differential harness: one call on stock DTensor and on torchshard, same outcome.

``check(inputs, fn)`` (inputs: ``dtensor_cases.Inputs``) runs ``fn`` on fresh inputs
twice -- inside ``torchshard.disabled()`` (stock DTensor) and with torchshard -- and
requires, field by field (``dtensor_compare``):

* outputs: values (bitwise), placements, mesh, full spec (tensor_meta, shard_order),
  shape, stride, dtype, requires_grad, grad_fn type, is_leaf;
* aliasing at the DTensor wrapper level: ``out is input`` (in-place/out= return the very
  object), ``out._base is input``, ``out._is_view()``, wrapper storage and local storage
  sharing, against the inputs and the earlier outputs;
* version counters: on a second call, each input is bumped in place (``mul_(1)``) and
  every output's ``_version`` (and its local tensor's) must move the same way;
* the inputs after the call (in-place ops may change an input's spec and shape);
* with ``grad``: the gradients of the leaf inputs after a backward pass through every
  floating output, or the same exception type from the backward;
* warnings raised by the measured call;
* when stock raises: the exception type, and the inputs after the failed call.

``warm`` calls run before the measured one on each side: ``warm=1`` (the default) makes
torchshard's measured call a cache hit (the path that runs no Python), ``warm=0`` keeps
it a miss (the path that builds the entry). ``native``/``decline`` assert from the
``torchshard.explain()`` report of the measured call that the op was served natively or
declined for a given reason, so a test fails when torchshard silently declines.

Used by test_native_classes.py (hand-written cases per op class) and test_parity.py (a
table of ops under every placement); test_parity_values.py runs ``run_side`` on gloo
ranks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from dtensor_cases import Inputs
from dtensor_compare import assert_same_result, flat_tensors, version_deltas, wrapper_aliasing

import torchshard

__all__ = ["Native", "Run", "assert_same_runs", "bump", "check", "op_report", "run_side"]


def _leaves(inputs: Sequence[Any]) -> list[torch.Tensor]:
    return [t for t in flat_tensors(inputs) if t.is_leaf and t.requires_grad]


def _backward(output: Any) -> None:
    targets = [o for o in flat_tensors(output) if o.requires_grad and o.is_floating_point()]
    if targets:
        # (o * o) makes the gradient depend on the output values and is accepted by
        # stock for every placement (Partial included); every output takes part, so the
        # gradients of list results (split, unbind) are all DTensors.
        torch.autograd.backward([(o * o).sum() for o in targets])


def bump(t: torch.Tensor) -> None:
    """A value-preserving in-place op on an input (bumps its version counter)."""
    with torch.no_grad():
        if t.dtype == torch.bool:
            torch.autograd.graph.increment_version(t)
        else:
            t.mul_(1)


@dataclass
class Run:
    """What one side did: its inputs, the measured call's outcome and report."""

    inputs: list[Any]
    output: Any = None
    error: type[BaseException] | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    aliasing: list[dict[str, Any]] = field(default_factory=list)
    grad_error: type[BaseException] | None = None
    grads: list[Any] = field(default_factory=list)
    versions: list[Any] = field(default_factory=list)
    report: Any = None


def run_side(inputs: Inputs, fn: Callable[..., Any], *, enabled: bool, grad: bool,
             warm: int = 0, seed: int | None = None) -> Run:
    """One side of a case: ``warm`` unmeasured calls, the measured call (explained, its
    warnings recorded), its backward (with ``grad``), then a version-counter probe."""
    with contextlib.nullcontext() if enabled else torchshard.disabled():
        assert torchshard.is_enabled() == enabled
        for _ in range(warm):
            with contextlib.suppress(Exception), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warm_out = fn(*inputs.fresh())
                if grad:
                    _backward(warm_out)
        run = Run(inputs=inputs.fresh())
        if seed is not None:
            torch.manual_seed(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torchshard.explain(print_report=False) as report:
                try:
                    run.output = fn(*run.inputs)
                except Exception as exc:  # noqa: BLE001 - the type is compared with stock's
                    run.error, run.message = type(exc), str(exc)
        run.report = report
        run.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
        if run.error is not None:
            return run
        run.aliasing = wrapper_aliasing(run.output, run.inputs)
        if grad:
            try:
                _backward(run.output)
            except Exception as exc:  # noqa: BLE001
                run.grad_error = type(exc)
            run.grads = [t.grad for t in _leaves(run.inputs)]
        # Version counters on a separate call: bumping an input in place makes the
        # multi-output views of split/unbind unusable (their grad_fn raises), and the
        # comparison above still has to read them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe_inputs = inputs.fresh()
            try:
                probe = fn(*probe_inputs)
            except Exception as exc:  # noqa: BLE001
                run.versions = [("probe raised", type(exc).__name__)]
            else:
                run.versions = version_deltas(probe, probe_inputs, bump=bump)
    return run


Native = bool | str | tuple[str, ...] | None


def check(inputs: Inputs, fn: Callable[..., Any], *, native: Native = True,
          decline: tuple[str, str] | None = None, grad: bool = False, warm: int = 1,
          seed: int | None = None, hit: bool = True) -> tuple[Run, Run]:
    """Run ``fn`` on stock and on torchshard and require identical outcomes.

    ``native``: True -- some call of the block ran natively; op name(s) -- each named op
    ran natively on every call (and, with ``hit``, hit the cache); None/False -- no
    assertion. ``decline``: ``(op, reason)`` the op must have been declined for. Neither
    is asserted when stock raises (nothing to serve; the exception types must match).
    """
    stock = run_side(inputs, fn, enabled=False, grad=grad, warm=warm, seed=seed)
    ours = run_side(inputs, fn, enabled=True, grad=grad, warm=warm, seed=seed)
    if assert_same_runs(stock, ours):
        _assert_served(ours.report, native, decline, hit)
    return stock, ours


def assert_same_runs(stock: Run, ours: Run) -> bool:
    """Every comparison of ``check`` between two runs of one case; False when stock
    raised (and torchshard raised the same type), True when both returned."""
    if stock.error is not None:
        assert ours.error is stock.error, (
            f"stock raised {stock.error.__name__}: {stock.message[:300]}\n"
            f"torchshard: {ours.error.__name__ + ': ' + ours.message[:300] if ours.error else 'no error'}"
        )
        assert_same_result(stock.inputs, ours.inputs, path="inputs_after_error")
        return False
    assert ours.error is None, (
        f"torchshard raised {ours.error.__name__} where stock did not: {ours.message[:500]}"
    )
    assert_same_result(stock.output, ours.output, inputs=(stock.inputs, ours.inputs), path="output")
    assert stock.aliasing == ours.aliasing, (
        f"wrapper aliasing right after the call differs:\nstock={stock.aliasing}\nours={ours.aliasing}"
    )
    assert ours.grad_error is stock.grad_error, (stock.grad_error, ours.grad_error)
    assert_same_result(stock.grads, ours.grads, path="grads")
    assert_same_result(stock.inputs, ours.inputs, path="inputs_after")
    assert stock.versions == ours.versions, (
        f"version counters differ:\nstock={stock.versions}\nours={ours.versions}"
    )
    assert stock.warnings == ours.warnings, (
        f"warnings differ:\nstock={stock.warnings}\nours={ours.warnings}"
    )
    return True



def op_report(report: Any, name: str) -> Any:
    """The ``OpReport`` of op ``name`` (``aten::add.Tensor``) in an explain report."""
    for op in report.ops:
        if op.op == name:
            return op
    raise AssertionError(f"{name} not dispatched to torchshard; report ops: {report.ops}")


def _assert_served(report: Any, native: Native, decline: tuple[str, str] | None, hit: bool) -> None:
    """The nativeness assertions of ``check`` on an explain report."""
    if decline is not None:
        op = op_report(report, decline[0])
        assert op.native_calls == 0 and op.declines.get(decline[1], 0) > 0, (
            f"{decline[0]} expected declined for {decline[1]!r}: {op}"
        )
    if native is True:
        assert report.native_calls > 0, f"nothing ran natively: {report.ops}"
    elif isinstance(native, (str, tuple)):
        for name in (native,) if isinstance(native, str) else native:
            op = op_report(report, name)
            assert op.calls > 0 and op.native_calls == op.calls, f"{name} not (only) native: {op}"
            if hit:
                assert op.misses == 0, f"{name} missed the cache after a warm-up call: {op}"
