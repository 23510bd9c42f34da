"""Property-based differential test: random DTensor calls, stock DTensor vs torchshard.

Hypothesis draws a call -- an op from ``OPS`` (unary/binary pointwise with broadcasting,
Python scalar operands, reductions with random dim/keepdim, mm/bmm/matmul, softmax,
cat, clamp, where, dtype conversions, views), written as a Python expression over
inputs ``t0, t1, ...`` in one of the forms torch accepts (function, method, operator,
keyword or positional arguments) -- and the inputs: a mesh (1-D of 4 or 2-D 2x2),
global shapes of 1-3 dims with sizes 0..9 (often not divisible by the mesh), dtypes
(float32, float64, int64, bool; sometimes float16, bfloat16, int32, uint8), a placement
per mesh dim (Replicate, Shard(d), Partial for floating inputs) and ``requires_grad``.
Meshes: 1-D of 4, 2-D 2x2, a 1-D pair of ranks including this one, and a 1-D pair this
rank is not in. Some operands are deliberately hostile: out-of-range dims, mismatched
shapes, empty dims, an input on the other mesh, a plain ``torch.Tensor`` operand, a
dtype the kernel rejects, scalars such as nan, inf, -0.0, 2**70 and complex numbers.
In-place, ``out=`` and ``_foreach_*`` calls are drawn too.

The call runs once on stock DTensor (``torchshard.disabled()``) and once or twice with
torchshard enabled (the second run is normally a cache hit); every torchshard run must
match stock: the same result field by field (``assert_same_result``, including the
output/input aliasing pattern), or the same exception type and message; and the same
warnings.

Runs on the fake process group: collectives are no-ops, so only local tensors (which
hold real values) are compared. ``derandomize=True`` keeps the examples fixed in CI.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Partial, Replicate, Shard, distribute_tensor

import torchshard
from dtensor_cases import fresh_copy
from dtensor_compare import assert_same_result

pytestmark = pytest.mark.usefixtures("fresh_torchshard")

MAX_EXAMPLES = 500

FLOATS = (torch.float32, torch.float64)
NUMERIC = (torch.float32, torch.float64, torch.int64)
ALL_DTYPES = (torch.float32, torch.float64, torch.int64, torch.bool)
# Drawn when an op gets "any" dtype: also the reduced-precision and narrow integer
# dtypes, which kernels and type promotion treat differently.
HOSTILE_DTYPES = ALL_DTYPES + (torch.float16, torch.bfloat16, torch.int32, torch.uint8)
# Meshes: "1d" (4 ranks), "2d" (2x2), "pair" (ranks 0 and 1 of 4) and "absent" (ranks
# 2 and 3: this process, rank 0, is outside it and gets stock's stand-in results).
MESH_NDIM = {"1d": 1, "2d": 2, "pair": 1, "absent": 1}
OTHER_MESH = {"1d": "2d", "2d": "1d", "pair": "1d", "absent": "1d"}
# Sizes 1..9 (often not divisible by the mesh), and now and then an empty dim.
SIZES = (0,) + tuple(range(1, 10)) * 2
# Scalars that are legal but extreme, or that stock must reject (complex for real ops,
# an int beyond int64).
HOSTILE_SCALARS = (float("nan"), float("inf"), float("-inf"), -0.0, 2**40, -2**62, 2**70,
                   1j, 1.5 - 2j)


@pytest.fixture(scope="module", autouse=True)
def _quiet_fake_tensor_errors() -> Iterator[None]:
    # Sharding propagation failures make FakeTensor log a traceback at ERROR level;
    # they are expected here (the error itself is compared), so keep them quiet.
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


@pytest.fixture(scope="module")
def extra_meshes(fake_pg: None) -> dict[str, DeviceMesh]:
    """The 1-D meshes over two of the four ranks: with and without this rank (0)."""
    return {"pair": DeviceMesh("cpu", [0, 1]), "absent": DeviceMesh("cpu", [2, 3])}


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Input:
    """One tensor input: global value spec and where it lives."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    where: str  # "mesh" (the case's mesh) | "other" (the other mesh) | "plain"
    placements: tuple[Any, ...]  # one per mesh dim of the mesh it lives on
    requires_grad: bool
    seed: int

    def global_value(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, generator=gen, dtype=self.dtype)
        if self.dtype == torch.bool:
            return torch.rand(self.shape, generator=gen) > 0.5
        low = 0 if self.dtype == torch.uint8 else -4
        return torch.randint(low, 5, self.shape, generator=gen, dtype=self.dtype)


