"""Differential tests for the op classes torchshard serves natively beyond functional ops.

Classes: in-place ops (including one that changes its input's placements), ``out=``
variants, view/alias ops, tensor-list ops (cat/stack/split/unbind/chunk and the
``_foreach_*`` ops with scalars, scalar lists and tensor lists), keyword arguments, 0-dim
plain tensor arguments, ranks outside the op's mesh, implicit replication, calls whose
sharding needs a redistribution that torchshard replays itself, and pointwise ops whose
Python numbers are keyed by kind only. Classes still declined by design (random ops,
custom handlers, rewritten ops, redistribution of implicitly replicated plain tensors,
of out= ops and off the mesh, an active ExplicitRedistributionContext, one-element 1-d
plain tensors, complex scalars) assert the decline reason instead.

Every case runs through the shared differential harness (``differential.check``; inputs
described with ``dtensor_cases.D``/``T``/``L``): the call runs on stock DTensor and with
torchshard, each after a warm-up call, so the measured torchshard call is a cache hit
(the path that runs no Python), and outputs, wrapper-level aliasing, version counters,
inputs afterwards, gradients, warnings and exception types are compared field by field.
For cases served natively the explain report must show the op with every call native
and no miss on the measured call, so the tests guard against silently declining.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from differential import bump, check, op_report
from dtensor_cases import P, R, S0, S1, S2, S3, D, Inputs, L, T, placements_id
from dtensor_compare import assert_same_result, flat_tensors, version_deltas, wrapper_aliasing
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Placement, Shard
from torch.distributed.tensor._utils import ExplicitRedistributionContext
from torch.distributed.tensor.experimental import implicit_replication
from torch.overrides import TorchFunctionMode

import torchshard
from torchshard.testing import native_all_reduce

pytestmark = pytest.mark.usefixtures("fresh_torchshard")


@pytest.fixture(scope="module")
def meshes(fake_pg: None, mesh_1d: DeviceMesh, mesh_2d: DeviceMesh) -> dict[str, DeviceMesh]:
    """The shared meshes, and meshes that exclude this process (rank 0)."""
    return {
        "1d": mesh_1d,
        "2d": mesh_2d,
        "off_1d": DeviceMesh("cpu", torch.tensor([1, 2, 3])),
        "off_row": DeviceMesh("cpu", torch.tensor([2, 3])),  # mesh_2d's row without rank 0
        "off_2d": DeviceMesh("cpu", torch.tensor([[1, 2]])),
    }


def _aten_name(op_call: str) -> str:
    """'aten.add.Tensor' -> 'aten::add.Tensor'; 'aten.t.default' -> 'aten::t' (explain's names)."""
    name = op_call.replace(".", "::", 1)
    return name.removesuffix(".default")


PL_1D = [(R,), (S0,), (S1,), (P,)]
PL_2D = [(R, S0), (S1, S0), (P, S1), (S0, S0), (P, P)]
A = (8, 12)


def _cases(table: Sequence[tuple[Any, ...]], placements: Sequence[tuple[Placement, ...]],
           mesh: str) -> list[Any]:
    return [
        pytest.param(entry, pl, mesh, id=f"{entry[0]}-{mesh}-{placements_id(pl)}")
        for entry in table
        for pl in placements
    ]


@pytest.fixture
def propagation_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, bool]]:
    """(op, needs_redistribute, use_val_from_redistribute_schema) of every propagation.

    torchshard's miss path calls the dispatcher's propagation (looked up by attribute),
    so every torchshard miss is recorded.
    """
    dispatcher = DTensor._op_dispatcher
    original = dispatcher._propagate_op_sharding_dispatch_slow_path
    log: list[tuple[str, bool, bool]] = []

    def spy(op_call, *args, **kwargs):
        result = original(op_call, *args, **kwargs)
        log.append((str(op_call), bool(getattr(result, "needs_redistribute", False)),
                    bool(getattr(result, "use_val_from_redistribute_schema", False))))
        return result

    monkeypatch.setattr(dispatcher, "_propagate_op_sharding_dispatch_slow_path", spy)
    return log


def _needs_redistribute(inputs: Inputs, fn: Callable[..., Any], op: str | None,
                        log: list[tuple[str, bool, bool]]) -> bool:
    """Whether stock's propagation asks to redistribute for ``op`` in ``fn`` (the oracle for
    which calls torchshard declines by design). Observed on a torchshard miss."""
    if op is None:
        return False
    torchshard.clear_cache()
    log.clear()
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(*inputs.fresh())
    torchshard.clear_cache()
    return any(_aten_name(e[0]) == op and e[1] for e in log)


# ------------------------------------------------------------------------ in-place

# (name, fn, input builder(placements) -> specs, native op)
INPLACE: list[tuple[str, Callable[..., Any], Callable[[tuple], list[Any]], str]] = [
    ("add_", lambda x, y: x.add_(y), lambda p: [D(A, p), D(A, p)], "aten::add_.Tensor"),
    ("add_alpha_kw", lambda x, y: x.add_(y, alpha=0.5), lambda p: [D(A, p), D(A, p)],
     "aten::add_.Tensor"),
    ("sub_", lambda x, y: x.sub_(y), lambda p: [D(A, p), D(A, p)], "aten::sub_.Tensor"),
    ("mul_scalar", lambda x: x.mul_(0.5), lambda p: [D(A, p)], "aten::mul_.Tensor"),
    ("mul_tensor", lambda x, y: x.mul_(y), lambda p: [D(A, p), D(A, p)], "aten::mul_.Tensor"),
    ("div_floor_kw", lambda x, y: x.div_(y, rounding_mode="floor"),
     lambda p: [D(A, p), D(A, p, "positive")], "aten::div_.Tensor_mode"),
    ("copy_", lambda x, y: x.copy_(y), lambda p: [D(A, p), D(A, p)], "aten::copy_"),
    ("copy_int_to_float", lambda x, y: x.copy_(y), lambda p: [D(A, p), D(A, p, "int")],
     "aten::copy_"),
    ("addcdiv_", lambda x, y, z: x.addcdiv_(y, z, value=0.3),
     lambda p: [D(A, p), D(A, p), D(A, p, "positive")], "aten::addcdiv_"),
    ("addcmul_", lambda x, y, z: x.addcmul_(y, z, value=-0.2),
     lambda p: [D(A, p), D(A, p), D(A, p)], "aten::addcmul_"),
    ("lerp_scalar", lambda x, y: x.lerp_(y, 0.1), lambda p: [D(A, p), D(A, p)],
     "aten::lerp_.Scalar"),
    ("clamp_kw", lambda x: x.clamp_(min=-0.5, max=0.5), lambda p: [D(A, p)], "aten::clamp_"),
    ("relu_", torch.relu_, lambda p: [D(A, p)], "aten::relu_"),
    ("neg_", lambda x: x.neg_(), lambda p: [D(A, p)], "aten::neg_"),
    ("sqrt_", lambda x: x.sqrt_(), lambda p: [D(A, p, "positive")], "aten::sqrt_"),
    ("zero_", lambda x: x.zero_(), lambda p: [D(A, p)], "aten::zero_"),
    ("fill_", lambda x: x.fill_(1.5), lambda p: [D(A, p)], "aten::fill_.Scalar"),
    ("masked_fill_", lambda x, m: x.masked_fill_(m, 0.25), lambda p: [D(A, p), D(A, p, "bool")],
     "aten::masked_fill_.Scalar"),
    ("add_self", lambda x: x.add_(x), lambda p: [D(A, p)], "aten::add_.Tensor"),
    ("add_bcast_row", lambda x, y: x.add_(y), lambda p: [D(A, p), D((12,), (R,) * len(p))],
     "aten::add_.Tensor"),
    ("mul_0dim_plain", lambda x, s: x.mul_(s), lambda p: [D(A, p), T(())], "aten::mul_.Tensor"),
    ("int_add_", lambda x, y: x.add_(y), lambda p: [D(A, p, "int"), D(A, p, "int")],
     "aten::add_.Tensor"),
    ("view_then_inplace", lambda x: x.t().mul_(2.0), lambda p: [D(A, p)], "aten::mul_.Tensor"),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(INPLACE, PL_1D, "1d") + _cases(INPLACE[:12], PL_2D, "2d"))
def test_inplace(entry, pl, mesh_name, meshes) -> None:
    """In-place ops return the very input object, with stock's spec, version bump and values."""
    name, fn, specs, op = entry
    stock, ours = check(Inputs(specs(pl), meshes[mesh_name]), fn, native=op)
    if stock.error is None and name != "view_then_inplace":
        assert ours.output is ours.inputs[0], "an in-place op must return its input itself"


SQUEEZE_ = [
    # shape, placements (per mesh dim), dims to squeeze
    ((8, 1, 12), (S2,), (1,)),  # Shard(2) -> Shard(1): the input's spec is replaced
    ((8, 1, 12), (S0,), (1,)),  # placements unchanged: args[0] as is
    ((8, 1, 12), (R,), (1,)),
    ((8, 1, 12), (P,), (1,)),
    ((1, 8, 12), (S1,), (0,)),  # Shard(1) -> Shard(0)
    ((4, 1, 8, 12), (S3,), (1,)),
    ((8, 1, 12), (S0, S2), (1,)),  # 2-D mesh: (S0, S2) -> (S0, S1)
    ((1, 8, 12), (S1, S2), (0,)),
]


@pytest.mark.parametrize(("shape", "pl", "dims"), SQUEEZE_,
                         ids=[f"{s}-{placements_id(p)}-{d}" for s, p, d in SQUEEZE_])
