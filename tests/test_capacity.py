"""The per-thread cache at and around its capacity.

* **Eviction policy, "flush when full"** (csrc/core/bounded_cache.h): inserting into a
  cache that holds ``capacity`` entries first drops all of them. A reference model of
  that policy follows a seeded random sequence of calls, and after every call the
  thread's ``entries``, ``evictions``, ``hits`` and ``misses`` must equal the model's;
  entries never exceed the capacity, and every result equals stock's.
* **Capacity 0**: every op kind (functional, view, in-place, ``out=``, list ops,
  redistribution, autograd) declines to stock as ``cache_disabled`` with stock's result,
  aliasing included, and nothing is cached.
* **Long lists**: keys of calls with 64 and more list items (``cat`` of 70 and 200
  DTensors, ``_foreach_*`` over 100) hit on repeat, and differ when only the list length
  or only the placement of an item past the 64th differs.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
import torch
from torch.distributed.tensor import Partial, Replicate, Shard

import torchshard
from dtensor_cases import seeded_dtensor
from dtensor_compare import assert_same_result

pytestmark = pytest.mark.usefixtures("fresh_torchshard")


@pytest.fixture
def capacity_restored() -> Iterator[None]:
    capacity = torchshard.cache_capacity()
    yield
    torchshard.set_cache_capacity(capacity)


def _my_counters() -> dict:
    return torchshard.stats()["threads"][threading.get_ident()]


class FlushWhenFullModel:
    """The documented policy, restated: a set of keys that empties when an insert finds
    it full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: set[int] = set()
        self.hits = self.misses = self.evictions = 0

    def call(self, key: int) -> None:
        if key in self.keys:
            self.hits += 1
            return
        self.misses += 1
        if len(self.keys) >= self.capacity:
            self.evictions += len(self.keys)
            self.keys.clear()
        self.keys.add(key)

    def counters(self) -> dict:
        return {"entries": len(self.keys), "evictions": self.evictions, "hits": self.hits,
                "misses": self.misses}


@pytest.mark.parametrize("capacity", [1, 4, 7])
def test_flush_when_full_matches_the_documented_policy(mesh_1d, capacity, capacity_restored):
    """Guards the eviction policy: after each of 150 random calls over 12 distinct keys
    the counters equal the flush-when-full model's, entries <= capacity, results = stock."""
    inputs = [seeded_dtensor(mesh_1d, (4 + n, 8), [Shard(0)], seed=n) for n in range(12)]
    with torchshard.disabled():
        expected = [t + t for t in inputs]
    torchshard.set_cache_capacity(capacity)
    torchshard.clear_cache()
    torchshard.reset_stats()
    model = FlushWhenFullModel(capacity)
    rng = random.Random(capacity)
    # Mostly a small working set that fits, with excursions that overflow it.
    for step in range(150):
        key = rng.randrange(capacity) if rng.random() < 0.7 else rng.randrange(len(inputs))
        result = inputs[key] + inputs[key]
        model.call(key)
        assert_same_result(expected[key], result, path=f"step{step}")
        mine = _my_counters()
        # An exact miss either reused a shape-generic decision or propagated.
        mine = {**mine, "misses": mine["misses"] + mine["decision_hits"]}
        assert {name: mine[name] for name in model.counters()} == model.counters(), step
        assert mine["entries"] <= capacity
    assert model.evictions > 0 and model.hits > 0


def test_working_set_that_fits_is_never_flushed(mesh_1d, capacity_restored):
    """Guards the other half of the policy: a working set of exactly ``capacity`` keys
    misses once per key and then only hits; one key more flushes everything once."""
    inputs = [seeded_dtensor(mesh_1d, (4 + n, 8), [Shard(1)], seed=n) for n in range(6)]
    torchshard.set_cache_capacity(5)
    torchshard.clear_cache()
    torchshard.reset_stats()
    for _ in range(20):
        for t in inputs[:5]:
            t.sum(dim=0)
    assert {k: _my_counters()[k] for k in ("entries", "evictions", "misses", "hits")} == {
        "entries": 5, "evictions": 0, "misses": 5, "hits": 95}
    inputs[5].sum(dim=0)
    assert {k: _my_counters()[k] for k in ("entries", "evictions", "misses")} == {
        "entries": 1, "evictions": 5, "misses": 6}


