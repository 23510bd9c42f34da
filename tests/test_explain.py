"""torchshard.explain(): per-op figures for a block of DTensor calls.

Each test starts enabled, with empty caches and zero counters (``fresh_torchshard``),
so the first call of a key is a miss and the next ones hit. Op names are those of
the op's schema (``aten::add.Tensor``, ``aten::mm``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from torch.distributed.tensor import Replicate

import torchshard
from dtensor_cases import seeded_dtensor
from torchshard import ExplainReport, OpReport

JOIN_TIMEOUT_S = 60
SUBPROCESS_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.usefixtures("fresh_torchshard"),
    # torch.rand_like on a CPU mesh warns that DTensor's RNG support is partial.
    pytest.mark.filterwarnings("ignore:DTensor random operators:UserWarning"),
]

ADD = "aten::add.Tensor"
MM = "aten::mm"
VIEW = "aten::view"
RAND_LIKE = "aten::rand_like"


@pytest.fixture(autouse=True)
def _keep_capacity():
    """Tests that change the cache capacity must put it back."""
    capacity = torchshard.cache_capacity()
    yield
    leaked = torchshard.cache_capacity() != capacity
    torchshard.set_cache_capacity(capacity)
    assert not leaked, "test left the cache capacity changed"


@pytest.fixture
def tensors(mesh):
    """a, b: (8, 8) sharded on dim 0; w: (8, 4) replicated."""
    return (seeded_dtensor(mesh), seeded_dtensor(mesh, seed=1),
            seeded_dtensor(mesh, shape=(8, 4), placements=(Replicate(),), seed=2))


def figures(op: OpReport) -> tuple:
    return (op.calls, op.native_calls, op.hits, op.misses, op.declines)


def by_name(report: ExplainReport) -> dict[str, OpReport]:
    names = [op.op for op in report.ops]
    assert len(names) == len(set(names)), f"an op is reported twice: {names}"
    return {op.op: op for op in report.ops}


def known_sequence(a, b, w) -> None:
    """3 adds, 2 mms, 2 views (each: one miss, then hits) and one random op (declined)."""
    for _ in range(3):
        a + b
    for _ in range(2):
        torch.mm(a, w)
    for _ in range(2):
        a.view(4, 16)
    torch.rand_like(a)


@pytest.fixture
def known_report(tensors) -> ExplainReport:
    with torchshard.explain(print_report=False) as report:
        known_sequence(*tensors)
    return report


# --- the report's figures -------------------------------------------------------------


def test_known_sequence_per_op_figures(known_report):
    """Guards the per-op tallies: exact calls / native / hits / misses / declines for
    each op, ops sorted by calls (descending) then name, and nothing else reported."""
    assert [op.op for op in known_report.ops] == [ADD, MM, VIEW, RAND_LIKE]
    ops = by_name(known_report)
    assert figures(ops[ADD]) == (3, 3, 2, 1, {})
    assert figures(ops[MM]) == (2, 2, 1, 1, {})
    assert figures(ops[VIEW]) == (2, 2, 1, 1, {})
    # Random ops decline per op, before any key is built: no lookup at all.
    assert figures(ops[RAND_LIKE]) == (1, 0, 0, 0, {"random_op": 1})
    for op in known_report.ops:
        assert isinstance(op, OpReport)
        assert op.declined == sum(op.declines.values())
        assert op.calls == op.native_calls + op.declined, op


def test_known_sequence_totals(known_report):
    """Guards the report's totals and native_fraction."""
    assert known_report.calls == 8
    assert known_report.native_calls == 7
    assert known_report.native_fraction == pytest.approx(7 / 8)
    assert known_report.declines == {"random_op": 1}


def test_report_is_filled_at_block_exit(tensors):
    """Guards "filled when the block ends": empty inside the block, complete after."""
    a, b, _ = tensors
    with torchshard.explain(print_report=False) as report:
        a + b
        a + b
        assert report.ops == []
        assert report.calls == 0
    assert [figures(op) for op in report.ops] == [(2, 2, 1, 1, {})]