def test_inplace_squeeze_changes_placements(shape, pl, dims, meshes) -> None:
    """squeeze_ on a size-1 dim before a sharded dim: placements/shape of the input change."""
    mesh = meshes["1d" if len(pl) == 1 else "2d"]
    _, ours = check(Inputs([D(shape, pl)], mesh), lambda x: x.squeeze_(dims),
                    native="aten::squeeze_.dims")
    assert ours.output is ours.inputs[0]
    x = ours.inputs[0]
    assert x._local_tensor.dim() == len(shape) - 1
    if any(isinstance(p, Shard) and p.dim > dims[0] for p in pl):
        # The spec really was replaced, and the wrapper fixed (return_and_correct_aliasing).
        # (When the placements stay the same, stock -- and so torchshard -- leaves the
        # wrapper's sizes as they were; the differential check above covers that.)
        assert tuple(x.placements) != pl
        assert x.dim() == len(shape) - 1


def test_inplace_squeeze_repeated_hits_respec(mesh_1d) -> None:
    """The respec path on cache hits: every fresh input gets its spec replaced."""
    inputs = Inputs([D((8, 1, 12), (S2,))], mesh_1d)
    with torchshard.disabled():
        expected = inputs.fresh()[0].squeeze_((1,))
    torchshard.reset_stats()
    for _ in range(3):
        x = inputs.fresh()[0]
        y = x.squeeze_((1,))
        assert y is x
        assert_same_result(expected, y)
    stats = torchshard.stats()
    assert stats["native_calls"] == 3 and stats["misses"] == 1 and stats["hits"] == 2


def _slice_of_clone_add_(x: DTensor, y: DTensor) -> DTensor:
    c = x * 1.0
    c[:, 2:6].add_(y[:, 2:6])  # CopySlices on c
    return c


def _view_of_clone_mul_(x: DTensor, y: DTensor) -> DTensor:
    c = x.clone()
    c.t().mul_(2.0)  # in-place through a view: c's grad_fn is rebased
    return c + y


INPLACE_GRAD = [
    ("clone_add_", lambda x, y: x.clone().add_(y), "aten::add_.Tensor"),
    ("clone_mul_scalar", lambda x, y: x.clone().mul_(0.3) + y, "aten::mul_.Tensor"),
    ("clone_lerp_", lambda x, y: x.clone().lerp_(y, 0.25), "aten::lerp_.Scalar"),
    ("clone_addcmul_", lambda x, y: x.clone().addcmul_(y, y, value=0.5), "aten::addcmul_"),
    ("slice_of_clone_add_", _slice_of_clone_add_, "aten::add_.Tensor"),
    ("view_of_clone_mul_", _view_of_clone_mul_, "aten::mul_.Tensor"),
    ("leaf_inplace_raises", lambda x, y: x.add_(y), None),  # autograd refuses: same error
]


@pytest.mark.parametrize(("entry", "pl"),
                         [pytest.param(e, p, id=f"{e[0]}-{placements_id(p)}") for e in INPLACE_GRAD
                          for p in PL_1D])
def test_inplace_grad(entry, pl, mesh_1d) -> None:
    """Gradients through in-place ops on non-leaf DTensors (CopySlices included)."""
    name, fn, op = entry
    stock, _ = check(Inputs([D(A, pl, grad=True), D(A, pl, grad=True)], mesh_1d), fn, native=op,
                     grad=True)
    if name == "leaf_inplace_raises":
        assert stock.error is RuntimeError


@pytest.mark.parametrize("pl", [(S2,), (R,), (S0, S2)], ids=placements_id)
def test_inplace_squeeze_grad(pl, meshes) -> None:
    """Backward through squeeze_ on a clone (stock's own result decides what is expected)."""
    mesh = meshes["1d" if len(pl) == 1 else "2d"]
    check(Inputs([D((8, 1, 12), pl, grad=True)], mesh), lambda x: x.clone().squeeze_((1,)),
          native="aten::squeeze_.dims", grad=True)


# (name, fn, specs(placements), how torchshard gets there: its decline reason, or None
# when the op has no sharding strategy and so no torchshard rule at all)
INPLACE_BAD = [
    ("float_into_int", lambda x, y: x.add_(y), lambda p: [D(A, p, "int"), D(A, p)],
     "propagation_failed"),
    ("float_scalar_into_int", lambda x: x.add_(1.5), lambda p: [D(A, p, "int")],
     "propagation_failed"),
    ("bcast_into_smaller", lambda x, y: x.add_(y),
     lambda p: [D((8, 1), p if p != (S1,) else (R,)), D(A, p)], "propagation_failed"),
    ("shape_mismatch", lambda x, y: x.add_(y), lambda p: [D(A, p), D((12, 8), p)],
     "propagation_failed"),
    # propagation accepts it, the local kernel refuses 300 for uint8: torchshard raises the
    # local kernel's own error on a hit (the input may be partly written; no re-run)
    ("uint8_overflow_fill_", lambda x: x.fill_(300), lambda p: [D(A, p, "uint8")],
     "local_compute_failed"),
    ("no_strategy_unsqueeze_", lambda x: x.unsqueeze_(0), lambda p: [D(A, p)], None),
    ("no_strategy_t_", lambda x: x.t_(), lambda p: [D(A, p)], None),
    ("partial_nonlinear_relu_", lambda x: x.relu_(), lambda p: [D(A, (P,) * len(p))],
     "propagation_failed"),
    ("partial_add_scalar_", lambda x: x.add_(1.0), lambda p: [D(A, (P,) * len(p))],
     "propagation_failed"),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"), _cases(INPLACE_BAD, PL_1D[:3], "1d"))
def test_inplace_bad_input(entry, pl, mesh_name, meshes) -> None:
    """Bad in-place calls raise what stock raises and leave the inputs as stock leaves them."""
    _, fn, specs, reason = entry
    stock, ours = check(Inputs(specs(pl), meshes[mesh_name]), fn, native=None)
    assert stock.error is not None, "the case is meant to raise on stock"
    if reason is None:
        assert ours.report.calls == 0  # no rule: stock's own NotImplementedError
    else:
        assert ours.report.native_calls == 0 and ours.report.declines.get(reason, 0) == 1, (
            ours.report.ops)


# --------------------------------------------------------------------------- out=


OUT_VARIANT = [
    ("add_out", lambda x, y, o: torch.add(x, y, out=o), lambda p: [D(A, p), D(A, p), D(A, p)],
     "aten::add.out"),
    ("add_alpha_out", lambda x, y, o: torch.add(x, y, alpha=2, out=o),
     lambda p: [D(A, p), D(A, p), D(A, p)], "aten::add.out"),
    ("mul_scalar_out", lambda x, o: torch.mul(x, 2.5, out=o), lambda p: [D(A, p), D(A, p)],
     "aten::mul.out"),
    ("mul_kw_out", lambda x, y, o: torch.mul(input=x, other=y, out=o),
     lambda p: [D(A, p), D(A, p), D(A, p)], "aten::mul.out"),
    ("neg_out", lambda x, o: torch.neg(x, out=o), lambda p: [D(A, p), D(A, p)], "aten::neg.out"),
    ("clamp_out", lambda x, o: torch.clamp(x, min=-0.5, max=0.5, out=o),
     lambda p: [D(A, p), D(A, p)], "aten::clamp.out"),
    ("where_out", lambda x, y, o: torch.where(x > 0, x, y, out=o),
     lambda p: [D(A, p), D(A, p), D(A, p)], "aten::where.self_out"),
    ("out_is_first_input", lambda x, y: torch.add(x, y, out=x), lambda p: [D(A, p), D(A, p)],
     "aten::add.out"),
    ("out_is_second_input", lambda x, y: torch.mul(x, y, out=y), lambda p: [D(A, p), D(A, p)],
     "aten::mul.out"),
    ("out_0dim_plain", lambda x, s, o: torch.mul(x, s, out=o), lambda p: [D(A, p), T(()), D(A, p)],
     "aten::mul.out"),
    ("out_resized_from_empty", lambda x, y, o: torch.add(x, y, out=o),
     lambda p: [D(A, p), D(A, p), D((0,), (R,) * len(p))], None),
    ("out_shape_mismatch", lambda x, y, o: torch.add(x, y, out=o),
     lambda p: [D(A, p), D(A, p), D((4, 12), p)], None),
    ("out_dtype_mismatch", lambda x, y, o: torch.add(x, y, out=o),
     lambda p: [D(A, p), D(A, p), D(A, p, "int")], None),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(OUT_VARIANT, PL_1D, "1d") + _cases(OUT_VARIANT[:6], PL_2D, "2d"))
def test_out_variant(entry, pl, mesh_name, meshes, propagation_log) -> None:
    """out= returns the out DTensor itself, with its spec set as stock sets it.

    Served natively unless stock's propagation asks for a redistribution (P * P, say):
    out= ops with a redistribution are declined by design.
    """
    name, fn, specs, op = entry
    inputs = Inputs(specs(pl), meshes[mesh_name])
    if op is not None and _needs_redistribute(inputs, fn, op, propagation_log):
        stock, ours = check(inputs, fn, native=None, decline=(op, "needs_redistribute"))
    else:
        stock, ours = check(inputs, fn, native=op)
    if stock.error is None and op is not None:
        out_index = {"out_is_first_input": 0, "out_is_second_input": 1}.get(name, -1)
        assert ours.output is ours.inputs[out_index]


OUT_MATMUL = [
    ("mm_S0_R", (S0,), (R,), (S0,)),
    ("mm_R_S1", (R,), (S1,), (S1,)),
    ("mm_S1_S0_partial", (S1,), (S0,), (P,)),
    ("mm_R_R", (R,), (R,), (R,)),
]


@pytest.mark.parametrize(("name", "px", "pw", "po"), OUT_MATMUL, ids=[c[0] for c in OUT_MATMUL])
def test_out_variant_mm(name, px, pw, po, mesh_1d) -> None:
    """torch.mm(..., out=o) with an out DTensor already placed as the result is."""
    check(Inputs([D(A, px), D((12, 4), pw), D((8, 4), po)], mesh_1d),
          lambda x, w, o: torch.mm(x, w, out=o), native="aten::mm.out")


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
def test_out_variant_two_outputs(pl, mesh_1d) -> None:
    """torch.max(dim, out=(values, indices)) returns the tuple of both out DTensors."""
    out_pl = pl  # reducing dim 1 keeps a Shard(0) sharding
    _stock, ours = check(
        Inputs([D(A, pl), D((8,), out_pl), D((8,), out_pl, "int")], mesh_1d),
        lambda x, v, i: torch.max(x, 1, out=(v, i)), native="aten::max.dim_max")
    assert ours.output[0] is ours.inputs[1] and ours.output[1] is ours.inputs[2]


@pytest.mark.parametrize(("px", "po"), [((R,), (S0,)), ((S0,), (R,)), ((S1,), (S0,))],
                         ids=["R-outS0", "S0-outR", "S1-outS0"])
def test_out_variant_needs_redistribute_declines(px, po, mesh_1d) -> None:
    """An out= DTensor placed differently from the result: declined (stock decides)."""
    check(Inputs([D(A, px), D(A, px), D(A, po)], mesh_1d),
          lambda x, y, o: torch.add(x, y, out=o), native=None,
          decline=("aten::add.out", "needs_redistribute"))


# -------------------------------------------------------------------------- views

VIEWS: list[tuple[str, Callable[..., Any]]] = [
    ("view_same_rank", lambda x: x.view(8, 12)),
    ("view_split_last", lambda x: x.view(8, 4, 3)),
    ("view_split_first", lambda x: x.view(2, 4, 12)),
    ("view_flatten", lambda x: x.view(96)),
    ("view_kw", lambda x: x.view(size=(8, 3, 4))),
    ("view_dtype", lambda x: x.view(torch.int32)),
    ("view_as", lambda x: x.view_as(x)),
    ("reshape_view", lambda x: x.reshape(4, 24)),
    ("t", lambda x: x.t()),
    ("T", lambda x: x.T),
    ("mT", lambda x: x.mT),
    ("transpose", lambda x: x.transpose(0, 1)),
    ("transpose_kw_input", lambda x: torch.transpose(input=x, dim0=0, dim1=1)),
    ("permute", lambda x: x.permute(1, 0)),
    ("movedim", lambda x: x.movedim(0, 1)),
    ("unsqueeze0", lambda x: x.unsqueeze(0)),
    ("unsqueeze_last", lambda x: x.unsqueeze(-1)),
    ("expand", lambda x: x.unsqueeze(0).expand(3, 8, 12)),
    ("expand_kw", lambda x: x.unsqueeze(0).expand(size=(3, 8, 12))),
    ("detach", lambda x: x.detach()),
    ("alias", lambda x: torch.ops.aten.alias(x)),
    ("slice_dim0", lambda x: x[2:6]),
    ("slice_dim1", lambda x: x[:, 2:6]),
    ("slice_step", lambda x: x[:, ::2]),
    ("none_index", lambda x: x[None, :, 1:]),
    ("ellipsis_select", lambda x: x[..., 3]),
    ("select_dim1", lambda x: x.select(1, 3)),
    ("select_kw", lambda x: torch.select(x, dim=0, index=-1)),
    ("narrow_kw", lambda x: torch.narrow(x, dim=1, start=2, length=4)),
    ("diagonal", lambda x: x.diagonal()),
    ("unflatten", lambda x: x.unflatten(1, (3, 4))),
    ("chain", lambda x: x.t()[1:5].unsqueeze(0).transpose(1, 2)),
    ("view_as_real_of_complex", lambda x: torch.view_as_complex(x.unflatten(1, (6, 2))).real),
    ("detach_inplace_view", lambda x: x.detach().detach_()),
]


# Alias ops whose result autograd does not track as a view of the input (the
# differential check still compares _is_view/_base/storage with stock's).
NOT_AUTOGRAD_VIEWS = {"detach", "detach_inplace_view", "view_dtype"}


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(VIEWS, PL_1D, "1d") + _cases(VIEWS, PL_2D[:4], "2d"))
def test_view(entry, pl, mesh_name, meshes) -> None:
    """Views: same spec, same `_base`, same wrapper storage sharing and version counter."""
    name, fn = entry
    stock, ours = check(Inputs([D(A, pl)], meshes[mesh_name]), fn, native=True)
    if stock.error is None and name not in NOT_AUTOGRAD_VIEWS:
        out = ours.output
        assert out._is_view() and out._base is ours.inputs[0]


