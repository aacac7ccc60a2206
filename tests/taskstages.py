"""Stages used by the task tests; each `process` appends one line to the counter file.

The counter file is named by the environment variable `REPYPE_TEST_COUNTS`, so executions are
counted across processes too. Tasks name these classes by dotted path (`taskstages.Load`).
"""

from __future__ import annotations

import os
import pathlib
import time
from collections import Counter

import numpy as np

from repype.pipeline import Pipeline
from repype.stage import Stage, file_digest

COUNTS_ENV = "REPYPE_TEST_COUNTS"


def count(stage_id: str, input_id) -> None:
    path = os.environ.get(COUNTS_ENV)
    if path:
        with open(path, "a") as file:
            file.write(f"{stage_id}\t{input_id!r}\n")


def read_counts(path: pathlib.Path) -> Counter:
    """Executions per stage id."""
    if not path.exists():
        return Counter()
    return Counter(line.split("\t")[0] for line in path.read_text().splitlines() if line)


class Load(Stage):
    inputs = ("input_id",)
    outputs = ("raw",)

    def process(self, input_id, pipeline, config, status=None):
        count(self.id, input_id)
        size = config.get("size", 16)
        seed = input_id if isinstance(input_id, int) else sum(map(ord, input_id))
        return {"raw": np.random.default_rng(seed).random(size).astype(np.float32)}


class Scale(Stage):
    inputs = ("raw",)
    outputs = ("scaled",)

    def process(self, raw, pipeline, config, status=None):
        count(self.id, "?")
        return {"scaled": raw * config.get("factor", 1.0)}


class Threshold(Stage):
    inputs = ("scaled",)
    outputs = ("mask",)

    def process(self, scaled, pipeline, config, status=None):
        count(self.id, "?")
        return {"mask": scaled > config.get("threshold", 0.5)}


class Summarize(Stage):
    inputs = ("mask", "input_id")
    outputs = ("summary",)

    def process(self, mask, input_id, pipeline, config, status=None):
        count(self.id, input_id)
        return {"summary": {"count": int(mask.sum()), "input": input_id, "shape": tuple(mask.shape)}}


class Side(Stage):
    """An independent branch reading only `raw`."""

    inputs = ("raw",)
    outputs = ("stats",)

    def process(self, raw, pipeline, config, status=None):
        count(self.id, "?")
        return {"stats": (float(raw.min()), float(raw.max()))}


class Fail(Stage):
    """Fails for the input named by its `fail_on` hyperparameter."""

    inputs = ("mask", "input_id")
    outputs = ("checked",)

    def process(self, mask, input_id, pipeline, config, status=None):
        count(self.id, input_id)
        if input_id == config.get("fail_on", None):
            raise RuntimeError(f"failing on purpose for input {input_id}")
        return {"checked": True}


class Consume(Stage):
    """Consumes `scaled`: it is gone from the data afterwards."""

    inputs = ("mask",)
    consumes = ("scaled",)
    outputs = ("masked",)

    def process(self, mask, scaled, pipeline, config, status=None):
        count(self.id, "?")
        return {"masked": np.where(mask, scaled, 0)}


class Unstorable(Stage):
    inputs = ("raw",)
    outputs = ("handle",)

    def process(self, raw, pipeline, config, status=None):
        count(self.id, "?")
        return {"handle": (x for x in range(3))}


class ReadFile(Stage):
    """Reads a file named by a hyperparameter: the file's content is part of the key."""

    inputs = ("input_id",)
    outputs = ("text",)

    def key_material(self, pipeline, input_id, config):
        return file_digest(config["path"])

    def process(self, input_id, pipeline, config, status=None):
        count(self.id, input_id)
        return {"text": pathlib.Path(config["path"]).read_text()}


class BasicPipeline(Pipeline):
    """Load -> Scale -> Threshold -> Summarize, built by class (the dotted-path form)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for stage in (Load(), Scale(), Threshold(), Summarize()):
            self.append(stage)


class Sleep(Stage):
    """Sleeps for its `seconds` hyperparameter (a slow last stage)."""

    inputs = ("mask",)
    outputs = ("slept",)

    def process(self, mask, pipeline, config, status=None):
        count(self.id, "?")
        time.sleep(config.get("seconds", 0.0))
        return {"slept": float(config.get("seconds", 0.0))}
