"""Files written in task directories and in local stores honour the umask, so a lab can share them."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from tasktree import PIPELINE, write_tree

import repype.store
from repype.files import write_text_atomically


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_task_directory_files_honour_the_umask(tmp_path, umask):
    spec = {"runnable": True, "pipeline": PIPELINE, "input_ids": [1, 2], "store": str(tmp_path / "store")}
    task = write_tree(tmp_path / "tree", {"": spec})[""]
    task.run(task.create_config())
    written = [task.digest_sha_filepath, task.digest_task_filepath, task.times_filepath]
    assert {path.name: mode(path) for path in written} == {path.name: 0o666 & ~umask for path in written}


def test_local_store_files_and_directories_honour_the_umask(tmp_path, umask):
    store = repype.store.open(str(tmp_path / "store"))
    ref = store.put_value(np.arange(100_000, dtype=np.float64), "x")
    store.put_record("ab" * 20, {"x": ref}, 1.0)
    store.put_manifest("task", {"inputs": [[1, {"x": ref}]]})
    files = [path for path in (tmp_path / "store").rglob("*") if path.is_file()]
    directories = [path for path in (tmp_path / "store").rglob("*") if path.is_dir()]
    assert len(files) > 5 and directories
    assert {mode(path) for path in files} == {0o666 & ~umask}
    assert {mode(path) for path in directories} == {0o777 & ~umask}


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, umask):
    path = tmp_path / "shared.txt"
    write_text_atomically(path, "one")
    assert mode(path) == 0o666 & ~umask
    path.chmod(0o664)
    write_text_atomically(path, "two")
    assert path.read_text() == "two" and mode(path) == 0o664
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]  # no temporary file left behind
