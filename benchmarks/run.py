"""Runs every benchmark and prints one table per benchmark, then the headline ratios as one JSON line.

    python benchmarks/run.py            # full sizes (under 15 minutes on 2 cores)
    python benchmarks/run.py --quick    # smaller sizes (under 2 minutes)
    python benchmarks/run.py --tiny     # the smallest sizes (a smoke test, seconds)

The very last line of the output is a JSON object with every headline key.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common

BENCHMARKS = (
    "bench_store",
    "bench_load",
    "bench_tiny",
    "bench_sweep",
    "bench_peers",
    "bench_s3",
    "bench_fingerprint",
    "bench_provenance",
)
HEADLINE_KEYS = (
    "store_speedup_vs_pickle",
    "store_overhead_vs_zarr",
    "load_field_speedup_vs_pickle",
    "load_tiny_speedup_vs_pickle",
    "load_flatness",
    "load_packed_array_speedup_vs_pickle",
    "tiny_null_build_vs_first_run",
    "tiny_first_run_overhead_ms_per_input",
    "tiny_disk_vs_pickle",
    "tiny_files_per_input",
    "tiny_load_speedup_vs_pickle",
    "sweep_stage_runs_ratio",
    "sweep_null_build_vs_upstream",
    "sweep_first_run_speedup_vs_upstream",
    "sweep_load_field_speedup_vs_upstream",
    "sweep_first_run_speedup_vs_joblib",
    "sweep_rerun_vs_joblib",
    "s3_small_records_speedup",
    "s3_requests_per_record_write",
    "s3_requests_per_record_check",
    "hash_share_of_store",
    "read_throughput_vs_zarr",
)


def main(argv: list[str] | None = None) -> dict:
    mode = common.parse_mode(argv, description=__doc__)
    details = common.machine()
    print(f"# repype benchmarks, mode {mode}", flush=True)
    print("machine: " + ", ".join(f"{key} {value}" for key, value in details.items()) + "\n", flush=True)
    headlines: dict = {}
    durations = common.Table("Benchmark durations", ["benchmark", "seconds"])
    started = time.perf_counter()
    for name in BENCHMARKS:
        if not (pathlib.Path(__file__).resolve().parent / f"{name}.py").exists():
            continue
        module = importlib.import_module(name)
        began = time.perf_counter()
        result = module.run(mode)
        durations.add(name, time.perf_counter() - began)
        result.print()
        headlines.update(result.headlines)
    durations.add("total", time.perf_counter() - started)
    print(durations.format(), flush=True)
    ordered = {key: headlines[key] for key in HEADLINE_KEYS if key in headlines}
    ordered.update((key, value) for key, value in headlines.items() if key not in ordered)
    print(json.dumps(ordered), flush=True)
    return ordered


if __name__ == "__main__":
    main()
