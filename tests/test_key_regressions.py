"""Cache-key regressions known from upstream DTensor: list arguments, keyword arguments,
SymInts, and the same op with different static scalar arguments.

Already guarded elsewhere (not repeated here): ``None`` vs a spec and optional tensors in
different positions (``clamp(t, None, t2)`` vs ``clamp(t, t2)``), ``sum(dim=0)`` vs
``sum(dim=1)``, keepdim, ``dtype=`` (test_native_hit.py); scalar kinds and
value-blind scalars (test_native_classes.py).

Each test runs every variant in one warm cache, in an order where a key collision
would hand a later call an earlier call's entry, and compares every result with stock
DTensor run from an empty built-in cache (stock's own key ignores keyword values its
schema info does not name, see docs/design.md). The cache must also hold exactly one
entry per distinct variant: repeats hit, distinct variants never share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.source import ConstantSource
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import torchshard
from dtensor_compare import assert_same_result

pytestmark = pytest.mark.usefixtures("fresh_torchshard")

Call = Callable[[], Any]


def stock_result(call: Call) -> tuple[Any, type | None]:
    """Stock DTensor's result (or exception type) for ``call``, from an empty stock cache."""
    torch._C._clear_DTensor_sharding_propagator_cache()
    with torchshard.disabled():
        try:
            return call(), None
        except Exception as exc:  # noqa: BLE001 - the type is compared
            return None, type(exc)


def ours_result(call: Call) -> tuple[Any, type | None]:
    try:
        return call(), None
    except Exception as exc:  # noqa: BLE001 - the type is compared
        return None, type(exc)


def assert_variants_keyed_apart(variants: dict[str, Call]) -> None:
    """Run every variant (each one aten call on ready-made inputs) twice with torchshard
    (second round: hits only), compare all results with stock, and require one native
    cache entry per variant."""
    first = {name: ours_result(call) for name, call in variants.items()}
    entries = torchshard.stats()["entries"]
    hits_before = torchshard.stats()["hits"]
    second = {name: ours_result(call) for name, call in variants.items()}
    stats = torchshard.stats()
    assert entries == len(variants), f"{entries} cache entries for {len(variants)} variants"
    assert stats["entries"] == entries and stats["hits"] - hits_before == len(variants), stats
    assert stats["declined"] == 0, stats["declines"]
    for name, call in variants.items():
        expected, expected_error = stock_result(call)
        for round_name, (ours, error) in (("first", first[name]), ("second", second[name])):
            assert error is expected_error, f"{name} ({round_name}): stock {expected_error}, ours {error}"
            assert_same_result(expected, ours, path=f"{name}[{round_name}]")


@pytest.fixture
def x(mesh_1d) -> DTensor:
    return distribute_tensor(torch.randn(8, 12, 4), mesh_1d, [Shard(0)])


# ----------------------------------------------------------------------------- lists


def test_list_arguments_are_keyed_by_length_and_items(x) -> None:
    """sum(dim=[...]) lists of different lengths and orders, and permute orders."""
    assert_variants_keyed_apart({
        "sum[0]": lambda: x.sum([0]),
        "sum[1]": lambda: x.sum([1]),
        "sum[0,1]": lambda: x.sum([0, 1]),
        "sum[1,2]": lambda: x.sum([1, 2]),
        "sum[0,1,2]": lambda: x.sum([0, 1, 2]),
        "permute(0,2,1)": lambda: x.permute(0, 2, 1),
        "permute(2,0,1)": lambda: x.permute(2, 0, 1),
        "view(8,48)": lambda: x.view(8, 48),
        "view(8,4,12)": lambda: x.view(8, 4, 12),
    })


def test_tensor_list_arguments_are_keyed_by_length_and_specs(mesh_1d) -> None:
    """cat over lists of different lengths and of differently placed items."""
    a = distribute_tensor(torch.randn(8, 4), mesh_1d, [Shard(0)])
    b = distribute_tensor(torch.randn(8, 4), mesh_1d, [Shard(1)])
    assert_variants_keyed_apart({
        "cat[a,a]": lambda: torch.cat([a, a], 1),
        "cat[a,a,a]": lambda: torch.cat([a, a, a], 1),
        "cat[b,b]": lambda: torch.cat([b, b], 0),
        "cat[a,a]dim0": lambda: torch.cat([a, a], 0),
    })


def test_optional_tensor_list_items_none_vs_spec(mesh_1d) -> None:
    """index(x, [None, idx]) vs index(x, [idx]): a None list item is not a spec."""
    x = distribute_tensor(torch.randn(8, 12), mesh_1d, [Replicate()])
    idx = distribute_tensor(torch.tensor([0, 3, 5]), mesh_1d, [Replicate()])
    assert_variants_keyed_apart({
        "index[idx]": lambda: torch.ops.aten.index.Tensor(x, [idx]),
        "index[None,idx]": lambda: torch.ops.aten.index.Tensor(x, [None, idx]),
    })


