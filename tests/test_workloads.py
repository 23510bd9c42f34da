"""Training workloads (``benchmarks/workloads.py``) under torchshard: coverage, cache, values.

Three checks over the tensor parallel MLP and transformer block, FSDP2, and FSDP2 + TP:

* **Native coverage** (fake process group, world 8): after warm-up steps, a steady
  training step has no cache misses and is served >= 99% natively, and the optimizer's
  multi-tensor ops (``aten::_foreach_*``, ``aten::_fused_*``) are never declined (in
  tp_block their lists mix Shard/Replicate parameters with the sequence-parallel
  LayerNorm weights' Partial gradients, which must be redistributed item by item).
* **Constant cache** (fake process group, world 8): 1000 optimizer steps, each with a
  different learning rate (and bias correction), add no cache entry and no miss:
  scalars that change every step must not enter the cache key.
* **Bit-identical training** (gloo, real values): 5 steps with stock DTensor and 5
  with torchshard from the same seed give bitwise equal losses and final parameters.

The workloads need their own world size (conftest's ``fake_pg`` is world 4), so the
fake-process-group checks run in one fresh interpreter per check kind that covers every
case and reports JSON; each parametrized test asserts on its case's entry. The gloo
check spawns its ranks once per world size, likewise for every case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from gloo_ranks import run_ranks

TESTS_DIR = Path(__file__).resolve().parent
BENCHMARKS_DIR = TESTS_DIR.parent / "benchmarks"

WORKLOADS = ("tp_mlp", "tp_block", "fsdp", "fsdp_tp")  # workloads.WORKLOADS, checked below
OPTIMIZERS = ("foreach", "fused", "for-loop")

FAKE_WORLD_SIZE = 8
WARMUP_STEPS = 3
MEASURED_STEPS = 2
MIN_NATIVE_FRACTION = 0.99
MULTI_TENSOR_OP_PREFIXES = ("aten::_foreach_", "aten::_fused_")

CACHE_WORKLOADS = ("tp_mlp", "tp_block")
CACHE_OPTIMIZER_STEPS = 1000

GLOO_OPTIMIZERS = ("foreach", "fused")
GLOO_STEPS = 5
GLOO_TIMEOUT_S = 240
SUBPROCESS_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------
# Fake process group checks; they run in a child interpreter (see _fake_pg_main).
# --------------------------------------------------------------------------------------


def _import_workloads():
    """benchmarks/workloads.py (conftest puts benchmarks/ on sys.path; so does _run_fake_pg)."""
    import workloads

    return workloads


def _backward_without_zero_grad(workload: Any, step: int) -> None:
    """Forward and backward as ``Workload.step`` does, leaving the gradients set."""
    out = workload.model(workload.make_input(step))
    if hasattr(out, "full_tensor"):
        out = out.full_tensor()
    out.float().pow(2).mean().backward()


def _local_params(model: torch.nn.Module) -> list[torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return [
        (p.to_local() if isinstance(p, DTensor) else p).detach().clone()
        for p in model.parameters()
    ]


def _warm_workload(workloads: Any, name: str, optimizer: str) -> Any:
    """A fresh workload after WARMUP_STEPS steps, from empty caches and zero counters."""
    import torchshard

    torchshard.clear_cache()
    torchshard.reset_stats()
    workload = workloads.build(name, optimizer=optimizer, seed=0)
    for step in range(WARMUP_STEPS):
        workload.step(step)
    return workload


def _coverage_case(workloads: Any, name: str, optimizer: str) -> dict[str, Any]:
    import torchshard

    workload = _warm_workload(workloads, name, optimizer)
    before = torchshard.stats()
    with torchshard.explain(print_report=False) as report:
        for step in range(WARMUP_STEPS, WARMUP_STEPS + MEASURED_STEPS):
            workload.step(step)
    after = torchshard.stats()
    return {
        "calls": report.calls,
        "native_calls": report.native_calls,
        "native_fraction": report.native_fraction,
        "report_misses": sum(op.misses for op in report.ops),
        "stats_misses": after["misses"] - before["misses"],
        "declined_ops": {op.op: dict(op.declines) for op in report.ops if op.declines},
        "ops": report.to_dict()["ops"],
        "table": report.table(),
    }


def _cache_case(workloads: Any, name: str, optimizer: str) -> dict[str, Any]:
    import torchshard

    workload = _warm_workload(workloads, name, optimizer)
    before = torchshard.stats()
    lrs = []
    with torchshard.explain(print_report=False) as report:
        # Gradients stay set without zero_grad(), so one backward feeds every step.
        _backward_without_zero_grad(workload, WARMUP_STEPS)
        initial = _local_params(workload.model)
        for index in range(CACHE_OPTIMIZER_STEPS):
            lr = 1e-3 * (1.0 + index / CACHE_OPTIMIZER_STEPS)
            lrs.append(lr)
            for group in workload.optimizer.param_groups:
                group["lr"] = lr
            workload.optimizer.step()
    after = torchshard.stats()
    final = _local_params(workload.model)
    return {
        "entries_before": before["entries"],
        "entries_after": after["entries"],
        "capacity": after["capacity"],
        "new_misses": after["misses"] - before["misses"],
        "new_evictions": after.get("evictions", 0) - before.get("evictions", 0),
        "calls": after["calls"] - before["calls"],
        "native_calls": after["native_calls"] - before["native_calls"],
        "report_calls": report.calls,
        "report_misses": sum(op.misses for op in report.ops),
        "declined_ops": {op.op: dict(op.declines) for op in report.ops if op.declines},
        "distinct_lrs": len(set(lrs)),
        "params": len(final),
        "params_changed": sum(not torch.equal(a, b) for a, b in zip(initial, final)),
        "table": report.table(),
    }


def _fake_pg_main(kind: str, out_path: str) -> None:
    """Child interpreter: run every case of ``kind`` on a fake world of 8, write JSON."""
    import warnings

    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    import torchshard

    warnings.simplefilter("error", torchshard.TorchshardWarning)
    torch.set_num_threads(1)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=FAKE_WORLD_SIZE)
    workloads = _import_workloads()
    results: dict[str, Any] = {"workloads": list(workloads.WORKLOADS), "cases": {}}
    assert torchshard.is_enabled()
    if kind == "coverage":
        run, cases = _coverage_case, [(n, o) for n in WORKLOADS for o in OPTIMIZERS]
    elif kind == "cache":
        run, cases = _cache_case, [(n, o) for n in CACHE_WORKLOADS for o in OPTIMIZERS]
    else:
        raise ValueError(kind)
    for name, optimizer in cases:
        start = time.perf_counter()
        try:
            result = run(workloads, name, optimizer)
        except Exception:  # noqa: BLE001 -- reported per case by the test
            result = {"error": traceback.format_exc()}
        result["seconds"] = time.perf_counter() - start
        results["cases"][f"{name}/{optimizer}"] = result
    Path(out_path).write_text(json.dumps(results))
    dist.destroy_process_group()


def _run_fake_pg(kind: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, f"{kind}.json")
        code = (
            f"import sys; sys.path[:0] = {[str(TESTS_DIR), str(BENCHMARKS_DIR)]!r}; "
            f"import test_workloads; test_workloads._fake_pg_main({kind!r}, {out_path!r})"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSHARD_")}
        env["OMP_NUM_THREADS"] = "1"
        proc = subprocess.run(
            [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
        assert proc.returncode == 0 and os.path.exists(out_path), (
            f"{kind} subprocess failed with status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
        results = json.loads(Path(out_path).read_text())
    assert tuple(results["workloads"]) == WORKLOADS, (
        f"benchmarks/workloads.py now defines {results['workloads']}; update WORKLOADS here"
    )
    return results["cases"]


@pytest.fixture(scope="module")
def coverage_results() -> dict[str, Any]:
    return _run_fake_pg("coverage")


@pytest.fixture(scope="module")
def cache_results() -> dict[str, Any]:
    return _run_fake_pg("cache")


def _case(results: dict[str, Any], name: str, optimizer: str) -> dict[str, Any]:
    result = results[f"{name}/{optimizer}"]
    assert "error" not in result, f"{name}/{optimizer} raised:\n{result['error']}"
    return result


def _multi_tensor_op_calls(result: dict[str, Any]) -> int:
    return sum(op["calls"] for op in result["ops"] if op["op"].startswith(MULTI_TENSOR_OP_PREFIXES))


def _assert_multi_tensor_ops_native(result: dict[str, Any], where: str) -> None:
    declined = {
        op: reasons for op, reasons in result["declined_ops"].items()
        if op.startswith(MULTI_TENSOR_OP_PREFIXES)
    }
    assert not declined, (
        f"{where}: optimizer multi-tensor ops declined to stock: {declined}\n{result['table']}"
    )


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("name", WORKLOADS)
def test_steady_state_is_native_and_cached(coverage_results, name, optimizer):
    """Guards native coverage of real training steps (forward, backward, AdamW,
    zero_grad) and that a warmed-up step never misses the cache."""
    result = _case(coverage_results, name, optimizer)
    where = f"{name}/{optimizer}"
    assert result["calls"] > 0, f"{where}: no DTensor call reached torchshard"
    assert result["report_misses"] == 0 and result["stats_misses"] == 0, (
        f"{where}: cache misses in steady state\n{result['table']}"
    )
    assert result["native_fraction"] >= MIN_NATIVE_FRACTION, (
        f"{where}: only {100 * result['native_fraction']:.1f}% native\n{result['table']}"
    )
    if optimizer != "for-loop":
        assert _multi_tensor_op_calls(result) > 0, f"{where}: no _foreach_/_fused_ op ran"
    _assert_multi_tensor_ops_native(result, where)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("name", CACHE_WORKLOADS)
def test_cache_constant_over_optimizer_steps(cache_results, name, optimizer):
    """Guards against per-step scalars (learning rate, bias correction) entering the
    cache key: 1000 AdamW steps, a new learning rate each, add no entry and no miss."""
    result = _case(cache_results, name, optimizer)
    where = f"{name}/{optimizer}"
    assert result["distinct_lrs"] == CACHE_OPTIMIZER_STEPS
    assert result["params_changed"] == result["params"] > 0, (
        f"{where}: only {result['params_changed']} of {result['params']} parameters moved"
    )
    assert 0 < result["entries_before"] < result["capacity"]
    assert result["entries_after"] == result["entries_before"], (
        f"{where}: cache grew from {result['entries_before']} to {result['entries_after']} "
        f"entries over {CACHE_OPTIMIZER_STEPS} optimizer steps\n{result['table']}"
    )
    assert result["new_misses"] == 0 and result["report_misses"] == 0, (
        f"{where}: {result['new_misses']} misses over the optimizer steps\n{result['table']}"
    )
    assert result["new_evictions"] == 0
    # At least one DTensor call per optimizer step reached torchshard.
    assert result["calls"] == result["report_calls"] >= CACHE_OPTIMIZER_STEPS
    assert result["native_calls"] == result["calls"], (
        f"{where}: declines {result['declined_ops']}\n{result['table']}"
    )


# --------------------------------------------------------------------------------------
# Gloo: stock and torchshard train to bitwise identical losses and parameters.
# --------------------------------------------------------------------------------------


def _bits(t: torch.Tensor) -> torch.Tensor:
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()]
    return t.contiguous().view(as_int)


# Workloads whose ranks each feed their own data (a sequence slice, a batch, or both;
# workloads.build() seeds their inputs by rank), so that Partial sums and data-parallel
# averages reduce different values (with equal inputs, a sum is world * local and an
# average is local, which hides reduction bugs). tp_mlp's input is Replicate.
RANK_DISTINCT_INPUT = ("tp_block", "fsdp", "fsdp_tp")


def _train(
    workloads: Any, name: str, optimizer: str
) -> tuple[list[torch.Tensor], list[tuple[str, torch.Tensor]]]:
    """GLOO_STEPS fresh training steps; the losses and every parameter's full value."""
    from torch.distributed.tensor import DTensor

    workload = workloads.build(name, optimizer=optimizer, seed=0)
    losses = [workload.step(step) for step in range(GLOO_STEPS)]
    params = [
        (pname, p.detach().full_tensor() if isinstance(p, DTensor) else p.detach().clone())
        for pname, p in workload.model.named_parameters()  # same order on every rank
    ]
    return losses, params


