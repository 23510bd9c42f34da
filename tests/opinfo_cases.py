"""OpInfo differential cases: op_db samples as DTensors under placement combinations.

One case is an OpInfo op, one of its float32 CPU samples, and one placement per tensor
argument (the choices of ``DTensorConverter``: Replicate, and Shard on every dim the
mesh size divides). ``run_case`` runs it on stock DTensor (``torchshard.disabled()``)
and with torchshard, each side from freshly built inputs and the same RNG seed, then
backpropagates through the first output, and compares everything
(``assert_same_case``): outputs and their aliasing, inputs after the call, gradients,
and exception types.

Used by test_opinfo_parity.py (fake process group, every op) and test_thread_ranks.py
(one thread per rank, real collectives).

Which ops count as "supported by stock" is decided mechanically, per sample: the sample
is run on stock with every tensor Replicate; if stock raises there, only that
all-Replicate case is compared (exception types), otherwise every chosen placement
combination is.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import random
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Placement, Replicate
from torch.testing._internal import common_methods_invocations
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.distributed._tensor.common_dtensor import DTensorConverter
from torch.testing._internal.opinfo.core import OpInfo, SampleInput
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

import torchshard
from dtensor_compare import assert_same_result

__all__ = [
    "Case",
    "CaseRecord",
    "OpTally",
    "assert_same_case",
    "case_plan",
    "float32_ops",
    "op_id",
    "render_report",
    "reproducible_ops",
    "run_case",
    "run_op",
    "run_side",
]

# As upstream's test_dtensor_ops.py: sizes that 4 ranks divide evenly, so more sample
# dims get Shard choices (the sample functions defined in that module read them).
_EVEN_SIZES = {"L": 24, "M": 12, "S": 4, "XS": 2}


@contextlib.contextmanager
def _even_sample_sizes() -> Iterator[None]:
    saved = {name: getattr(common_methods_invocations, name) for name in _EVEN_SIZES}
    for name, size in _EVEN_SIZES.items():
        setattr(common_methods_invocations, name, size)
    try:
        yield
    finally:
        for name, size in saved.items():
            setattr(common_methods_invocations, name, size)


def op_id(op: OpInfo) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


@functools.cache
def float32_ops() -> tuple[OpInfo, ...]:
    """Every op_db entry that supports float32 on CPU, ordered by id."""
    ops = [op for op in op_db if torch.float32 in op.supported_dtypes("cpu")]
    return tuple(sorted(ops, key=op_id))


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def _samples(op: OpInfo, limit: int | None) -> list[SampleInput]:
    """The op's first ``limit`` float32 CPU samples (values seeded by the op id), with
    the even sizes where the op's sample function works with them."""

    def draw() -> list[SampleInput]:
        torch.manual_seed(_seed(op_id(op)))
        samples = op.sample_inputs("cpu", torch.float32, requires_grad=op.supports_autograd)
        return list(itertools.islice(samples, limit))

    try:
        with _even_sample_sizes():
            return draw()
    except (IndexError, RuntimeError, ValueError):
        # A few sample functions pair these sizes with literal shapes (argwhere's mask).
        return draw()


def _call_tree(sample: SampleInput) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (sample.input, *sample.args), dict(sample.kwargs)


def _placement_choices(mesh: DeviceMesh, sample: SampleInput) -> list[Sequence[Placement]]:
    """DTensorConverter's placement choices for each tensor leaf, in call order."""
    args, kwargs = _call_tree(sample)
    converter = DTensorConverter(mesh, args, kwargs)
    leaves, _ = tree_flatten((args, kwargs))
    return [converter.gen_sharding_choices_for_arg(t) for t in leaves if isinstance(t, torch.Tensor)]


def _combo_at(choices: Sequence[Sequence[Placement]], index: int) -> tuple[Placement, ...]:
    """The ``index``-th element of ``itertools.product(*choices)``, without listing it."""
    combo = []
    for options in reversed(choices):
        index, digit = divmod(index, len(options))
        combo.append(options[digit])
    return tuple(reversed(combo))


def _combos(choices: Sequence[Sequence[Placement]], limit: int | None, rng: random.Random
            ) -> list[tuple[Placement, ...]]:
    """All-Replicate first (index 0), then the rest of the product, or a seeded sample of it."""
    total = math.prod(len(c) for c in choices)
    if limit is None or total <= limit:
        indices = range(total)
    else:
        indices = [0, *sorted(rng.sample(range(1, total), limit - 1))]
    return [_combo_at(choices, i) for i in indices]


