"""Smoke test of the benchmark suite: `benchmarks/run.py --quick --tiny` runs and ends with the headline JSON."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADLINE_KEYS = {
    "store_speedup_vs_pickle",
    "store_overhead_vs_zarr",
    "load_field_speedup_vs_pickle",
    "load_tiny_speedup_vs_pickle",
    "load_flatness",
    "load_packed_array_speedup_vs_pickle",
    "tiny_null_build_vs_first_run",
    "tiny_first_run_overhead_ms_per_input",
    "tiny_disk_vs_pickle",
    "tiny_files_per_input",
    "tiny_load_speedup_vs_pickle",
    "sweep_stage_runs_ratio",
    "sweep_first_run_speedup_vs_joblib",
    "sweep_rerun_vs_joblib",
    "s3_small_records_speedup",
    "s3_requests_per_record_write",
    "s3_requests_per_record_check",
    "hash_share_of_store",
    "read_throughput_vs_zarr",
}


@pytest.mark.slow  # about 15 s: every benchmark once, several of them as whole processes
def test_run_tiny_prints_tables_and_ends_with_headline_json(tmp_path):
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("AWS_") and key != "REPYPE_TEST_COUNTS"
    }
    env["TMPDIR"] = str(tmp_path)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--tiny"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = completed.stdout.strip().splitlines()
    headlines = json.loads(lines[-1])
    assert isinstance(headlines, dict)
    assert set(headlines) >= HEADLINE_KEYS
    for key in HEADLINE_KEYS:
        value = headlines[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert value > 0 and not math.isnan(value), (key, value)
    # one table per benchmark, each with a title line, and every alternative labelled in the tables
    titles = "\n".join(line for line in lines if line.startswith("## "))
    for benchmark in ("Store a task", "Load one small field", "tiny inputs", "Sweep as whole processes", "S3"):
        assert benchmark in titles, titles
    for alternative in ("one pickle per task", "plain Zarr", "ancestor-only pick-up", "zarr write", "joblib.Memory"):
        assert alternative in completed.stdout, alternative
    # upstream repype 1.0.4 is never installed in the tiny mode: its rows are skipped with a note, its keys absent
    assert "upstream repype 1.0.4 skipped in the tiny mode" in completed.stdout
    assert not any(key.endswith("_vs_upstream") for key in headlines), headlines


def test_upstream_peer_is_skipped_with_a_note_when_its_venv_cannot_be_made(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import peers
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("REPYPE_BENCH_CACHE", str(blocker / "cache"))
    python, note = peers.upstream_python()
    assert python is None
    assert note.startswith("upstream repype 1.0.4 skipped: cannot create"), note
    assert str(blocker) in note