def test_cache_disabled_declines(tensors):
    """Guards the decline reason at capacity 0: every keyed call declines as
    "cache_disabled" with no lookup; a random op still declines as "random_op"."""
    a, b, w = tensors
    capacity = torchshard.cache_capacity()
    torchshard.set_cache_capacity(0)
    try:
        with torchshard.explain(print_report=False) as report:
            a + b
            a + b
            torch.mm(a, w)
            torch.rand_like(a)
    finally:
        torchshard.set_cache_capacity(capacity)
    ops = by_name(report)
    assert set(ops) == {ADD, MM, RAND_LIKE}
    assert figures(ops[ADD]) == (2, 0, 0, 0, {"cache_disabled": 2})
    assert figures(ops[MM]) == (1, 0, 0, 0, {"cache_disabled": 1})
    assert figures(ops[RAND_LIKE]) == (1, 0, 0, 0, {"random_op": 1})
    assert report.calls == 4
    assert report.native_calls == 0
    assert report.native_fraction == 0.0
    assert report.declines == {"cache_disabled": 3, "random_op": 1}


def test_declines_aggregate_over_ops_by_count(tensors):
    """Guards ExplainReport.declines: summed per reason over every op, most frequent
    first; an op with both native and declined calls reports both."""
    a, b, _ = tensors
    plain = torch.randn(8, 8)
    with torchshard.explain(print_report=False) as report:
        a + b
        with pytest.raises(RuntimeError, match="mixed torch.Tensor and DTensor"):
            a + plain
        for _ in range(2):
            torch.rand_like(a)
        c = a.clone()  # outside the random op so only normal_ declines
        c.normal_()
    ops = by_name(report)
    assert figures(ops[ADD]) == (2, 1, 0, 1, {"plain_tensor_arg": 1})
    assert figures(ops[RAND_LIKE]) == (2, 0, 0, 0, {"random_op": 2})
    assert figures(ops["aten::normal_"]) == (1, 0, 0, 0, {"random_op": 1})
    assert report.declines == {"random_op": 3, "plain_tensor_arg": 1}
    assert list(report.declines) == ["random_op", "plain_tensor_arg"]
    assert sum(report.declines.values()) == report.calls - report.native_calls


def test_calls_while_disabled_are_not_counted_and_rules_are_summed(tensors):
    """Guards what "reached torchshard's rule" means: calls made while torchshard is
    disabled are stock's and not counted; an op's calls before and after a
    disable()/enable() (a new rule) are summed under one name. disable() (and so
    disabled()) drops every entry, so each enabled call here misses."""
    a, b, w = tensors
    with torchshard.explain(print_report=False) as report:
        a + b
        with torchshard.disabled():
            a + b
            torch.mm(a, w)
        a + b
        torchshard.disable()
        torchshard.enable()
        a + b
    assert [op.op for op in report.ops] == [ADD]
    assert figures(report.ops[0]) == (3, 3, 0, 3, {})


# --- to_dict / table / printing ---------------------------------------------------------


def test_to_dict_round_trip(known_report):
    """Guards to_dict(): the documented keys and values, JSON-serialisable, and enough to
    rebuild an equal report."""
    data = known_report.to_dict()
    assert set(data) == {"calls", "native_calls", "native_fraction", "declines", "ops"}
    assert data["calls"] == 8
    assert data["native_calls"] == 7
    assert data["native_fraction"] == pytest.approx(7 / 8)
    assert data["declines"] == {"random_op": 1}
    assert data["ops"][0] == {
        "op": ADD,
        "calls": 3,
        "native_calls": 3,
        "hits": 2,
        "decision_hits": 0,
        "misses": 1,
        "miss_reasons": {"new_layout": 1},
        "declines": {},
    }
    assert [entry["op"] for entry in data["ops"]] == [op.op for op in known_report.ops]

    assert json.loads(json.dumps(data)) == data
    rebuilt = ExplainReport(ops=[OpReport(**entry) for entry in data["ops"]])
    assert rebuilt.ops == known_report.ops
    assert rebuilt.to_dict() == data

    # The dict is a copy: changing it leaves the report alone.
    data["ops"][-1]["declines"]["random_op"] = 99
    assert by_name(known_report)[RAND_LIKE].declines == {"random_op": 1}