# ----------------------------------------------------------------------------- kwargs


def test_keyword_arguments_beyond_dtype_are_keyed(x) -> None:
    """Keywords that decide the output spec but that stock's key ignores."""
    flat, x4 = x.reshape(8, 48), x.unsqueeze(0)
    torchshard.clear_cache()
    assert_variants_keyed_apart({
        "histc": lambda: torch.histc(flat, min=-1, max=1),
        "histc(bins=4)": lambda: torch.histc(flat, bins=4, min=-1, max=1),
        "clone": lambda: torch.clone(x4),
        "clone(channels_last)": lambda: torch.clone(x4, memory_format=torch.channels_last),
        "softmax(dim=1)": lambda: F.softmax(x, dim=1),
        "softmax(dim=2)": lambda: F.softmax(x, dim=2),
    })


def test_keyword_and_positional_spellings_give_the_same_results(x) -> None:
    """sum(x, 1, True) and sum(x, dim=1, keepdim=True): whatever the key, stock's result."""
    variants = {
        "positional": lambda: torch.sum(x, 1, True),
        "keyword": lambda: torch.sum(x, dim=1, keepdim=True),
    }
    for name, call in variants.items():
        expected, _ = stock_result(call)
        assert_same_result(expected, call(), path=name)
    assert torchshard.stats()["declined"] == 0


# ----------------------------------------------------------------------------- static scalar args


def test_static_scalar_arguments_are_keyed(x) -> None:
    """The same op with different static ints (dim, chunks, k, sizes): never one entry.
    topk's k comes before stock's static_argnum, so stock's own cache would hand
    topk(3) the spec of topk(2)."""
    assert_variants_keyed_apart({
        "softmax0": lambda: x.softmax(0),
        "softmax1": lambda: x.softmax(1),
        "cumsum1": lambda: x.cumsum(1),
        "cumsum2": lambda: x.cumsum(2),
        "transpose(0,1)": lambda: x.transpose(0, 1),
        "transpose(1,2)": lambda: x.transpose(1, 2),
        "chunk(2,1)": lambda: x.chunk(2, 1),
        "chunk(3,1)": lambda: x.chunk(3, 1),
        "topk(2)": lambda: x.topk(2),
        "topk(3)": lambda: x.topk(3),
        "unsqueeze0": lambda: x.unsqueeze(0),
        "unsqueeze3": lambda: x.unsqueeze(3),
    })


def test_view_dtype_is_keyed(x) -> None:
    """x.view(dtype): the dtype (an int before stock's static_argnum) decides the shape;
    a warm cache must not give view(float16) the spec of view(int32)."""
    calls = {
        "int32": lambda: x.view(torch.int32),
        "float16": lambda: x.view(torch.float16),
        "int32 again": lambda: x.view(torch.int32),
    }
    ours = {name: ours_result(call) for name, call in calls.items()}
    assert torchshard.stats()["native_calls"] > 0
    for name, call in calls.items():
        expected, expected_error = stock_result(call)
        assert ours[name][1] is expected_error
        assert_same_result(expected, ours[name][0], path=name)


# ----------------------------------------------------------------------------- SymInts


@pytest.fixture
def symint() -> torch.SymInt:
    """A backed SymInt with hint 12 outside any mode, as a traced program might pass one."""
    env = ShapeEnv()
    return env.create_symintnode(env.create_symbol(12, ConstantSource("s0")), hint=12)


@pytest.mark.parametrize(("name", "call"), [
    ("view", lambda x, s: x.view(8, s, 4)),
    ("narrow", lambda x, s: x.narrow(1, 0, s - 4)),
    ("mul", lambda x, s: x * s),
    ("new_zeros", lambda x, s: x.new_zeros((s, 4))),
])
def test_symint_arguments_are_declined_and_counted(name, call, x, symint) -> None:
    """A SymInt argument gets no native key (it could not be hashed stably): the call is
    declined as symbolic_arg, nothing is cached, and stock's result or exception stands."""
    ours, error = ours_result(lambda: call(x, symint))
    stats = torchshard.stats()
    assert stats["declines"].get("symbolic_arg") == 1, stats["declines"]
    assert stats["entries"] == 0 and stats["native_calls"] == 0, stats
    expected, expected_error = stock_result(lambda: call(x, symint))
    assert error is expected_error, (expected_error, error)
    assert_same_result(expected, ours, path=name)
