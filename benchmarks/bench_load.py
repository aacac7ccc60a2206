"""Loading ONE small field of ONE input from a stored task of N inputs: repype vs one pickle per task.

Every input holds a large-ish array (a 128x128 float32 image, 64 KiB), so the pickle file grows
with N; the field loaded is a small array (a 32-bin histogram) of one input. Each load runs in a
fresh Python process (same imports for both methods), which reports the load's wall time and its
peak memory: the process's peak resident set (`VmHWM`, or `ru_maxrss`) after the load, and in a
second process the `tracemalloc` peak of the load. repype's load is
`repype.store.open(path, mode='r').task(name).field(id, name)`: open, read the task's manifest,
read and verify one value. The "warm" column is `field()` alone on
an open store whose manifest is already read.

Headline: `load_field_speedup_vs_pickle` (pickle time / repype time at the largest N).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
from common import PickleTask, Result, Table, best_of, median, pick, ratio, scratch

import repype.store
from repype.store.keys import stage_key

TASK = "bench-load"
FIELD = "histogram"
STAGE_SHA = "fedcba9876543210fedcba9876543210fedcba98"

LOADER = r"""
import gzip, json, sys, time, tracemalloc
import dill, numpy, zarr
import repype.store


def peak_rss_kib():
    # VmHWM: the peak resident set of this process image (ru_maxrss would include the parent's, kept across exec)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


kind, path, input_id, field, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
before = peak_rss_kib()
if trace:
    tracemalloc.start()
start = time.perf_counter()
if kind == "pickle":
    with gzip.open(path, "rb") as file:
        value = dill.load(file)[input_id][field]
else:
    value = repype.store.open(path, mode="r").task(sys.argv[6]).field(input_id, field)
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if trace else None
after = peak_rss_kib()
print(json.dumps({"seconds": seconds, "rss_before_kib": before, "rss_peak_kib": after, "traced_peak": peak,
                  "checksum": int(numpy.asarray(value).sum())}))
"""


def make_input(input_id: int) -> dict:
    image = common.smooth_field((128, 128), seed=input_id)
    histogram = np.histogram(image, bins=32)[0].astype(np.int64)
    return {"input_id": input_id, "image": image, FIELD: histogram, "summary": common.small_dict(input_id)}


def write_repype(url: str, data: dict) -> None:
    store = repype.store.open(url)
    inputs = []
    for input_id, fields in data.items():
        refs = {name: store.put_value(value, name) for name, value in fields.items()}
        key = stage_key(STAGE_SHA, {}, {"input_id": refs["input_id"]["digest"]})
        store.put_record(key, {name: refs[name] for name in fields if name != "input_id"}, 0.1, stage="measure")
        inputs.append(repype.store.InputEntry(input_id, refs, {"measure": 0.1}, [key]))
    store.put_manifest(TASK, repype.store.Manifest({}, {}, {"measure": STAGE_SHA}, inputs))


def load_in_subprocess(kind: str, path: pathlib.Path, input_id: int, trace: bool) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0")
    command = [sys.executable, "-c", LOADER, kind, str(path), str(input_id), FIELD, "1" if trace else "0", TASK]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(kind: str, path: pathlib.Path, input_id: int, repeat: int) -> dict:
    runs = [load_in_subprocess(kind, path, input_id, trace=False) for _ in range(repeat)]
    traced = load_in_subprocess(kind, path, input_id, trace=True)
    runs = runs or [traced]  # tiny mode: one traced process gives the time too
    checksums = {run["checksum"] for run in [*runs, traced]}
    assert len(checksums) == 1, f"{kind} loads disagree: {checksums}"
    return {
        "seconds": median([run["seconds"] for run in runs]),
        "rss_mib": max(run["rss_peak_kib"] for run in runs) / 1024,
        "rss_before_mib": max(run["rss_before_kib"] for run in runs) / 1024,
        "traced_mib": traced["traced_peak"] / 2**20,
        "checksum": checksums.pop(),
    }


def run(mode: str) -> Result:
    sizes = pick(mode, (5, 20), (10, 100), (10, 100, 1000))
    repeat = pick(mode, 0, 2, 3)
    table = Table(
        f"Load one small field ({FIELD}, 32 int64) of one input from a task of N inputs (each + a 64 KiB image)",
        [
            "N",
            "repype s",
            "pickle s",
            "speedup",
            "repype warm ms",
            "repype peak RSS MiB",
            "pickle peak RSS MiB",
            "repype traced MiB",
            "pickle traced MiB",
            "pickle file MiB",
            "store MiB",
        ],
    )
    speedups = {}
    with scratch() as tmp:
        data: dict = {}
        for n in sizes:
            for input_id in range(len(data) + 1, n + 1):
                data[input_id] = make_input(input_id)
            task_data = {input_id: data[input_id] for input_id in range(1, n + 1)}
            store_path, pickle_path = tmp / f"store-{n}", tmp / f"task-{n}.pkl.gz"
            write_repype(str(store_path), task_data)
            PickleTask(pickle_path).store(task_data)
            target = n // 2 + 1
            repype_load = measure("repype", store_path, target, repeat)
            pickle_load = measure("pickle", pickle_path, target, repeat)
            assert repype_load["checksum"] == pickle_load["checksum"] == int(task_data[target][FIELD].sum())

            view = repype.store.open(str(store_path), mode="r").task(TASK)
            view.field(target, FIELD)
            warm, _ = best_of(lambda view=view, target=target: view.field(target, FIELD), pick(mode, 3, 20, 50))

            baseline = max(repype_load["rss_before_mib"], pickle_load["rss_before_mib"])
            speedups[n] = ratio(pickle_load["seconds"], repype_load["seconds"])
            table.add(
                n,
                repype_load["seconds"],
                pickle_load["seconds"],
                speedups[n],
                warm * 1000,
                repype_load["rss_mib"],
                pickle_load["rss_mib"],
                repype_load["traced_mib"],
                pickle_load["traced_mib"],
                common.mib(common.dir_bytes(pickle_path)),
                common.mib(common.dir_bytes(store_path)),
            )
    largest = max(sizes)
    speedup = speedups[largest]
    table.notes += [
        f"times: median of {max(repeat, 1)} fresh processes (open + manifest + one verified value for repype; "
        "gunzip + unpickle the task for the pickle);",
        f"peak RSS = VmHWM of the process after the load (the same imports before it: {baseline:.0f} MiB); "
        "traced = tracemalloc peak of the load alone (separate process).",
        f"load_field_speedup_vs_pickle at N={largest}: {speedup}",
    ]
    return Result([table], {"load_field_speedup_vs_pickle": speedup})


if __name__ == "__main__":
    common.main(run, description=__doc__)
