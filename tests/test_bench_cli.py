"""``python3 benchmarks/run.py``: each subcommand's smoke run produces well-formed
outputs (table, JSON, Markdown, PNG), and the benchmark-only probes in ``torchshard._bench``
and the op switch in ``torchshard.testing`` do what they claim. No timing assertions:
only that figures exist and are positive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import torchshard
from torchshard import _bench, testing

from dispatch import outputs_match  # benchmarks/ (conftest puts it on sys.path)
from variants import VariantSwitch, record_calls

PACKAGE_ROOT = str(Path(torchshard.__file__).resolve().parent.parent)
RUN_SCRIPT = str(Path(__file__).resolve().parent.parent / "benchmarks" / "run.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs the CLI on the torchshard this test imported."""
    path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, RUN_SCRIPT, *args],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=path), capture_output=True, text=True, timeout=240,
    )


def outputs(tmp_path: Path, stem: str) -> list[str]:
    return ["--no-progress", "--json", str(tmp_path / f"{stem}.json"), "--markdown", str(tmp_path / f"{stem}.md"),
            "--png", str(tmp_path / f"{stem}.png")]


def assert_written(tmp_path: Path, stem: str) -> dict:
    assert (tmp_path / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
    assert "|---" in (tmp_path / f"{stem}.md").read_text()
    return json.loads((tmp_path / f"{stem}.json").read_text())


def assert_timing(timing: dict) -> None:
    assert timing["median_us"] > 0 and timing["p90_us"] >= timing["median_us"] * 0.999
    assert timing["calls"] > 0


def test_dispatch_quick_writes_table_json_markdown_png(tmp_path):
    proc = run_bench(tmp_path, "--quick", "--cases", "add S(0)+S(0),view [view],mm S(0),_foreach_add_",
                     *outputs(tmp_path, "dispatch"))
    assert proc.returncode == 0, proc.stderr
    assert "| op | placements | mesh | plain µs | floor µs | stock µs | torchshard µs |" in proc.stdout
    payload = assert_written(tmp_path, "dispatch")
    names = {f"{r['op']} {r['placements']} {r['mesh']}" for r in payload["results"]}
    assert names == {"add S(0)+S(0) 1-D", "view [view] S(0) 1-D", "mm S(0) @ R 1-D",
                     "_foreach_add_ x8 [in-place] S(0) 1-D"}
    for result in payload["results"]:
        for column in ("plain", "floor", "stock", "torchshard", "stock_miss", "torchshard_miss"):
            assert_timing(result[column])
        assert result["native_hit_fraction"] == 1.0
        assert result["key_lookup_ns"] > 0 and result["rule_body_ns"] > 0
        assert result["speedup"] == pytest.approx(result["stock"]["median_us"] / result["torchshard"]["median_us"])
    summary = payload["summary"]
    assert summary["cases"] == 4 and summary["native_hit_cases"] == 4
    assert summary["add_two_dtensor_key_lookup_ns"] > 0
    assert payload["machine"]["torch"] == torch.__version__


def test_scaling_quick_writes_every_curve(tmp_path):
    proc = run_bench(tmp_path, "scaling", "--quick", *outputs(tmp_path, "scaling"))
    assert proc.returncode == 0, proc.stderr
    curves = assert_written(tmp_path, "scaling")["curves"]
    assert list(curves) == ["cache entries", "DTensor list items", "threads", "cold cache"]
    assert [p["x"] for p in curves["cache entries"]["series"]["torchshard"]] == [10, 100, 1000]
    assert [p["x"] for p in curves["DTensor list items"]["series"]["stock"]] == [1, 4, 16, 64]
    assert [p["x"] for p in curves["threads"]["series"]["torchshard"]] == [1, 2, 4]
    for curve in curves.values():
        for points in curve["series"].values():
            assert all(point["median_us"] > 0 for point in points)


def test_shapes_quick_compares_every_section_with_stock(tmp_path):
    proc = run_bench(tmp_path, "shapes", "--quick", *outputs(tmp_path, "shapes"))
    # A result that differs from stock's stops the run (OutputMismatch): rc != 0.
    assert proc.returncode == 0, proc.stderr
    assert "| op | placements | mesh | plain µs | stock new µs | stock hit µs | torchshard new µs |" in proc.stdout
    payload = assert_written(tmp_path, "shapes")
    assert payload["world_size"] == 4 and payload["decision_verification"] == "first"
    settings = payload["settings"]
    names = [f"{c['op']} {c['placements']} {c['mesh']}" for c in payload["cases"]]
    for name in ("add S(0)+S(0) 1-D", "relu S(0) 1-D", "view [view] S(0) 1-D", "view [view] R 1-D",
                 "softmax(dim=-1) S(0) 1-D", "sum(dim=1) S(0) 1-D", "mm S(0) @ R 1-D", "bmm S(0) @ S(0) 1-D",
                 "cat(dim=1) S(0), S(0) 1-D", "layer_norm S(0) 1-D", "transpose(0, 1) [view] S(0) 1-D",
                 "add S(0)S(1)+S(0)S(1) 2-D", "mm S(0)R @ RS(1) 2-D"):
        assert name in names
    for name, case in zip(names, payload["cases"]):
        assert case["compared"] == settings["case_checks"]
        for column in ("plain", "stock_new", "stock_hit", "torchshard_new", "torchshard_hit"):
            assert_timing(case[column])
        new, repeat = case["new_calls"], case["hit_calls"]
        assert new["calls"] == repeat["calls"] == repeat["hits"] == settings["calls"]
        assert new["hits"] == 0  # every timed new-shape call really had a new shape
        if name != "view [view] S(0) 1-D":  # a sharded view's plan reads sizes: never reused
            assert new["decision_hits"] == new["calls"], (name, new)
    loops = payload["loops"]
    assert list(loops) == ["decode", "varlen", "moe"]
    # Compared: every decode step and the final caches; each training loop's check steps
    # and its parameters after them.
    compared = {"decode": settings["loop_warmup"] + settings["steps"] + 1,
                "varlen": settings["loop_checks"] + 1, "moe": settings["loop_checks"] + 1}
    for loop in loops.values():
        assert loop["compared"] == compared[loop["name"]]
        assert loop["stock_ms"] > 0 and loop["torchshard_ms"] > 0 and loop["steps"] == settings["steps"]
        assert loop["per_step"]["decision_hits"] > 0, loop
    # Past its warm-up every decode step is new to the exact cache and served by decisions.
    assert loops["decode"]["per_step"] == {"calls": 5, "hits": 0, "decision_hits": 5, "misses": 0, "declined": 0}
    assert set(payload["summary"]["targets"]) == {
        "median new-shape call >= 20x cheaper than stock", "decode step >= 10x faster",
        "varlen TP step >= 10x faster"}


def test_training_quick_and_cli_errors(tmp_path):
    proc = run_bench(tmp_path, "training", "--quick", *outputs(tmp_path, "training"))
    assert proc.returncode == 0, proc.stderr
    (result,) = assert_written(tmp_path, "training")["results"]
    assert (result["workload"], result["optimizer"], result["shapes"]) == ("tp_block", "foreach", "small")
    assert result["native_fraction"] == 1.0 and result["stock_ms"] > 0 and result["torchshard_ms"] > 0

    help_proc = run_bench(tmp_path, "--help")
    assert help_proc.returncode == 0 and "{dispatch,scaling,training,shapes,callgrind}" in help_proc.stdout
    no_case = run_bench(tmp_path, "--cases", "no such op")
    assert no_case.returncode != 0 and "no case matches" in no_case.stderr


# In-process checks of the pieces the numbers rest on (conftest's fake world of 4).


def test_outputs_match_rejects_differences(mesh_1d):
    x = distribute_tensor(torch.randn(8, 4), mesh_1d, [Shard(0)])
    assert outputs_match(x + 1, x + 1)
    assert not outputs_match(x + 1, x + 2)
    assert not outputs_match(x.redistribute(mesh_1d, [Replicate()]), x)
    assert not outputs_match([x], (x,))
    assert not outputs_match(x.t(), x.t().contiguous())


@pytest.mark.usefixtures("fresh_torchshard")
def test_floor_rule_replaces_only_the_case_ops_and_returns_prebuilt_results(mesh_1d):
    x, y = (distribute_tensor(torch.randn(8, 4), mesh_1d, [Shard(0)]) for _ in range(2))
    calls = record_calls(lambda: (x + y, x.t()))
    assert [call.op for call in calls] == [torch.ops.aten.add.Tensor, torch.ops.aten.t.default]
    switch = VariantSwitch(calls)
    try:
        switch.switch("floor")
        assert x + y is calls[0].result  # the prebuilt object itself
        view = x.t()
        assert view is not calls[1].result and isinstance(view, DTensor)
        assert view._spec is calls[1].result._spec  # a fresh wrapper over the same spec
        torchshard.reset_stats()
        x.mul(2)  # an op the switch left alone is still torchshard's
        assert torchshard.stats()["calls"] == 1
        switch.switch("stock")
        assert outputs_match(x + y, calls[0].result) and torchshard.stats()["calls"] == 1
    finally:
        switch.close()
    x + y
    assert torchshard.stats()["native_calls"] == 2


@pytest.mark.usefixtures("fresh_torchshard")
def test_route_moves_one_op_between_stock_and_torchshard(mesh_1d):
    x = distribute_tensor(torch.randn(8, 4), mesh_1d, [Shard(0)])
    ours = x + x
    try:
        testing.route(torch.ops.aten.add.Tensor, "stock")
        assert torch.ops.aten.add.Tensor not in torchshard.enabled_ops()
        torchshard.reset_stats()
        stock = x + x
        x.mul(2)
        assert torchshard.stats()["calls"] == 1  # mul only
        assert outputs_match(stock, ours)
        with pytest.raises(ValueError, match="'stock' or 'torchshard'"):
            testing.route(torch.ops.aten.add.Tensor, "floor")
        with torchshard.disabled(), pytest.raises(RuntimeError, match="disabled"):
            testing.route(torch.ops.aten.add.Tensor, "torchshard")
    finally:
        testing.route(torch.ops.aten.add.Tensor, "torchshard")
    assert torch.ops.aten.add.Tensor in torchshard.enabled_ops()
    torchshard.reset_stats()
    x + x
    assert torchshard.stats()["native_calls"] == 1


@pytest.mark.usefixtures("fresh_torchshard")
def test_key_lookup_probe_hits_only_a_warm_entry(mesh_1d):
    x, y = (distribute_tensor(torch.randn(8, 4), mesh_1d, [Shard(0)]) for _ in range(2))
    (call,) = record_calls(lambda: x + y)
    rule = testing.native_rule(call.op)
    torchshard.clear_cache()  # recording ran the call, through torchshard
    assert _bench.key_lookup_ns(rule, call.args, None, 10)["hit"] is False
    x + y
    probe = _bench.key_lookup_ns(rule, call.args, None, 10)
    assert probe["hit"] is True and probe["key_ns"] > 0 and probe["key_lookup_ns"] > 0
    assert _bench.rule_body_ns(rule, DTensor, call.op, call.args, None, 10) > 0
    _bench.fill_synthetic_entries(50)
    assert torchshard.stats()["entries"] == 51
    assert _bench.key_lookup_ns(rule, call.args, None, 10)["hit"] is True
    with pytest.raises(TypeError, match="NativeRule"):
        _bench.key_lookup_ns(object(), call.args, None, 10)
