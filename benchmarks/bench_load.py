"""Loading ONE field of ONE input in a fresh process: repype vs one gzip'd pickle per task, whole process.

Every figure is the wall time of a whole `python -c ...` process as the parent sees it:
interpreter start, imports, opening the store (or the file), reading the task's manifest and
one verified value (or unpickling the whole task), median of several processes. That is what a
user waiting for a notebook cell or a script pays.

Two tasks:

* tiny inputs (N = 10 ... 10,000): each input holds a 16-float array and a small dict; repype
  loads the dict (`summary`, JSON) and, in a second column, the array (`signal`, packed into the
  manifest by default), and in a third the array from a store written with packing off
  (`pack_limit=None`: a Zarr array);
* image inputs (N = 10 ... 1,000): each input also holds a 128x128 float32 image (64 KiB), so the
  pickle grows with N; repype loads a 32-bin histogram (packed; also from a store with packing off).

repype's load is `repype.store.open(path, mode='r').task(name).field(id, name)`; the pickle's is
`dill.load(gzip.open(path))[id][name]`. The "warm" column is `field()` alone on an open view.

Headlines: `load_field_speedup_vs_pickle` (pickle / repype, image task, largest N),
`load_tiny_speedup_vs_pickle` (the same for the tiny task's JSON field at the largest N) and
`load_flatness` (repype's tiny-task load at the largest N over N = 10: 1.0 is perfectly flat) and
`load_packed_array_speedup_vs_pickle` (the array field, packed by default, at the largest N).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
from common import PickleTask, Result, Table, best_of, median, pick, ratio, scratch

import repype.store

TASK = "bench-load"

LOADER = r"""
import sys
kind, path, input_id, field = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "pickle":
    import gzip, dill
    with gzip.open(path, "rb") as file:
        value = dill.load(file)[input_id][field]
else:
    import repype.store
    value = repype.store.open(path, mode="r").task(sys.argv[5]).field(input_id, field)


def peak_rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


import json
print(json.dumps({"rss_peak_kib": peak_rss_kib(), "digest": repr(value)[:200]}))
"""


def tiny_input(input_id: int) -> dict:
    rng = np.random.default_rng(input_id)
    return {"input_id": input_id, "signal": rng.random(16).astype(np.float32), "summary": common.small_dict(input_id)}


def image_input(input_id: int) -> dict:
    image = common.smooth_field((128, 128), seed=input_id)
    histogram = np.histogram(image, bins=32)[0].astype(np.int64)
    return {"input_id": input_id, "image": image, "histogram": histogram, "summary": common.small_dict(input_id)}


def write_repype(url: str, data: dict, pack_limit: int | None = repype.store.codecs.PACK_LIMIT) -> None:
    """Every value, then the manifest and ref, as a task's commit writes them (packing as by default)."""
    store = repype.store.open(url, pack_limit=pack_limit)
    entries = [
        repype.store.InputEntry(input_id, {name: store.put_value(value, name) for name, value in fields.items()})
        for input_id, fields in data.items()
    ]
    store.put_manifest(TASK, repype.store.Manifest({}, {}, {"measure": "f" * 40}, entries))


def load_process(kind: str, path: pathlib.Path, input_id: int, field: str, task: str = TASK) -> dict:
    """One whole loading process: its wall time seen from here, its peak RSS and what it loaded."""
    command = [sys.executable, "-c", LOADER, kind, str(path), str(input_id), field, task]
    env = dict(os.environ, PYTHONHASHSEED="0")
    start = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    seconds = time.perf_counter() - start
    return dict(json.loads(output.strip().splitlines()[-1]), seconds=seconds)


Case = tuple
"""A load to measure: kind (`repype` or `pickle`), path, input id, field[, task name in the store]."""


def measure_all(cases: dict[Any, Case], repeat: int) -> dict[Any, dict]:
    """Median wall time and peak RSS of each case over `repeat` processes, the cases interleaved
    (one round runs every case once), so a machine that gets busier slows every case alike."""
    runs: dict[Any, list[dict]] = {label: [] for label in cases}
    for _ in range(max(1, repeat)):
        for label, case in cases.items():
            runs[label].append(load_process(*case))
    results = {}
    for label, measured in runs.items():
        loaded = {run["digest"] for run in measured}
        assert len(loaded) == 1, f"{label} loads disagree: {loaded}"
        results[label] = {
            "seconds": median([run["seconds"] for run in measured]),
            "rss_mib": max(run["rss_peak_kib"] for run in measured) / 1024,
            "digest": loaded.pop(),
        }
    return results