@dataclass
class Case:
    mesh_name: str  # a key of MESH_NDIM
    inputs: list[Input]
    expr: str

    def describe(self) -> str:
        lines = [f"mesh: {self.mesh_name}"]
        for i, inp in enumerate(self.inputs):
            lines.append(f"t{i}: {inp}")
        lines.append(f"call: {self.expr}")
        return "\n".join(lines)


class Builder:
    """Draws the inputs of one case; ``tensor()`` returns the input's name in the expr."""

    def __init__(self, data: st.DataObject, mesh_name: str) -> None:
        self.data = data
        self.mesh_name = mesh_name
        self.inputs: list[Input] = []

    def draw(self, strategy: st.SearchStrategy, label: str | None = None) -> Any:
        return self.data.draw(strategy, label=label)

    def shape(self, min_dims: int = 1, max_dims: int = 3) -> tuple[int, ...]:
        return tuple(self.draw(st.lists(st.sampled_from(SIZES), min_size=min_dims,
                                        max_size=max_dims), label="shape"))

    def dtype(self, preferred: tuple[torch.dtype, ...]) -> torch.dtype:
        # Mostly a dtype the op accepts; sometimes any (the kernel may then reject it).
        pool = self.draw(st.sampled_from(("preferred",) * 7 + ("any",)))
        return self.draw(st.sampled_from(preferred if pool == "preferred" else HOSTILE_DTYPES),
                         label="dtype")

    def placement(self, ndim: int, dtype: torch.dtype) -> Any:
        choices: list[Any] = [Replicate()] + [Shard(d) for d in range(ndim)]
        if dtype.is_floating_point:
            choices.append(Partial())
        return self.draw(st.sampled_from(choices))

    def tensor(self, shape: tuple[int, ...] | None = None,
               dtypes: tuple[torch.dtype, ...] = FLOATS, dtype: torch.dtype | None = None,
               foreign: bool = True) -> str:
        if shape is None:
            shape = self.shape()
        if dtype is None:
            dtype = self.dtype(dtypes)
        where = "mesh"
        if foreign and self.inputs:
            where = self.draw(st.sampled_from(("mesh",) * 18 + ("other", "plain")),
                              label="where")
        mesh_name = self.mesh_name if where != "other" else OTHER_MESH[self.mesh_name]
        mesh_ndim = 0 if where == "plain" else MESH_NDIM[mesh_name]
        placements = tuple(self.placement(len(shape), dtype) for _ in range(mesh_ndim))
        requires_grad = dtype.is_floating_point and self.draw(st.booleans(),
                                                              label="requires_grad")
        seed = self.draw(st.integers(0, 2**16), label="seed")
        self.inputs.append(Input(tuple(shape), dtype, where, placements, requires_grad, seed))
        return f"t{len(self.inputs) - 1}"

    def bcast_shape(self, base: tuple[int, ...]) -> tuple[int, ...]:
        """A shape broadcastable with ``base`` (sometimes not: a mismatched size)."""
        n = self.draw(st.integers(1, min(3, len(base) + 1)))
        out = []
        for i in range(n):
            j = len(base) - n + i
            size = base[j] if j >= 0 else self.draw(st.integers(1, 3))
            kind = self.draw(st.sampled_from(("same",) * 6 + ("one", "one", "random")))
            if kind == "one":
                size = 1
            elif kind == "random":
                size = self.draw(st.integers(1, 9))
            out.append(size)
        return tuple(out)

    def dim(self, ndim: int) -> int:
        """A dim for a tensor of ``ndim`` dims; sometimes out of range."""
        if self.draw(st.integers(0, 9)) == 0:
            return self.draw(st.sampled_from((ndim, -ndim - 1, ndim + 2)), label="bad_dim")
        return self.draw(st.integers(-ndim, ndim - 1), label="dim")

    def scalar(self) -> Any:
        return self.draw(st.one_of(
            st.integers(-3, 3),
            st.sampled_from((0.5, -1.5, 2.0, 0.0, 1e-3, 3.25)),
            st.floats(-4, 4, allow_nan=False, allow_infinity=False, width=32),
            st.booleans(),
            st.sampled_from(HOSTILE_SCALARS),
        ), label="scalar")

    def choice(self, options: Any, label: str | None = None) -> Any:
        return self.draw(st.sampled_from(tuple(options)), label=label)


