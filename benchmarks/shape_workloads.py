"""Workloads whose shapes change every step, for the shapes suite (shapes.py).

- :class:`DecodeAttention`: tensor-parallel attention decoding one token per step
  (heads sharded: ``Shard(0)`` on the head dim) with a KV cache that grows by that
  token: two ``cat`` (append K and V), two ``bmm`` (q @ K^T, probs @ V) and one
  ``softmax`` per step, every one at a length the step has not seen before;
- :func:`build_varlen_block`: the tensor-parallel transformer block of workloads.py
  (``tp_block``: Colwise/Rowwise Linear, sequence-parallel LayerNorm, attention)
  trained with a sequence length drawn each step (:class:`VarlenInputs`);
- :func:`build_moe`: an MoE-like layer, tokens routed top-1 to a few experts, each
  expert a tensor-parallel MLP (Colwise w1, Rowwise w2) fed however many tokens the
  router sent it this step.

The process group must be initialised by the caller.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Shard

import workloads


@dataclass(frozen=True)
class DecodeShapes:
    heads: int = 8  # over the mesh: heads / P per rank
    head_dim: int = 16
    prompt: int = 32  # the KV cache's length before the first decoded token


class DecodeAttention:
    """One sequence's decode state. K is cached transposed, (heads, head_dim, length),
    so that q @ K^T is a ``bmm`` on the cache itself; V as (heads, length, head_dim)."""

    def __init__(self, mesh: DeviceMesh, shapes: DecodeShapes, seed: int = 0) -> None:
        self.mesh = mesh
        self.shapes = shapes
        generator = torch.Generator().manual_seed(seed)
        h, d, t = shapes.heads, shapes.head_dim, shapes.prompt
        self.k_cache_t = self._shard(torch.randn(h, d, t, generator=generator))
        self.v_cache = self._shard(torch.randn(h, t, d, generator=generator))

    def _shard(self, global_tensor: torch.Tensor) -> DTensor:
        local = global_tensor.tensor_split(self.mesh.size(), dim=0)[self.mesh.get_local_rank()]
        return DTensor.from_local(local.contiguous(), self.mesh, [Shard(0)], run_check=False)

    @property
    def length(self) -> int:
        return self.v_cache.shape[1]

    def token(self, step: int) -> tuple[DTensor, DTensor, DTensor]:
        """The new token's q, k^T and v (what the projections would give), seeded by step."""
        generator = torch.Generator().manual_seed(step)
        h, d = self.shapes.heads, self.shapes.head_dim
        q, k_t, v = (torch.randn(*shape, generator=generator) for shape in ((h, 1, d), (h, d, 1), (h, 1, d)))
        return self._shard(q), self._shard(k_t), self._shard(v)

    def step(self, q: DTensor, k_t: DTensor, v: DTensor) -> DTensor:
        self.k_cache_t, self.v_cache, out = attend(self.k_cache_t, self.v_cache, q, k_t, v)
        return out


def attend(k_cache_t: DTensor, v_cache: DTensor, q: DTensor, k_t: DTensor,
           v: DTensor) -> tuple[DTensor, DTensor, DTensor]:
    """One decode step: the caches with the new token appended, and the attention output."""
    k_cache_t = torch.cat([k_cache_t, k_t], dim=2)
    v_cache = torch.cat([v_cache, v], dim=1)
    probs = torch.softmax(torch.bmm(q, k_cache_t), dim=-1)
    return k_cache_t, v_cache, torch.bmm(probs, v_cache)


class VarlenInputs:
    """A tp_block input per step, of a sequence length drawn for that step.

    The lengths are drawn without replacement (a seeded shuffle of ``count``
    lengths), so every step index has a length no other step has: each step is new
    to every cache, the case shape-generic decisions are for. ``tp_block`` is
    sequence parallel: a rank's input holds ``length / P`` positions.
    """

    def __init__(self, shapes: workloads.Shapes, world: int, count: int, seed: int = 0) -> None:
        self.shapes = shapes
        self.local_lengths = list(range(2, 2 + count))
        random.Random(seed).shuffle(self.local_lengths)
        self.world = world

    def global_length(self, step: int) -> int:
        return self.local_lengths[step] * self.world

    def __call__(self, step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(step)
        return torch.randn(self.shapes.batch, self.local_lengths[step], self.shapes.dim, generator=generator)


def build_varlen_block(steps: int, seed: int = 0) -> workloads.Workload:
    """workloads.py's tp_block (small shapes, foreach AdamW) fed :class:`VarlenInputs`
    for step indices 0 .. steps - 1."""
    workload = workloads.build("tp_block", workloads.SMALL, optimizer="foreach", seed=seed)
    world = torch.distributed.get_world_size()
    workload.make_input = VarlenInputs(workloads.SMALL, world, steps, seed)
    return workload


@dataclass(frozen=True)
class MoEShapes:
    experts: int = 4
    tokens: int = 256  # per step, over all experts
    dim: int = 64
    hidden: int = 256


class MoE(nn.Module):
    """Top-1 routing by a fixed random projection, then one TP MLP per expert.

    Tokens are sorted by expert and split by the per-expert counts, so each expert's
    DTensor ops see (count, dim) activations, count changing every step; experts that
    got no token are skipped. The outputs go back to the tokens' order.
    """

    def __init__(self, shapes: MoEShapes, mesh: DeviceMesh) -> None:
        super().__init__()
        self.experts = nn.ModuleList(workloads.MLP(shapes.dim, shapes.hidden) for _ in range(shapes.experts))
        for expert in self.experts:
            workloads._tp_mlp(expert, mesh)
        self.register_buffer("router", torch.randn(shapes.dim, shapes.experts))

    def route(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each token's expert."""
        return (tokens @ self.router).argmax(dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        choice = self.route(tokens)
        order = torch.argsort(choice, stable=True)
        counts = torch.bincount(choice, minlength=len(self.experts)).tolist()
        chunks = tokens[order].split(counts)
        outputs = [expert(chunk) for expert, chunk, count in zip(self.experts, chunks, counts) if count]
        routed = torch.cat(outputs)
        return routed[torch.argsort(order)]


class MoEInputs:
    """A step's tokens: noise plus a per-step offset, so the router's load over the
    experts (the tokens per expert) shifts from step to step."""

    def __init__(self, shapes: MoEShapes) -> None:
        self.shapes = shapes

    def __call__(self, step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(step)
        offset = 2.0 * torch.randn(self.shapes.dim, generator=generator)
        return torch.randn(self.shapes.tokens, self.shapes.dim, generator=generator) + offset


def build_moe(shapes: MoEShapes = MoEShapes(), seed: int = 0) -> workloads.Workload:
    torch.manual_seed(seed)
    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    model = MoE(shapes, mesh)
    return workloads.Workload("moe", model, workloads._optimizer(model, "foreach"), MoEInputs(shapes))
