"""The real alternatives as whole processes: upstream repype 1.0.4 in its own venv, joblib.Memory, task trees.

* :func:`upstream_python` creates (once) a venv outside the repository, under
  `$REPYPE_BENCH_CACHE` (default `~/.cache/repype-bench`), and pip-installs `repype==1.0.4` from
  PyPI into it, with whatever that release depends on. It returns that venv's interpreter, or
  None and a note when the install fails (the benchmark then skips upstream's rows).
* :func:`write_tree` writes a task tree that both this project's `repype` and upstream's read:
  a root `task.yml` with the pipeline, input ids and default config, and one directory per child.
* :func:`cli` runs `python -m repype ROOT ...` (either interpreter) as a whole process.
* `python peers.py joblib CACHE ...` is the joblib peer: the sweep's work functions (those of
  `treestages.py`, the very code the stages call) cached with `joblib.Memory(CACHE)`.

Child processes get this directory on `PYTHONPATH` (so `treestages` imports) and, when a counts
file is given, `REPYPE_BENCH_COUNTS` (so executions of the work functions are counted).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import treestages
import yaml

HERE = pathlib.Path(__file__).resolve().parent
UPSTREAM_VERSION = "1.0.4"


def cache_dir() -> pathlib.Path:
    """Where the upstream venv lives: `$REPYPE_BENCH_CACHE` or `~/.cache/repype-bench` (never the repository)."""
    return pathlib.Path(os.environ.get("REPYPE_BENCH_CACHE") or pathlib.Path.home() / ".cache" / "repype-bench")


def upstream_python() -> tuple[pathlib.Path | None, str]:
    """(interpreter of a venv holding `repype==1.0.4`, note); (None, why) when it cannot be installed."""
    venv = cache_dir() / f"upstream-repype-{UPSTREAM_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m, repype.cli; print(m.version('repype'))"]

    def installed() -> bool:
        if not python.exists():
            return False
        done = subprocess.run(probe, capture_output=True, text=True, check=False, cwd=venv)
        return done.returncode == 0 and done.stdout.strip() == UPSTREAM_VERSION

    if installed():
        return python, f"upstream repype {UPSTREAM_VERSION} from the venv {venv}"
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return None, f"upstream repype {UPSTREAM_VERSION} skipped: cannot create {venv.parent}: {error}"
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"repype=={UPSTREAM_VERSION}"],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False, cwd=venv.parent)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"upstream repype {UPSTREAM_VERSION} skipped: {' '.join(step[:4])} failed: {error}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"upstream repype {UPSTREAM_VERSION} skipped: {' '.join(step[:4])} failed: {last}"
    if not installed():
        return None, f"upstream repype {UPSTREAM_VERSION} skipped: installed, but `import repype.cli` fails"
    return python, f"upstream repype {UPSTREAM_VERSION} installed into the venv {venv}"


def joblib_available() -> bool:
    """Whether this interpreter can import joblib (the test extra installs it)."""
    done = subprocess.run([sys.executable, "-c", "import joblib"], capture_output=True, check=False)
    return done.returncode == 0


def write_tree(
    root: pathlib.Path, pipeline: list[str], input_ids: str, config: dict, children: Mapping[str, dict] | None = None
) -> None:
    """A task tree: `root/task.yml` (runnable only without children) and a runnable `root/<name>/task.yml` per
    child spec (e.g. `{"config": {...}}`)."""
    root.mkdir(parents=True)
    spec = {"runnable": not children, "pipeline": pipeline, "input_ids": input_ids, "config": config}
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    for name, child_spec in (children or {}).items():
        (root / name).mkdir()
        (root / name / "task.yml").write_text(yaml.safe_dump({"runnable": True, **child_spec}))


def sweep_size(mode: str) -> dict[str, Any]:
    """The sweep's size in `mode`: K siblings, N inputs, the first stage's delay (s) and image side."""
    sizes = {"siblings": (2, 8, 8), "inputs": (2, 4, 10), "delay": (0.005, 0.05, 0.05), "side": (32, 128, 256)}
    return {name: values[("tiny", "quick", "full").index(mode)] for name, values in sizes.items()}


def sweep_children(size: Mapping[str, Any], **spec: Any) -> dict[str, dict]:
    """The siblings' directory names and specs: thresholds -0.7, -0.5, ... and `spec` (e.g. a `store` key)."""
    thresholds = [round(-0.7 + 0.2 * index, 2) for index in range(size["siblings"])]
    return {f"threshold={value}": {"config": {"measure": {"threshold": value}}, **spec} for value in thresholds}