def import_costs(repeat: int) -> Table:
    """Whole-process time of importing nothing, `repype.store` and zarr (what every load starts with)."""
    table = Table("Import cost of a fresh process (median wall time)", ["python -c", "seconds"])
    codes = ("pass", "import repype.store", "import zarr", "import dill, gzip")
    times: dict[str, list[float]] = {code: [] for code in codes}
    for _ in range(max(1, repeat)):
        for code in codes:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[code].append(time.perf_counter() - start)
    for code in codes:
        table.add(code, median(times[code]))
    return table


def store_files(path: pathlib.Path) -> int:
    return sum(1 for entry in path.rglob("*") if entry.is_file())


def header_kib(path: pathlib.Path) -> float:
    store = repype.store.open(str(path), mode="r")
    digest = store.ref_target(TASK)
    return (path / "manifests" / digest[:2] / digest / "zarr.json").stat().st_size / 1024


def tiny_table(mode: str, repeat: int, tmp: pathlib.Path) -> tuple[Table, dict]:
    sizes = pick(mode, (10, 100), (10, 100, 1000), (10, 100, 1000, 10000))
    table = Table(
        "Load one field of one input from a task of N tiny inputs (a 16-float array + a small dict each), "
        "whole fresh process",
        [
            "N",
            "repype JSON field s",
            "unpacked array field s",
            "packed array field s",
            "pickle s",
            "speedup (JSON)",
            "speedup (unpacked)",
            "speedup (packed)",
            "repype RSS MiB",
            "pickle RSS MiB",
            "header KiB",
            "pickle KiB",
            "unpacked store files",
            "store files",
            "store KiB",
        ],
    )
    cases: dict[Any, Case] = {}
    files: dict[int, tuple[pathlib.Path, pathlib.Path]] = {}
    expected = {}
    for n in sizes:
        data = {input_id: tiny_input(input_id) for input_id in range(1, n + 1)}
        store_path, pickle_path = tmp / f"tiny-store-{n}", tmp / f"tiny-{n}.pkl.gz"
        unpacked_path = tmp / f"tiny-unpacked-{n}"
        write_repype(str(store_path), data)
        write_repype(str(unpacked_path), data, pack_limit=None)
        PickleTask(pickle_path).store(data)
        target = n // 2 + 1
        expected[n] = repr(data[target]["summary"])[:200]
        files[n] = (store_path, pickle_path, unpacked_path)
        cases[n, "json"] = ("repype", store_path, target, "summary")
        cases[n, "array"] = ("repype", unpacked_path, target, "signal")
        cases[n, "packed"] = ("repype", store_path, target, "signal")
        cases[n, "pickle"] = ("pickle", pickle_path, target, "summary")
    results = measure_all(cases, repeat)
    times = {}
    for n in sizes:
        json_load, array_load, packed_load, pickle_load = (
            results[n, kind] for kind in ("json", "array", "packed", "pickle")
        )
        assert json_load["digest"] == pickle_load["digest"] == expected[n]
        assert array_load["digest"] == packed_load["digest"]
        times[n] = (json_load["seconds"], pickle_load["seconds"], packed_load["seconds"])
        store_path, pickle_path, unpacked_path = files[n]
        table.add(
            n,
            json_load["seconds"],
            array_load["seconds"],
            packed_load["seconds"],
            pickle_load["seconds"],
            ratio(pickle_load["seconds"], json_load["seconds"]),
            ratio(pickle_load["seconds"], array_load["seconds"]),
            ratio(pickle_load["seconds"], packed_load["seconds"]),
            json_load["rss_mib"],
            pickle_load["rss_mib"],
            header_kib(store_path),
            common.dir_bytes(pickle_path) / 1024,
            store_files(unpacked_path),
            store_files(store_path),
            common.dir_bytes(store_path) / 1024,
        )
    largest, smallest = max(sizes), min(sizes)
    headlines = {
        "load_tiny_speedup_vs_pickle": ratio(times[largest][1], times[largest][0]),
        "load_flatness": ratio(times[largest][0], times[smallest][0]),
        "load_packed_array_speedup_vs_pickle": ratio(times[largest][1], times[largest][2]),
    }
    table.notes += [
        f"median of {max(1, repeat)} processes, every case once per round; speedup = pickle / repype; "
        "the JSON field needs no zarr import; 'packed' = the default store, whose tiny arrays live in the "
        "manifest (no zarr import either); 'unpacked' = a store opened with pack_limit=None (a Zarr array).",
        f"load_tiny_speedup_vs_pickle at N={largest}: {headlines['load_tiny_speedup_vs_pickle']}; "
        f"load_flatness (repype at N={largest} / N={smallest}): {headlines['load_flatness']}",
    ]
    return table, headlines


