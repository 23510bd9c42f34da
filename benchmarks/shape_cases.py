"""The op cases of the shapes suite: one DTensor call each, rebuilt at any size of one size class.

A shape-generic decision (docs/design.md, "Shape-generic decisions") is keyed by size
classes: a size up to the mesh size P is its own class, a larger one is classed by
its value modulo P. Every case here draws each varying size from one residue modulo P
(above P), so all of its calls fall in one class and a call at a size never seen
before is served by the decision the case's warm-up made; :class:`FreshSizes` hands
out each size tuple once, so no timed call repeats a shape either side has seen.

A case is built at given sizes into the DTensor call and the same call on the plain
local tensors (the floor: the math itself). Values are seeded by the sizes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor
from torch.distributed.tensor import init_device_mesh

from cases import _local, _short

Sizes = tuple[int, ...]


@dataclass(frozen=True)
class ShapeCase:
    op: str  # e.g. "add"
    placements: str  # e.g. "S(0)+S(0)"
    mesh: str  # "1-D" or "2-D"
    varying: int  # how many sizes change from call to call
    mesh_size: int  # P: the size classes are residues modulo P
    build: Callable[[Sizes], tuple[Callable[[], object], Callable[[], object]]]  # sizes -> (call, plain)

    @property
    def name(self) -> str:
        return f"{self.op} {self.placements} {self.mesh}"


# The largest fixed size any case uses (a size it does not vary).
LARGEST_FIXED_SIZE = 64


class FreshSizes:
    """Size tuples of one size class, each handed out once, in a seeded random order.

    Varying dimension i takes `span` sizes above the mesh size P, all of one residue
    modulo P: 0 for the first (shards are even), P/2 for the second (even over any
    mesh dimension of 2), so the two never coincide; the first starts above every
    fixed size of the cases, which are multiples of P. No varying size ever equals
    another size of the call: a size argument equal to some dimension is keyed as a
    reference to the first such dimension (shape_generic decision keys), so a
    coincidence would make a second decision key, not a new size. Running out
    raises, so a timed call can never silently reuse a shape.
    """

    def __init__(self, varying: int, mesh_size: int, span: int, seed: int = 0) -> None:
        def sizes(dim: int) -> list[int]:
            residue = dim * mesh_size // 2 % mesh_size
            first = LARGEST_FIXED_SIZE // mesh_size + 1 if dim == 0 else 2
            return [mesh_size * k + residue for k in range(first, first + span)]

        combos = list(itertools.product(*(sizes(dim) for dim in range(varying))))
        random.Random(seed).shuffle(combos)
        self._sizes: Iterator[Sizes] = iter(combos)
        self.available = len(combos)

    def take(self) -> Sizes:
        sizes = next(self._sizes, None)
        if sizes is None:
            raise RuntimeError("FreshSizes ran out of unseen sizes; raise its span")
        return sizes


def span_for(varying: int, needed: int) -> int:
    """The multiples per varying dimension that give at least `needed` size tuples."""
    span = 1
    while span**varying < needed:
        span += 1
    return span


def build_shape_cases(world_size: int) -> list[ShapeCase]:
    mesh_1d = init_device_mesh("cpu", (world_size,))
    mesh_2d = init_device_mesh("cpu", (2, world_size // 2))
    cases: list[ShapeCase] = []

    def dt(mesh: DeviceMesh, sizes: Sizes, placements: tuple[Placement, ...], seed: int) -> DTensor:
        generator = torch.Generator().manual_seed(hash((sizes, seed)) % (2**31))
        return distribute_tensor(torch.randn(*sizes, generator=generator), mesh, placements)

    def add(op: str, placements: str, mesh: DeviceMesh, mesh_name: str, varying: int,
            fn: Callable[..., object], inputs: Callable[[Sizes], list[object]], **kwargs) -> None:
        def build(sizes: Sizes) -> tuple[Callable[[], object], Callable[[], object]]:
            args = inputs(sizes)
            local_args = [_local(arg) for arg in args]
            return lambda: fn(*args, **kwargs), lambda: fn(*local_args, **kwargs)

        cases.append(ShapeCase(op, placements, mesh_name, varying, mesh.size(), build))

    m = mesh_1d
    s0 = (Shard(0),)
    r = (Replicate(),)
    add("add", "S(0)+S(0)", m, "1-D", 2, torch.add,
        lambda s: [dt(m, s, s0, 0), dt(m, s, s0, 1)])
    add("relu", "S(0)", m, "1-D", 2, torch.relu, lambda s: [dt(m, s, s0, 0)])
    # view to (rows, 8, 8): rows equals the input's dim 0, so the decision key holds a
    # reference to that dim, not the number; the other sizes stay fixed. Sharded, stock
    # rewrites the size argument to local sizes: a plan that reads sizes, never reused
    # (docs/design.md); replicated, it is.
    for tag, layout in (("S(0)", s0), ("R", r)):
        add("view [view]", tag, m, "1-D", 1, lambda x: x.view(x.shape[0], 8, 8),
            lambda s, layout=layout: [dt(m, (s[0], 64), layout, 0)])
    add("softmax(dim=-1)", "S(0)", m, "1-D", 2, torch.softmax, lambda s: [dt(m, s, s0, 0), -1])
    add("sum(dim=1)", "S(0)", m, "1-D", 2, torch.sum, lambda s: [dt(m, s, s0, 0), 1])
    add("mm", "S(0) @ R", m, "1-D", 2, torch.mm,
        lambda s: [dt(m, (s[0], 8), s0, 0), dt(m, (8, s[1]), r, 1)])
    add("bmm", "S(0) @ S(0)", m, "1-D", 2, torch.bmm,
        lambda s: [dt(m, (m.size(), s[0], 4), s0, 0), dt(m, (m.size(), 4, s[1]), s0, 1)])
    add("cat(dim=1)", "S(0), S(0)", m, "1-D", 2, torch.cat,
        lambda s: [[dt(m, s, s0, 0), dt(m, s, s0, 1)], 1])
    add("layer_norm", "S(0)", m, "1-D", 2, lambda x: F.layer_norm(x, (x.shape[1],)),
        lambda s: [dt(m, s, s0, 0)])
    add("transpose(0, 1) [view]", "S(0)", m, "1-D", 2, lambda x: x.transpose(0, 1),
        lambda s: [dt(m, s, s0, 0)])

    m2 = mesh_2d
    s01 = (Shard(0), Shard(1))
    add("add", f"{_short(s01)}+{_short(s01)}", m2, "2-D", 2, torch.add,
        lambda s: [dt(m2, s, s01, 0), dt(m2, s, s01, 1)])
    row, col = (Shard(0), Replicate()), (Replicate(), Shard(1))
    add("mm", f"{_short(row)} @ {_short(col)}", m2, "2-D", 2, torch.mm,
        lambda s: [dt(m2, (s[0], 8), row, 0), dt(m2, (8, s[1]), col, 1)])
    return cases
