"""A hung or gone S3 endpoint fails a run within a bound, names the store without secrets; a re-run resumes.

The store is reached through a local TCP proxy in front of the moto server, which the test
freezes (a hung server), cuts (a gone server) and restores.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse

import pytest
import yaml
from catalogue import as_pattern, catalogue
from faultproxy import FaultProxy
from tasktree import PIPELINE

SECRET = "sentinel-secret-7f3a"
TESTS = pathlib.Path(__file__).parent


def repype_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "repype", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "REPYPE_CLI_INTERMEDIATE": "0", "PYTHONPATH": str(TESTS)},
    )
    return result, time.monotonic() - started


def s3_tree(root: pathlib.Path, bucket: str, endpoint: str) -> pathlib.Path:
    options = {"endpoint_url": endpoint, "key": "testing", "secret": SECRET}
    spec = {
        "runnable": False,
        "pipeline": PIPELINE,
        "input_ids": [1, 2],
        "config": {"load": {"size": 8}},
        "store": f"s3://{bucket}/results",
        "storage_options": options,
    }
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    (root / "a" / "task.yml").write_text("runnable: true\n")
    (root / "b" / "task.yml").write_text("runnable: true\nconfig: {threshold: {threshold: 0.9}}\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["freeze", "cut"])
def test_a_hung_or_gone_endpoint_fails_the_run_in_bounded_time_and_a_rerun_resumes(tmp_path, s3_server, fault):
    target = urllib.parse.urlsplit(s3_server.endpoint_url)
    with FaultProxy((target.hostname, target.port)) as proxy:
        root = s3_tree(tmp_path / "tree", s3_server.new_bucket(), proxy.url)
        first, _ = repype_cli(str(root), "--run", "--task", str(root / "a"))
        assert first.returncode == 0, first.stdout + first.stderr

        proxy.mode = fault
        failed, seconds = repype_cli(str(root), "--run")
        output = failed.stdout + failed.stderr
        assert failed.returncode == 1, output
        assert seconds < 90, f"a {fault} endpoint took {seconds:.0f} s to fail the run"
        assert re.search(as_pattern(catalogue("While running")["s3-hung-or-gone"]), output), output
        assert "Traceback" not in output
        assert SECRET not in output

        proxy.restore()
        resumed, _ = repype_cli(str(root), "--run")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "0 task(s) selected" in repype_cli(str(root))[0].stdout
