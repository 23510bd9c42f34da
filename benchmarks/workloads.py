"""Training-step workloads over DTensor: tensor parallel, FSDP2, and both on a 2-D mesh.

Each workload builds a small model, parallelizes it the way production code does
(``parallelize_module`` with Colwise/Rowwise/SequenceParallel, ``fully_shard``), and
runs full training steps: forward, backward, ``AdamW.step()`` (foreach or fused) and
``zero_grad()``. ``python3 benchmarks/run.py training`` times them and reports the native
fraction; ``tests/test_workloads.py`` checks that torchshard leaves their loss curves
bit-identical and serves at least 99% of their DTensor calls natively.

The process group must be initialised by the caller (``fake`` for coverage and
speed, gloo for values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

__all__ = ["MEDIUM", "SMALL", "WORKLOADS", "Shapes", "Workload", "build"]


@dataclass(frozen=True)
class Shapes:
    batch: int
    seq: int
    dim: int
    heads: int
    hidden: int


# Small shapes keep the step CPU-overhead bound (dispatch dominates); medium ones
# give the kernels real work.
SMALL = Shapes(batch=2, seq=16, dim=64, heads=8, hidden=256)
MEDIUM = Shapes(batch=4, seq=64, dim=256, heads=8, hidden=1024)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        # Under tensor parallelism wq/wk/wv return this rank's heads as local
        # tensors, so the head count here is the local one (-1).
        q, k, v = (w(x).view(batch, seq, -1, self.head_dim(x)).transpose(1, 2)
                   for w in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))

    def head_dim(self, x: torch.Tensor) -> int:
        return self.wq.in_features // self.heads


class Block(nn.Module):
    """A pre-norm transformer block: attention and MLP, each behind a LayerNorm."""

    def __init__(self, shapes: Shapes) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(shapes.dim)
        self.attention = Attention(shapes.dim, shapes.heads)
        self.ffn_norm = nn.LayerNorm(shapes.dim)
        self.feed_forward = MLP(shapes.dim, shapes.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, shapes: Shapes, layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(shapes) for _ in range(layers))
        self.norm = nn.LayerNorm(shapes.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def _tp_mlp(model: MLP, mesh: DeviceMesh) -> None:
    parallelize_module(model, mesh, {"w1": ColwiseParallel(), "w2": RowwiseParallel()})


def _tp_block(block: Block, mesh: DeviceMesh) -> None:
    # Megatron-style TP with sequence parallelism around the norms (the layout
    # torchtitan uses): activations are sharded on the sequence dim between blocks.
    parallelize_module(block, mesh, {
        "attention_norm": SequenceParallel(),
        "attention": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
    })


@dataclass
class Workload:
    """A model ready to train, and how to make one step's input."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    make_input: Callable[[int], torch.Tensor]

    def step(self, step: int) -> torch.Tensor:
        """One training step; returns the loss (a detached plain tensor)."""
        # A warm-up schedule: the learning rate changes every step, as in real runs.
        for group in self.optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 10)
        out = self.model(self.make_input(step))
        if hasattr(out, "full_tensor"):
            out = out.full_tensor()
        loss = out.float().pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


def _input_maker(
    shapes: Shapes, seq: int, seed: int, per_rank: bool
) -> Callable[[int], torch.Tensor]:
    """Step inputs: the same on every rank (``per_rank=False``, a replicated input) or
    each rank's own slice of the data (sequence or batch parallel), so that reductions
    over ranks combine different values."""
    rank = torch.distributed.get_rank() if per_rank else 0

    def make_input(step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((seed * 1000 + step) * 1009 + rank)
        return torch.randn(shapes.batch, seq, shapes.dim, generator=generator)

    return make_input


def _optimizer(model: nn.Module, variant: str) -> torch.optim.Optimizer:
    flags = {"foreach": {"foreach": True}, "fused": {"fused": True},
             "for-loop": {"foreach": False}}[variant]
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **flags)


def build(name: str, shapes: Shapes = SMALL, optimizer: str = "foreach", seed: int = 0) -> Workload:
    """Build workload ``name`` (see WORKLOADS) on the current process group."""
    world = torch.distributed.get_world_size()
    torch.manual_seed(seed)
    if name == "tp_mlp":
        mesh = init_device_mesh("cpu", (world,))
        model: nn.Module = MLP(shapes.dim, shapes.hidden)
        _tp_mlp(model, mesh)
        make_input = _input_maker(shapes, shapes.seq, seed, per_rank=False)
    elif name == "tp_block":
        mesh = init_device_mesh("cpu", (world,))
        model = Block(shapes)
        _tp_block(model, mesh)
        # Sequence parallel: each rank feeds its own slice of the sequence.
        make_input = _input_maker(shapes, shapes.seq // world, seed, per_rank=True)
    elif name == "fsdp":
        mesh = init_device_mesh("cpu", (world,))
        model = Transformer(shapes)
        for layer in model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        make_input = _input_maker(shapes, shapes.seq, seed, per_rank=True)
    elif name == "fsdp_tp":
        if world % 2:
            raise ValueError("fsdp_tp needs an even world size")
        mesh_2d = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
        model = Transformer(shapes)
        for layer in model.layers:
            _tp_block(layer, mesh_2d["tp"])
            fully_shard(layer, mesh=mesh_2d["dp"])
        parallelize_module(model, mesh_2d["tp"], {"norm": SequenceParallel()})
        fully_shard(model, mesh=mesh_2d["dp"])
        make_input = _input_maker(shapes, shapes.seq // (world // 2), seed, per_rank=True)
    else:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    return Workload(name, model, _optimizer(model, optimizer), make_input)


WORKLOADS = ("tp_mlp", "tp_block", "fsdp", "fsdp_tp")
