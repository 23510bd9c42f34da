"""torch.compile over DTensors: the same results with torchshard enabled, and torchshard
declines (and counts) every call made while tracing, on fake tensors, or with SymInts.

Compiled forward and backward (backend="aot_eager": the graphs run eagerly, so no C++
toolchain time) of tensor-parallel style functions, static and dynamic shapes, each
compared with the same program compiled with torchshard disabled: outputs, gradients of
the DTensor inputs, every field (dtensor_compare). Dynamo's caches are reset between the
two, so each side traces for itself.

While dynamo/AOTAutograd trace, DTensor ops run under FakeTensorMode and
ProxyTorchDispatchMode: torchshard must hand every such call to stock
(``dispatch_mode_active``), so the compiled program is stock's; the compiled program
itself runs on the local tensors and dispatches no DTensor op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import torchshard
from dtensor_compare import assert_same_result

pytestmark = pytest.mark.usefixtures("fresh_torchshard")


def mlp(x: DTensor, w1: DTensor, w2: DTensor) -> DTensor:
    return torch.relu(x @ w1) @ w2


def mlp_replicated_loss(x: DTensor, w1: DTensor, w2: DTensor) -> DTensor:
    out = torch.nn.functional.gelu(x @ w1) @ w2
    return out.redistribute(out.device_mesh, [Replicate()]).softmax(-1).sum(0)


def norm_scale(x: DTensor, w1: DTensor, w2: DTensor) -> DTensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],)) * w1.sum(0) + w2.mean()


CASES = [
    # (name, fn, placements of x, w1, w2)
    ("mlp_row_sharded_input", mlp, (Shard(0), Replicate(), Replicate())),
    ("mlp_tensor_parallel", mlp, (Replicate(), Shard(1), Shard(0))),
    ("mlp_replicated_loss", mlp_replicated_loss, (Replicate(), Shard(1), Shard(0))),
    ("norm_scale", norm_scale, (Shard(0), Replicate(), Shard(0))),
]


def _inputs(mesh, placements) -> list[DTensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 16), (16, 16), (16, 16)]
    return [distribute_tensor(torch.randn(shape, generator=gen), mesh, [p]).requires_grad_()
            for shape, p in zip(shapes, placements)]


def _compiled_run(fn: Callable[..., Any], mesh, placements, dynamic: bool,
                  backend: str) -> tuple[Any, list[Any], dict[str, Any], dict[str, Any]]:
    """Compile ``fn`` afresh, run forward and backward twice (trace, then the cached
    graph); return the last outputs, grads, and torchshard's stats for each call."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, dynamic=dynamic, fullgraph=True)
    stats_per_call = []
    for _ in range(2):
        inputs = _inputs(mesh, placements)
        torchshard.reset_stats()
        out = compiled(*inputs)
        stats_per_call.append(torchshard.stats())
        out.to_local().sum().backward()
    return out, [t.grad for t in inputs], stats_per_call[0], stats_per_call[1]


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize(("name", "fn", "placements"), CASES, ids=[c[0] for c in CASES])
def test_compiled_forward_backward_match_stock(name, fn, placements, dynamic, mesh_1d) -> None:
    with torchshard.disabled():
        stock_out, stock_grads, _, _ = _compiled_run(fn, mesh_1d, placements, dynamic, "aot_eager")
    ours_out, ours_grads, tracing, cached = _compiled_run(fn, mesh_1d, placements, dynamic, "aot_eager")
    torch._dynamo.reset()
    assert_same_result(stock_out, ours_out, path=name)
    assert_same_result(stock_grads, ours_grads, path=f"{name}.grads")
    # Tracing: every DTensor call went to stock, counted under its reason.
    assert tracing["calls"] > 0
    assert tracing["native_calls"] == 0, tracing
    assert tracing["declines"] == {"dispatch_mode_active": tracing["calls"]}, tracing["declines"]
    # The compiled graph runs on local tensors: no DTensor call reaches torchshard.
    assert cached["calls"] == 0, cached


@pytest.mark.slow
def test_inductor_compiled_forward_backward_match_stock(mesh_1d) -> None:
    """One case through inductor (compiles C++), as the aot_eager cases."""
    placements = (Replicate(), Shard(1), Shard(0))
    with torchshard.disabled():
        stock_out, stock_grads, _, _ = _compiled_run(mlp, mesh_1d, placements, False, "inductor")
    ours_out, ours_grads, tracing, cached = _compiled_run(mlp, mesh_1d, placements, False, "inductor")
    torch._dynamo.reset()
    assert_same_result(stock_out, ours_out)
    assert_same_result(stock_grads, ours_grads, path="grads")
    assert tracing["native_calls"] == 0 and tracing["declines"] == {"dispatch_mode_active": tracing["calls"]}
    assert cached["calls"] == 0, cached


def test_fake_tensor_mode_is_declined_and_counted(mesh_1d) -> None:
    """DTensor ops under FakeTensorMode (as in tracing) go to stock: same metadata,
    each call counted as dispatch_mode_active; a DTensor holding a fake local tensor,
    used outside the mode, is declined as non_plain_local_tensor."""
    def program() -> tuple[Any, ...]:
        with FakeTensorMode() as mode:
            local = mode.from_tensor(torch.randn(2, 16))
            x = DTensor.from_local(local, mesh_1d, [Shard(0)], run_check=False)
            w = DTensor.from_local(mode.from_tensor(torch.randn(16, 4)), mesh_1d, [Replicate()],
                                   run_check=False)
            inside = (x @ w).sum(0)
        outside = x.t()
        return inside, outside

    with torchshard.disabled():
        stock = program()
    torchshard.reset_stats()
    ours = program()
    stats = torchshard.stats()
    assert stats["native_calls"] == 0
    assert stats["declines"].get("dispatch_mode_active", 0) >= 2, stats["declines"]
    assert stats["declines"].get("non_plain_local_tensor") == 1, stats["declines"]
    assert stats["declined"] == stats["calls"]
    # Fake tensors hold no values; everything else is compared.
    assert_same_result(stock, ours, values=False)