def _every_op_kind(mesh_1d, mesh_2d):
    """One call per op kind; each builds fresh inputs, so in-place runs compare alike."""
    def inputs():
        return {
            "x": seeded_dtensor(mesh_1d, (8, 6), [Shard(0)], seed=1),
            "y": seeded_dtensor(mesh_1d, (8, 6), [Shard(1)], seed=2),
            "p": seeded_dtensor(mesh_1d, (8, 6), [Partial()], seed=3),
            "w": seeded_dtensor(mesh_1d, (6, 4), [Replicate()], seed=4),
            "u": seeded_dtensor(mesh_2d, (5, 6), [Shard(0), Shard(1)], seed=5),
            "g": seeded_dtensor(mesh_1d, (8, 6), [Shard(0)], seed=6).requires_grad_(),
        }

    return inputs, {
        "functional": lambda v: torch.relu(v["x"]) * 2.0,
        "matmul": lambda v: torch.mm(v["x"], v["w"]),
        "view": lambda v: v["x"].view(48),
        "split": lambda v: v["x"].split(2, dim=1),
        "inplace": lambda v: v["x"].mul_(3.0),
        "out": lambda v: torch.add(v["x"], v["x"], out=v["y"].redistribute(
            v["x"].device_mesh, [Shard(0)])),
        "foreach": lambda v: torch._foreach_add([v["x"], v["p"]], 1.0),
        "cat": lambda v: torch.cat([v["x"], v["x"]], dim=1),
        "redistribute": lambda v: v["x"] + v["p"],
        "mesh_2d": lambda v: v["u"].sum(1),
        "autograd": lambda v: (v["g"] * v["g"]).sum(dim=0),
    }


def test_capacity_zero_sends_every_op_kind_to_stock(mesh_1d, mesh_2d, capacity_restored):
    """Guards capacity 0: each op kind returns stock's result (aliasing included), every
    call declines as cache_disabled, and no entry is ever stored."""
    make_inputs, calls = _every_op_kind(mesh_1d, mesh_2d)
    torchshard.set_cache_capacity(0)
    torchshard.reset_stats()
    for name, call in calls.items():
        with torchshard.disabled():
            stock_inputs = make_inputs()
            stock = call(stock_inputs)
        for attempt in range(2):
            our_inputs = make_inputs()
            ours = call(our_inputs)
            assert_same_result(stock, ours, path=f"{name}[{attempt}]",
                               inputs=(list(stock_inputs.values()), list(our_inputs.values())))
    stats = torchshard.stats()
    assert stats["native_calls"] == 0 and stats["hits"] == 0 and stats["misses"] == 0, stats
    assert stats["entries"] == 0 and stats["evictions"] == 0, stats
    assert set(stats["declines"]) == {"cache_disabled"}, stats
    assert stats["declines"]["cache_disabled"] >= 2 * len(calls), stats


@pytest.mark.parametrize("count", [64, 65, 70, 200])
def test_cat_of_many_dtensors_keys_and_hits(mesh_1d, count):
    """Guards keys with 64+ list items: cat of ``count`` DTensors equals stock, misses
    once, then hits; a list one item shorter is another entry."""
    items = [seeded_dtensor(mesh_1d, (4, 3), [Shard(1) if i % 3 else Replicate()], seed=i)
             for i in range(count)]
    with torchshard.disabled():
        expected = torch.cat(items, dim=0)
        expected_shorter = torch.cat(items[:-1], dim=0)
    torchshard.reset_stats()
    for attempt in range(2):
        assert_same_result(expected, torch.cat(items, dim=0), path=f"cat{count}[{attempt}]")
    assert_same_result(expected_shorter, torch.cat(items[:-1], dim=0))
    stats = _my_counters()
    assert (stats["misses"], stats["hits"]) == (2, 1), stats
    assert stats["native_calls"] == 3, stats


def test_item_past_the_64th_distinguishes_keys(mesh_1d):
    """Guards the key over long lists: two 100-item foreach calls that differ only in
    the 80th item's placement are separate entries with their own (stock's) results
    (the Replicate item is redistributed, so the two entries hold different plans)."""
    base = [seeded_dtensor(mesh_1d, (8, 4), [Shard(0)], seed=i) for i in range(100)]
    other = [seeded_dtensor(mesh_1d, (8, 4), [Shard(0)], seed=1000 + i) for i in range(100)]
    variant = list(base)
    variant[79] = seeded_dtensor(mesh_1d, (8, 4), [Replicate()], seed=79)
    with torchshard.disabled():
        expected_base = torch._foreach_mul(base, other)
        expected_variant = torch._foreach_mul(variant, other)
    torchshard.reset_stats()
    for attempt in range(2):
        assert_same_result(expected_base, torch._foreach_mul(base, other), path=f"base{attempt}")
        assert_same_result(expected_variant, torch._foreach_mul(variant, other),
                           path=f"variant{attempt}")
    stats = _my_counters()
    assert (stats["misses"], stats["hits"]) == (2, 2), stats
