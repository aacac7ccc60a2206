"""A small copy of the bundled example (examples/blobs), run in-process, for tests of results."""

from __future__ import annotations

import pathlib
import shutil
import sys

import yaml

from repype.batch import Batch

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "blobs"


def copy_example(root: pathlib.Path, size: int = 48, **root_spec) -> pathlib.Path:
    """Copies the example's task files to `root` with images of `size` pixels (and `root_spec` keys)."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".repype", "times.csv", ".*.json", "__pycache__"))
    spec = yaml.safe_load((root / "task.yml").read_text())
    spec["config"]["synthesize"]["size"] = size
    spec.update(root_spec)
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    return root


def run_example(root: pathlib.Path) -> Batch:
    """Runs every pending task of the tree at `root` in this process; returns the loaded batch."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    batch = Batch()
    batch.load(root)
    for context in batch.pending:
        context.run()
    return batch
