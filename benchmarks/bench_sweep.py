"""A parameter sweep, in-process: K sibling tasks that differ only in the last stage's hyperparameter.

The sweep of `bench_peers.py` (the stages of `treestages.py`: `render` sleeps and renders an
image, `blur`, `measure` with the swept `threshold`), run in this process with the Task API
(`repype.batch.Batch` loads the `task.yml` files, `RunContext.run()` runs each sibling):

* repype: one store shared by the tree (the default `.repype` in the root task directory), so a
  sibling reuses every stage execution another sibling recorded;
* ancestor-only pick-up: each sibling's `task.yml` has its own `store:` key, so siblings cannot
  share results and only a task's own (or its ancestors') earlier results could be picked up.
  This is our own code in the layout where the original framework repeats work; upstream
  repype 1.0.4 itself runs in `bench_peers.py`.

Executions are counted by the work functions into a file (`REPYPE_BENCH_COUNTS`), not in a
module-level counter: a stage's code fingerprint covers the module-level values it reads, so a
counter the stages mutated would change their keys after every execution.

Headline: `sweep_stage_runs_ratio` = first-stage executions with ancestor-only pick-up / with repype
(goal = K), next to the wall-time ratio.
"""

from __future__ import annotations

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
import peers
from common import Result, Table, ratio, scratch, timed

from repype.batch import Batch


def run_sweep(root: pathlib.Path) -> tuple[float, dict, list]:
    """Runs every runnable task of the tree in path order; (seconds, executions by work function, results)."""
    batch = Batch()
    batch.load(root)
    counts = root.parent / f"{root.name}.counts"
    saved = os.environ.get("REPYPE_BENCH_COUNTS")
    os.environ["REPYPE_BENCH_COUNTS"] = str(counts)
    try:
        seconds, results = timed(lambda: [context.run() for context in batch.contexts])
    finally:
        if saved is None:
            del os.environ["REPYPE_BENCH_COUNTS"]
        else:
            os.environ["REPYPE_BENCH_COUNTS"] = saved
    return seconds, dict(peers.executions(counts)), results


def run(mode: str) -> Result:
    size = peers.sweep_size(mode)
    timings, executions, outputs = {}, {}, {}
    with scratch() as tmp:
        for label, own in (("repype (one shared store)", False), ("ancestor-only pick-up (a store per sibling)", True)):
            root = tmp / ("own" if own else "shared")
            peers.write_sweep(root, size, **({"store": ".repype-own"} if own else {}))
            timings[label], executions[label], outputs[label] = run_sweep(root)
    repype_label, ancestor_label = list(timings)
    foreground = {
        label: [[data[input_id]["foreground"] for input_id in sorted(data)] for data in results]
        for label, results in outputs.items()
    }
    assert foreground[repype_label] == foreground[ancestor_label], "the two sweeps computed different results"

    table = Table(
        f"Sweep: K={size['siblings']} siblings differing in the last stage's threshold, N={size['inputs']} inputs, "
        f"first stage sleeps {size['delay'] * 1000:.0f} ms + renders a {size['side']}x{size['side']} image",
        ["method", "render runs", "blur runs", "measure runs", "seconds"],
    )
    for label in timings:
        counts = executions[label]
        table.add(label, counts.get("render", 0), counts.get("blur", 0), counts.get("measure", 0), timings[label])
    runs_ratio = ratio(executions[ancestor_label].get("render", 0), executions[repype_label].get("render", 0))
    time_ratio = ratio(timings[ancestor_label], timings[repype_label])
    table.notes += [
        f"in-process (Batch + RunContext.run()); sweep_stage_runs_ratio (first-stage runs, ancestor-only / repype): "
        f"{runs_ratio} (goal = K = {size['siblings']})",
        f"wall-time ratio (ancestor-only / repype): {time_ratio}",
    ]
    return Result([table], {"sweep_stage_runs_ratio": runs_ratio, "sweep_wall_time_ratio": time_ratio})


if __name__ == "__main__":
    common.main(run, description=__doc__)
