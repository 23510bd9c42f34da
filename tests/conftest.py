"""Shared fixtures for torchshard's tests.

Kept deliberately small so every test file can use it:

* ``fake_pg``  -- a session-wide fake process group (rank 0 of 4). Collectives are
  no-ops on it, so only *local* tensors hold meaningful values.
* ``mesh_1d`` -- a 1-D ``DeviceMesh`` of 4 CPU ranks.
* ``mesh_2d`` -- a 2-D ``DeviceMesh`` of shape (2, 2).
* ``mesh``    -- the 1-D mesh, for tests that only need one.
* ``clean_stock_sharding_cache`` -- autouse: empties stock's built-in DTensor cache.
* ``fresh_torchshard`` -- enabled, empty caches, zero counters; asserts the test left
  torchshard enabled. Opt in with ``pytestmark = pytest.mark.usefixtures(...)``.

Importing this module imports ``torchshard``, which enables the native path, and puts
the checkout's ``benchmarks/`` folder on ``sys.path``: tests import the benchmark
modules (``workloads``, ``variants``, ...) by their names, as the scripts there do.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore

import torchshard  # registers the native DTensor rules
from torchshard._native import _C

# Tests miss on purpose all the time (cold caches, new shapes): the once-per-process
# silent-miss warning stays quiet, except where test_shape_generic.py arms it.
_C.set_miss_alarm_armed(False)

WORLD_SIZE = 4
BENCHMARKS_DIR = str(Path(__file__).resolve().parent.parent / "benchmarks")
if BENCHMARKS_DIR not in sys.path:
    sys.path.append(BENCHMARKS_DIR)  # after tests/ and the packages, so no name there is shadowed


@pytest.fixture(scope="session")
def fake_pg() -> Iterator[None]:
    """A fake process group of world size 4 (this process is rank 0) for the session."""
    created = False
    if not dist.is_initialized():
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=WORLD_SIZE)
        created = True
    yield
    if created and dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture(scope="session")
def mesh_1d(fake_pg: None) -> DeviceMesh:
    """A 1-D CPU mesh of 4 ranks on the fake process group."""
    return init_device_mesh("cpu", (WORLD_SIZE,))


@pytest.fixture(scope="session")
def mesh_2d(fake_pg: None) -> DeviceMesh:
    """A 2-D (2, 2) CPU mesh on the fake process group."""
    return init_device_mesh("cpu", (2, 2))


@pytest.fixture
def mesh(mesh_1d: DeviceMesh) -> DeviceMesh:
    """The shared 1-D mesh of 4 ranks."""
    return mesh_1d


@pytest.fixture(autouse=True)
def clean_stock_sharding_cache() -> None:
    """Every test's stock references start from an empty built-in DTensor cache.

    Stock's key ignores keyword values DTensor's schema info does not name, so an entry
    left by an earlier test (``x.sum(1, dtype=torch.float64)``) would hand a later stock
    ``x.sum(1)`` a stale float64 spec (a stock bug torchshard does not copy; see
    docs/design.md).
    """
    torch._C._clear_DTensor_sharding_propagator_cache()


@pytest.fixture
def fresh_torchshard() -> Iterator[None]:
    """Each test starts enabled, with empty caches and zero counters."""
    assert torchshard.is_enabled()
    torchshard.clear_cache()
    torchshard.reset_stats()
    yield
    assert torchshard.is_enabled(), "a test left torchshard disabled"
