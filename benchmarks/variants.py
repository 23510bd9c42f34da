"""Switching one case's DTensor ops between the variants the dispatch suite times.

- ``torchshard``: torchshard's NativeRule serves the ops;
- ``stock``: the ops have no rule, so torch's built-in DTensor path serves them;
- ``floor``: a benchmark-only native rule (``_bench.make_floor_rule``) returns each
  op's prebuilt result at once. Its time is the unavoidable cost of reaching any
  torch_dispatch rule (argument parsing, autograd, the Python dispatch key boxing
  the stack into Python objects, the rule lookup, the call): no rule is cheaper.
  For a view op it returns a new DTensor over the prebuilt result, as a view's
  result must be a tensor autograd has not seen.

Only the case's own ops are switched (microseconds, ``torchshard.testing.route``),
not the whole rule set (``torchshard.disable()`` re-registers every rule and empties
every cache). :class:`EveryOpSwitch` routes every op, for whole training steps whose
caches (and shape-generic decisions) must survive the switch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch._library import simple_registry
from torch._ops import OpOverload
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode

import torchshard
from torchshard import _bench, testing


@dataclass
class RecordedCall:
    op: OpOverload
    args: tuple
    kwargs: dict
    result: object


class _Recorder(TorchDispatchMode):
    """Records each top-level op call a DTensor program makes, with its result."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[RecordedCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.calls.append(RecordedCall(func, tuple(args), dict(kwargs or {}), result))
        return result


def record_calls(run: Callable[[], object]) -> list[RecordedCall]:
    """The DTensor op calls `run` makes (run once, on whatever path is enabled).

    The arguments are the ones a torch_dispatch rule receives for the call.
    """
    recorder = _Recorder()
    with recorder:
        run()
    return recorder.calls


def returns_view(op: OpOverload) -> bool:
    """Whether the op returns a view of an input (not an in-place op's own argument)."""
    return any(
        ret.alias_info is not None and not ret.alias_info.is_write for ret in op._schema.returns
    )


class VariantSwitch:
    """Puts a case's ops on one variant's path at a time; call close() at the end."""

    def __init__(self, calls: list[RecordedCall]) -> None:
        results: dict[OpOverload, object] = {}
        for call in calls:
            results.setdefault(call.op, call.result)  # the first result stands for the op
        self.ops = list(results)
        enabled = torchshard.enabled_ops()
        missing = [op for op in self.ops if op not in enabled]
        if missing:
            raise RuntimeError(f"torchshard has no rule installed for {missing}; enable it first")
        self._floor_rules = {
            op: _bench.make_floor_rule(result, fresh_wrapper=returns_view(op)) for op, result in results.items()
        }
        self._floor_handles: list[object] = []
        self.current = "torchshard"

    def switch(self, variant: str) -> None:
        if variant == self.current:
            return
        for handle in self._floor_handles:
            handle.destroy()
        self._floor_handles.clear()
        for op in self.ops:
            testing.route(op, "torchshard" if variant == "torchshard" else "stock")
        if variant == "floor":
            for op, rule in self._floor_rules.items():
                registry = simple_registry.singleton.find(op.__qualname__).torch_dispatch_rules
                self._floor_handles.append(registry.register(DTensor, rule))
        self.current = variant

    def close(self) -> None:
        self.switch("torchshard")


class EveryOpSwitch:
    """Puts every op torchshard serves on stock's path or back on torchshard's, keeping
    every cache entry and decision (``torchshard.disable()`` would empty them)."""

    def __init__(self) -> None:
        self.ops = sorted(torchshard.enabled_ops(), key=str)
        self.current = "torchshard"

    def switch(self, variant: str) -> None:
        if variant != self.current:
            for op in self.ops:
                testing.route(op, variant)
            self.current = variant

    def close(self) -> None:
        self.switch("torchshard")