# ----------------------------------------------------------------------------- ops
# Each op draws its inputs through the Builder and returns the call as an expression.


def _unary(fn: str, dtypes: tuple[torch.dtype, ...] = FLOATS, method: bool = True):
    def build(b: Builder) -> str:
        x = b.tensor(dtypes=dtypes)
        forms = [f"torch.{fn}({x})", f"torch.{fn}(input={x})"]
        if method:
            forms.append(f"{x}.{fn}()")
        return b.choice(forms, "form")
    return build


def _gelu(b: Builder) -> str:
    x = b.tensor()
    approx = b.choice(("'none'", "'tanh'"))
    return b.choice((f"F.gelu({x})", f"F.gelu({x}, approximate={approx})"), "form")


_BINARY_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "eq": "=="}


def _binary(fn: str, dtypes: tuple[torch.dtype, ...] = NUMERIC):
    def build(b: Builder) -> str:
        shape = b.shape()
        x = b.tensor(shape, dtypes=dtypes)
        other_shape = b.bcast_shape(shape)
        swap = b.draw(st.booleans(), label="swap")
        y = b.tensor(other_shape, dtypes=dtypes)
        if swap:
            x, y = y, x
        forms = [f"torch.{fn}({x}, {y})", f"{x}.{fn}({y})", f"torch.{fn}({x}, other={y})",
                 f"torch.{fn}(input={x}, other={y})"]
        if fn in _BINARY_OPERATORS:
            forms.append(f"{x} {_BINARY_OPERATORS[fn]} {y}")
        if fn in ("add", "sub"):
            alpha = b.scalar()
            forms.append(f"torch.{fn}({x}, {y}, alpha={alpha!r})")
            forms.append(f"{x}.{fn}({y}, alpha={alpha!r})")
        if fn == "div":
            mode = b.choice(("None", "'floor'", "'trunc'"))
            forms.append(f"torch.div({x}, {y}, rounding_mode={mode})")
        return b.choice(forms, "form")
    return build


def _scalar_op(b: Builder) -> str:
    x = b.tensor(dtypes=ALL_DTYPES)
    s = repr(b.scalar())
    return b.choice((
        f"{x} + {s}", f"{s} + {x}", f"{x} - {s}", f"{s} - {x}", f"{x} * {s}", f"{s} * {x}",
        f"{x} / {s}", f"{x} ** {s}", f"{x} > {s}", f"{x} == {s}",
        f"torch.add({x}, {s})", f"torch.add({x}, other={s})", f"torch.mul({x}, {s})",
        f"{x}.mul({s})", f"torch.sub({x}, {s}, alpha=2)", f"torch.maximum({x}, {s})",
        f"torch.div({x}, {s}, rounding_mode='floor')", f"torch.pow({x}, {s})",
        # 0-dim plain tensors act as scalars (a 1-element 1-D one warns; see Builder.tensor)
        f"{x} + torch.tensor({s})", f"torch.mul({x}, torch.tensor({s}, dtype=torch.float64))",
        f"torch.where({x} > 0, {x}, torch.tensor({s}))",
    ), "form")


