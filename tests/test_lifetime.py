"""Process-lifetime scenarios, each in a fresh interpreter.

Every scenario must exit with status 0 and print nothing at all on stderr: torchshard
keeps Python objects in per-thread caches, and releasing them at the wrong moment
(after finalization started, from a dead thread, twice) shows up as a crash, a hang,
or a "Fatal Python error" / "Exception ignored" line at exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


SUBPROCESS_TIMEOUT_S = 120
REPO_ROOT = Path(__file__).resolve().parents[1]

PRELUDE = textwrap.dedent(
    """
    import sys, threading, time
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    import torchshard
    mesh = init_device_mesh("cpu", (4,))

    def same(stock, ours):
        assert type(ours) is DTensor, type(ours)
        assert ours.placements == stock.placements, (ours.placements, stock.placements)
        assert ours.shape == stock.shape and ours.stride() == stock.stride()
        assert ours.dtype == stock.dtype
        assert torch.equal(ours.to_local(), stock.to_local())
    """
)


def run_script(tmp_path: Path, body: str, env_overrides: dict[str, str] | None = None,
               prelude: str = PRELUDE, args: list[str] | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "scenario.py"
    script.write_text(prelude + textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSHARD_")}
    env.update(env_overrides or {})
    return subprocess.run(
        [sys.executable, str(script)] if args is None else [sys.executable, *args],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def assert_clean_exit(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit status {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    assert proc.stderr == "", f"unexpected stderr:\n{proc.stderr}"


def test_threads_with_warm_caches_end_before_exit(tmp_path):
    """Guards per-thread cache release when a thread ends (capsule in the thread's
    state dict), and the atexit release afterwards, with no stderr noise."""
    proc = run_script(
        tmp_path,
        """
        x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        w = distribute_tensor(torch.randn(8, 4), mesh, [Replicate()])
        with torchshard.disabled():
            expected = torch.mm(torch.relu(x + x), w).sum(dim=1)
        errors = []
        idents = []
        def work():
            try:
                idents.append(threading.get_ident())
                for _ in range(5):
                    same(expected, torch.mm(torch.relu(x + x), w).sum(dim=1))
            except BaseException as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        stats = torchshard.stats()
        assert stats["native_calls"] == 4 * 5 * 4, stats  # 4 threads x 5 rounds x 4 ops
        assert stats["hits"] > 0, stats
        assert not set(idents) & set(stats["threads"]), "ended threads still listed"
        # The main thread keeps a warm cache into exit as well.
        same(expected, torch.mm(torch.relu(x + x), w).sum(dim=1))
        assert torchshard.stats()["threads"][threading.get_ident()]["entries"] > 0
        print("ok")
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"


# Daemon threads that are still inside a torch call when finalization kills them abort
# the process with stock torch as well (CPython 3.11 pthread_exit through C++ frames:
# "terminate called without an active exception", even for plain tensors). So the
# workers keep dispatching through torchshard's atexit shutdown and beyond, and an
# atexit handler registered *before* `import torchshard` (so it runs *after*
# torchshard's) then parks them in a pure-Python wait before finalization proper.
DAEMON_PRELUDE = textwrap.dedent(
    """
    import atexit, threading, time
    _stop = threading.Event()
    _parked = []
    _threads = []
    _after_shutdown = [0]
    def _park_workers():
        _stop.set()
        deadline = time.monotonic() + 60
        while len(_parked) < len(_threads) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(_parked) == len(_threads), "workers did not park"
        print("parked", sum(_after_shutdown) > 0, flush=True)
    atexit.register(_park_workers)
    """
) + PRELUDE


