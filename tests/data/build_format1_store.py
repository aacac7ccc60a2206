"""Builds `tests/data/format1/`: a task tree and its store, written by repype's store format 1.

Run once with the code of that format (`python tests/data/build_format1_store.py`) and check in
the output; `tests/test_store_formats.py` opens it with the current code and loads every field.
Never re-run it with a newer format: the point is to keep a store that old code wrote.
"""

from __future__ import annotations

import fractions
import pathlib
import shutil

import numpy as np
import yaml

from repype.batch import Batch
from repype.pipeline import create_pipeline
from repype.stage import Stage

HERE = pathlib.Path(__file__).resolve().parent / "format1"


class Load(Stage):
    inputs = ("input_id",)
    outputs = ("raw",)

    def process(self, input_id, pipeline, config, status=None):
        seed = input_id if isinstance(input_id, int) else 99
        return {"raw": np.random.default_rng(seed).random(config.get("size", 8)).astype(np.float32)}


class Describe(Stage):
    inputs = ("raw", "input_id")
    outputs = ("summary", "labels", "big", "ratio")

    def process(self, raw, input_id, pipeline, config, status=None):
        return {
            "summary": {"input": input_id, "peak": float(raw.max()), "shape": tuple(raw.shape)},  # tagged JSON
            "labels": np.array([f"l{i}" for i in range(3)]),  # a '<U2' array: raw layout
            "big": list(range(config.get("count", 300))),  # JSON over the inline limit: a blob
            "ratio": fractions.Fraction(int(raw.argmax()) + 1, 7),  # a pickle
        }


SPECS = {
    ".": {"runnable": True, "input_ids": [1, 2, "c"], "store": "store", "config": {"load": {"size": 8}}},
    "child": {"config": {"describe": {"count": 310}}},
}


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    for name, spec in SPECS.items():
        (HERE / name).mkdir(parents=True, exist_ok=True)
        (HERE / name / "task.yml").write_text(yaml.safe_dump(spec))
    batch = Batch()
    for name in SPECS:
        task = batch.task(HERE / name)
        task.run(task.create_config(), pipeline=create_pipeline([Load(), Describe()]))


if __name__ == "__main__":
    main()