def _compare_case(workloads: Any, name: str, optimizer: str) -> dict[str, Any]:
    import torchshard

    with torchshard.disabled():
        stock_losses, stock_params = _train(workloads, name, optimizer)
    torchshard.clear_cache()
    with torchshard.explain(print_report=False) as report:
        ours_losses, ours_params = _train(workloads, name, optimizer)
    assert [n for n, _ in stock_params] == [n for n, _ in ours_params]
    param_mismatches = [
        pname
        for (pname, s), (_, o) in zip(stock_params, ours_params)
        if not (s.dtype == o.dtype and s.shape == o.shape and torch.equal(s, o)
                and torch.equal(_bits(s), _bits(o)))
    ]
    return {
        "stock_losses": [float(x).hex() for x in stock_losses],
        "ours_losses": [float(x).hex() for x in ours_losses],
        "losses_equal": all(torch.equal(s, o) for s, o in zip(stock_losses, ours_losses)),
        "loss_bits_equal": all(
            torch.equal(_bits(s), _bits(o)) for s, o in zip(stock_losses, ours_losses)
        ),
        "loss_dtypes": sorted({str(x.dtype) for x in stock_losses + ours_losses}),
        "params": len(stock_params),
        "param_mismatches": param_mismatches,
        "calls": report.calls,
        "native_calls": report.native_calls,
        "declined_ops": {op.op: dict(op.declines) for op in report.ops if op.declines},
        "ops": report.to_dict()["ops"],
        "table": report.table(),
    }