def test_daemon_threads_dispatching_through_shutdown(tmp_path):
    """Guards the atexit shutdown racing with daemon threads that are mid-dispatch:
    caches released under them, and dispatch after shutdown, must neither crash nor
    change results."""
    proc = run_script(
        tmp_path,
        """
        from torchshard import _C
        x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        with torchshard.disabled():
            expected = torch.relu(x + x).sum(dim=1)
        expected_local = expected.to_local()
        warm = threading.Barrier(5, timeout=60)
        forever = threading.Event()
        def work():
            for _ in range(3):
                same(expected, torch.relu(x + x).sum(dim=1))
            warm.wait()
            while True:
                y = torch.relu(x + x).sum(dim=1)
                assert torch.equal(y.to_local(), expected_local)
                if _C.is_shut_down():
                    _after_shutdown[0] += 1
                if _stop.is_set():
                    break
            _parked.append(threading.get_ident())
            forever.wait()
        for _ in range(4):
            t = threading.Thread(target=work, daemon=True)
            _threads.append(t)
            t.start()
        warm.wait()
        stats = torchshard.stats()
        assert stats["native_calls"] >= 12, stats
        assert sum(1 for c in stats["threads"].values() if c["entries"] > 0) >= 4, stats
        print("exiting", flush=True)
        """,
        prelude=DAEMON_PRELUDE,
    )
    assert_clean_exit(proc)
    assert proc.stdout.split() == ["exiting", "parked", "True"]


