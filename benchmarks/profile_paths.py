"""cProfile of the slow paths behind missed goals: prints the top entries by cumulative and by own time.

    python benchmarks/profile_paths.py tiny-first [N]   # a first run of the tiny-input task (the CLI's child)
    python benchmarks/profile_paths.py tiny-dry [N]     # the CLI's dry run after a reset (`repype ROOT`)
    python benchmarks/profile_paths.py tiny-null [N]    # the null build after a reset (the CLI's child)
    python benchmarks/profile_paths.py load [N]         # a fresh process loading one JSON field (imports included)

Each path runs the way the command line runs it (`RunContext.run(return_data=False)` is what the
batch's child process calls), in this process under cProfile, on a tree in a temporary directory.
cProfile slows Python code down about 1.5-2x; read the shares, not the seconds.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pathlib
import pstats
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import peers
import treestages
from common import scratch

from repype.batch import Batch
from repype.cli import batch_main

TOP = 18


def report(profile: cProfile.Profile, title: str) -> None:
    print(f"## {title}\n", flush=True)
    for order in ("cumulative", "tottime"):
        print(f"### by {order}", flush=True)
        pstats.Stats(profile, stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(TOP)


def tiny_tree(root: pathlib.Path, inputs: int, completed: bool, reset: bool) -> None:
    peers.write_tree(root, treestages.TINY, f"1-{inputs}", {})
    if completed:
        peers.cli(sys.executable, root, "--run")
    if reset:
        peers.cli(sys.executable, root, "--reset", "--yes")


def profile_run(root: pathlib.Path, title: str) -> None:
    batch = Batch()
    batch.load(root)
    (context,) = batch.contexts
    profile = cProfile.Profile()
    profile.runcall(lambda: context.run(return_data=False))
    report(profile, title)


def profile_dry(root: pathlib.Path, title: str) -> None:
    """The whole dry run of the command line (`repype ROOT`), in this process, its output discarded."""
    profile = cProfile.Profile()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        profile.runcall(lambda: batch_main([str(root)]))
    report(profile, title)


def profile_load(root: pathlib.Path, inputs: int) -> None:
    """A fresh interpreter loading one field under `python -m cProfile` (imports included)."""
    script = pathlib.Path(tempfile.mkdtemp()) / "load_one.py"
    script.write_text(
        "import repype.store\n"
        f"repype.store.open({str(root / '.repype')!r}, mode='r').task('.').field({inputs // 2 + 1}, 'summary')\n"
    )
    subprocess.run([sys.executable, "-m", "cProfile", "-s", "cumulative", str(script)], check=True)


def main(argv: list[str]) -> None:
    path, inputs = argv[0], int(argv[1]) if len(argv) > 1 else 10_000
    with scratch() as tmp:
        root = tmp / "tiny"
        if path == "tiny-first":
            tiny_tree(root, inputs, completed=False, reset=False)
            profile_run(root, f"first run of the tiny task, N={inputs}")
        elif path == "tiny-dry":
            tiny_tree(root, inputs, completed=True, reset=True)
            profile_dry(root, f"dry run after a reset (repype ROOT), N={inputs}")
        elif path == "tiny-null":
            tiny_tree(root, inputs, completed=True, reset=True)
            profile_run(root, f"null build after a reset, N={inputs}")
        elif path == "load":
            tiny_tree(root, inputs, completed=True, reset=False)
            profile_load(root, inputs)
        else:
            raise SystemExit(f"unknown path {path!r}: tiny-first, tiny-dry, tiny-null or load")


if __name__ == "__main__":
    main(sys.argv[1:])