def _reduction(fn: str, dtypes: tuple[torch.dtype, ...] = NUMERIC, multi_dim: bool = True,
               none_dim: bool = True):
    def build(b: Builder) -> str:
        x = b.tensor(dtypes=dtypes)
        ndim = len(b.inputs[-1].shape)
        kind = b.choice((["none"] if none_dim else []) + ["int", "int", "int"]
                        + (["tuple"] if multi_dim else []), "dim_kind")
        if kind == "none":
            return b.choice((f"torch.{fn}({x})", f"{x}.{fn}()"), "form")
        if kind == "int":
            dim = repr(b.dim(ndim))
        else:
            dims = b.draw(st.lists(st.integers(-ndim - 1, ndim - 1), min_size=1, max_size=3),
                          label="dims")
            dim = repr(tuple(dims))
        keepdim = b.draw(st.booleans(), label="keepdim")
        return b.choice((
            f"torch.{fn}({x}, {dim}, {keepdim})", f"torch.{fn}({x}, dim={dim}, keepdim={keepdim})",
            f"{x}.{fn}({dim})", f"{x}.{fn}(dim={dim}, keepdim={keepdim})",
        ), "form")
    return build


def _sum_dtype(b: Builder) -> str:
    x = b.tensor(dtypes=ALL_DTYPES)
    ndim = len(b.inputs[-1].shape)
    dtype = b.choice(("torch.float64", "torch.float32", "torch.int64"))
    return b.choice((f"torch.sum({x}, dtype={dtype})",
                     f"{x}.sum(dim={b.dim(ndim)}, dtype={dtype})"), "form")


def _mm(b: Builder) -> str:
    n, k, m = (b.draw(st.integers(1, 9)) for _ in range(3))
    k2 = k if b.draw(st.integers(0, 5)) else b.draw(st.integers(1, 9), label="k2")
    x = b.tensor((n, k), dtypes=FLOATS)
    y = b.tensor((k2, m), dtypes=FLOATS, dtype=b.inputs[-1].dtype
                 if b.draw(st.integers(0, 7)) else None)
    return b.choice((f"torch.mm({x}, {y})", f"{x}.mm({y})", f"{x} @ {y}",
                     f"torch.matmul({x}, {y})", f"torch.mm({x}, mat2={y})"), "form")


def _bmm(b: Builder) -> str:
    bs, n, k, m = (b.draw(st.integers(1, 6)) for _ in range(4))
    bs2 = bs if b.draw(st.integers(0, 7)) else b.draw(st.integers(1, 6), label="b2")
    k2 = k if b.draw(st.integers(0, 5)) else b.draw(st.integers(1, 6), label="k2")
    x = b.tensor((bs, n, k), dtypes=FLOATS)
    y = b.tensor((bs2, k2, m), dtypes=FLOATS, dtype=b.inputs[-1].dtype
                 if b.draw(st.integers(0, 7)) else None)
    return b.choice((f"torch.bmm({x}, {y})", f"{x}.bmm({y})", f"{x} @ {y}"), "form")


def _softmax(b: Builder) -> str:
    x = b.tensor(dtypes=FLOATS)
    dim = b.dim(len(b.inputs[-1].shape))
    fn = b.choice(("softmax", "log_softmax"))
    return b.choice((f"torch.{fn}({x}, {dim})", f"torch.{fn}({x}, dim={dim})",
                     f"{x}.{fn}(dim={dim})", f"F.{fn}({x}, dim={dim})",
                     f"torch.{fn}({x}, {dim}, dtype=torch.float64)"), "form")


def _cat(b: Builder) -> str:
    shape = b.shape()
    dim = b.dim(len(shape))
    names = [b.tensor(shape, dtypes=FLOATS)]
    for _ in range(b.draw(st.integers(1, 2), label="n_more")):
        other = list(shape)
        if -len(shape) <= dim < len(shape):
            other[dim] = b.draw(st.integers(1, 9))
        if b.draw(st.integers(0, 9)) == 0:  # a mismatch off the cat dim
            i = b.draw(st.integers(0, len(shape) - 1))
            other[i] = b.draw(st.integers(1, 9))
        names.append(b.tensor(tuple(other), dtypes=FLOATS))
    seq = ", ".join(names)
    return b.choice((f"torch.cat([{seq}], dim={dim})", f"torch.cat(({seq}), {dim})",
                     f"torch.cat(tensors=[{seq}], dim={dim})", f"torch.concat([{seq}], {dim})"),
                    "form")


