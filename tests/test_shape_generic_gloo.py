"""Shape-generic decisions with real values: a variable-length TP block on gloo ranks.

Each of 10 training steps feeds a new sequence length (drawn from a seeded RNG; lengths
not divisible by the world size included), so every step's activations have global
shapes no earlier step had: with shape-generic decisions on, torchshard serves those
calls from decisions made for other lengths of the same size class, without stock's
propagation. The block is Megatron-style tensor parallelism with sequence parallelism
around the norm: LayerNorm on a sequence-sharded (uneven) input, column-wise q/k/v
projections whose DTensor outputs are split into heads (sharded over heads), a softmax
attention written out as matmuls (so the scores, the softmax and the weighted sum are
DTensor calls), a row-wise output projection reduce-scattered back to the sequence,
an MLP, and AdamW (foreach).

Every rank trains the block twice from the same seed, with torchshard disabled (stock
DTensor) and enabled, with ``TORCHSHARD_VERIFY_DECISIONS=never`` so that no reused
decision is rescued by checking it against stock. Losses and every parameter must be
bit-identical (``torch.equal``), and the torchshard run must have served calls from
decisions (``stats()["decision_hits"] > 0``): otherwise it compared the exact cache only.
"""

from __future__ import annotations

import functools
import random
import sys

import pytest
import torch
from gloo_ranks import gloo_group, run_ranks_with_rendezvous

pytestmark = pytest.mark.multiprocess

STEPS = 10
BATCH, DIM, HEADS, HIDDEN = 2, 16, 4, 32
LENGTHS = range(3, 40)  # sizes below, at and past every world size, odd and even
TIMEOUT_S = 180


def step_lengths(seed: int) -> list[int]:
    """STEPS distinct sequence lengths, the same on every rank."""
    return random.Random(seed).sample(LENGTHS, STEPS)


def _block_and_optimizer(mesh, seed: int):
    from torch import nn
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    class VarLenBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(DIM)
            self.wq, self.wk, self.wv = (nn.Linear(DIM, DIM) for _ in range(3))
            self.wo = nn.Linear(DIM, DIM)
            self.ffn_norm = nn.LayerNorm(DIM)
            self.w1 = nn.Linear(DIM, HIDDEN)
            self.w2 = nn.Linear(HIDDEN, DIM)

        def heads(self, t):
            # (B, L, D) sharded on D -> (B, H, L, D/H) sharded on H
            return t.view(t.shape[0], t.shape[1], HEADS, DIM // HEADS).transpose(1, 2)

        def forward(self, x):
            batch, seq = x.shape[0], x.shape[1]
            h = self.norm(x).redistribute(placements=[Replicate()])
            q, k, v = (self.heads(w(h)) for w in (self.wq, self.wk, self.wv))
            scores = torch.matmul(q, k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5
            attended = torch.matmul(torch.softmax(scores, dim=-1), v)
            x = x + self.wo(attended.transpose(1, 2).reshape(batch, seq, DIM))
            h = self.ffn_norm(x).redistribute(placements=[Replicate()])
            return x + self.w2(torch.nn.functional.gelu(self.w1(h)))

    torch.manual_seed(seed)
    block = VarLenBlock()
    keep = {"use_local_output": False}
    parallelize_module(block, mesh, {
        "norm": SequenceParallel(),
        "ffn_norm": SequenceParallel(),
        "wq": ColwiseParallel(**keep), "wk": ColwiseParallel(**keep), "wv": ColwiseParallel(**keep),
        "wo": RowwiseParallel(input_layouts=Shard(-1), output_layouts=Shard(1), **keep),
        "w1": ColwiseParallel(**keep),
        "w2": RowwiseParallel(output_layouts=Shard(1), **keep),
    })
    optimizer = torch.optim.AdamW(block.parameters(), lr=1e-2, weight_decay=0.01, foreach=True)
    return block, optimizer


def train(mesh, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """STEPS steps, each on a new sequence length; the losses and the final parameters
    (full values)."""
    from torch.distributed.tensor import Shard, distribute_tensor

    block, optimizer = _block_and_optimizer(mesh, seed)
    losses = []
    for step, length in enumerate(step_lengths(seed)):
        data = torch.randn(BATCH, length, DIM, generator=torch.Generator().manual_seed(step))
        x = distribute_tensor(data, mesh, [Shard(1)])  # uneven shards when world ∤ length
        loss = block(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach().full_tensor())
    return losses, [p.detach().full_tensor() for p in block.parameters()]


def _worker(rank: int, init_method: str, tests_dir: str, *, world: int) -> None:
    sys.path.insert(0, tests_dir)
    torch.set_num_threads(1)
    with gloo_group(init_method, rank, world, timeout_s=60):
        from torch.distributed.device_mesh import init_device_mesh

        import torchshard

        assert torchshard.decision_verification() == "never"  # from the environment
        assert torchshard.shape_generic()
        mesh = init_device_mesh("cpu", (world,))
        with torchshard.disabled():
            stock_losses, stock_params = train(mesh, seed=world)
        torchshard.clear_cache()
        torchshard.reset_stats()
        ours_losses, ours_params = train(mesh, seed=world)
        stats = torchshard.stats()

        assert len(set(float(x) for x in stock_losses)) == STEPS, stock_losses
        differ = [i for i, (s, o) in enumerate(zip(stock_losses, ours_losses)) if not torch.equal(s, o)]
        assert not differ, f"rank {rank}: losses differ at steps {differ}: {stock_losses} vs {ours_losses}"
        assert len(stock_params) == len(ours_params) > 0
        differ = [i for i, (s, o) in enumerate(zip(stock_params, ours_params)) if not torch.equal(s, o)]
        assert not differ, f"rank {rank}: parameters {differ} differ"
        # The new lengths were served from decisions, none checked against stock.
        assert stats["decision_hits"] > 0, stats
        assert stats["miss_reasons"].get("verification", 0) == 0, stats


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_variable_length_tp_training_bit_identical(world: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards shape-generic decisions on real collectives: 10 AdamW steps of a TP block,
    a new sequence length each, bitwise equal losses and parameters, stock vs torchshard,
    with decisions reused unverified."""
    assert len(set(step_lengths(world))) == STEPS
    assert any(length % world for length in step_lengths(world))
    monkeypatch.setenv("TORCHSHARD_VERIFY_DECISIONS", "never")  # read by the spawned ranks
    monkeypatch.delenv("TORCHSHARD_SHAPE_GENERIC", raising=False)
    run_ranks_with_rendezvous(functools.partial(_worker, world=world), world, TIMEOUT_S)
