"""The bundled example: README's first command runs it and leaves the checkout clean."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def git(*args: str, cwd: pathlib.Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_running_the_example_leaves_a_clone_clean(tmp_path):
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(REPOSITORY), str(clone), cwd=tmp_path)
    assert git("status", "--porcelain", cwd=clone) == ""
    for command in (["examples/blobs", "--run"], ["store", "ls", "examples/blobs"]):
        done = subprocess.run(
            [sys.executable, "-m", "repype", *command], cwd=clone, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "sigma=3/threshold=0.6" in done.stdout
    assert (clone / "examples/blobs/sigma=1/times.csv").is_file()  # the run wrote its outputs ...
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""  # ... and git ignores them