def _clamp(b: Builder) -> str:
    shape = b.shape()
    x = b.tensor(shape, dtypes=NUMERIC)

    def bound() -> str:
        kind = b.choice(("none", "scalar", "scalar", "tensor"), "bound")
        if kind == "none":
            return "None"
        if kind == "scalar":
            return repr(b.scalar())
        return b.tensor(b.bcast_shape(shape), dtypes=(b.inputs[0].dtype,))

    lo, hi = bound(), bound()
    fn = b.choice(("torch.clamp", "torch.clip"))
    return b.choice((f"{fn}({x}, {lo}, {hi})", f"{fn}({x}, min={lo}, max={hi})",
                     f"{fn}({x}, {lo})", f"{fn}({x}, max={hi})", f"{x}.clamp({lo}, max={hi})",
                     f"{x}.clamp(min={lo})"), "form")


def _where(b: Builder) -> str:
    shape = b.shape()
    cond = b.tensor(shape, dtypes=(torch.bool,), foreign=False)
    x = b.tensor(b.bcast_shape(shape), dtypes=NUMERIC)
    y = (repr(b.scalar()) if b.draw(st.integers(0, 3)) == 0
         else b.tensor(b.bcast_shape(shape), dtypes=(b.inputs[-1].dtype,)))
    return b.choice((f"torch.where({cond}, {x}, {y})", f"{x}.where({cond}, {y})",
                     f"torch.where({cond}, input={x}, other={y})"), "form")


def _to(b: Builder) -> str:
    x = b.tensor(dtypes=ALL_DTYPES)
    dtype = b.choice(("torch.float32", "torch.float64", "torch.int64", "torch.bool"))
    return b.choice((f"{x}.to({dtype})", f"{x}.to(dtype={dtype})", f"{x}.to({dtype}, copy=True)",
                     f"{x}.float()", f"{x}.double()", f"{x}.long()", f"{x}.bool()",
                     f"{x}.type({dtype})"), "form")


def _view(b: Builder) -> str:
    x = b.tensor(dtypes=ALL_DTYPES)
    shape = b.inputs[-1].shape
    ndim = len(shape)
    numel = 1
    for s in shape:
        numel *= s
    kind = b.choice(("view", "reshape", "transpose", "unsqueeze", "flatten", "permute",
                     "squeeze", "t", "view_neg"), "view")
    if kind in ("view", "reshape"):
        sizes = [numel] if b.draw(st.booleans()) else list(reversed(shape))
        if b.draw(st.integers(0, 7)) == 0:
            sizes = [numel + 1]  # wrong element count
        fn = kind
        return b.choice((f"{x}.{fn}({tuple(sizes)})", f"{x}.{fn}(*{sizes})",
                         f"torch.reshape({x}, {tuple(sizes)})"), "form")
    if kind == "transpose":
        return f"{x}.transpose({b.dim(ndim)}, {b.dim(ndim)})"
    if kind == "unsqueeze":
        return b.choice((f"{x}.unsqueeze({b.dim(ndim + 1)})",
                         f"torch.unsqueeze({x}, dim={b.dim(ndim + 1)})"), "form")
    if kind == "flatten":
        return b.choice((f"{x}.flatten()", f"torch.flatten({x}, start_dim={b.dim(ndim)})"))
    if kind == "permute":
        perm = b.draw(st.permutations(list(range(ndim))), label="perm")
        return b.choice((f"{x}.permute({tuple(perm)})", f"{x}.permute(*{perm})",
                         f"torch.permute({x}, dims={perm})"), "form")
    if kind == "squeeze":
        return b.choice((f"{x}.squeeze()", f"{x}.squeeze({b.dim(ndim)})"), "form")
    if kind == "t":
        return f"{x}.t()"
    return f"{x}.view(-1)"