def test_parked_daemon_threads_with_warm_caches_at_exit(tmp_path):
    """Guards releasing the caches of daemon threads that never end (their thread
    state is never cleared): atexit must release them, once, without crashing."""
    proc = run_script(
        tmp_path,
        """
        x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        with torchshard.disabled():
            expected = (x * 3.0).sum(dim=0)
        ready = threading.Barrier(5, timeout=60)
        forever = threading.Event()
        def work(i):
            for d in range(i + 1):
                same(expected, (x * 3.0).sum(dim=0))
                (x + d).sum(dim=1)
            ready.wait()
            forever.wait()
        for i in range(4):
            threading.Thread(target=work, args=(i,), daemon=True).start()
        ready.wait()
        stats = torchshard.stats()
        warm = [c for c in stats["threads"].values() if c["entries"] > 0]
        assert len(warm) >= 4, stats
        print("ok", flush=True)
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"


def test_exit_with_full_caches_and_evictions(tmp_path):
    """Guards flush-when-full and the release of full caches at exit, in the main
    thread, in ended threads and in a parked daemon thread
    (TORCHSHARD_CACHE_CAPACITY=8, ~40 distinct entries per thread)."""
    proc = run_script(
        tmp_path,
        """
        assert torchshard.cache_capacity() == 8, torchshard.cache_capacity()
        inputs = [distribute_tensor(torch.randn(4 + n, 8), mesh, [Shard(1)]) for n in range(20)]
        def calls(t):
            return [t.sum(dim=0), t + t]
        with torchshard.disabled():
            expected = [calls(t) for t in inputs]
        def run_all():
            for _ in range(2):
                for t, exp in zip(inputs, expected):
                    for e, o in zip(exp, calls(t)):
                        same(e, o)
        errors = []
        def work():
            try:
                run_all()
            except BaseException as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads: t.start()
        for t in threads: t.join(60)
        assert not errors, errors
        ready = threading.Event()
        forever = threading.Event()
        def daemon():
            run_all()
            ready.set()
            forever.wait()
        threading.Thread(target=daemon, daemon=True).start()
        assert ready.wait(60)
        run_all()
        stats = torchshard.stats()
        assert stats["capacity"] == 8, stats
        assert stats["evictions"] > 0, stats
        assert stats["native_calls"] > 0, stats
        for ident, counters in stats["threads"].items():
            assert counters["entries"] <= 8, (ident, counters)
        assert stats["threads"][threading.get_ident()]["evictions"] > 0, stats
        print("ok", flush=True)
        """,
        env_overrides={"TORCHSHARD_CACHE_CAPACITY": "8"},
    )
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"


def test_disable_env_var_import_does_not_enable(tmp_path):
    """Guards TORCHSHARD_DISABLE=1: import leaves DTensor stock (no rules installed),
    and a later enable() installs them and serves calls natively."""
    proc = run_script(
        tmp_path,
        """
        from torch._library.simple_registry import find_torch_dispatch_rule
        add = torch.ops.aten.add.Tensor
        assert torchshard.is_enabled() is False
        assert torchshard.enabled_ops() == frozenset()
        assert find_torch_dispatch_rule(add, DTensor) is None
        x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        expected = x + x
        assert torchshard.stats()["native_calls"] == 0
        torchshard.enable()
        assert torchshard.is_enabled() is True
        assert add in torchshard.enabled_ops()
        assert find_torch_dispatch_rule(add, DTensor) is not None
        ours = x + x
        ours = x + x
        same(expected, ours)
        stats = torchshard.stats()
        assert stats["native_calls"] == 2 and stats["hits"] == 1, stats
        print("ok", flush=True)
        """,
        env_overrides={"TORCHSHARD_DISABLE": "1"},
    )
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"


def test_cache_capacity_env_var_zero_declines_everything(tmp_path):
    """Guards TORCHSHARD_CACHE_CAPACITY=0: every call goes to stock, declined as
    cache_disabled, with stock's results."""
    proc = run_script(
        tmp_path,
        """
        assert torchshard.is_enabled() and torchshard.cache_capacity() == 0
        x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        with torchshard.disabled():
            expected = x + x
        same(expected, x + x)
        stats = torchshard.stats()
        assert stats["native_calls"] == 0 and stats["entries"] == 0, stats
        assert stats["declines"].get("cache_disabled", 0) >= 1, stats
        print("ok", flush=True)
        """,
        env_overrides={"TORCHSHARD_CACHE_CAPACITY": "0"},
    )
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"


def test_info_module_prints_both_torch_versions(tmp_path):
    """Guards `python -m torchshard.info`: runs cleanly and reports the torch version
    it was built with and the one running."""
    import torch

    proc = run_script(tmp_path, "", args=["-m", "torchshard.info"])
    assert_clean_exit(proc)
    lines = proc.stdout.splitlines()
    torch_lines = [line.strip() for line in lines if line.strip().startswith("torch:")]
    assert torch_lines == [f"torch: {torch.__version__}"] * 2, proc.stdout
    assert "built_with:" in proc.stdout and "running:" in proc.stdout
    assert any(line.strip() == "enabled: True" for line in lines), proc.stdout


def test_fork_after_warm_caches_then_dispatch_in_child(tmp_path):
    """Guards os.fork() with warm caches in the parent, including a thread that is alive
    (mid-wait) at fork time: the child inherits its cache, Python discards that thread's
    state in the child (retiring its cache there), and DTensor ops in the child still
    give stock's results, natively."""
    proc = run_script(
        tmp_path,
        """
        import os
        x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
        with torchshard.disabled():
            expected = torch.relu(x + x).sum(dim=1)
        same(expected, torch.relu(x + x).sum(dim=1))
        warm, release = threading.Event(), threading.Event()
        def work():
            same(expected, torch.relu(x + x).sum(dim=1))
            warm.set()
            release.wait()
        worker = threading.Thread(target=work)
        worker.start()
        warm.wait(60)
        assert len(torchshard.stats()["threads"]) == 2
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                assert len(torchshard.stats()["threads"]) == 1  # the worker's state is gone here
                torchshard.reset_stats()
                for _ in range(3):
                    same(expected, torch.relu(x + x).sum(dim=1))
                with torchshard.disabled():
                    same(expected, torch.relu(x + x).sum(dim=1))
                same(expected, torch.relu(x + x).sum(dim=1))
                assert torchshard.stats()["native_calls"] >= 9
                status = 0
            finally:
                sys.stdout.flush()
                os._exit(status)
        _, child_status = os.waitpid(pid, 0)
        release.set()
        worker.join()
        assert os.waitstatus_to_exitcode(child_status) == 0, child_status
        same(expected, torch.relu(x + x).sum(dim=1))
        print("ok", flush=True)
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout.strip() == "ok"