def _gloo_worker(rank: int, world: int, init_file: str, cases: list[tuple[str, str]],
                 out_dir: str) -> None:
    import warnings

    import torch.distributed as dist

    import torchshard

    warnings.simplefilter("error", torchshard.TorchshardWarning)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        torchshard.enable()
        workloads = _import_workloads()
        results: dict[str, Any] = {}
        for name, optimizer in cases:
            try:
                results[f"{name}/{optimizer}"] = _compare_case(workloads, name, optimizer)
            except Exception:  # noqa: BLE001 -- reported per case by the test
                results[f"{name}/{optimizer}"] = {"error": traceback.format_exc()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _run_gloo(world: int, cases: list[tuple[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Spawn ``world`` gloo ranks that each run every case; per case, each rank's result."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        run_ranks(_gloo_worker, (world, init_file, cases, tmp), world, GLOO_TIMEOUT_S)
        per_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    return {case: [ranks[case] for ranks in per_rank] for case in per_rank[0]}


@pytest.fixture(scope="module")
def gloo_world2() -> dict[str, list[dict[str, Any]]]:
    return _run_gloo(2, [(n, o) for n in WORKLOADS for o in GLOO_OPTIMIZERS])


@pytest.fixture(scope="module")
def gloo_world4() -> dict[str, list[dict[str, Any]]]:
    return _run_gloo(4, [("fsdp_tp", o) for o in GLOO_OPTIMIZERS])


def _assert_bit_identical(results: dict[str, list[dict[str, Any]]], name: str,
                          optimizer: str) -> None:
    where = f"{name}/{optimizer}"
    per_rank = results[where]
    for rank, result in enumerate(per_rank):
        at = f"{where}, rank {rank}"
        assert "error" not in result, f"{at} raised:\n{result['error']}"
        assert result["loss_dtypes"] == ["torch.float32"]
        assert len(result["stock_losses"]) == len(result["ours_losses"]) == GLOO_STEPS
        assert len(set(result["stock_losses"])) > 1, f"{at}: the loss never changed"
        assert result["losses_equal"] and result["loss_bits_equal"], (
            f"{at}: loss curves differ\n stock:      {result['stock_losses']}\n"
            f" torchshard: {result['ours_losses']}"
        )
        assert result["stock_losses"] == result["ours_losses"]
        assert result["params"] > 0
        assert not result["param_mismatches"], (
            f"{at}: final parameters differ: {result['param_mismatches']}"
        )
        # What was compared is torchshard's native path, optimizer ops included.
        assert result["calls"] > 0
        assert result["native_calls"] >= MIN_NATIVE_FRACTION * result["calls"], (
            f"{at}: only {result['native_calls']} of {result['calls']} calls native\n"
            f"{result['table']}"
        )
        assert _multi_tensor_op_calls(result) > 0
        _assert_multi_tensor_ops_native(result, at)
    rank_curves = {tuple(result["stock_losses"]) for result in per_rank}
    if name in RANK_DISTINCT_INPUT:
        # fsdp_tp gathers its output over "tp": one curve per data-parallel group.
        assert len(rank_curves) > 1, f"{where}: every rank trained on the same data"
    else:
        assert len(rank_curves) == 1, f"{where}: replicated ranks saw different losses"


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("optimizer", GLOO_OPTIMIZERS)
@pytest.mark.parametrize("name", WORKLOADS)
def test_loss_curve_bit_identical_gloo_world2(gloo_world2, name, optimizer):
    """Guards value parity of whole training runs on real collectives: 2 gloo ranks,
    stock vs torchshard from the same seed, bitwise equal losses and final parameters.
    (fsdp_tp runs on a (2, 1) mesh here; see the world-4 test for a real 2-D mesh.)"""
    _assert_bit_identical(gloo_world2, name, optimizer)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("optimizer", GLOO_OPTIMIZERS)
def test_loss_curve_bit_identical_gloo_fsdp_tp_world4(gloo_world4, optimizer):
    """Guards FSDP2 + TP on a real (2, 2) mesh, where both dims shard: 4 gloo ranks,
    bitwise equal losses and final parameters, stock vs torchshard."""
    _assert_bit_identical(gloo_world4, "fsdp_tp", optimizer)