VIEW_GRAD = [
    ("t", lambda x: x.t()),
    ("view_split_last", lambda x: x.view(8, 4, 3)),
    ("slice", lambda x: x[:, 2:6]),
    ("select", lambda x: x.select(0, 3)),
    ("expand", lambda x: x[:, :1].expand(8, 12)),
    ("unsqueeze_transpose", lambda x: x.unsqueeze(0).transpose(0, 2)),
    ("split_all", lambda x: x.split(4, dim=1)),
    ("unbind_all", lambda x: x.unbind(1)),
    ("chunk_all", lambda x: x.chunk(2, dim=0)),
    ("detach_times_x", lambda x: x.detach() * x),
]


@pytest.mark.parametrize(("entry", "pl"),
                         [pytest.param(e, p, id=f"{e[0]}-{placements_id(p)}") for e in VIEW_GRAD
                          for p in PL_1D])
def test_view_grad(entry, pl, mesh_1d) -> None:
    """Gradients through views (and through every result of split/unbind/chunk)."""
    _name, fn = entry
    check(Inputs([D(A, pl, grad=True)], mesh_1d), fn, native=True, grad=True)


def test_view_storage_sharing_matches_stock_details(mesh_1d) -> None:
    """Spot check of the aliasing rules the comparison relies on, on torchshard itself."""
    inputs = Inputs([D(A, (S0,))], mesh_1d)
    x = inputs.fresh()[0]
    y = x.t()
    assert y.untyped_storage()._cdata == x.untyped_storage()._cdata
    assert y._local_tensor.untyped_storage()._cdata == x._local_tensor.untyped_storage()._cdata
    parts = x.split(4, dim=1)
    assert all(p._base is x for p in parts)
    assert all(p.untyped_storage()._cdata != x.untyped_storage()._cdata for p in parts)
    v = y._version
    with torch.no_grad():
        x.mul_(2)
    assert y._version == v + 1
    assert torchshard.stats()["native_calls"] >= 3  # t, split, mul_


# ---------------------------------------------------------------- tensor lists

LIST_OPS = [
    ("cat0", lambda xs: torch.cat(xs, 0), "aten::cat"),
    ("cat1", lambda xs: torch.cat(xs, dim=1), "aten::cat"),
    ("cat_kw", lambda xs: torch.cat(tensors=xs, dim=-1), "aten::cat"),
    ("stack0", lambda xs: torch.stack(xs), "aten::stack"),
    ("stack_kw", lambda xs: torch.stack(tensors=xs, dim=1), "aten::stack"),
]
SPLIT_OPS = [
    ("split", lambda x: torch.split(x, 4, dim=1), "aten::split.Tensor"),
    ("split_kw", lambda x: torch.split(x, split_size_or_sections=4, dim=0), "aten::split.Tensor"),
    ("split_sizes", lambda x: torch.split(x, [4, 8], dim=1), "aten::split_with_sizes"),
    ("unbind0", lambda x: x.unbind(0), "aten::unbind.int"),
    ("unbind_neg", lambda x: x.unbind(-1), "aten::unbind.int"),
    ("chunk", lambda x: x.chunk(3, dim=1), "aten::split.Tensor"),
    ("chunk_uneven", lambda x: x.chunk(5, dim=1), "aten::split.Tensor"),
    ("tensor_split", lambda x: torch.tensor_split(x, 3, dim=1), None),
    ("hsplit", lambda x: torch.hsplit(x, 3), None),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(LIST_OPS, PL_1D, "1d") + _cases(LIST_OPS, PL_2D[:3], "2d"))
def test_list_input_ops(entry, pl, mesh_name, meshes) -> None:
    """cat/stack of DTensors placed alike."""
    _name, fn, op = entry
    check(Inputs([L((D(A, pl), D(A, pl), D(A, pl)))], meshes[mesh_name]), fn, native=op,
          grad=True)


@pytest.mark.parametrize(("a", "b"), [((R,), (S0,)), ((S0,), (S1,)), ((S1,), (P,)),
                                      ((P,), (R,)), ((R,), (P,))],
                         ids=lambda p: placements_id(p))
@pytest.mark.parametrize("dim", [0, 1])
def test_cat_mixed_placements(a, b, dim, mesh_1d) -> None:
    """cat of differently placed DTensors: stock redistributes list items; so does torchshard."""
    check(Inputs([L((D(A, a), D(A, b)))], mesh_1d), lambda xs: torch.cat(xs, dim),
          native="aten::cat", grad=True)


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(SPLIT_OPS, PL_1D, "1d") + _cases(SPLIT_OPS[:6], PL_2D[:3], "2d"))
def test_list_output_ops(entry, pl, mesh_name, meshes) -> None:
    """split/unbind/chunk: list results are views whose wrapper storage is their own."""
    _name, fn, op = entry
    stock, ours = check(Inputs([D(A, pl)], meshes[mesh_name]), fn, native=op or True)
    if stock.error is None and op is not None:  # (tensor_split/hsplit decompose to slices)
        x = ours.inputs[0]
        assert type(ours.output) is type(stock.output)
        assert all(p._base is x for p in ours.output)
        assert all(p.untyped_storage()._cdata != x.untyped_storage()._cdata for p in ours.output)


