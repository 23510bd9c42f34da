"""The op cases of the dispatch suite: at least 20 ops, each under several placements
on a 1-D mesh of the whole world and on a 2-D mesh (2 x world/2).

A case is one DTensor call and the same call on the plain local tensors (the floor:
the math itself). Every tensor is 2-D with shapes divisible by the world size, so
shards are even; the values are seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Partial, Placement, Replicate, Shard, distribute_tensor
from torch.distributed.tensor import init_device_mesh


@dataclass
class Case:
    op: str  # the op family, e.g. "add"
    placements: str  # e.g. "S(0)+S(0)"
    mesh: str  # "1-D" or "2-D"
    run: Callable[[], object]  # the DTensor call
    run_plain: Callable[[], object]  # the same call on the local tensors

    @property
    def name(self) -> str:
        return f"{self.op} {self.placements} {self.mesh}"


def _local(value):
    if isinstance(value, DTensor):
        return value._local_tensor
    if isinstance(value, list):
        return [_local(item) for item in value]
    return value


def _short(placements: tuple[Placement, ...]) -> str:
    def one(placement: Placement) -> str:
        if isinstance(placement, Shard):
            return f"S({placement.dim})"
        return "R" if isinstance(placement, Replicate) else "P"

    return "".join(one(p) for p in placements)


def build_cases(world_size: int) -> list[Case]:
    torch.manual_seed(0)
    mesh_1d = init_device_mesh("cpu", (world_size,))
    mesh_2d = init_device_mesh("cpu", (2, world_size // 2))
    rows, cols = 8 * world_size, 64
    cases: list[Case] = []

    def add(op: str, placements: str, fn: Callable[..., object], *args, **kwargs) -> None:
        local_args = [_local(arg) for arg in args]
        cases.append(
            Case(op, placements, mesh_name, lambda: fn(*args, **kwargs), lambda: fn(*local_args, **kwargs))
        )

    for mesh, mesh_name in ((mesh_1d, "1-D"), (mesh_2d, "2-D")):
        def dt(shape, placements, dtype=torch.float32):
            tensor = torch.randn(*shape) if dtype.is_floating_point else torch.randint(0, 128, shape)
            return distribute_tensor(tensor, mesh, placements)

        if mesh_name == "1-D":
            layouts = [(Shard(0),), (Shard(1),), (Replicate(),)]
            colwise, partial = (Shard(1),), (Partial(),)
        else:
            layouts = [(Shard(0), Shard(1)), (Shard(0), Replicate()), (Replicate(), Shard(1))]
            colwise, partial = (Replicate(), Shard(1)), (Partial(), Partial())
        replicate = tuple(Replicate() for _ in range(mesh.ndim))
        row_sharded = layouts[0] if mesh_name == "1-D" else layouts[1]

        # Ops on one or two alike-placed tensors, under every layout.
        for layout in layouts:
            tag = _short(layout)
            x, y, out = dt((rows, cols), layout), dt((rows, cols), layout), dt((rows, cols), layout)
            add("add", f"{tag}+{_short(layout)}", torch.add, x, y)
            add("add(alpha=2) [kwarg]", tag, torch.add, x, y, alpha=2)
            add("mul(x, 2.5) [py scalar]", tag, torch.mul, x, 2.5)
            add("relu", tag, torch.relu, x)
            add("gelu(tanh)", tag, F.gelu, x, approximate="tanh")
            add("sum(dim=1)", tag, torch.sum, x, 1)
            add("softmax(dim=-1)", tag, torch.softmax, x, -1)
            add("clone", tag, torch.clone, x)
            add("detach [view]", tag, torch.detach, x)
            add("t [view]", tag, torch.t, x)
            add("cat(dim=1)", f"{tag}, {_short(layout)}", torch.cat, [x, y], 1)
            add("add_ [in-place]", tag, lambda a, b: a.add_(b, alpha=0.0), x, y)
            add("copy_ [in-place]", tag, lambda a, b: a.copy_(b), x, y)
            add("add(out=) [out variant]", tag, lambda a, b, o: torch.add(a, b, out=o), x, y, out)
            params = [dt((cols, cols), layout) for _ in range(8)]
            add("_foreach_add_ x8 [in-place]", tag, torch._foreach_add_, params, 0.0)

        row_tag = _short(row_sharded)
        x, y = dt((rows, cols), row_sharded), dt((rows, cols), row_sharded)
        weight, bias = dt((cols, cols), replicate), dt((cols,), replicate)
        add("view [view]", row_tag, lambda a: a.view(-1, 8, 8), x)
        add("expand [view]", _short(replicate), lambda b: b.expand(rows, cols), bias)
        add("layer_norm", row_tag, F.layer_norm, x, (cols,))
        add("mm", f"{row_tag} @ {_short(replicate)}", torch.mm, x, weight)
        add("mm (colwise)", f"{_short(replicate)} @ {_short(colwise)}", torch.mm,
            dt((rows, cols), replicate), dt((cols, cols), colwise))
        add("addmm", f"{_short(replicate)} + {row_tag} @ {_short(replicate)}", torch.addmm, bias, x, weight)
        table = dt((128, 32), replicate)
        ids = dt((rows, 4), row_sharded, dtype=torch.int64)
        add("embedding", f"{_short(replicate)} table, {_short(row_sharded)} ids", F.embedding,
            ids, table)
        p, q = dt((rows, cols), replicate), dt((rows, cols), replicate)
        p, q = (DTensor.from_local(t._local_tensor, mesh, partial) for t in (p, q))
        add("add", f"{_short(partial)}+{_short(partial)}", torch.add, p, q)
        add("sum(dim=1)", _short(partial), torch.sum, p, 1)
        add("sub (broadcast)", f"{row_tag}-{_short(replicate)}", torch.sub, x, bias)
        add("to(float64)", row_tag, lambda a: a.to(torch.float64), x)
        params = [dt((cols, cols), row_sharded) for _ in range(8)]
        add("_foreach_add x8", row_tag, torch._foreach_add, params, 1.0)
    return cases
