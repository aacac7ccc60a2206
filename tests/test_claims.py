"""Execution claims: concurrent processes on one store run each missing stage execution once."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import yaml

import repype.store
from repype.config import Config
from repype.pipeline import create_pipeline
from repype.runner import InputRunner
from repype.store import claims, layout

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
KEY = "c1" * 20


@pytest.fixture
def bench_counts(tmp_path, monkeypatch) -> pathlib.Path:
    """The file the work functions of `benchmarks/treestages.py` count their executions into, in any process."""
    path = tmp_path / "executions.txt"
    monkeypatch.setenv("REPYPE_BENCH_COUNTS", str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return path


def executions(path: pathlib.Path) -> Counter:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def nodes(store: repype.store.Store) -> list[str]:
    return sorted(claims.read_claims(store.backend))


# --- acquire, renew, expire, take over, release ------------------------------------------------------


def test_a_claim_is_exclusive_until_released(tmp_path):
    first, second = (repype.store.open(str(tmp_path / "store")) for _ in range(2))
    with first.claim(KEY) as mine:
        assert mine.held and mine.generation == 0 and mine.holder == f"{os.uname().nodename}:{os.getpid()}"
        with second.claim(KEY) as other:
            assert not other.held and other.owner == mine.owner  # another live holder: nothing acquired
        with first.claim(KEY) as again:
            assert not again.held  # another block of the same process waits too
        assert second.live_claim(KEY).owner == mine.owner
        assert nodes(first) == [f"{KEY}.0"]
    assert nodes(first) == [] and second.live_claim(KEY) is None
    with second.claim(KEY) as now:
        assert now.held and now.owner != mine.owner


def test_an_exception_in_the_block_releases_the_claim(tmp_path):
    store = repype.store.open(str(tmp_path / "store"))
    with pytest.raises(RuntimeError, match="stage failed"), store.claim(KEY) as claim:
        assert claim.held
        raise RuntimeError("stage failed")
    assert nodes(store) == []


def test_held_claims_are_renewed(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT", 0.05)
    store = repype.store.open(str(tmp_path / "store"))
    with store.claim(KEY) as claim:
        time.sleep(0.4)
        renewed = store.live_claim(KEY)
        assert renewed.owner == claim.owner and renewed.started == claim.started and renewed.renewed > claim.renewed


def test_a_dead_claim_is_taken_over_by_the_next_generation(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT", 60.0)  # nobody renews within the test
    monkeypatch.setattr(claims, "EXPIRY", 0.3)
    stalled, taker, third = (repype.store.open(str(tmp_path / "store")) for _ in range(3))
    with stalled.claim(KEY) as old:
        time.sleep(0.4)
        assert stalled.live_claim(KEY) is None  # expired
        with taker.claim(KEY) as new:
            assert new.held and new.generation == 1
            with third.claim(KEY) as seen:
                assert not seen.held and seen.owner == new.owner  # generation 0 is still there: third waits
            assert nodes(taker) == [f"{KEY}.0", f"{KEY}.1"]
        assert old.held
    assert nodes(taker) == []  # the taker's release removed its generation and the dead one


def test_a_read_only_store_runs_unclaimed(tmp_path):
    repype.store.open(str(tmp_path / "store"))
    reader = repype.store.open(str(tmp_path / "store"), mode="r")
    with reader.claim(KEY) as claim:
        assert claim is None
    assert reader.live_claim(KEY) is None


def test_claims_are_released_at_exit_and_a_killed_claimer_is_taken_over_after_expiry(tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    store = repype.store.open(url)
    leave = f"import repype.store; repype.store.open({url!r}).claims.acquire({KEY!r})"
    subprocess.run([sys.executable, "-c", leave], check=True, timeout=60)
    assert nodes(store) == []  # atexit released it
    hold = (
        f"import sys, time, repype.store; c = repype.store.open({url!r}).claims.acquire({KEY!r}); "
        "print(c.held, flush=True); time.sleep(60)"
    )
    claimer = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert claimer.stdout.readline().strip() == "True"
    finally:
        claimer.send_signal(signal.SIGKILL)
        claimer.wait(timeout=30)
    with store.claim(KEY) as claim:
        assert not claim.held and claim.pid == claimer.pid  # its last renewal is recent: still taken as live
    monkeypatch.setattr(claims, "EXPIRY", 0.3)
    time.sleep(0.4)
    report = store.verify()
    assert report.ok and report.running == 0
    dry = store.gc(grace=0, dry_run=True)
    assert dry.expired_claims == [f"{KEY}.0"] and "1 expired execution claim(s)" in dry.format()
    with store.claim(KEY) as claim:
        assert claim.held and claim.generation == 1
        assert store.verify().running == 1 and "being run now" in store.ls().format()
    assert nodes(store) == []
    subprocess.run([sys.executable, "-c", hold.replace("time.sleep(60)", "")], check=True, timeout=60)
    store.backend.set(layout.metadata_key(layout.claim_path(KEY, 0)), b"{damaged")
    assert store.gc(grace=0, dry_run=False).expired_claims == [f"{KEY}.0"] and nodes(store) == []


# --- the runner: wait for another process's claim -----------------------------------------------------


def sweep_runner(store: repype.store.Store, status=None) -> tuple[InputRunner, Config]:
    import treestages

    pipeline = create_pipeline([treestages.Render(), treestages.Blur()])
    return InputRunner(store, pipeline, status=status), Config({"render": {"delay": 0.5, "side": 16}})


def test_the_runner_adopts_what_the_claim_holder_records_instead_of_running_it(tmp_path, bench_counts):
    url = str(tmp_path / "store")
    holder, waiter = (repype.store.open(url) for _ in range(2))
    holder_runner, config = sweep_runner(holder)
    lines = []

    class Status:
        def write(self, data, intermediate=False):
            lines.append(data.get("text"))

    waiter_runner, _ = sweep_runner(waiter, Status())
    run = waiter_runner.start(1, config)
    key = waiter_runner.key(run, waiter_runner.pipeline.stages[0])
    thread = threading.Thread(target=lambda: holder_runner.finish(holder_runner.start(1, config)))
    thread.start()
    while waiter.live_claim(key) is None:
        time.sleep(0.01)
    waiter_runner.finish(run)
    thread.join()
    assert executions(bench_counts) == {"render": 1, "blur": 1}
    assert run.reused == ["render", "blur"] and run.executed == []
    assert f"waiting for render on input 1, claimed by {os.uname().nodename}:{os.getpid()}" in lines


def test_the_runner_takes_over_when_the_claim_dies(tmp_path, bench_counts, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT", 60.0)
    monkeypatch.setattr(claims, "EXPIRY", 0.3)
    store = repype.store.open(str(tmp_path / "store"))
    runner, config = sweep_runner(store)
    run = runner.start(1, config)
    stalled = repype.store.open(str(tmp_path / "store"))
    dead = stalled.claims.acquire(runner.key(run, runner.pipeline.stages[0]))
    runner.finish(run)
    assert executions(bench_counts) == {"render": 1, "blur": 1} and run.executed == ["render", "blur"]
    assert dead.held and nodes(store) == []
    stalled.claims.release(dead)  # else this process would renew it until the end of the test session


# --- whole processes -------------------------------------------------------------------------------------


def write_sweep(root: pathlib.Path, siblings: int, store: dict | None = None) -> None:
    """A 2-input sweep of `siblings` tasks over the shared render -> blur prefix (render sleeps 0.3 s)."""
    root.mkdir(parents=True)
    spec = {
        "runnable": False,
        "pipeline": ["treestages.Render", "treestages.Blur", "treestages.Measure"],
        "input_ids": [1, 2],
        "config": {"render": {"delay": 0.3, "side": 16}},
        **(store or {}),
    }
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    for index in range(siblings):
        child = root / f"threshold={index}"
        child.mkdir()
        config = {"measure": {"threshold": round(-0.5 + 0.25 * index, 2)}}
        (child / "task.yml").write_text(yaml.safe_dump({"runnable": True, "config": config}))


def run_concurrently(root: pathlib.Path, processes: int, env: dict | None = None) -> list[str]:
    """`python -m repype ROOT --run` in `processes` processes started at once; their outputs."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "repype", str(root), "--run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for _ in range(processes)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in started]
    for process, output in zip(started, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


def loaded_foregrounds(root: pathlib.Path, siblings: int) -> list[list[float]]:
    from repype.batch import Batch

    batch = Batch()
    batch.load(root)
    assert len(batch.contexts) == siblings
    return [[value["foreground"] for value in context.task.load().values()] for context in batch.contexts]


@pytest.mark.slow  # 15-30 s on 2 shared cores: 4 processes, each running its tasks in child processes
def test_four_concurrent_runs_on_one_local_store_run_the_shared_prefix_once_per_input(tmp_path, bench_counts):
    root = tmp_path / "sweep"
    write_sweep(root, siblings=4)
    run_concurrently(root, processes=4)
    assert executions(bench_counts) == {"render": 2, "blur": 2, "measure": 8}
    foregrounds = loaded_foregrounds(root, 4)
    assert all(len(values) == 2 for values in foregrounds)
    assert nodes(repype.store.open(str(root / ".repype"))) == []


@pytest.mark.slow  # 25-40 s on 2 shared cores: moto's server is CPU-bound
def test_four_concurrent_runs_on_one_s3_store_run_the_shared_prefix_once_per_input(tmp_path, bench_counts, s3_server):
    root = tmp_path / "sweep"
    url = f"s3://{s3_server.new_bucket()}/store"
    write_sweep(root, siblings=2, store={"store": url, "storage_options": s3_server.storage_options})
    run_concurrently(root, processes=4)
    assert executions(bench_counts) == {"render": 2, "blur": 2, "measure": 4}
    assert all(len(values) == 2 for values in loaded_foregrounds(root, 2))
    assert nodes(repype.store.open(url, storage_options=s3_server.storage_options)) == []