def _lists(pl_self: tuple, pl_other: tuple | None = None, n: int = 3, kind: str = "float") -> Any:
    return L(tuple(D(A, pl_self if pl_other is None or i % 2 == 0 else pl_other, kind) for i in range(n)))


FOREACH: list[tuple[str, Callable[..., Any], Callable[[tuple], list[Any]], str]] = [
    ("add_scalar", lambda xs: torch._foreach_add_(xs, 0.5), lambda p: [_lists(p)],
     "aten::_foreach_add_.Scalar"),
    ("add_scalarlist", lambda xs: torch._foreach_add_(xs, [0.5, 1, 2.0]), lambda p: [_lists(p)],
     "aten::_foreach_add_.ScalarList"),
    ("add_list_alpha", lambda xs, ys: torch._foreach_add_(xs, ys, alpha=0.3),
     lambda p: [_lists(p), _lists(p)], "aten::_foreach_add_.List"),
    # (the Python binding picks the .Scalar overload for a 0-dim tensor here)
    ("add_0dim_tensor", lambda xs, s: torch._foreach_add_(xs, s), lambda p: [_lists(p), T(())],
     "aten::_foreach_add_.Scalar"),
    ("mul_scalar", lambda xs: torch._foreach_mul_(xs, 0.9), lambda p: [_lists(p)],
     "aten::_foreach_mul_.Scalar"),
    ("mul_scalarlist", lambda xs: torch._foreach_mul_(xs, [0.5, 1.5, 2.0]), lambda p: [_lists(p)],
     "aten::_foreach_mul_.ScalarList"),
    ("mul_list", lambda xs, ys: torch._foreach_mul_(xs, ys), lambda p: [_lists(p), _lists(p)],
     "aten::_foreach_mul_.List"),
    ("mul_0dim_tensor", lambda xs, s: torch._foreach_mul_(xs, s), lambda p: [_lists(p), T(())],
     "aten::_foreach_mul_.Tensor"),
    ("addcdiv_scalar", lambda a, b, c: torch._foreach_addcdiv_(a, b, c, 0.1),
     lambda p: [_lists(p), _lists(p), _lists(p, kind="positive")], "aten::_foreach_addcdiv_.Scalar"),
    ("addcdiv_scalarlist", lambda a, b, c: torch._foreach_addcdiv_(a, b, c, [0.1, 0.2, 0.3]),
     lambda p: [_lists(p), _lists(p), _lists(p, kind="positive")],
     "aten::_foreach_addcdiv_.ScalarList"),
    ("addcmul_scalar", lambda a, b, c: torch._foreach_addcmul_(a, b, c, value=0.5),
     lambda p: [_lists(p), _lists(p), _lists(p)], "aten::_foreach_addcmul_.Scalar"),
    ("lerp_scalar", lambda a, b: torch._foreach_lerp_(a, b, 0.1), lambda p: [_lists(p), _lists(p)],
     "aten::_foreach_lerp_.Scalar"),
    ("lerp_scalarlist", lambda a, b: torch._foreach_lerp_(a, b, [0.1, 0.2, 0.3]),
     lambda p: [_lists(p), _lists(p)], "aten::_foreach_lerp_.ScalarList"),
    ("zero_", lambda xs: torch._foreach_zero_(xs), lambda p: [_lists(p)], "aten::_foreach_zero_"),
    ("copy_", lambda xs, ys: torch._foreach_copy_(xs, ys), lambda p: [_lists(p), _lists(p)],
     "aten::_foreach_copy_"),
    ("add_functional", lambda xs, ys: torch._foreach_add(xs, ys), lambda p: [_lists(p), _lists(p)],
     "aten::_foreach_add.List"),
    ("mul_functional_scalarlist", lambda xs: torch._foreach_mul(xs, [2, 0.5, True]),
     lambda p: [_lists(p)], "aten::_foreach_mul.ScalarList"),
    ("sqrt_functional", lambda xs: torch._foreach_sqrt(xs), lambda p: [_lists(p, kind="positive")],
     "aten::_foreach_sqrt"),
    ("norm", lambda xs: torch._foreach_norm(xs), lambda p: [_lists(p)], "aten::_foreach_norm.Scalar"),
    ("mixed_in_list", lambda xs, ys: torch._foreach_add_(xs, ys),
     lambda p: [_lists(p, (R,) * len(p)), _lists(p, (R,) * len(p))], "aten::_foreach_add_.List"),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(FOREACH, PL_1D, "1d") + _cases(FOREACH[:8], PL_2D[:3], "2d"))
def test_foreach(entry, pl, mesh_name, meshes) -> None:
    """_foreach_* ops: in-place ones return what stock returns and update every item."""
    _name, fn, specs, op = entry
    check(Inputs(specs(pl), meshes[mesh_name]), fn, native=op)


FOREACH_REDISTRIBUTE = [
    # (self placement, other placement): items of the non-written list are redistributed
    ((R,), (S0,)),
    ((S0,), (S1,)),
    ((S0,), (R,)),
    ((R,), (P,)),  # a Partial gradient all-reduced inside the optimizer step
    ((S1,), (P,)),
    ((S0,), (P,)),
]


@pytest.mark.parametrize(("ps", "po"), FOREACH_REDISTRIBUTE,
                         ids=[f"{placements_id(a)}-{placements_id(b)}" for a, b in FOREACH_REDISTRIBUTE])
@pytest.mark.parametrize("which", ["add_", "lerp_", "add_functional", "addcdiv_"])
def test_foreach_redistributes_list_items(ps, po, which, mesh_1d) -> None:
    """Foreach ops whose list items need redistribution: served natively (stock's collectives)."""
    fns = {
        "add_": (lambda a, b, c: torch._foreach_add_(a, b, alpha=0.5), "aten::_foreach_add_.List"),
        "lerp_": (lambda a, b, c: torch._foreach_lerp_(a, b, 0.1), "aten::_foreach_lerp_.Scalar"),
        "add_functional": (lambda a, b, c: torch._foreach_add(a, b), "aten::_foreach_add.List"),
        "addcdiv_": (lambda a, b, c: torch._foreach_addcdiv_(a, b, c, [0.1, 0.2, 0.3]),
                     "aten::_foreach_addcdiv_.ScalarList"),
    }
    fn, op = fns[which]
    check(Inputs([_lists(ps), _lists(po, (R,)), _lists((R,), kind="positive")], mesh_1d), fn,
          native=op)


# ------------------------------------------------------------------ keyword args

KWARGS = [
    ("add_all_kw", lambda x, y: torch.add(input=x, other=y, alpha=0.5), "aten::add.Tensor"),
    ("add_alpha_kw", lambda x, y: torch.add(x, y, alpha=2), "aten::add.Tensor"),
    ("mul_other_kw_scalar", lambda x, y: torch.mul(x, other=2.5), "aten::mul.Tensor"),
    ("sub_kw", lambda x, y: torch.sub(x, other=y, alpha=3), "aten::sub.Tensor"),
    ("div_mode_kw", lambda x, y: torch.div(x, y.abs() + 1, rounding_mode="trunc"),
     "aten::div.Tensor_mode"),
    ("sum_dim_keepdim_kw", lambda x, y: torch.sum(x, dim=1, keepdim=True), "aten::sum.dim_IntList"),
    ("mean_dim_kw", lambda x, y: x.mean(dim=-1), "aten::mean.dim"),
    ("softmax_dim_kw", lambda x, y: torch.softmax(x, dim=-1), "aten::_softmax"),
    ("clamp_min_max_kw", lambda x, y: torch.clamp(x, min=-0.2, max=0.3), "aten::clamp"),
    ("clamp_tensor_kw", lambda x, y: torch.clamp(x, min=y), "aten::clamp.Tensor"),
    ("where_kw", lambda x, y: torch.where(condition=x > 0, input=x, other=y), "aten::where.self"),
    ("addcmul_value_kw", lambda x, y: torch.addcmul(x, x, y, value=0.5), "aten::addcmul"),
    ("lerp_weight_kw", lambda x, y: torch.lerp(x, end=y, weight=0.3), "aten::lerp.Scalar"),
    ("to_dtype_kw", lambda x, y: x.to(dtype=torch.float64), "aten::_to_copy"),
    ("full_like_dtype_kw", lambda x, y: torch.full_like(x, 3, dtype=torch.int32), "aten::full_like"),
    ("sum_dtype_kw", lambda x, y: x.sum(1, dtype=torch.float64), "aten::sum.dim_IntList"),
    ("transpose_kw", lambda x, y: x.transpose(dim0=1, dim1=0), "aten::transpose.int"),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(KWARGS, PL_1D[:3], "1d") + _cases(KWARGS, PL_2D[:2], "2d"))
def test_keyword_args(entry, pl, mesh_name, meshes) -> None:
    """Keyword arguments are keyed by schema position and reach the local op as keywords."""
    _name, fn, op = entry
    check(Inputs([D(A, pl, grad=True), D(A, pl)], meshes[mesh_name]), fn, native=op, grad=True)


def test_keyword_and_positional_spellings_give_stock_results(mesh_1d) -> None:
    """The same call spelled positionally and with keywords: each equal to stock's."""
    inputs = Inputs([D(A, (S0,)), D(A, (S0,))], mesh_1d)
    spellings = [
        lambda x, y: x.transpose(0, 1),
        lambda x, y: x.transpose(dim0=0, dim1=1),
        lambda x, y: torch.transpose(x, 0, dim1=1),
        lambda x, y: torch.lerp(x, y, 0.3),
        lambda x, y: torch.lerp(x, y, weight=0.3),
    ]
    for fn in spellings:
        check(inputs, fn, native=True)