def write_sweep(root: pathlib.Path, size: Mapping[str, Any], **spec: Any) -> None:
    """The sweep's task tree: a non-runnable root with the pipeline and defaults, the siblings below it."""
    config = {"render": {"delay": size["delay"], "side": size["side"]}, "measure": {"threshold": 0.0}}
    write_tree(root, treestages.SWEEP, f"1-{size['inputs']}", config, sweep_children(size, **spec))


def child_env(counts: pathlib.Path | None = None) -> dict[str, str]:
    """The environment of a benchmarked process: this directory importable, executions counted into `counts`."""
    env = {key: value for key, value in os.environ.items() if key not in ("REPYPE_BENCH_COUNTS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(HERE)
    if counts is not None:
        env["REPYPE_BENCH_COUNTS"] = str(counts)
    return env


def whole_process(command: Sequence[str], counts: pathlib.Path | None = None) -> tuple[float, str]:
    """(wall seconds as the parent sees them, stdout) of one process; raises with its stderr when it fails.

    It runs in the temporary directory: `python -m` and `-c` put the working directory first on
    `sys.path`, and from the repository's root upstream's interpreter would import this project's `repype`.
    """
    start = time.perf_counter()
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        env=child_env(counts),
        cwd=tempfile.gettempdir(),
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(map(str, command))} exited with {done.returncode}:\n{tail}")
    return seconds, done.stdout


def cli(
    python: pathlib.Path | str, root: pathlib.Path, *flags: str, counts: pathlib.Path | None = None
) -> tuple[float, str]:
    """(seconds, stdout) of `python -m repype ROOT FLAGS...` as a whole process."""
    return whole_process([python, "-m", "repype", root, *flags], counts)


def executions(counts: pathlib.Path) -> Counter:
    """Executions of each work function recorded in `counts` (emptied afterwards)."""
    found = Counter(counts.read_text().split()) if counts.exists() else Counter()
    counts.unlink(missing_ok=True)
    return found


def joblib_sweep(
    cache: pathlib.Path, input_ids: Sequence[int], thresholds: Sequence[float], delay: float, side: int
) -> dict[str, dict[int, float]]:
    """The sweep with joblib.Memory: every (threshold, input) through the cached work functions; foregrounds."""
    import joblib
    import treestages

    memory = joblib.Memory(str(cache), verbose=0)
    render, blur, measure = (memory.cache(f) for f in (treestages.render, treestages.blur, treestages.measure))
    return {
        str(threshold): {input_id: measure(blur(render(input_id, delay, side)), threshold) for input_id in input_ids}
        for threshold in thresholds
    }


def joblib_command(
    cache: pathlib.Path, input_ids: Sequence[int], thresholds: Sequence[float], delay: float, side: int
) -> list[Any]:
    """The command line of a whole joblib sweep process (it prints the foregrounds as JSON)."""
    arguments = {"input_ids": list(input_ids), "thresholds": list(thresholds), "delay": delay, "side": side}
    return [sys.executable, __file__, "joblib", cache, json.dumps(arguments)]


if __name__ == "__main__" and sys.argv[1:2] == ["joblib"]:
    print(json.dumps(joblib_sweep(pathlib.Path(sys.argv[2]), **json.loads(sys.argv[3]))))
