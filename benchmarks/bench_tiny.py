"""One task of N tiny inputs (full: N = 10,000), run with the command line as whole processes.

Each input gets a 16-float array (`Signal`) and a small dict (`Summarize`, see `treestages.py`),
so the stages' own work is a few microseconds per input and everything else is repype's cost.
The steps, each `python -m repype ROOT ...` as a whole process, in this order:

1. dry run of the fresh tree (nothing stored yet);
2. first run (`--run`): every stage runs;
3. second `--run`: nothing is pending;
4. `--reset --yes` (not timed): the task is incomplete again, its stage executions stay stored;
5. dry run after the reset (every stage execution is in the store);
6. null build (`--run` after the reset): every stage reused.

Then one field (the dict of the middle input) loaded by a fresh process, from repype's store and
from one gzip'd pickle of the same task data (upstream's format, `common.PickleTask`), and the
bytes on disk (allocated blocks of files and directories, what `du` shows; apparent sizes next
to them) and the number of files. "Beyond the stages" = (first run - the stages' own time, timed
in-process on the same inputs) / N.

Headlines: `tiny_null_build_vs_first_run` (goal <= 0.10), `tiny_first_run_overhead_ms_per_input`
(goal <= 1), `tiny_disk_vs_pickle` (goal <= 4), `tiny_files_per_input` (goal <= 2),
`tiny_load_speedup_vs_pickle` (goal >= 2).
"""

from __future__ import annotations

import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_load
import common
import peers
import treestages
from common import PickleTask, Result, Table, best_of, goal, pick, ratio, scratch

SUMMARY = re.compile(r"(\d+) stage execution\(s\) run, (\d+) reused")


def executions(output: str) -> str:
    """`run/reused` from the CLI's closing summary line ("-" when it printed none)."""
    found = SUMMARY.findall(output)
    return f"{found[-1][0]} run / {found[-1][1]} reused" if found else "-"


def disk_usage(path: pathlib.Path) -> dict[str, int]:
    """Allocated bytes (files and directories, as `du`), apparent file bytes, files and directories below `path`."""
    usage = {"allocated": 0, "apparent": 0, "files": 0, "dirs": 0}
    for entry in [path, *path.rglob("*")]:
        stat = entry.lstat()
        usage["allocated"] += stat.st_blocks * 512
        if entry.is_dir():
            usage["dirs"] += 1
        else:
            usage["apparent"] += stat.st_size
            usage["files"] += 1
    return usage


def stage_seconds(inputs: int) -> float:
    """The stages' own time for every input (best of 3, in-process)."""
    return best_of(lambda: [treestages.summarize(treestages.signal(i)) for i in range(1, inputs + 1)], 3)[0]


def run(mode: str) -> Result:
    inputs, repeat = pick(mode, 20, 1000, 10_000), pick(mode, 1, 3, 9)
    python = sys.executable
    steps = Table(
        f"A task of N={inputs:,} tiny inputs (a 16-float array + a small dict each), command line as whole processes",
        ["step", "seconds", "ms per input", "stage executions"],
    )
    with scratch() as tmp:
        root = tmp / "tiny"
        peers.write_tree(root, treestages.TINY, f"1-{inputs}", {})
        timings = {}
        for label, flags in (
            ("dry run, fresh tree", ()),
            ("first run (--run)", ("--run",)),
            ("second --run (nothing pending)", ("--run",)),
            ("reset", ("--reset", "--yes")),
            ("dry run after the reset (all stored)", ()),
            ("null build (--run after the reset, all reused)", ("--run",)),
        ):
            seconds, output = peers.cli(python, root, *flags)
            if label == "reset":
                continue
            timings[label] = seconds
            steps.add(label, seconds, seconds / inputs * 1000, executions(output))
        own = stage_seconds(inputs)
        first, null = timings["first run (--run)"], timings["null build (--run after the reset, all reused)"]
        overhead_ms = (first - own) / inputs * 1000
        steps.add("(the stages' own time, in-process)", own, own / inputs * 1000, "")
        steps.notes.append(
            f"first run beyond the stages' own time: {overhead_ms:.3g} ms per input (goal <= 1): "
            f"{goal(overhead_ms, 1, False)}; null build / first run: {ratio(null, first)} (goal <= 0.10): "
            f"{goal(ratio(null, first), 0.10, False)}"
        )

        data = {
            i: {"input_id": i, "signal": treestages.signal(i), "summary": treestages.summarize(treestages.signal(i))}
            for i in range(1, inputs + 1)
        }
        pickle_path = tmp / "tiny.dill.gz"
        PickleTask(pickle_path).store(data)
        target = inputs // 2 + 1
        loads = bench_load.measure_all(
            {
                "repype": ("repype", root / ".repype", target, "summary", "."),
                "pickle": ("pickle", pickle_path, target, "summary"),
            },
            repeat,
        )
        assert loads["repype"]["digest"] == loads["pickle"]["digest"] == repr(data[target]["summary"])[:200]
        store, pickle = disk_usage(root / ".repype"), disk_usage(pickle_path)

    disk = Table(
        f"The same task on disk and loaded (N={inputs:,})",
        [
            "format",
            "on disk MiB (du)",
            "apparent MiB",
            "files",
            "directories",
            "files per input",
            "load one field s",
            "load RSS MiB",
        ],
    )
    for label, usage, load in (
        ("repype store (.repype)", store, loads["repype"]),
        ("one pickle per task (dill + gzip)", pickle, loads["pickle"]),
    ):
        disk.add(
            label,
            common.mib(usage["allocated"]),
            common.mib(usage["apparent"]),
            usage["files"],
            usage["dirs"],
            usage["files"] / inputs,
            load["seconds"],
            load["rss_mib"],
        )
    headlines = {
        "tiny_null_build_vs_first_run": ratio(null, first),
        "tiny_first_run_overhead_ms_per_input": round(overhead_ms, 3),
        "tiny_disk_vs_pickle": ratio(store["allocated"], pickle["allocated"]),
        "tiny_files_per_input": round(store["files"] / inputs, 3),
        "tiny_load_speedup_vs_pickle": ratio(loads["pickle"]["seconds"], loads["repype"]["seconds"]),
    }
    load_speedup = headlines["tiny_load_speedup_vs_pickle"]
    disk.notes += [
        f"load = median of {repeat} fresh processes (interpreter start, imports, open, one value; pickle: gunzip + "
        "unpickle the task); the pickle holds the same task data object upstream's data.dill.gz would.",
        f"tiny_disk_vs_pickle (du): {headlines['tiny_disk_vs_pickle']} (goal <= 4): "
        f"{goal(headlines['tiny_disk_vs_pickle'], 4, False)}; files per input: {headlines['tiny_files_per_input']} "
        f"(goal <= 2): {goal(headlines['tiny_files_per_input'], 2, False)}; load speedup: "
        f"{load_speedup} (goal >= 2): {goal(load_speedup, 2, True)}",
    ]
    return Result([steps, disk], headlines)


if __name__ == "__main__":
    common.main(run, description=__doc__)
