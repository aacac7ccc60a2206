"""The K = 8 sibling sweep as whole processes: repype vs upstream repype 1.0.4 vs joblib.Memory.

One task tree, K sibling tasks that differ only in the last stage's threshold, N inputs each, the
stages of `treestages.py` (`render` sleeps `delay` and renders an image, `blur`, `measure`), run
the way a user runs them, each as a whole process seen from outside:

* repype: `python -m repype ROOT --run` (this project, one store shared by the tree), then the
  same command again (the null build: nothing is pending);
* upstream repype 1.0.4: `python -m repype ROOT --run` with upstream's own CLI, installed into a
  venv of its own (:func:`peers.upstream_python`; skipped with a note when that fails, and always in
  the tiny mode), on an equal tree, then again;
* joblib.Memory: one process calling the same work functions, each wrapped in `Memory.cache`,
  for every (threshold, input), then the same process again (everything cached).

Then one field of one input, loaded by a fresh process: repype's `store.open(...).task(name).field(...)`
vs gunzip + unpickle of upstream's `data.dill.gz` of that task (joblib has no per-task results to
load: re-running the chain is its way, the re-run row).

Rounds alternate the tools (fresh trees each round); times are medians. Stage executions are
counted by the work functions themselves, across processes.
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_load
import common
import peers
from common import Result, Table, goal, median, pick, ratio, scratch

TOOLS = ("repype", "upstream repype 1.0.4", "joblib.Memory")


def one_round(tool: str, root: pathlib.Path, size: dict, python: pathlib.Path | None) -> dict:
    """First run and re-run of `tool` on a fresh tree below `root`: seconds and render executions of each."""
    counts = root.parent / f"{root.name}.counts"
    if tool == "joblib.Memory":
        input_ids = list(range(1, size["inputs"] + 1))
        thresholds = [spec["config"]["measure"]["threshold"] for spec in peers.sweep_children(size).values()]
        command = peers.joblib_command(root, input_ids, thresholds, size["delay"], size["side"])
        first, output = peers.whole_process(command, counts)
        first_runs = peers.executions(counts)
        second, _ = peers.whole_process(command, counts)
        return {"first": first, "second": second, "runs": (first_runs, peers.executions(counts)), "out": output}
    peers.write_sweep(root, size)
    interpreter = sys.executable if tool == "repype" else python
    first, _ = peers.cli(interpreter, root, "--run", counts=counts)
    first_runs = peers.executions(counts)
    second, _ = peers.cli(interpreter, root, "--run", counts=counts)
    return {"first": first, "second": second, "runs": (first_runs, peers.executions(counts))}


def run(mode: str) -> Result:
    size = peers.sweep_size(mode)
    rounds, loads = pick(mode, 1, 1, 3), pick(mode, 1, 3, 9)
    notes = []
    python = None
    if mode == "tiny":
        notes.append("upstream repype 1.0.4 skipped in the tiny mode (no venv, no network)")
    else:
        python, note = peers.upstream_python()
        notes.append(note)
    tools = [
        tool
        for tool in TOOLS
        if (tool != "upstream repype 1.0.4" or python is not None)
        and (tool != "joblib.Memory" or peers.joblib_available())
    ]
    if "joblib.Memory" not in tools:
        notes.append("joblib.Memory skipped: joblib is not importable (pip install -e '.[test]')")
    measured: dict[str, list[dict]] = {tool: [] for tool in tools}
    with scratch() as tmp:
        for index in range(rounds):
            for tool in tools:
                root = tmp / f"{tool.split()[0]}-{index}"
                measured[tool].append(one_round(tool, root, size, python))
        joblib_output = measured["joblib.Memory"][0]["out"] if "joblib.Memory" in tools else None
        loaded = load_rows(tmp, tools, size, loads, joblib_output)

    table = Table(
        f"Sweep as whole processes: K={size['siblings']} siblings differing in the last stage's threshold, "
        f"N={size['inputs']} inputs, first stage sleeps {size['delay'] * 1000:.0f} ms + renders a "
        f"{size['side']}x{size['side']} image",
        [
            "tool",
            "first run s",
            "re-run s",
            "render runs (first)",
            "render runs (re-run)",
            "measure runs (first)",
            "load one field s",
            "load RSS MiB",
        ],
    )
    summary = {}
    for tool in tools:
        first = median([one["first"] for one in measured[tool]])
        second = median([one["second"] for one in measured[tool]])
        first_runs, second_runs = measured[tool][0]["runs"]
        load = loaded.get(tool)
        summary[tool] = {"first": first, "second": second, "load": load["seconds"] if load else None}
        table.add(
            tool,
            first,
            second,
            first_runs["render"],
            second_runs["render"],
            first_runs["measure"],
            load["seconds"] if load else "-",
            load["rss_mib"] if load else "-",
        )
    table.notes += [
        f"median of {rounds} round(s), the tools alternating, a fresh tree each round; re-run = the same command "
        f"again (repype and upstream: the second `--run`, nothing pending; joblib: every call cached); "
        f"load = median of {loads} fresh processes (repype: store.open().task().field(); upstream: gunzip + "
        "unpickle the task's data.dill.gz); joblib keeps no per-task results to load.",
        *notes,
    ]
    headlines = sweep_headlines(summary)
    table.notes += [f"{key}: {value}" for key, value in headlines.items()]
    if "sweep_null_build_vs_upstream" in headlines:
        table.notes.append(
            "goal: repype's null build <= 0.3x upstream's second --run: "
            + goal(headlines["sweep_null_build_vs_upstream"], 0.3, False)
        )
    return Result([table], headlines)


def load_rows(
    tmp: pathlib.Path, tools: list[str], size: dict, repeat: int, joblib_output: str | None
) -> dict[str, dict]:
    """One field (`foreground`) of one input of the last sibling, loaded by fresh processes from round 0's trees;
    checks that every tool computed the same value (joblib's from the JSON its sweep printed)."""
    name = list(peers.sweep_children(size))[-1]
    input_id = size["inputs"] // 2 + 1
    cases = {"repype": ("repype", tmp / "repype-0" / ".repype", input_id, "foreground", name)}
    if "upstream repype 1.0.4" in tools:
        cases["upstream repype 1.0.4"] = ("pickle", tmp / "upstream-0" / name / "data.dill.gz", input_id, "foreground")
    results = bench_load.measure_all(cases, repeat)
    if joblib_output is not None:
        joblib_value = json.loads(joblib_output)[name.split("=", 1)[1]][str(input_id)]
        assert results["repype"]["digest"] == repr(joblib_value), (results["repype"]["digest"], joblib_value)
    assert len({result["digest"] for result in results.values()}) == 1, results
    return results


def sweep_headlines(summary: dict[str, dict]) -> dict[str, float]:
    """The ratios the tools' medians allow (a peer that did not run adds no key)."""
    ours = summary["repype"]
    headlines = {}
    if "upstream repype 1.0.4" in summary:
        upstream = summary["upstream repype 1.0.4"]
        headlines["sweep_first_run_speedup_vs_upstream"] = ratio(upstream["first"], ours["first"])
        headlines["sweep_null_build_vs_upstream"] = ratio(ours["second"], upstream["second"])
        headlines["sweep_load_field_speedup_vs_upstream"] = ratio(upstream["load"], ours["load"])
    if "joblib.Memory" in summary:
        joblib = summary["joblib.Memory"]
        headlines["sweep_first_run_speedup_vs_joblib"] = ratio(joblib["first"], ours["first"])
        headlines["sweep_rerun_vs_joblib"] = ratio(ours["second"], joblib["second"])
    return headlines


if __name__ == "__main__":
    common.main(run, description=__doc__)