# ----------------------------------------------------------- 0-dim plain tensors

ZERO_DIM = [
    ("mul", lambda x, s: x * s, [T(())], "aten::mul.Tensor"),
    ("plain_first", lambda x, s: s * x, [T(())], "aten::mul.Tensor"),
    ("int_0dim", lambda x, s: x * s, [T((), "int")], "aten::mul.Tensor"),
    ("bool_0dim", lambda x, s: x * s, [T((), "bool")], "aten::mul.Tensor"),
    ("int_dtensor_float_0dim", lambda x, s: x.int() * s, [T(())], "aten::mul.Tensor"),
    ("one_elem_2d", lambda x, s: x * s, [T((1, 1))], "aten::mul.Tensor"),
    ("where", lambda x, s: torch.where(x > 0, x, s), [T(())], "aten::where.self"),
    ("clamp_min", lambda x, s: x.clamp(min=s), [T(())], "aten::clamp.Tensor"),
    ("mul_kw", lambda x, s: torch.mul(x, other=s), [T(())], "aten::mul.Tensor"),
    ("mul_", lambda x, s: x.mul_(s), [T(())], "aten::mul_.Tensor"),
    ("lerp_tensor_weight", lambda x, s: torch.lerp(x, x * 2, s), [T(())], "aten::lerp.Tensor"),
    ("requires_grad_0dim", lambda x, s: x * s, [T((), grad=True)], "aten::mul.Tensor"),
]


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         _cases(ZERO_DIM, PL_1D, "1d") + _cases(ZERO_DIM[:4], PL_2D[:3], "2d"))
def test_zero_dim_plain_tensor(entry, pl, mesh_name, meshes) -> None:
    """0-dim (and one-element, non-1-d) plain tensors are replicated implicitly by stock."""
    name, fn, extra, op = entry
    check(Inputs([D(A, pl, grad=name != "mul_"), *extra], meshes[mesh_name]), fn, native=op,
          grad=name != "mul_")


@pytest.mark.parametrize("plain", [T(()), T((1, 1))], ids=["0dim", "1x1"])
def test_zero_dim_plain_tensor_with_partial_needs_redistribution_declines(plain, mesh_1d) -> None:
    """Partial + a replicated plain scalar: stock redistributes the plain tensor; declined."""
    check(Inputs([D(A, (P,)), plain], mesh_1d), lambda x, s: x + s, native=None,
          decline=("aten::add.Tensor", "needs_redistribute"))


@pytest.mark.parametrize("pl", PL_1D[:3], ids=placements_id)
def test_zero_dim_plain_tensor_values_not_keyed(pl, mesh_1d) -> None:
    """Different 0-dim values (same dtype) hit one entry and each give stock's result."""
    base = Inputs([D(A, pl)], mesh_1d)
    values = [torch.tensor(v) for v in (2.0, -3.5, 0.0, float("inf"))]
    with torchshard.disabled():
        x = base.fresh()[0]
        expected = [x * v for v in values]
    torchshard.reset_stats()
    x = base.fresh()[0]
    ours = [x * v for v in values]
    assert_same_result(expected, ours)
    stats = torchshard.stats()
    assert (stats["misses"], stats["hits"], stats["native_calls"]) == (1, 3, 4)


# ------------------------------------------------------- ranks outside the mesh

OFF_MESH = [
    ("add", lambda x, y: x + y, 2, "aten::add.Tensor"),
    ("sum_0dim", lambda x, y: x.sum(), 1, "aten::sum"),
    ("max_dim_tuple", lambda x, y: x.max(dim=1), 1, "aten::max.dim"),
    ("add_", lambda x, y: x.add_(y), 2, "aten::add_.Tensor"),
    ("mul_scalar_", lambda x, y: x.mul_(2.0), 1, "aten::mul_.Tensor"),
    ("out", lambda x, y, o: torch.add(x, y, out=o), 3, "aten::add.out"),
    ("t", lambda x, y: x.t(), 1, "aten::t"),
    ("detach", lambda x, y: x.detach(), 1, "aten::detach"),
    ("split", lambda x, y: x.split(4, dim=0), 1, "aten::split.Tensor"),
    ("unbind", lambda x, y: x.unbind(0), 1, "aten::unbind.int"),
    ("cat", lambda x, y: torch.cat([x, y], 0), 2, "aten::cat"),
    ("zero_dim_plain", lambda x, y: x * torch.tensor(2.0), 1, "aten::mul.Tensor"),
    ("foreach_add_", lambda x, y: torch._foreach_add_([x, y], 1.0), 2, "aten::_foreach_add_.Scalar"),
    ("view_flat", lambda x, y: x.view(-1), 1, "aten::view"),
]
OFF_PL = {
    "off_1d": [(R,), (S0,), (S1,), (P,)],
    "off_row": [(R,), (S0,)],
    "off_2d": [(R, S0), (S0, S1), (P, R)],
}


@pytest.mark.parametrize(("entry", "pl", "mesh_name"),
                         [pytest.param(e, p, m, id=f"{e[0]}-{m}-{placements_id(p)}")
                          for e in OFF_MESH for m, pls in OFF_PL.items() for p in pls])
def test_not_participating(entry, pl, mesh_name, meshes, propagation_log) -> None:
    """This rank is outside the op's mesh: stock's stand-in results, specs and aliasing.

    Served natively unless stock's propagation asks for a redistribution (declined by
    design off the mesh: stock runs no collective there either, but keeps the call).
    """
    name, fn, n, op = entry
    mesh = meshes[mesh_name]
    assert not mesh._is_current_rank_part_of_mesh()
    specs = [D(A, pl, mesh=mesh_name) for _ in range(n)]
    if name in ("sum_0dim", "max_dim_tuple", "t", "detach", "split", "unbind",
                "zero_dim_plain", "view_flat", "mul_scalar_"):
        specs.append(D(A, pl, mesh=mesh_name))  # unused second argument
    inputs = Inputs(specs, None, meshes)
    if _needs_redistribute(inputs, fn, op, propagation_log):
        stock, ours = check(inputs, fn, native=None, decline=(op, "needs_redistribute"))
    else:
        stock, ours = check(inputs, fn, native=op or True)
    if stock.error is None:
        for out in flat_tensors(ours.output):
            assert isinstance(out, DTensor) and out.device_mesh is mesh


class _RecordingMode(TorchFunctionMode):
    """Records every torch function it sees (stock's stand-in factories included, if seen)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", ["recording", "default_device"])
@pytest.mark.parametrize("op", ["add", "sum", "split"])
def test_not_participating_under_torch_function_mode(mode, op, meshes) -> None:
    """Off the mesh inside a torch function mode: the mode sees the same calls on both paths.

    (A mode is popped while its handler runs, so at dispatch no mode is active and the
    call is served natively; torchshard's not_participating decline for an active mode is
    not reachable from an ordinary TorchFunctionMode.)
    """
    inputs = Inputs([D(A, (R,), mesh="off_1d"), D(A, (R,), mesh="off_1d")], None, meshes)
    fns = {"add": lambda x, y: x + y, "sum": lambda x, y: x.sum(), "split": lambda x, y: x.split(4)}
    seen: dict[bool, list[str]] = {}

    def fn(x, y):
        if mode == "default_device":
            with torch.device("cpu"):
                return fns[op](x, y)
        with _RecordingMode() as recorder:
            result = fns[op](x, y)
        seen[torchshard.is_enabled()] = recorder.seen
        return result

    check(inputs, fn, native=True)
    if mode == "recording":
        assert seen[True] == seen[False] and seen[True]


# ------------------------------------------------------------ implicit replication


def _ir(fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        with implicit_replication():
            return fn(*args)

    return run


IMPLICIT = [
    ("add_plain_full", lambda x, t: x + t, T(A), "aten::add.Tensor"),
    ("add_plain_row", lambda x, t: x + t, T((12,)), "aten::add.Tensor"),
    ("plain_first", lambda x, t: t * x, T(A), "aten::mul.Tensor"),
    ("add_inplace_plain", lambda x, t: x.add_(t), T(A), "aten::add_.Tensor"),
    ("mm_plain_weight", lambda x, t: x @ t, T((12, 4)), "aten::mm"),
    ("cat_with_plain", lambda x, t: torch.cat([x, t], 1), T(A), "aten::cat"),
    ("foreach_with_plain", lambda x, t: torch._foreach_add_([x], [t]), T(A),
     "aten::_foreach_add_.List"),
    ("plain_requires_grad", lambda x, t: x * t, T(A, grad=True), "aten::mul.Tensor"),
]


@pytest.mark.parametrize(("entry", "mesh_name", "pl"),
                         [pytest.param(e, "1d", (R,), id=f"{e[0]}-1d-R") for e in IMPLICIT]
                         + [pytest.param(e, "2d", (R, R), id=f"{e[0]}-2d-RR") for e in IMPLICIT])
def test_implicit_replication_native(entry, mesh_name, pl, meshes) -> None:
    """Plain tensors mixed with replicated DTensors under implicit_replication()."""
    name, fn, plain, op = entry
    grad = name != "add_inplace_plain" and name != "foreach_with_plain"
    check(Inputs([D(A, pl, grad=grad), plain], meshes[mesh_name]), _ir(fn), native=op, grad=grad)


@pytest.mark.parametrize(("name", "fn", "plain", "pl", "op"), [
    ("add_S0", lambda x, t: x + t, T(A), (S0,), "aten::add.Tensor"),
    ("add_S1", lambda x, t: x + t, T(A), (S1,), "aten::add.Tensor"),
    ("add_P", lambda x, t: x + t, T(A), (P,), "aten::add.Tensor"),
    ("plain_first_S0", lambda x, t: t * x, T(A), (S0,), "aten::mul.Tensor"),
    ("cat_S0", lambda x, t: torch.cat([x, t], 1), T(A), (S0,), "aten::cat"),
    ("foreach_S1", lambda x, t: torch._foreach_add_([x], [t]), T(A), (S1,),
     "aten::_foreach_add_.List"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("aten") else "")
def test_implicit_replication_plain_needing_redistribution_declines(name, fn, plain, pl, op,
                                                                   mesh_1d) -> None:
    """A plain tensor stock replicated and then must redistribute: declined by design."""
    check(Inputs([D(A, pl), plain], mesh_1d), _ir(fn), native=None,
          decline=(op, "needs_redistribute"))


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
def test_implicit_replication_sharded_row_broadcast(pl, mesh_1d) -> None:
    """A plain row broadcast against a Shard(0) DTensor needs no redistribution: native."""
    check(Inputs([D(A, pl), T((12,))], mesh_1d), _ir(lambda x, t: x + t), native="aten::add.Tensor")


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
def test_plain_tensor_without_implicit_replication_declines(pl, mesh_1d) -> None:
    """Outside implicit_replication() a full plain tensor is stock's error to raise."""
    stock, ours = check(Inputs([D(A, pl), T(A)], mesh_1d), lambda x, t: x + t, native=None)
    assert stock.error is RuntimeError
    assert ours.report.declines.get("plain_tensor_arg", 0) > 0


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
def test_one_element_1d_plain_tensor_declines(pl, mesh_1d) -> None:
    """A one-element 1-d plain tensor makes stock warn: left to stock (and its warning)."""
    check(Inputs([D(A, pl), T((1,))], mesh_1d), lambda x, t: x * t, native=None,
          decline=("aten::mul.Tensor", "plain_tensor_arg"))


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
def test_one_element_1d_plain_tensor_under_implicit_replication(pl, mesh_1d) -> None:
    """Under implicit replication the same call must still warn on every call, as stock does.

    Regression: torchshard used to key it natively under implicit replication, and its
    cache hits never warned (found by this test; /tmp/repro_implicit_replication_warning.py).
    """
    stock, _ours = check(Inputs([D(A, pl), T((1,))], mesh_1d), _ir(lambda x, t: x * t),
                        native=None, decline=("aten::mul.Tensor", "plain_tensor_arg"))
    assert any("numel=1" in w for w in stock.warnings)