def _inplace(b: Builder) -> str:
    shape = b.shape()
    x = b.tensor(shape, dtypes=NUMERIC)
    kind = b.choice(("tensor", "scalar", "clamp"), "inplace_kind")
    if kind == "tensor":
        y = b.tensor(b.bcast_shape(shape), dtypes=NUMERIC)
        return b.choice((f"{x}.add_({y})", f"{x}.mul_({y})", f"{x}.sub_({y}, alpha=2)",
                         f"{x}.copy_({y})"), "form")
    if kind == "scalar":
        s = repr(b.scalar())
        return b.choice((f"{x}.add_({s})", f"{x}.mul_({s})", f"{x}.div_({s})",
                         f"{x}.fill_({s})"), "form")
    return f"{x}.clamp_(min={b.scalar()!r})"


def _out(b: Builder) -> str:
    shape = b.shape()
    x = b.tensor(shape, dtypes=NUMERIC)
    y = b.tensor(b.bcast_shape(shape), dtypes=NUMERIC)
    out_shape = shape if b.draw(st.integers(0, 5)) else b.shape()
    out = b.tensor(out_shape, dtypes=NUMERIC)
    return b.choice((f"torch.add({x}, {y}, out={out})", f"torch.mul({x}, {y}, out={out})",
                     f"torch.neg({x}, out={out})"), "form")


def _foreach(b: Builder) -> str:
    n = b.draw(st.integers(1, 4), label="list_len")
    xs = [b.tensor(dtypes=FLOATS) for _ in range(n)]
    seq = ", ".join(xs)
    kind = b.choice(("scalar", "list", "scalar_list", "unary", "inplace"), "foreach_kind")
    if kind == "scalar":
        return f"torch._foreach_add([{seq}], {b.scalar()!r})"
    if kind == "list":
        ys = [b.tensor(b.inputs[int(x[1:])].shape, dtypes=FLOATS) for x in xs]
        return f"torch._foreach_mul([{seq}], [{', '.join(ys)}])"
    if kind == "scalar_list":
        scalars = [b.scalar() for _ in xs]
        return f"torch._foreach_mul([{seq}], {scalars!r})"
    if kind == "unary":
        return f"torch._foreach_neg([{seq}])"
    return f"torch._foreach_add_([{seq}], {b.scalar()!r})"


OPS = {
    "neg": _unary("neg", NUMERIC),
    "abs": _unary("abs", NUMERIC),
    "exp": _unary("exp", NUMERIC),
    "sigmoid": _unary("sigmoid"),
    "relu": _unary("relu", NUMERIC),
    "sqrt": _unary("sqrt"),
    "logical_not": _unary("logical_not", ALL_DTYPES),
    "gelu": _gelu,
    "add": _binary("add"),
    "sub": _binary("sub"),
    "mul": _binary("mul", ALL_DTYPES),
    "div": _binary("div"),
    "maximum": _binary("maximum"),
    "lt": _binary("lt"),
    "eq": _binary("eq", ALL_DTYPES),
    "scalar": _scalar_op,
    "sum": _reduction("sum", ALL_DTYPES),
    "sum_dtype": _sum_dtype,
    "mean": _reduction("mean", FLOATS),
    "amax": _reduction("amax"),
    "argmax": _reduction("argmax", multi_dim=False),
    "max_dim": _reduction("max", multi_dim=False, none_dim=False),
    "prod": _reduction("prod", multi_dim=False, none_dim=True),
    "mm": _mm,
    "bmm": _bmm,
    "softmax": _softmax,
    "cat": _cat,
    "clamp": _clamp,
    "where": _where,
    "to": _to,
    "view": _view,
    "inplace": _inplace,
    "out": _out,
    "foreach": _foreach,
}


# ----------------------------------------------------------------------------- running


@dataclass
class Outcome:
    inputs: list[torch.Tensor]
    result: Any = None
    error: tuple[type, str] | None = None
    warns: set[tuple[type, str]] | None = None


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_CPP_ORIGIN = re.compile(r" \(Triggered internally at [^)]*\)$")


def _normalise(message: str) -> str:
    return _ADDRESS.sub("0x?", message)


def _warning_set(caught: list[warnings.WarningMessage]) -> set[tuple[type, str]]:
    """The distinct warnings of a call. A set: stock DTensor emits the implicit-replication
    UserWarning twice (from C++ and from Python) when its own propagation cache misses and
    once when it hits, so only which warnings were emitted is comparable, not how often."""
    return {(w.category, _CPP_ORIGIN.sub("", _normalise(str(w.message)))) for w in caught}


