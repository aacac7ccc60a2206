"""What code fingerprints cost: `Stage.sha` of a pipeline of 10 stages that reach 50 helpers.

A generated module holds 50 module-level helpers in chains of 5 (each calls the previous one and
reads a module-level constant; the first of a chain calls numpy) and 10 stages, each calling the
last helper of its own chain, so every stage reaches 5 helpers, 5 constants and numpy.

* cold: the first `Stage.sha` of every stage after importing a fresh copy of the module (every
  helper's source is read and parsed once), with the per-process caches (which distribution
  provides a package, its version) emptied first;
* cold, distributions known: the same with those per-process caches warm (any later import);
* warm: `Stage.sha` of every stage again (what each stage-execution key costs after the first).

Headline: `fingerprint_warm_ms_per_pipeline` (the 10 shas, warm).
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
from common import Result, Table, best_of, pick, scratch, timed

from repype import fingerprint

STAGES = 10
CHAIN = 5


def module_source() -> str:
    """The generated module: `STAGES * CHAIN` helpers in chains, constants, and the stages."""
    lines = ["import numpy as np", "from repype.stage import Stage", ""]
    for index in range(STAGES * CHAIN):
        lines.append(f"FACTOR_{index} = {index + 1}")
        lines.append(f"def helper_{index}(x):")
        if index % CHAIN == 0:
            lines.append(f"    return np.asarray(x) * FACTOR_{index}")
        else:
            lines.append(f"    return helper_{index - 1}(x) + FACTOR_{index}")
        lines.append("")
    for stage in range(STAGES):
        lines += [
            f"class Stage{stage}(Stage):",
            f"    inputs = ('field_{stage}',)",
            f"    outputs = ('field_{stage + 1}',)",
            "    def process(self, pipeline, config, status=None, **inputs):",
            f"        return {{'field_{stage + 1}': helper_{stage * CHAIN + CHAIN - 1}(inputs['field_{stage}'])}}",
            "",
        ]
    return "\n".join(lines) + "\n"


def fresh_stages(directory: pathlib.Path) -> list:
    """Instances of the stages of a newly written and imported copy of the module."""
    name = f"bench_fingerprint_stages_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(module_source())
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    return [getattr(module, f"Stage{stage}")() for stage in range(STAGES)]


def shas(stages: list) -> list[str]:
    return [stage.sha for stage in stages]


def forget_distributions() -> None:
    """Empties the per-process caches of which distribution provides a package, and its version."""
    for cached in (fingerprint._packages_distributions, fingerprint._version, fingerprint._origin):
        cached.cache_clear()


def run(mode: str) -> Result:
    repeat = pick(mode, 2, 5, 10)
    warm_calls = pick(mode, 20, 200, 1000)
    with scratch() as directory:
        sys.path.insert(0, str(directory))
        try:
            cold_times, known_times = [], []
            for _ in range(repeat):
                stages = fresh_stages(directory)
                forget_distributions()
                cold_times.append(timed(lambda stages=stages: shas(stages))[0])
                stages = fresh_stages(directory)
                known_times.append(timed(lambda stages=stages: shas(stages))[0])
            reached = stages[0].signature
            warm, _ = best_of(lambda: [shas(stages) for _ in range(warm_calls)], repeat=3)
        finally:
            sys.path.remove(str(directory))
    warm_per_pipeline = warm / warm_calls
    table = Table(
        f"Code fingerprints: Stage.sha of {STAGES} stages reaching {STAGES * CHAIN} helpers",
        ["case", "ms per pipeline", "us per stage"],
    )
    table.add("cold (fresh import, distribution caches empty)", 1000 * min(cold_times), 1e6 * min(cold_times) / STAGES)
    table.add("cold (fresh import, distributions known)", 1000 * min(known_times), 1e6 * min(known_times) / STAGES)
    table.add("warm (the same stage objects again)", 1000 * warm_per_pipeline, 1e6 * warm_per_pipeline / STAGES)
    table.notes.append(
        f"each stage reaches {len(reached['closure'])} closure entries and distributions "
        f"{sorted(reached['distributions'])}; cold: best of {repeat}, warm: best of 3 x {warm_calls} pipelines"
    )
    return Result([table], {"fingerprint_warm_ms_per_pipeline": round(1000 * warm_per_pipeline, 3)})


if __name__ == "__main__":
    common.main(run, description=__doc__)