# ------------------------------------------------- redistribution served natively


REDISTRIBUTE = [
    # name, specs, fn, native op, moves data (False: only local shape values replaced)
    ("view_S1_local_shape", [D(A, (S1,), grad=True)], lambda x: x.view(8, 4, 3), "aten::view", False),
    ("view_S0_local_shape", [D(A, (S0,), grad=True)], lambda x: x.view(4, 2, 12), "aten::view", False),
    ("view_S1_minus_one", [D(A, (S1,), grad=True)], lambda x: x.view(8, -1, 3), "aten::view", False),
    ("reshape_S1", [D(A, (S1,), grad=True)], lambda x: x.reshape(8, 4, 3), "aten::view", False),
    ("view_3d_flatten_S1", [D((4, 8, 12), (S1,), grad=True)], lambda x: x.view(4, 96), "aten::view",
     False),
    ("addmm_bias_R_to_P", [D((8,), (R,), grad=True), D(A, (S1,), grad=True), D((12, 8), (S0,), grad=True)],
     lambda b, x, w: torch.addmm(b, x, w), "aten::addmm", True),
    ("addmm_bias_kw", [D((8,), (R,), grad=True), D(A, (S1,), grad=True), D((12, 8), (S0,), grad=True)],
     lambda b, x, w: torch.addmm(b, x, w, beta=0.5, alpha=2.0), "aten::addmm", True),
    ("lerp_inplace_partial_end", [D(A, (R,)), D(A, (P,))], lambda e, g: e.lerp_(g, 0.1),
     "aten::lerp_.Scalar", True),
    ("add_R_S0", [D(A, (R,), grad=True), D(A, (S0,), grad=True)], lambda x, y: x + y,
     "aten::add.Tensor", True),
    ("mm_S0_S1", [D(A, (S0,), grad=True), D((12, 8), (S1,), grad=True)], lambda x, w: x @ w,
     "aten::mm", True),
    ("softmax_sharded_dim", [D(A, (S1,), grad=True)], lambda x: torch.softmax(x, 1),
     "aten::_softmax", True),
    ("foreach_lerp_partial", [L((D(A, (R,)), D(A, (R,)))), L((D(A, (P,)), D(A, (P,))))],
     lambda e, g: torch._foreach_lerp_(e, g, 0.1), "aten::_foreach_lerp_.Scalar", True),
    ("view_2d_local_shape", [D(A, (S0, S1), mesh="2d", grad=True)], lambda x: x.view(2, 4, 2, 6),
     "aten::view", False),
    # Partial -> Replicate on one mesh dim is all-reduced natively (see below); the others
    # (two Partial dims, a Partial subclass) go through stock's redistribute_local_tensor.
    ("lerp_partial_end_2d_mesh_dim_1", [D(A, (S0, R), mesh="2d"), D(A, (S0, P), mesh="2d")],
     lambda e, g: e.lerp_(g, 0.1), "aten::lerp_.Scalar", True),
    ("lerp_partial_end_2d_mesh_dim_0", [D(A, (R, S1), mesh="2d"), D(A, (P, S1), mesh="2d")],
     lambda e, g: e.lerp_(g, 0.1), "aten::lerp_.Scalar", True),
    ("lerp_partial_end_2d_both_dims", [D(A, (R, R), mesh="2d"), D(A, (P, P), mesh="2d")],
     lambda e, g: e.lerp_(g, 0.1), "aten::lerp_.Scalar", True),
    ("lerp_partial_avg_end", [D(A, (R,)), D(A, (Partial("avg"),))],
     lambda e, g: e.lerp_(g, 0.1), "aten::lerp_.Scalar", True),
]


@pytest.mark.parametrize("case", REDISTRIBUTE, ids=[c[0] for c in REDISTRIBUTE])
def test_redistribution_served_natively(case, meshes, propagation_log) -> None:
    """Calls whose sharding needs redistribution: torchshard replays stock's plan on hits."""
    _name, specs, fn, op, moves_data = case
    grad = any(getattr(s, "grad", False) for s in specs)
    check(Inputs(specs, meshes["1d"], meshes), fn, native=op, grad=grad)
    asked = [e for e in propagation_log if _aten_name(e[0]) == op and e[1]]
    assert asked, f"propagation never asked to redistribute for {op}: {propagation_log}"
    assert all(e[2] == (not moves_data) for e in asked), asked


@pytest.fixture
def reductions(monkeypatch: pytest.MonkeyPatch) -> list[Placement]:
    """Every call into stock's Partial._reduce_value from now on, in order."""
    calls: list[Placement] = []
    reduce_value = Partial._reduce_value

    def counted(self: Partial, *args: Any) -> torch.Tensor:
        calls.append(self)
        return reduce_value(self, *args)

    monkeypatch.setattr(Partial, "_reduce_value", counted)
    return calls


# (case name, calls into stock's Partial._reduce_value per cache hit)
PARTIAL_REDUCTIONS = [
    ("lerp_inplace_partial_end", 0),
    ("lerp_partial_end_2d_mesh_dim_1", 0),
    ("lerp_partial_end_2d_mesh_dim_0", 0),
    ("lerp_partial_avg_end", 0),
    ("lerp_partial_end_2d_both_dims", 2),
]


@pytest.mark.parametrize(("name", "stock_reductions"), PARTIAL_REDUCTIONS,
                         ids=[c[0] for c in PARTIAL_REDUCTIONS])
def test_partial_to_replicate_all_reduce_is_native_on_hits(name, stock_reductions, meshes,
                                                           reductions) -> None:
    """A single Partial -> Replicate is all-reduced from C++ on hits, not by stock's Python."""
    _name, specs, fn, op, _ = next(c for c in REDISTRIBUTE if c[0] == name)
    inputs = Inputs(specs, meshes["1d"], meshes)
    fn(*inputs.fresh())  # the miss: stock runs the call (and its redistribution)
    reductions.clear()
    with torchshard.explain(print_report=False) as report:
        fn(*inputs.fresh())
    served = op_report(report, op)
    assert (served.native_calls, served.misses) == (1, 0), served
    assert len(reductions) == stock_reductions


def test_native_all_reduce_switched_off_runs_stocks_reduction(meshes, reductions) -> None:
    """TORCHSHARD_NATIVE_ALL_REDUCE=0 (for isolating faults): the Partial -> Replicate of a
    cached plan goes through stock's redistribution, and the results stay stock's."""
    _name, specs, fn, op, _ = next(c for c in REDISTRIBUTE if c[0] == "lerp_inplace_partial_end")
    inputs = Inputs(specs, meshes["1d"], meshes)
    torchshard.clear_cache()
    with native_all_reduce(False):
        check(inputs, fn, native=op)  # stock, then torchshard's miss and its plan
    assert torchshard._C.native_all_reduce_enabled()
    reductions.clear()
    with torchshard.explain(print_report=False) as report:
        fn(*inputs.fresh())
    served = op_report(report, op)
    assert (served.native_calls, served.misses) == (1, 0), served
    assert len(reductions) == 1


