"""A parameter sweep: K sibling tasks that differ only in the last stage's hyperparameter.

The pipeline is `expensive` (a `time.sleep` plus rendering an image: the costly first stage) ->
`smooth` -> `measure` (the swept `threshold`). Both trees are run in-process with the Task API
(`repype.batch.Batch` loads the `task.yml` files, `RunContext.run()` runs each sibling):

* repype: one store shared by the tree (the default `.repype` in the root task directory), so a
  sibling reuses every stage execution another sibling recorded;
* ancestor-only pick-up (the original framework's behaviour): each sibling's `task.yml` has its
  own `store:` key, so siblings cannot share results and only a task's own (or its ancestors')
  earlier results could be picked up.

Headline: `sweep_stage_runs_ratio` = first-stage executions with ancestor-only pick-up / with repype
(goal = K), next to the wall-time ratio.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
from common import Result, Table, pick, ratio, scratch, timed

from repype.batch import Batch
from repype.stage import Stage

PIPELINE = ["bench_sweep.Expensive", "bench_sweep.Smooth", "bench_sweep.Measure"]


class Expensive(Stage):
    """The costly first stage: sleeps `delay` seconds, then renders an image seeded by the input id."""

    inputs = ("input_id",)
    outputs = ("image",)

    def process(self, input_id, pipeline, config, status=None):
        common.EXECUTIONS[self.id] += 1
        time.sleep(config.get("delay", 0.05))
        side = config.get("side", 128)
        return {"image": common.smooth_field((side, side), seed=input_id)}


class Smooth(Stage):
    """A box blur along both axes (cheap)."""

    inputs = ("image",)
    outputs = ("smooth",)

    def process(self, image, pipeline, config, status=None):
        common.EXECUTIONS[self.id] += 1
        smooth = (image + np.roll(image, 1, 0) + np.roll(image, -1, 0)) / 3
        smooth = (smooth + np.roll(smooth, 1, 1) + np.roll(smooth, -1, 1)) / 3
        return {"smooth": smooth.astype(np.float32)}


class Measure(Stage):
    """Foreground fraction above `threshold` (the swept hyperparameter)."""

    inputs = ("smooth",)
    outputs = ("foreground",)

    def process(self, smooth, pipeline, config, status=None):
        common.EXECUTIONS[self.id] += 1
        return {"foreground": float((smooth > config.get("threshold", 0.0)).mean())}


def write_sweep(root: pathlib.Path, siblings: int, inputs: int, delay: float, side: int, own_stores: bool) -> None:
    """The task tree: a non-runnable root with the pipeline and `siblings` runnable children."""
    root.mkdir(parents=True)
    spec = {
        "runnable": False,
        "pipeline": PIPELINE,
        "input_ids": f"1-{inputs}" if inputs > 1 else 1,
        "config": {"expensive": {"delay": delay, "side": side}, "measure": {"threshold": 0.0}},
    }
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    for index in range(siblings):
        threshold = round(-0.7 + 0.2 * index, 2)
        child = root / f"threshold={threshold}"
        child.mkdir()
        child_spec: dict = {"runnable": True, "config": {"measure": {"threshold": threshold}}}
        if own_stores:
            child_spec["store"] = ".repype-own"  # resolved against this sibling's directory
        (child / "task.yml").write_text(yaml.safe_dump(child_spec))


def run_sweep(root: pathlib.Path) -> tuple[float, dict, list]:
    """Runs every runnable task of the tree in path order; (seconds, executions by stage, results)."""
    common.EXECUTIONS.clear()
    batch = Batch()
    batch.load(root)

    def run_all() -> list:
        return [context.run() for context in batch.contexts]

    seconds, results = timed(run_all)
    return seconds, dict(common.EXECUTIONS), results


def run(mode: str) -> Result:
    siblings = 8
    inputs = pick(mode, 2, 4, 10)
    delay = pick(mode, 0.01, 0.05, 0.05)
    side = pick(mode, 64, 128, 256)
    timings, executions, outputs = {}, {}, {}
    with scratch() as tmp:
        for label, own in (("repype (one shared store)", False), ("ancestor-only pick-up (a store per sibling)", True)):
            root = tmp / ("own" if own else "shared")
            write_sweep(root, siblings, inputs, delay, side, own_stores=own)
            timings[label], executions[label], outputs[label] = run_sweep(root)
    repype_label, ancestor_label = list(timings)
    foreground = {
        label: [[data[input_id]["foreground"] for input_id in sorted(data)] for data in results]
        for label, results in outputs.items()
    }
    assert foreground[repype_label] == foreground[ancestor_label], "the two sweeps computed different results"

    table = Table(
        f"Sweep: K={siblings} siblings differing in the last stage's threshold, N={inputs} inputs, "
        f"first stage sleeps {delay * 1000:.0f} ms + renders a {side}x{side} image",
        ["method", "expensive runs", "smooth runs", "measure runs", "seconds"],
    )
    for label in timings:
        counts = executions[label]
        table.add(label, counts.get("expensive", 0), counts.get("smooth", 0), counts.get("measure", 0), timings[label])
    runs_ratio = ratio(executions[ancestor_label].get("expensive", 0), executions[repype_label].get("expensive", 0))
    time_ratio = ratio(timings[ancestor_label], timings[repype_label])
    table.notes += [
        f"sweep_stage_runs_ratio (first-stage runs, ancestor-only / repype): {runs_ratio} (goal = K = {siblings})",
        f"wall-time ratio (ancestor-only / repype): {time_ratio}",
    ]
    return Result([table], {"sweep_stage_runs_ratio": runs_ratio, "sweep_wall_time_ratio": time_ratio})


if __name__ == "__main__":
    common.main(run, description=__doc__)