def test_op_report_is_frozen(known_report):
    """Guards OpReport being an immutable record."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        known_report.ops[0].calls = 0  # type: ignore[misc]


def _cells(line: str) -> list[str]:
    return line.split()


def test_table_contents(known_report):
    """Guards table(): header, a rule, one row per op in report order with its figures
    and decline reasons, a rule, and a total row ending in "native xx.x%"."""
    lines = known_report.table().splitlines()
    assert len(lines) == 1 + 1 + len(known_report.ops) + 1 + 1
    header, rule, *rows, rule_again, total = lines
    assert _cells(header) == ["op", "calls", "native", "hits", "decision_hits", "misses", "declined",
                              "decline", "reasons"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert rule_again == rule
    assert [_cells(row) for row in rows] == [
        [ADD, "3", "3", "2", "0", "1", "0"],
        [MM, "2", "2", "1", "0", "1", "0"],
        [VIEW, "2", "2", "1", "0", "1", "0"],
        [RAND_LIKE, "1", "0", "0", "0", "0", "1", "random_op=1"],
    ]
    assert _cells(total) == ["total", "8", "7", "4", "0", "3", "1", "native", "87.5%"]
    assert total.endswith("native 87.5%")
    # Columns line up: every line's numeric columns end where the header's do.
    calls_end = header.index("calls") + len("calls")
    for line in [*rows, total]:
        assert line[calls_end - 1] != " " and line[calls_end] == " ", line
    assert str(known_report) == known_report.table()


def test_table_lists_several_reasons_sorted(tensors):
    """Guards the decline-reasons cell: "reason=n" pairs, sorted by reason name."""
    a, b, _ = tensors
    plain = torch.randn(8, 8)
    capacity = torchshard.cache_capacity()
    with torchshard.explain(print_report=False) as report:
        with pytest.raises(RuntimeError):
            a + plain
        torchshard.set_cache_capacity(0)
        try:
            a + b
        finally:
            torchshard.set_cache_capacity(capacity)
    (row,) = report.table().splitlines()[2:-2]
    assert row.endswith("cache_disabled=1, plain_tensor_arg=1")
    assert report.table().splitlines()[-1].endswith("native 0.0%")


def test_prints_table_to_given_file(tensors, capsys):
    """Guards file=: the table goes to that stream (and nothing to stdout)."""
    a, b, _ = tensors
    stream = io.StringIO()
    with torchshard.explain(file=stream) as report:
        a + b
    assert stream.getvalue() == report.table() + "\n"
    assert "aten::add.Tensor" in stream.getvalue()
    assert capsys.readouterr().out == ""


def test_prints_table_to_stdout_by_default(tensors, capsys):
    """Guards the default: the table is printed to stdout when the block ends."""
    a, b, _ = tensors
    with torchshard.explain() as report:
        a + b
        assert capsys.readouterr().out == "", "printed before the block ended"
    assert capsys.readouterr().out == report.table() + "\n"


def test_print_report_false_prints_nothing(tensors, capsys):
    """Guards print_report=False: nothing on stdout or stderr, even with file= given."""
    a, b, _ = tensors
    stream = io.StringIO()
    with torchshard.explain(print_report=False) as report:
        a + b
    with torchshard.explain(print_report=False, file=stream):
        a + b
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert stream.getvalue() == ""
    assert report.calls == 1


def test_empty_block():
    """Guards a block without DTensor calls: no ops, native_fraction 1.0, and a table
    with only the total row."""
    stream = io.StringIO()
    with torchshard.explain(file=stream) as report:
        torch.randn(4, 4) + torch.randn(4, 4)  # plain tensors never reach a rule
    assert report.ops == []
    assert report.calls == 0
    assert report.native_calls == 0
    assert report.native_fraction == 1.0
    assert report.declines == {}
    assert report.to_dict() == {
        "calls": 0,
        "native_calls": 0,
        "native_fraction": 1.0,
        "declines": {},
        "ops": [],
    }
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # header, rule, rule, total
    assert _cells(lines[-1]) == ["total", "0", "0", "0", "0", "0", "0", "native", "100.0%"]


# --- nesting, exceptions, threads, lifetime -----------------------------------------------


def test_nested_blocks_report_their_own_calls(tensors):
    """Guards nesting: the inner block sees only its calls (including ones of an op the
    outer block had already called), the outer block sees everything."""
    a, b, w = tensors
    with torchshard.explain(print_report=False) as outer:
        a + b
        a + b
        with torchshard.explain(print_report=False) as inner:
            a + b
            torch.mm(a, w)
            torch.mm(a, w)
        a.view(4, 16)
    inner_ops = by_name(inner)
    assert set(inner_ops) == {ADD, MM}
    assert figures(inner_ops[ADD]) == (1, 1, 1, 0, {})
    assert figures(inner_ops[MM]) == (2, 2, 1, 1, {})
    outer_ops = by_name(outer)
    assert set(outer_ops) == {ADD, MM, VIEW}
    assert figures(outer_ops[ADD]) == (3, 3, 2, 1, {})
    assert figures(outer_ops[MM]) == (2, 2, 1, 1, {})
    assert figures(outer_ops[VIEW]) == (1, 1, 0, 1, {})


def test_sibling_nested_blocks_and_printing(tensors):
    """Guards two inner blocks in a row within one outer block: each reports its own
    calls and prints its own table to its own stream."""
    a, b, w = tensors
    first_out, second_out = io.StringIO(), io.StringIO()
    with torchshard.explain(print_report=False) as outer:
        with torchshard.explain(file=first_out) as first:
            a + b
        with torchshard.explain(file=second_out) as second:
            a + b
            torch.mm(a, w)
    assert [figures(op) for op in first.ops] == [(1, 1, 0, 1, {})]
    assert {op.op: figures(op) for op in second.ops} == {
        ADD: (1, 1, 1, 0, {}),
        MM: (1, 1, 0, 1, {}),
    }
    assert outer.calls == 3
    assert first_out.getvalue() == first.table() + "\n"
    assert second_out.getvalue() == second.table() + "\n"
    assert MM not in first_out.getvalue()


def test_exception_inside_block_fills_report_and_propagates(tensors):
    """Guards the block's exit on an exception: the exception propagates unchanged, the
    report still holds the calls made before it, it is still printed, and recording
    stops (a later block does not see calls made after the failed one)."""
    a, b, w = tensors

    class Boom(Exception):
        pass

    stream = io.StringIO()
    with pytest.raises(Boom, match="inside explain"):
        with torchshard.explain(file=stream) as report:
            a + b
            a + b
            raise Boom("inside explain")
    assert [op.op for op in report.ops] == [ADD]
    assert figures(report.ops[0]) == (2, 2, 1, 1, {})
    assert stream.getvalue() == report.table() + "\n"

    before = torchshard._C.op_tallies()
    torch.mm(a, w)
    assert torchshard._C.op_tallies() == before, "recording continued after the block"
    with torchshard.explain(print_report=False) as later:
        a.view(4, 16)
    assert [op.op for op in later.ops] == [VIEW]


def test_exception_in_inner_block_keeps_outer_recording(tensors):
    """Guards nesting with an exception: the inner block closes, the outer one keeps
    recording and sees calls from before, inside and after the inner block."""
    a, b, w = tensors
    with torchshard.explain(print_report=False) as outer:
        a + b
        with pytest.raises(ValueError):
            with torchshard.explain(print_report=False) as inner:
                torch.mm(a, w)
                raise ValueError
        a + b
    assert [(op.op, op.calls) for op in inner.ops] == [(MM, 1)]
    assert {op.op: op.calls for op in outer.ops} == {ADD: 2, MM: 1}


def test_interleaved_blocks_each_report_their_own_span(tensors):
    """Guards blocks that end out of order (as blocks on different threads can): each
    reports exactly the calls made between its own start and end."""
    a, b, _ = tensors
    first_cm = torchshard.explain(print_report=False)
    first = first_cm.__enter__()
    a + b
    second_cm = torchshard.explain(print_report=False)
    second = second_cm.__enter__()
    a + b
    first_cm.__exit__(None, None, None)  # ends before the block opened inside it
    a + b
    third_cm = torchshard.explain(print_report=False)
    third = third_cm.__enter__()
    a + b
    second_cm.__exit__(None, None, None)
    a + b
    third_cm.__exit__(None, None, None)
    assert [(op.op, op.calls) for op in first.ops] == [(ADD, 2)]
    assert [(op.op, op.calls) for op in second.ops] == [(ADD, 3)]
    assert [(op.op, op.calls) for op in third.ops] == [(ADD, 2)]
    a + b
    with torchshard.explain(print_report=False) as later:
        pass
    assert later.ops == []


def test_calls_from_another_thread_are_counted(tensors):
    """Guards process-wide recording: a thread that started before the block and makes
    its calls while it is open is counted (its own cache: its first call misses);
    the calls it makes after the block are not seen by a later block."""
    a, b, w = tensors
    go, done, go_after, done_after = (threading.Event() for _ in range(4))
    errors: list[BaseException] = []

    def worker():
        try:
            assert go.wait(JOIN_TIMEOUT_S)
            a + b
            a + b
            torch.mm(a, w)
            done.set()
            assert go_after.wait(JOIN_TIMEOUT_S)
            a + b
            torch.mm(a, w)
            done_after.set()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            done.set()
            done_after.set()

    thread = threading.Thread(target=worker, name="ts-explain-worker", daemon=True)
    thread.start()
    try:
        a + b  # this thread's cache gets the entry; the worker's does not
        with torchshard.explain(print_report=False) as report:
            a + b
            go.set()
            assert done.wait(JOIN_TIMEOUT_S)
        go_after.set()
        assert done_after.wait(JOIN_TIMEOUT_S)
    finally:
        go.set()
        go_after.set()
        thread.join(JOIN_TIMEOUT_S)
    assert not thread.is_alive()
    assert not errors, errors
    ops = by_name(report)
    assert set(ops) == {ADD, MM}
    # Main: one hit. Worker: a miss then a hit in its own cache.
    assert figures(ops[ADD]) == (3, 3, 2, 1, {})
    assert figures(ops[MM]) == (1, 1, 0, 1, {})

    with torchshard.explain(print_report=False) as later:
        pass
    assert later.ops == []


def test_threads_started_inside_block_are_counted(tensors):
    """Guards recording across several short-lived threads started in the block."""
    a, b, _ = tensors
    errors: list[BaseException] = []

    def worker():
        try:
            for _ in range(5):
                a + b
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    with torchshard.explain(print_report=False) as report:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    # Each thread has its own cache: one miss and four hits each.
    assert [figures(op) for op in report.ops] == [(20, 20, 16, 4, {})]


def test_calls_after_the_block_are_not_recorded(tensors):
    """Guards "only while a block is open": calls after a block change no tally, a
    later block does not see them, and the first report is not changed by them."""
    a, b, w = tensors
    torchshard.reset_stats()
    with torchshard.explain(print_report=False) as first:
        a + b
    first_dict = first.to_dict()
    tallies = torchshard._C.op_tallies()
    for _ in range(5):
        a + b
    torch.mm(a, w)
    torch.rand_like(a)
    assert torchshard._C.op_tallies() == tallies
    assert first.to_dict() == first_dict

    with torchshard.explain(print_report=False) as second:
        a.view(4, 16)
    assert [op.op for op in second.ops] == [VIEW]
    assert figures(second.ops[0]) == (1, 1, 0, 1, {})
    # stats() did count the calls made between the blocks.
    assert torchshard.stats()["calls"] == 1 + 5 + 1 + 1 + 1


# --- stats()["calls"] -------------------------------------------------------------------


def test_stats_calls_is_native_plus_declined(tensors):
    """Guards stats()["calls"]: every call that reached a rule is either native or
    declined, in the totals and per thread, and matches explain's count."""
    a, b, w = tensors
    plain = torch.randn(8, 8)
    torchshard.reset_stats()
    with torchshard.explain(print_report=False) as report:
        a + b
        a + b
        torch.mm(a, w)
        a.view(4, 16)
        torch.rand_like(a)
        with pytest.raises(RuntimeError):
            a + plain
    stats = torchshard.stats()
    assert isinstance(stats["calls"], int)
    assert stats["calls"] == 6
    assert stats["native_calls"] == 4
    assert stats["declined"] == 2
    assert stats["calls"] == stats["native_calls"] + stats["declined"]
    assert stats["hits"] + stats["misses"] == 4
    mine = stats["threads"][threading.get_ident()]
    assert mine["calls"] == mine["native_calls"] + mine["declined"] == 6
    assert report.calls == stats["calls"]
    assert report.native_calls == stats["native_calls"]
    assert report.declines == stats["declines"]
    torchshard.reset_stats()
    assert torchshard.stats()["calls"] == 0


def test_no_thread_cache_declines_are_reported(tmp_path):
    """Guards explain() and stats() agreeing on every call that reached a rule, including
    the "no_thread_cache" declines after torchshard's (atexit) shutdown. Runs in a fresh
    interpreter: shutdown cannot be undone."""
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(
        """
        import json, warnings
        import torch
        import torch.distributed as dist
        from torch.testing._internal.distributed.fake_pg import FakeStore
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor
        import torchshard
        mesh = init_device_mesh("cpu", (4,))
        a = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        torchshard._C.shutdown()
        torchshard.reset_stats()
        with torchshard.explain(print_report=False) as report:
            a + a
        stats = torchshard.stats()
        print(json.dumps({"stats_calls": stats["calls"], "stats_declines": stats["declines"],
                          "report": report.to_dict()}))
        """
    ))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSHARD_")}
    proc = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["stats_calls"] == 1
    assert result["stats_declines"] == {"no_thread_cache": 1}
    report = result["report"]
    assert report["calls"] == 1
    assert report["declines"] == {"no_thread_cache": 1}
    assert [(op["op"], op["calls"], op["declines"]) for op in report["ops"]] == [
        (ADD, 1, {"no_thread_cache": 1})
    ]