def _strict(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` inside a strict ExplicitRedistributionContext (every redistribution raises)."""
    def run(*args: Any) -> Any:
        with ExplicitRedistributionContext(strict=True):
            return fn(*args)

    return run


@pytest.mark.parametrize("case", [c for c in REDISTRIBUTE if c[4]], ids=[c[0] for c in REDISTRIBUTE if c[4]])
def test_redistribution_under_explicit_context_declines(case, meshes) -> None:
    """An active ExplicitRedistributionContext must see the redistribution: declined to stock."""
    _name, specs, fn, op, _ = case
    stock, ours = check(Inputs(specs, meshes["1d"], meshes), _strict(fn), native=None)
    assert stock.error is RuntimeError
    assert op_report(ours.report, op).declines == {"needs_redistribute": 1}


@pytest.mark.parametrize("case", [c for c in REDISTRIBUTE if not c[4]][:3],
                         ids=[c[0] for c in REDISTRIBUTE if not c[4]][:3])
def test_value_only_redistribution_under_explicit_context(case, meshes) -> None:
    """Replacing a view's shape by the local shape moves no data: still native, as stock allows."""
    _name, specs, fn, op, _ = case
    check(Inputs(specs, meshes["1d"], meshes), _strict(fn), native=op)


# -------------------------------------------------- value-blind Python scalars


def _sequence(inputs: Inputs, calls: Sequence[Callable[..., Any]]) -> tuple[list[Any], list[dict]]:
    """Run ``calls`` in turn on stock and on one warm torchshard session; stats after each."""
    with torchshard.disabled():
        expected = [call(*inputs.fresh()) for call in calls]
    torchshard.reset_stats()
    ours, stats = [], []
    for call in calls:
        ours.append(call(*inputs.fresh()))
        stats.append(torchshard.stats())
    assert_same_result(expected, ours, path="sequence")
    return ours, stats


CHANGING_SCALAR = [
    ("mul", lambda lr: lambda x, y: x * lr),
    ("rmul", lambda lr: lambda x, y: lr * x),
    ("div", lambda lr: lambda x, y: x / lr),
    ("mul_inplace", lambda lr: lambda x, y: x.mul_(1 - lr * 0.01)),
    ("add_alpha", lambda lr: lambda x, y: torch.add(x, y, alpha=-lr)),
    ("addcdiv_value", lambda lr: lambda x, y: x.addcdiv_(y, y.abs() + 1, value=-lr)),
    ("lerp_weight", lambda lr: lambda x, y: x.lerp_(y, lr)),
    ("foreach_mul_", lambda lr: lambda x, y: torch._foreach_mul_([x, y], lr)),
    ("foreach_add_scalarlist", lambda lr: lambda x, y: torch._foreach_add_([x, y], [lr, 2 * lr])),
]
# Stock rejects these on Partial inputs (an in-place op that would change placements;
# test_inplace and test_foreach compare that error): not part of this class.
_PARTIAL_REJECTED = {"addcdiv_value", "lerp_weight", "foreach_add_scalarlist"}


@pytest.mark.parametrize(("name", "make", "pl", "mesh_name"), [
    pytest.param(name, make, pl, mesh_name, id=f"{name}-{mesh_name}-{placements_id(pl)}")
    for name, make in CHANGING_SCALAR
    for pl, mesh_name in [((R,), "1d"), ((S0,), "1d"), ((S1,), "1d"), ((P,), "1d"), ((S0, S1), "2d")]
    if not (isinstance(pl[0], Partial) and name in _PARTIAL_REJECTED)
])
def test_changing_scalar_hits_cache(name, make, pl, mesh_name, meshes) -> None:
    """A changing learning rate: one miss per op, then hits, each result equal to stock's."""
    inputs = Inputs([D(A, pl), D(A, pl)], meshes[mesh_name])
    lrs = [0.1, 0.05, 1e-3, 0.3, 2.5, 1e-8]
    _, stats = _sequence(inputs, [make(lr) for lr in lrs])
    first = stats[0]
    assert first["native_calls"] > 0 and first["declined"] == 0, first
    for later in stats[1:]:
        assert later["misses"] == first["misses"], f"a new lr value missed the cache: {stats}"
    assert stats[-1]["native_calls"] == stats[-1]["calls"]


KIND_SEQUENCES = [
    ("float_tensor", "float", [2, 2.0, True, 3, 0.5, False, 7, -4.25]),
    ("int_tensor", "int", [2, 2.5, True, 3, 0.5, False, 7]),
    ("uint8_tensor", "uint8", [2, 2.5, True, 3, False, 300]),
    ("bool_tensor", "bool", [True, 2, 2.5, False, 3, 0.5]),
    # complex numbers are left to stock (declined), between hits of the other kinds
    ("float_tensor_complex", "float", [2.0, 1j, 3, 2.5 + 1j, 0.5]),
    ("int_tensor_complex", "int", [2, 1j, 3, -1j]),
    # values equal in Python (2 == 2.0, 1 == True == 1.0) but of different kinds, so
    # different result dtypes: each needs its own output spec
    ("int_tensor_equal_values", "int", [2, 2.0, 1, True, 1.0]),
    ("bool_tensor_equal_values", "bool", [1, True, 1.0, 0, False]),
]


def _kind_cases() -> list[Any]:
    cases = []
    for pl in [(R,), (S0,)]:
        for op in ["mul", "add", "sub_r", "inplace_add"]:
            for name, kind, scalars in KIND_SEQUENCES:
                cases.append(pytest.param(name, kind, scalars, op, pl,
                                          id=f"{placements_id(pl)}-{op}-{name}"))
    return cases


@pytest.mark.parametrize(("name", "kind", "scalars", "op", "pl"), _kind_cases())
def test_scalar_kinds_give_stock_dtypes(name, kind, scalars, op, pl, mesh_1d) -> None:
    """int / float / bool scalars keyed by kind: each dtype is stock's; a repeated kind never
    misses. Complex scalars are declined (stock fails to hash them where it keys values).

    Regression for complex: torchshard keyed them by kind, so ``1j - x`` returned a complex
    DTensor where stock raises (found by this test; /tmp/repro_complex_scalar_static_arg.py).
    """
    fns = {
        "mul": lambda s: lambda x: x * s,
        "add": lambda s: lambda x: x + s,
        "sub_r": lambda s: lambda x: s - x,
        "inplace_add": lambda s: lambda x: x.add_(s),
    }
    inputs = Inputs([D(A, pl, kind)], mesh_1d)
    calls = [fns[op](s) for s in scalars]
    with torchshard.disabled():
        expected = []
        for call in calls:
            try:
                expected.append(call(*inputs.fresh()))
            except Exception as exc:  # noqa: BLE001 - compared by type
                expected.append(type(exc))
    torchshard.reset_stats()
    seen_kinds: set[type] = set()
    for scalar, call, want in zip(scalars, calls, expected):
        before = torchshard.stats()
        try:
            got = call(*inputs.fresh())
        except Exception as exc:  # noqa: BLE001
            got = type(exc)
        if isinstance(want, type):
            assert got is want, (scalar, want, got)
            continue
        assert not isinstance(got, type), f"torchshard raised {got} for {scalar!r}"
        assert_same_result(want, got, path=f"result[{scalar!r}]")
        after = torchshard.stats()
        if isinstance(scalar, complex):
            assert after["native_calls"] == before["native_calls"], f"{scalar!r} served natively"
            assert after["declines"].get("unsupported_arg", 0) > before["declines"].get("unsupported_arg", 0)
            continue
        if type(scalar) in seen_kinds:
            assert after["misses"] == before["misses"], f"{scalar!r}: a known kind missed"
            assert after["native_calls"] == before["native_calls"] + 1
        seen_kinds.add(type(scalar))


@pytest.mark.parametrize("mesh_name", ["1d", "off_1d"])
@pytest.mark.parametrize(("kind", "first", "second"), [
    ("int", 2, 2.0),       # int64 result, then float32
    ("bool", 1, True),     # int64 result, then bool
], ids=["int-2-then-2.0", "bool-1-then-True"])
def test_equal_valued_scalar_of_another_kind_gets_its_own_spec(kind, first, second, mesh_name,
                                                              meshes) -> None:
    """x * 2.0 after x * 2 on an int DTensor: stock's spec (and, off the mesh, dtype)."""
    inputs = Inputs([D(A, (S0,), kind, mesh=mesh_name)], None, meshes)
    ours, _ = _sequence(inputs, [lambda x: x * first, lambda x: x * second])
    assert ours[1]._spec.tensor_meta.dtype == ours[1].dtype


def test_scalar_kind_entries_are_per_kind(mesh_1d) -> None:
    """x * lr for many values of two kinds makes exactly two cache entries."""
    inputs = Inputs([D(A, (S0,))], mesh_1d)
    x = inputs.fresh()[0]
    for i in range(20):
        x * (0.01 * i)
        x * i
    stats = torchshard.stats()
    assert stats["misses"] == 2 and stats["entries"] == 2 and stats["native_calls"] == 40


# -------------------------------------------------------- declined by design

DECLINED = [
    # (on CPU F.dropout decomposes; its random op is bernoulli_)
    ("dropout", lambda x: F.dropout(x, 0.5, training=True), "aten::bernoulli_.float", "random_op"),
    ("uniform_", lambda x: x.uniform_(), "aten::uniform_", "random_op"),
    ("normal_", lambda x: x.normal_(), "aten::normal_", "random_op"),
    ("bernoulli_", lambda x: x.bernoulli_(0.5), "aten::bernoulli_.float", "random_op"),
    ("rand_like", lambda x: torch.rand_like(x), "aten::rand_like", "random_op"),
    ("argmax_custom_handler", lambda x: x.argmax(), "aten::argmax", "custom_handler"),
    ("argmin_custom_handler", lambda x: x.argmin(), "aten::argmin", "custom_handler"),
    ("squeeze_dim_rewritten", lambda x: x.unsqueeze(1).clone().squeeze_(1), "aten::squeeze_.dim",
     "needs_redistribute"),
    ("squeeze_default_rewritten", lambda x: x.unsqueeze(1).squeeze(), "aten::squeeze",
     "needs_redistribute"),
]


@pytest.mark.parametrize(("entry", "pl"),
                         [pytest.param(e, p, id=f"{e[0]}-{placements_id(p)}") for e in DECLINED
                          for p in [(R,), (S0,)]])
def test_declined_by_design(entry, pl, mesh_1d) -> None:
    """Random ops, custom handlers and rewritten ops go to stock, with the same results."""
    _name, fn, op, reason = entry
    stock, _ours = check(Inputs([D(A, pl)], mesh_1d), fn, native=None, decline=(op, reason),
                        seed=1234)
    assert stock.error is None, stock.message


# Ops that write an argument but, lacking stock's trailing underscore, are not in-place:
# stock wraps their own results. torchshard used to return args[0] for them (found by
# test_opinfo_parity.py: rrelu_with_noise gave back its input unchanged).
WRITES_WITHOUT_UNDERSCORE = [
    ("rrelu_with_noise", lambda x, n: torch.ops.aten.rrelu_with_noise(x, n, 0.25, 0.25, False),
     [D(A, grad=True), D(A)]),
    ("_native_batch_norm_legit", lambda x, w, b, rm, rv: torch.ops.aten._native_batch_norm_legit(
        x, w, b, rm, rv, True, 0.1, 1e-5), [D((8, 4), grad=True), D((4,)), D((4,)), D((4,)), D((4,), kind="positive")]),
]


@pytest.mark.parametrize(("name", "fn", "specs"), WRITES_WITHOUT_UNDERSCORE,
                         ids=[e[0] for e in WRITES_WITHOUT_UNDERSCORE])
def test_op_writing_an_argument_without_underscore_returns_its_results(name, fn, specs, mesh_1d) -> None:
    """Regression: a functional op that updates an argument returns fresh results (not args[0])."""
    check(Inputs(specs, mesh_1d), fn, native=f"aten::{name}", grad=True)


def test_random_op_in_a_chain_keeps_the_rest_native(mesh_1d) -> None:
    """Only the random op is declined: the ops around it are still served natively."""
    inputs = Inputs([D(A, (S0,))], mesh_1d)
    _stock, _ours = check(inputs, lambda x: F.dropout(x * 2.0, 0.25, training=True).relu(),
                        native=("aten::mul.Tensor", "aten::relu"), seed=7,
                        decline=("aten::bernoulli_.float", "random_op"))



# -------------------------------------------------------- complex Python scalars

# Stock raises RuntimeError("unhashable type: 'complex'") for these (it keys the scalar by
# value). Regression: torchshard keyed complex numbers by kind and returned a complex
# result (found by these tests; /tmp/repro_complex_scalar_static_arg.py).
COMPLEX_KEYED = [
    ("rsub_scalar", lambda x, c, m: 1j - x, "aten::rsub.Scalar"),
    ("pow_tensor_scalar", lambda x, c, m: x ** 1j, "aten::pow.Tensor_Scalar"),
    ("pow_scalar", lambda x, c, m: 1j ** x, "aten::pow.Scalar"),
    ("masked_fill_scalar", lambda x, c, m: c.masked_fill(m, 1j), "aten::masked_fill.Scalar"),
    ("lerp_scalar", lambda x, c, m: torch.lerp(c, c * 2, 1j), "aten::lerp.Scalar"),
    ("lerp_inplace_scalar", lambda x, c, m: c.lerp_(c * 2, 1j), "aten::lerp_.Scalar"),
]
# Complex scalars stock accepts: declined where torchshard would key the number
# (value-blind pointwise positions), native where numbers are not keyed at all.
COMPLEX_ELSEWHERE = [
    ("mul", lambda x, c, m: x * 1j, ("aten::mul.Tensor", "unsupported_arg")),
    ("add", lambda x, c, m: x + 1j, ("aten::add.Tensor", "unsupported_arg")),
    ("div", lambda x, c, m: x / (2 - 1j), ("aten::div.Tensor", "unsupported_arg")),
    ("complex_sub", lambda x, c, m: c - 1j, ("aten::sub.Tensor", "unsupported_arg")),
    ("mul_inplace", lambda x, c, m: c.mul_(1j), ("aten::mul_.Tensor", "unsupported_arg")),
    ("clamp_min_raises", lambda x, c, m: x.clamp(min=1j), ("aten::clamp", "unsupported_arg")),
    ("where", lambda x, c, m: torch.where(m, c, 1j), "aten::where.self"),
    # every keyword value is keyed; a complex one cannot be, so stock serves it
    ("add_alpha", lambda x, c, m: torch.add(c, c, alpha=1j), ("aten::add.Tensor", "unsupported_arg")),
    ("fill_inplace", lambda x, c, m: c.fill_(2 + 1j), "aten::fill_.Scalar"),
    ("foreach_mul_", lambda x, c, m: torch._foreach_mul_([c], 1j), "aten::_foreach_mul_.Scalar"),
]


class _ComplexInputs(Inputs):
    """(x float, c complex64, m bool) DTensors; c is built from two float bases."""

    def __init__(self, pl: tuple, mesh: DeviceMesh) -> None:
        super().__init__([D(A, pl), D(A, pl), D(A, pl, "bool")], mesh)

    def fresh(self) -> list[Any]:
        x, y, m = super().fresh()
        local = torch.complex(x._local_tensor, y._local_tensor)
        c = DTensor.from_local(local, x.device_mesh, x.placements, run_check=False,
                               shape=x.shape, stride=x.stride())
        return [x, c, m]


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
@pytest.mark.parametrize(("name", "fn", "op"), COMPLEX_KEYED, ids=[c[0] for c in COMPLEX_KEYED])
def test_complex_scalar_at_keyed_position(name, fn, op, pl, mesh_1d) -> None:
    """Stock refuses a complex scalar where it keys scalars by value; so must torchshard."""
    stock, ours = check(_ComplexInputs(pl, mesh_1d), fn, native=None)
    assert stock.error is RuntimeError
    assert op_report(ours.report, op).declines == {"unsupported_arg": 1}


@pytest.mark.parametrize("pl", [(R,), (S0,)], ids=placements_id)
@pytest.mark.parametrize(("name", "fn", "expect"), COMPLEX_ELSEWHERE,
                         ids=[c[0] for c in COMPLEX_ELSEWHERE])
def test_complex_scalar_elsewhere(name, fn, expect, pl, mesh_1d) -> None:
    """Complex scalars stock accepts (wrapped numbers, unkeyed positions): stock's results."""
    if isinstance(expect, tuple):
        _stock, ours = check(_ComplexInputs(pl, mesh_1d), fn, native=None)
        assert op_report(ours.report, expect[0]).declines == {expect[1]: 1}
    else:
        check(_ComplexInputs(pl, mesh_1d), fn, native=expect)


# ------------------------------------------------ the comparison itself


def test_comparison_detects_aliasing_spec_and_version_differences(mesh_1d) -> None:
    """The checks above are not vacuous: each field they rely on tells these apart."""
    import dataclasses

    from torch.distributed.tensor._dtensor_spec import TensorMeta

    inputs = Inputs([D(A, (S0,))], mesh_1d)
    with torchshard.disabled():
        a, b = inputs.fresh(), inputs.fresh()
        # a view vs a view of a copy: same values, shape, stride and spec
        view, other = a[0].t(), b[0].clone().t()
        with pytest.raises(AssertionError, match="aliasing"):
            assert_same_result(view, other, inputs=(a, b))
        va, vb = wrapper_aliasing(view, a)[0], wrapper_aliasing(other, b)[0]
        assert (va["base"], va["storage"], va["local_storage"]) == (("0",), ("0",), ("0",))
        assert (vb["base"], vb["storage"], vb["local_storage"]) == ("other", (), ())
        # the local tensor aliases as it should, the wrapper does not (no _base, own
        # storage): only the wrapper-level comparison sees it
        a, b = inputs.fresh(), inputs.fresh()
        local_view = b[0].t()
        bare = DTensor(local_view._local_tensor, local_view._spec, requires_grad=False)
        with pytest.raises(AssertionError, match=r"wrapper aliasing\[base\]"):
            assert_same_result(a[0].t(), bare, inputs=(a, b))
        # in-place returns the input itself; a new wrapper of the same local tensor does not
        a, b = inputs.fresh(), inputs.fresh()
        twin = DTensor(b[0]._local_tensor.mul_(1), b[0]._spec, requires_grad=False)
        with pytest.raises(AssertionError, match=r"wrapper aliasing\[is\]"):
            assert_same_result(a[0].mul_(1), twin, inputs=(a, b))
        # a split result's wrapper storage is its own, a t() result's is its input's
        a = inputs.fresh()
        assert wrapper_aliasing(a[0].t(), a)[0]["storage"] == ("0",)
        assert wrapper_aliasing(a[0].split(4), a)[0]["storage"] == ()
        # a view shares the wrapper's version counter, a copy does not (local results
        # are computed below autograd, so their counters are their own on both paths)
        a = inputs.fresh()
        assert version_deltas(a[0].t(), a, bump=bump)[0][1] == [(1, 0)]
        a = inputs.fresh()
        assert version_deltas(a[0].clone(), a, bump=bump)[0][1] == [(0, 0)]
        # the full spec: a stale tensor_meta is caught even when placements/dtype agree
        x = inputs.fresh()[0]
        stale = dataclasses.replace(
            x._spec, tensor_meta=TensorMeta(x.shape, x.stride(), torch.float64))
        y = DTensor(x._local_tensor, stale, requires_grad=False)
        with pytest.raises(AssertionError, match=r"spec\.tensor_meta"):
            assert_same_result(x, y)
