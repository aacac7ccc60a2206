"""Smoke test of the benchmark suite: `benchmarks/run.py --quick --tiny` runs and ends with the headline JSON."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADLINE_TOPICS = ("store", "load", "tiny", "sweep", "s3", "hash", "read", "why", "explain", "fingerprint")


def documented_headline_keys() -> set[str]:
    """The headline keys benchmarks/README.md explains in its table "What each benchmark measures"
    (a row's first column, or named in a row's text: every key starts with its benchmark's topic)."""
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    table = readme[readme.index("## What each benchmark measures") : readme.index("## Results on this machine")]
    return set(re.findall(rf"`((?:{'|'.join(HEADLINE_TOPICS)})_[a-z0-9_]+)`", table))


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
    documented = documented_headline_keys()
    assert set(headlines) <= documented, sorted(set(headlines) - documented)  # every printed key is explained
    expected = {key for key in documented if not key.endswith("_vs_upstream")}  # upstream: not in the tiny mode
    assert set(headlines) >= expected, sorted(expected - set(headlines))
    for key in expected:
        value = headlines[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        lowest_ok = 0 if key.endswith("_duplicates") else math.ulp(0)  # a count of duplicates may be 0; ratios not
        assert value >= lowest_ok and not math.isnan(value), (key, value)
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
