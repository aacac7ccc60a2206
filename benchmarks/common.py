"""Shared helpers of the benchmarks: modes, timing, tables, realistic data and the alternatives.

The alternatives that repype is compared with live here, small and labelled:

* :class:`PickleTask` - "one pickle per task": the whole task data object written with
  `dill.dump` into `gzip.open(path, 'wb')` (default compression level), read back the same way.
  This is the original framework's storage format.
* :class:`PlainZarr` - "plain Zarr": the same arrays written directly with `zarr` (same codec
  `zarr.codecs.ZstdCodec(level=1)`, same chunking via `repype.store.blobs.chunks_for`), without
  repype's keys, records and hashing; small dicts go to group attributes.
* "ancestor-only pick-up" is a property of a task tree (each sibling gets its own store through a
  `store:` key in its `task.yml`), see `bench_sweep.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dill
import numpy as np
import zarr
import zarr.codecs

from repype.store.blobs import chunks_for

MODES = ("tiny", "quick", "full")

EXECUTIONS: Counter = Counter()
"""Stage executions counted by the benchmark stages (by stage id), shared by every module in a process."""


# --- modes and command line -----------------------------------------------------------------


def parse_mode(argv: Sequence[str] | None = None, description: str = "") -> str:
    """`tiny`, `quick` or `full` from `--tiny` / `--quick` (default: full)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (the whole suite in under 2 minutes)")
    parser.add_argument("--tiny", action="store_true", help="the smallest sizes (a smoke test in seconds)")
    args = parser.parse_args(argv)
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def pick(mode: str, tiny: Any, quick: Any, full: Any) -> Any:
    """The value for `mode`."""
    return {"tiny": tiny, "quick": quick, "full": full}[mode]


# --- results --------------------------------------------------------------------------------


@dataclass
class Table:
    """A printable table: a title, column headers, rows and notes printed below."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def format(self) -> str:
        cells = [[str(header) for header in self.headers]] + [[fmt(value) for value in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]

        def line(row: list[str]) -> str:
            return "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
            ).rstrip()

        rule = "  ".join("-" * width for width in widths)
        out = [f"## {self.title}", "", line(cells[0]), rule, *(line(row) for row in cells[1:])]
        if self.notes:
            out += ["", *self.notes]
        return "\n".join(out) + "\n"


@dataclass
class Result:
    """What a benchmark returns: its tables and its headline values (keys of the final JSON line)."""

    tables: list[Table] = field(default_factory=list)
    headlines: dict[str, Any] = field(default_factory=dict)

    def print(self) -> None:
        for table in self.tables:
            print(table.format(), flush=True)


def fmt(value: Any) -> str:
    """A cell: floats with 3 significant digits, everything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator rounded to 3 decimals (inf when the denominator is 0)."""
    return round(numerator / denominator, 3) if denominator > 0 else float("inf")


def goal(value: float, target: float, at_least: bool) -> str:
    """`met` or `MISSED` for a headline value against its goal."""
    return "met" if (value >= target if at_least else value <= target) else "MISSED"


def main(run: Callable[[str], Result], argv: Sequence[str] | None = None, description: str = "") -> Result:
    """Entry point of a benchmark script: parse the mode, run, print tables and the JSON line."""
    mode = parse_mode(argv, description)
    result = run(mode)
    result.print()
    print(json.dumps(result.headlines), flush=True)
    return result


# --- timing ---------------------------------------------------------------------------------


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    gc.collect()
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def best_of(
    function: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None
) -> tuple[float, list[float]]:
    """Minimum and all timings of `repeat` calls of `function`; `setup()` runs untimed before each."""
    times = []
    for _ in range(max(1, repeat)):
        if setup is not None:
            setup()
        seconds, _ = timed(function)
        times.append(seconds)
    return min(times), times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def scratch(prefix: str = "repype-bench-") -> Iterator[pathlib.Path]:
    """A temporary directory on local disk, removed afterwards."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dir_bytes(path: pathlib.Path) -> int:
    """Total size of the files below `path` (or of the file `path`)."""
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def mib(nbytes: float) -> float:
    return nbytes / (1 << 20)


# --- realistic data -------------------------------------------------------------------------


def _interpolation_matrix(size: int, coarse: int) -> np.ndarray:
    """Linear interpolation from `coarse` to `size` samples, as a (size, coarse) matrix."""
    positions = np.linspace(0, coarse - 1, size)
    low = np.clip(np.floor(positions).astype(int), 0, coarse - 2)
    weight = positions - low
    matrix = np.zeros((size, coarse))
    matrix[np.arange(size), low] = 1 - weight
    matrix[np.arange(size), low + 1] = weight
    return matrix


def smooth_field(shape: tuple[int, int], seed: int, coarse: int = 24, noise: float = 0.02) -> np.ndarray:
    """A float32 image like a measurement: a smooth random field plus a little sensor noise.

    Neither all zeros (which compresses to nothing) nor pure noise (which does not compress):
    zstd level 1 shrinks it by a realistic 10-20 %.
    """
    rng = np.random.default_rng(seed)
    rows = _interpolation_matrix(shape[0], coarse)
    cols = _interpolation_matrix(shape[1], coarse)
    field = rows @ rng.standard_normal((coarse, coarse)) @ cols.T
    field = field.astype(np.float32)
    field += rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)
    return field


def small_dict(seed: int) -> dict[str, Any]:
    """A small JSON-able result record (counts, a score, a label)."""
    rng = np.random.default_rng(seed)
    return {
        "count": int(rng.integers(0, 1000)),
        "score": float(round(rng.random(), 6)),
        "label": f"input-{seed}",
        "ok": bool(seed % 2),
    }


# --- alternative: one pickle per task -------------------------------------------------------


class PickleTask:
    """One pickle per task, the original framework's format: `dill.dump` into `gzip.open(path, 'wb')`."""

    label = "one pickle per task (dill + gzip)"

    def __init__(self, path: pathlib.Path) -> None:
        self.path = pathlib.Path(path)

    def store(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(self.path, "wb") as file:
            dill.dump(data, file)

    def load(self) -> dict:
        with gzip.open(self.path, "rb") as file:
            return dill.load(file)


# --- alternative: plain Zarr ----------------------------------------------------------------


class PlainZarr:
    """The same arrays written straight with `zarr`: same codec and chunking, no keys, records or hashes.

    Layout: `<input id>/<field>` arrays; non-array fields go to the attributes of the input's group.
    """

    label = "plain Zarr (zstd 1)"

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url
        self.storage_options = storage_options
        self.compressor = zarr.codecs.ZstdCodec(level=1)

    def _root(self, mode: str) -> zarr.Group:
        return zarr.open_group(self.url, mode=mode, storage_options=self.storage_options, zarr_format=3)

    def store(self, data: dict) -> None:
        root = self._root("w")
        for input_id, fields in data.items():
            attributes = {name: value for name, value in fields.items() if not isinstance(value, np.ndarray)}
            group = root.create_group(str(input_id), attributes=attributes)
            for name, value in fields.items():
                if isinstance(value, np.ndarray):
                    group.create_array(
                        name,
                        data=value,
                        chunks=chunks_for(value.shape, value.dtype.itemsize),
                        compressors=self.compressor,
                    )

    def read_array(self, input_id: Any, name: str) -> np.ndarray:
        return zarr.open_array(
            self.url, path=f"{input_id}/{name}", mode="r", storage_options=self.storage_options, zarr_format=3
        )[...]


# --- machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Cores, Python and library versions, for the README."""
    import numcodecs
    import xxhash

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_name(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "xxhash": xxhash.VERSION,
        "dill": dill.__version__,
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