@dataclass(frozen=True)
class Case:
    """One sample of an op under one placement per tensor leaf."""

    op: OpInfo
    sample_index: int
    sample: SampleInput
    placements: tuple[Placement, ...]

    @property
    def all_replicate(self) -> bool:
        return all(isinstance(p, Replicate) for p in self.placements)

    def build(self, mesh: DeviceMesh) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
        """Fresh DTensor inputs: ``(args, kwargs, leaves)``, leaves in call order."""
        args, kwargs = _call_tree(self.sample)
        converter = DTensorConverter(mesh, args, kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        placements = iter(self.placements)
        built = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                # A copy per side: distribute_tensor may keep the sample's storage, and
                # an in-place op on stock's inputs must not change torchshard's.
                fresh = leaf.detach().clone().requires_grad_(leaf.requires_grad)
                leaf = converter.to_dist_tensor(fresh, mesh, [next(placements)])
            built.append(leaf)
        built_args, built_kwargs = tree_unflatten(built, spec)
        return built_args, built_kwargs, built


def case_plan(op: OpInfo, mesh: DeviceMesh, *, samples: int | None, combos: int | None
              ) -> Iterator[Case]:
    """The op's cases: per sample, all-Replicate first, then up to ``combos`` placement
    combinations (a seeded sample when there are more; ``None``: all)."""
    for index, sample in enumerate(_samples(op, samples)):
        rng = random.Random(_seed(op_id(op), index))
        for placements in _combos(_placement_choices(mesh, sample), combos, rng):
            yield Case(op, index, sample, placements)


class _SeededOpRecorder(TorchDispatchMode):
    """Records whether any dispatched op is tagged nondeterministic_seeded (draws RNG)."""

    seen = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen |= torch.Tag.nondeterministic_seeded in func.tags
        return func(*args, **(kwargs or {}))


def _returns_initialized_memory(op: OpInfo) -> bool:
    """empty*/new_empty* return whatever the allocator hands out: two stock runs may
    happen to agree (a freed block reused) where torchshard's differs."""
    return not op.name.startswith(("empty", "new_empty"))


def _is_reproducible(op: OpInfo) -> bool:
    """Whether the op's values are reproducible without a shared RNG: it returns
    initialized memory (not empty*/new_empty*) and, on its first sample with plain
    tensors, dispatches no op that draws from an RNG."""
    if not _returns_initialized_memory(op):
        return False
    sample = next(iter(op.sample_inputs("cpu", torch.float32)), None)
    if sample is None:
        return False
    recorder = _SeededOpRecorder()
    try:
        with recorder:
            op(sample.input, *sample.args, **sample.kwargs)
    except Exception:  # noqa: BLE001 - only the dispatched ops matter here
        pass
    return not recorder.seen


def reproducible_ops(count: int, *, seed: int) -> list[OpInfo]:
    """A seeded sample of ``count`` float32 ops whose values are reproducible, for runs
    where ranks cannot share one RNG sequence or rerun stock on their own (thread and
    process ranks), ordered by id."""
    candidates = list(float32_ops())
    random.Random(seed).shuffle(candidates)
    return sorted((op for op in candidates[: 2 * count] if _is_reproducible(op)), key=op_id)[:count]


# ----------------------------------------------------------------------------- running


@dataclass
class SideResult:
    """What one side (stock or torchshard) did with a case."""

    leaves: list[Any]
    output: Any = None
    error: BaseException | None = None
    grads: list[Any] | None = None
    grad_error: BaseException | None = None


def _first_tensor(value: Any) -> torch.Tensor | None:
    leaves, _ = tree_flatten(value)
    return next((t for t in leaves if isinstance(t, torch.Tensor)), None)


def run_side(case: Case, mesh: DeviceMesh, *, stock: bool) -> SideResult:
    """One side of ``case`` as the process is set up now (torchshard enabled or not),
    from the case's RNG seed. ``stock``: start from an empty built-in DTensor cache of
    this thread: stock keys only the keyword values its schema info names, so an
    earlier sample's entry would hand this one a stale spec (``histc(bins=1)`` after
    ``histc()`` gets a 100-bin spec; see docs/design.md)."""
    if stock:
        torch._C._clear_DTensor_sharding_propagator_cache()
    torch.manual_seed(_seed(op_id(case.op), case.sample_index, repr(case.placements)))
    args, kwargs, leaves = case.build(mesh)
    side = SideResult(leaves)
    try:
        side.output = case.op(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the type is compared
        side.error = exc
        return side
    first = _first_tensor(side.output)
    if first is None or not first.requires_grad or not first.is_floating_point():
        return side
    try:
        first.sum().backward()
    except Exception as exc:  # noqa: BLE001 - the type is compared
        side.grad_error = exc
        return side
    side.grads = [t.grad for t in leaves if isinstance(t, torch.Tensor) and t.is_leaf and t.requires_grad]
    return side


def _run_stock_side(case: Case, mesh: DeviceMesh) -> SideResult:
    with torchshard.disabled():
        return run_side(case, mesh, stock=True)


def _error_type(error: BaseException | None) -> type | None:
    return None if error is None else type(error)


def assert_same_case(stock: SideResult, ours: SideResult, *, values: bool = True) -> None:
    """Same exception types, or the same outputs (with aliasing), inputs afterwards and
    gradients. ``values=False`` compares everything but tensor values."""
    assert _error_type(stock.error) is _error_type(ours.error), (
        f"exception: stock={stock.error!r} torchshard={ours.error!r}")
    if stock.error is not None:
        return
    assert_same_result(stock.output, ours.output, inputs=(stock.leaves, ours.leaves), values=values)
    assert_same_result(stock.leaves, ours.leaves, path="inputs", values=values)
    assert _error_type(stock.grad_error) is _error_type(ours.grad_error), (
        f"backward exception: stock={stock.grad_error!r} torchshard={ours.grad_error!r}")
    assert_same_result(stock.grads, ours.grads, path="grads", values=values)


@dataclass
class CaseRecord:
    """The outcome of one case, with torchshard's counters for its torchshard side."""

    stock_error: str | None
    calls: int
    native_calls: int
    declines: dict[str, int]
    values_compared: bool


def _counter_delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    """This thread's calls, native calls and declines by reason between two stats()
    (a thread appears there once it has dispatched a call)."""
    ident = threading.get_ident()
    empty = {"calls": 0, "native_calls": 0, "declines": {}}
    b, a = before["threads"].get(ident, empty), after["threads"].get(ident, empty)
    declines = {reason: n - b["declines"].get(reason, 0) for reason, n in a["declines"].items()}
    return (a["calls"] - b["calls"], a["native_calls"] - b["native_calls"],
            {reason: n for reason, n in declines.items() if n})


def _same_values_unless_stock_varies(stock, ours, case: Case, mesh: DeviceMesh) -> bool:
    """Asserts the same result values included, and returns True; returns False
    instead when a mismatch comes with stock disagreeing with its own rerun."""
    try:
        assert_same_case(stock, ours)
    except AssertionError:
        try:
            assert_same_case(stock, _run_stock_side(case, mesh))
        except AssertionError:
            return False
        raise
    return True


def run_case(case: Case, mesh: DeviceMesh) -> CaseRecord:
    """Run ``case`` on stock and with torchshard and assert the same result.

    Values are compared bit for bit unless the op returns uninitialized memory, or
    stock disagrees with itself on a rerun with the same seed (an RNG op whose DTensor
    RNG tracker has moved on): then every field but the values is compared, and the
    record says so.
    """
    stock = _run_stock_side(case, mesh)
    before = torchshard.stats()
    ours = run_side(case, mesh, stock=False)
    calls, native_calls, declines = _counter_delta(before, torchshard.stats())
    values = _returns_initialized_memory(case.op) and _same_values_unless_stock_varies(stock, ours, case, mesh)
    if not values:
        assert_same_case(stock, ours, values=False)
    return CaseRecord(None if stock.error is None else type(stock.error).__name__,
                      calls, native_calls, declines, values)


@dataclass
class OpTally:
    """Per op: cases run, and torchshard's counters summed over them."""

    cases: int = 0
    stock_errors: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    native_calls: int = 0
    declines: dict[str, int] = field(default_factory=dict)
    metadata_only_cases: int = 0
    mismatch: str | None = None  # the first failing comparison, when a case failed

    def add(self, record: CaseRecord) -> None:
        self.cases += 1
        if record.stock_error is not None:
            self.stock_errors[record.stock_error] = self.stock_errors.get(record.stock_error, 0) + 1
        self.calls += record.calls
        self.native_calls += record.native_calls
        for reason, n in record.declines.items():
            self.declines[reason] = self.declines.get(reason, 0) + n
        self.metadata_only_cases += not record.values_compared

    def pinned(self) -> dict[str, Any]:
        """The figures tests/opinfo_expected.json pins per op: the outcome, the cases run
        and torchshard's own counters over them (calls, native calls, declines by reason)."""
        return {"outcome": self.outcome, "cases": self.cases, "calls": self.calls,
                "native_calls": self.native_calls, "declines": dict(sorted(self.declines.items()))}

    @property
    def stock_supported(self) -> bool:
        """Stock ran at least one case (the all-Replicate case of some sample)."""
        return sum(self.stock_errors.values()) < self.cases

    @property
    def outcome(self) -> str:
        if self.mismatch is not None:
            return "mismatch"
        if self.cases == 0:
            return "no samples"
        if not self.stock_supported:
            return "stock raises"
        if self.calls == 0:
            return "no rule"
        return "native" if self.native_calls else "declined"


def run_op(op: OpInfo, mesh: DeviceMesh, *, samples: int | None, combos: int | None) -> OpTally:
    """Every case of ``op``; a sample whose all-Replicate case stock rejects gets no more.
    A failing case is reported with its sample and placements."""
    tally = OpTally()
    rejected_samples: set[int] = set()
    for case in case_plan(op, mesh, samples=samples, combos=combos):
        if case.sample_index in rejected_samples:
            continue
        try:
            record = run_case(case, mesh)
        except AssertionError as exc:
            raise AssertionError(f"{op_id(op)} sample {case.sample_index} {case.sample} "
                                 f"placements {case.placements}:\n{exc}") from exc
        tally.add(record)
        if case.all_replicate and record.stock_error is not None:
            rejected_samples.add(case.sample_index)
    return tally


# ----------------------------------------------------------------------------- report


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def render_report(tallies: dict[str, OpTally], *, samples: int | None, combos: int | None) -> str:
    """Markdown: every op by outcome, with torchshard's own counters (stats()) per op."""
    by_outcome: dict[str, list[str]] = {"native": [], "declined": [], "no rule": [],
                                        "stock raises": [], "mismatch": [], "no samples": []}
    for name in sorted(tallies):
        by_outcome[tallies[name].outcome].append(name)
    cases = sum(t.cases for t in tallies.values())
    calls = sum(t.calls for t in tallies.values())
    native = sum(t.native_calls for t in tallies.values())
    metadata_only = sorted(name for name, t in tallies.items() if t.metadata_only_cases)
    lines = [
        f"Run: fake process group, 1-D mesh of 4, samples per op: {samples or 'all'}, "
        f"placement combinations per sample: {combos or 'all'}.",
        "",
        f"{len(tallies)} ops, {cases} cases, {len(by_outcome['mismatch'])} mismatches. "
        f"DTensor calls made with torchshard "
        f"enabled: {calls}, served natively: {native} ({native / max(calls, 1):.1%}).",
        "",
        f"* identical, served natively (at least one native call): {len(by_outcome['native'])}",
        f"* identical, declined to stock (no native call): {len(by_outcome['declined'])}",
        f"* identical, stock only (no DTensor call reached a torchshard rule: factory functions, "
        f"ops stock decomposes before dispatch): {len(by_outcome['no rule'])}: "
        f"{', '.join(by_outcome['no rule']) or 'none'}",
        f"* stock raises on Replicate inputs (exception type identical): "
        f"{len(by_outcome['stock raises'])}",
        f"* no float32 CPU sample in op_db: {len(by_outcome['no samples'])}: "
        f"{', '.join(by_outcome['no samples']) or 'none'}",
        f"* compared without values (stock does not reproduce its own values: uninitialized "
        f"memory): {len(metadata_only)}: "
        f"{', '.join(metadata_only) or 'none'}",
        "",
        "### Served natively",
        "",
        "| op | cases | native / calls | declines |",
        "|---|---|---|---|",
    ]
    for name in by_outcome["native"]:
        t = tallies[name]
        lines.append(f"| `{name}` | {t.cases} | {t.native_calls} / {t.calls} | {_reasons(t.declines)} |")
    lines += ["", "### Mismatches", ""]
    lines += [f"* `{name}`: {tallies[name].mismatch}" for name in by_outcome["mismatch"]] or ["none"]
    lines += ["", "### Declined to stock", "", "| op | cases | calls | declines |", "|---|---|---|---|"]
    for name in by_outcome["declined"]:
        t = tallies[name]
        lines.append(f"| `{name}` | {t.cases} | {t.calls} | {_reasons(t.declines)} |")
    lines += ["", "### Stock raises on Replicate inputs", "", "| op | cases | stock's exceptions |",
              "|---|---|---|"]
    for name in by_outcome["stock raises"]:
        t = tallies[name]
        lines.append(f"| `{name}` | {t.cases} | {_reasons(t.stock_errors)} |")
    return "\n".join(lines) + "\n"
