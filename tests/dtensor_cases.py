"""Inputs of differential tests: described once, built fresh for every run.

A case describes its arguments with specs:

* ``D(shape, placements, kind, grad, mesh)`` -- a DTensor;
* ``T(shape, kind, grad)`` -- a plain ``torch.Tensor``;
* ``L(items)`` -- a list argument (``Tensor[]``) of specs;
* anything else -- a Python value, passed as is.

``Inputs(specs, mesh)`` draws the global values once (seeded, in spec order) and
distributes them; ``fresh()`` hands every run new leaf tensors with those values, so
stock's run and torchshard's run never share a tensor (their in-place writes, version
counters and gradients stay apart).

Also here, for tests that need no specs: ``seeded_dtensor`` (one seeded DTensor),
``fresh_copy`` (a new leaf with a tensor's values and sharding) and
``placement_id``/``placements_id`` (``R``, ``P``, ``S0``: short names for test ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Placement, Replicate, Shard, distribute_tensor

__all__ = [
    "D",
    "Inputs",
    "L",
    "P",
    "R",
    "S0",
    "S1",
    "S2",
    "S3",
    "T",
    "fresh_copy",
    "placement_id",
    "placements_id",
    "seeded_dtensor",
    "values",
]

R, P = Replicate(), Partial()
S0, S1, S2, S3 = Shard(0), Shard(1), Shard(2), Shard(3)


def placement_id(p: Placement) -> str:
    """``R``, ``P``, ``S<dim>`` (test ids); any other placement as ``str`` gives it."""
    if isinstance(p, Replicate):
        return "R"
    if isinstance(p, Partial):
        return "P"
    if isinstance(p, Shard):
        return f"S{p.dim}"
    return str(p)


def placements_id(placements: Sequence[Placement]) -> str:
    """One placement per mesh dim, run together: ``(Shard(1), Partial())`` -> ``S1P``."""
    return "".join(placement_id(p) for p in placements)


def values(shape: tuple[int, ...], kind: str, gen: torch.Generator, high: int = 0) -> torch.Tensor:
    """Seeded global values of a kind: float (normal), positive (in [0.5, 1.5)), int (in
    [-20, 20)), uint8, bool, index (in [0, high))."""
    if kind == "float":
        return torch.randn(shape, generator=gen)
    if kind == "positive":
        return torch.rand(shape, generator=gen) + 0.5
    if kind == "int":
        return torch.randint(-20, 20, shape, generator=gen)
    if kind == "uint8":
        return torch.randint(0, 250, shape, generator=gen, dtype=torch.uint8)
    if kind == "bool":
        return torch.rand(shape, generator=gen) > 0.5
    if kind == "index":
        return torch.randint(0, high, shape, generator=gen)
    raise ValueError(kind)


def seeded_dtensor(mesh: DeviceMesh, shape: tuple[int, ...] = (8, 8),
                   placements: Sequence[Placement] = (S0,), *, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> DTensor:
    """A DTensor of seeded values: normal for floating dtypes, else integers in [-5, 5).

    ``distribute_tensor`` works on the plain global tensor and dispatches no DTensor op,
    so it needs no ``torchshard.disabled()`` (toggling would also clear the caches).
    """
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        data = torch.randn(*shape, generator=gen, dtype=dtype)
    else:
        data = torch.randint(-5, 5, shape, generator=gen, dtype=dtype)
    return distribute_tensor(data, mesh, list(placements))


def fresh_copy(t: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    """A new leaf with ``t``'s values; a DTensor keeps its mesh, placements, shape and stride."""
    if isinstance(t, DTensor):
        copy = DTensor.from_local(t._local_tensor.clone(), t.device_mesh, t.placements,
                                  run_check=False, shape=t.shape, stride=t.stride())
    else:
        copy = t.clone()
    return copy.requires_grad_() if requires_grad else copy


@dataclass(frozen=True)
class D:
    """A DTensor input: global shape, placements (one per mesh dim), value kind.

    ``mesh``: None for the case's mesh, else a key of the ``meshes`` given to ``Inputs``.
    ``high``: the exclusive bound of ``index`` values.
    """

    shape: tuple[int, ...]
    placements: tuple[Placement, ...] = (R,)
    kind: str = "float"  # a kind of values(): float | positive | int | uint8 | bool | index
    grad: bool = False
    mesh: str | None = None
    high: int = 0


@dataclass(frozen=True)
class T:
    """A plain torch.Tensor input."""

    shape: tuple[int, ...]
    kind: str = "float"
    grad: bool = False
    high: int = 0


@dataclass(frozen=True)
class L:
    """A list of inputs (a Tensor[] argument)."""

    items: tuple[Any, ...]


class Inputs:
    """The bases of a case, built once (distribute_tensor); ``fresh()`` copies them."""

    def __init__(self, specs: Sequence[Any], mesh: DeviceMesh | None,
                 meshes: dict[str, DeviceMesh] | None = None, seed: int = 0) -> None:
        self._gen = torch.Generator().manual_seed(seed)
        self._mesh = mesh
        self._meshes = meshes or {}
        self._bases = [self._base(s) for s in specs]

    def _base(self, spec: Any) -> Any:
        if isinstance(spec, D):
            mesh = self._mesh if spec.mesh is None else self._meshes[spec.mesh]
            assert mesh is not None and len(spec.placements) == mesh.ndim, (spec, mesh)
            return (spec, distribute_tensor(values(spec.shape, spec.kind, self._gen, spec.high),
                                            mesh, list(spec.placements)))
        if isinstance(spec, T):
            return (spec, values(spec.shape, spec.kind, self._gen, spec.high))
        if isinstance(spec, L):
            return (spec, [self._base(item) for item in spec.items])
        return (None, spec)  # a Python value, passed as is

    def _fresh(self, base: Any) -> Any:
        spec, value = base
        if isinstance(spec, (D, T)):
            return fresh_copy(value, spec.grad)
        if isinstance(spec, L):
            return [self._fresh(item) for item in value]
        return value

    def fresh(self) -> list[Any]:
        return [self._fresh(b) for b in self._bases]