def _make_bases(case: Case, meshes: dict[str, DeviceMesh]) -> list[torch.Tensor]:
    other = OTHER_MESH[case.mesh_name]
    bases = []
    with torchshard.disabled():
        for inp in case.inputs:
            value = inp.global_value()
            if inp.where == "plain":
                bases.append(value)
            else:
                mesh = meshes[case.mesh_name if inp.where == "mesh" else other]
                bases.append(distribute_tensor(value, mesh, list(inp.placements)))
    return bases


def _fresh(case: Case, bases: list[torch.Tensor]) -> list[torch.Tensor]:
    """New leaves with the bases' values, so each run has its own inputs."""
    return [fresh_copy(base, inp.requires_grad) for inp, base in zip(case.inputs, bases)]


def _run(case: Case, bases: list[torch.Tensor]) -> Outcome:
    outcome = Outcome(inputs=_fresh(case, bases))
    scope = {"torch": torch, "F": F}
    scope.update({f"t{i}": t for i, t in enumerate(outcome.inputs)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome.result = eval(case.expr, scope)
        except Exception as exc:  # noqa: BLE001 - the exception is the outcome
            outcome.error = (type(exc), _normalise(str(exc)))
    outcome.warns = _warning_set(caught)
    return outcome


def _check_same(stock: Outcome, ours: Outcome, label: str) -> None:
    if stock.error is not None:
        assert ours.error is not None, (
            f"{label}: stock raised {stock.error[0].__name__}: {stock.error[1]}\n"
            f"torchshard returned {ours.result!r}"
        )
        assert ours.error[0] is stock.error[0], (
            f"{label}: stock raised {stock.error[0].__name__}: {stock.error[1]}\n"
            f"torchshard raised {ours.error[0].__name__}: {ours.error[1]}"
        )
        assert ours.error[1] == stock.error[1], f"{label}: exception message differs"
    else:
        assert ours.error is None, (
            f"{label}: torchshard raised {ours.error[0].__name__}: {ours.error[1]}\n"
            f"stock returned {stock.result!r}"
        )
        assert_same_result(stock.result, ours.result, inputs=(stock.inputs, ours.inputs),
                           path=label)
    assert_same_result(stock.inputs, ours.inputs, path=f"{label}.inputs_after")
    assert ours.warns == stock.warns, f"{label}: warnings differ"


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_calls_match_stock(data: st.DataObject, mesh_1d: DeviceMesh,
                                  mesh_2d: DeviceMesh,
                                  extra_meshes: dict[str, DeviceMesh]) -> None:
    """A random DTensor call gives stock's result (or error) with torchshard, also on
    a repeated (cached) call."""
    meshes = {"1d": mesh_1d, "2d": mesh_2d, **extra_meshes}
    mesh_name = data.draw(st.sampled_from(("1d", "1d", "2d", "2d", "pair", "absent")),
                          label="mesh")
    op = data.draw(st.sampled_from(sorted(OPS)), label="op")
    builder = Builder(data, mesh_name)
    expr = OPS[op](builder)
    case = Case(mesh_name, builder.inputs, expr)
    repeats = data.draw(st.integers(1, 2), label="torchshard_runs")
    clear_first = data.draw(st.integers(0, 7), label="clear_cache_first") == 0
    note(case.describe())
    event(f"mesh {mesh_name}")

    bases = _make_bases(case, meshes)
    with torchshard.disabled():
        stock = _run(case, bases)
    event("stock raised" if stock.error else "stock returned")
    if stock.error:
        event(f"stock error: {stock.error[0].__name__}")
    assert torchshard.is_enabled()
    if clear_first:
        torchshard.clear_cache()
    torchshard.reset_stats()
    for attempt in range(repeats):
        ours = _run(case, bases)
        _check_same(stock, ours, f"run{attempt}")
    stats = torchshard.stats()
    event("torchshard ran natively" if stats["native_calls"] else "torchshard declined")
    if repeats == 2 and stats["hits"]:
        event("torchshard cache hit")