def image_table(mode: str, repeat: int, tmp: pathlib.Path) -> tuple[Table, dict]:
    sizes = pick(mode, (5, 20), (10, 100), (10, 100, 1000))
    table = Table(
        "Load one small field (histogram, 32 int64) of one input from a task of N inputs (each + a 64 KiB image), "
        "whole fresh process",
        [
            "N",
            "repype s",
            "unpacked s",
            "pickle s",
            "speedup",
            "speedup (unpacked)",
            "repype warm ms",
            "repype RSS MiB",
            "pickle RSS MiB",
            "pickle file MiB",
            "store MiB",
        ],
    )
    speedups = {}
    data: dict = {}
    cases: dict[Any, Case] = {}
    for n in sizes:
        data.update((input_id, image_input(input_id)) for input_id in range(len(data) + 1, n + 1))
        task_data = {input_id: data[input_id] for input_id in range(1, n + 1)}
        store_path, pickle_path = tmp / f"image-store-{n}", tmp / f"image-{n}.pkl.gz"
        unpacked_path = tmp / f"image-unpacked-{n}"
        write_repype(str(store_path), task_data)
        write_repype(str(unpacked_path), task_data, pack_limit=None)
        PickleTask(pickle_path).store(task_data)
        cases[n, "repype"] = ("repype", store_path, n // 2 + 1, "histogram")
        cases[n, "unpacked"] = ("repype", unpacked_path, n // 2 + 1, "histogram")
        cases[n, "pickle"] = ("pickle", pickle_path, n // 2 + 1, "histogram")
    results = measure_all(cases, repeat)
    for n in sizes:
        repype_load, unpacked_load, pickle_load = (results[n, kind] for kind in ("repype", "unpacked", "pickle"))
        assert repype_load["digest"] == unpacked_load["digest"] == pickle_load["digest"]
        store_path, pickle_path, target = cases[n, "repype"][1], cases[n, "pickle"][1], n // 2 + 1
        view = repype.store.open(str(store_path), mode="r").task(TASK)
        view.field(target, "histogram")
        warm, _ = best_of(lambda view=view, target=target: view.field(target, "histogram"), pick(mode, 3, 20, 50))
        speedups[n] = ratio(pickle_load["seconds"], repype_load["seconds"])
        table.add(
            n,
            repype_load["seconds"],
            unpacked_load["seconds"],
            pickle_load["seconds"],
            speedups[n],
            ratio(pickle_load["seconds"], unpacked_load["seconds"]),
            warm * 1000,
            repype_load["rss_mib"],
            pickle_load["rss_mib"],
            common.mib(common.dir_bytes(pickle_path)),
            common.mib(common.dir_bytes(store_path)),
        )
    largest = max(sizes)
    table.notes += [
        f"median of {max(1, repeat)} processes (interpreter start, imports, open, manifest, one verified value "
        "for repype; interpreter start, imports, gunzip + unpickle the task for the pickle); "
        "RSS = the process's peak resident set (VmHWM).",
        f"load_field_speedup_vs_pickle at N={largest}: {speedups[largest]}",
    ]
    return table, {"load_field_speedup_vs_pickle": speedups[largest]}


def run(mode: str) -> Result:
    repeat = pick(mode, 1, 3, 9)
    with scratch() as tmp:
        imports = import_costs(repeat)
        tiny, tiny_headlines = tiny_table(mode, repeat, tmp)
        image, image_headlines = image_table(mode, repeat, tmp)
    return Result([imports, tiny, image], {**image_headlines, **tiny_headlines})


if __name__ == "__main__":
    common.main(run, description=__doc__)
