"""The stages of the whole-process benchmarks, importable by repype, upstream repype 1.0.4 and joblib alike.

This module needs nothing but numpy and a `repype.stage.Stage` class: the same file is imported by
this project's `repype` and by upstream repype 1.0.4 in its own venv (both call
`process(pipeline=..., config=..., status=..., **inputs)`), so both run the very same stage code.
The work itself lives in plain functions, which the joblib peer caches with `joblib.Memory`.

Two pipelines:

* the sweep: `Render` (the costly first stage: sleeps `delay` seconds, renders a `side` x `side`
  image) -> `Blur` -> `Measure` (the swept `threshold`); `Blur` and `Measure` sleep their own
  `delay` hyperparameter first (default 0: cheap stages, as `bench_peers.py` runs them);
* the tiny-input task: `Signal` (a 16-float array) -> `Summarize` (a small dict).

When the environment names a file in `REPYPE_BENCH_COUNTS`, every execution of a work function
appends its name to it, so a benchmark can count stage executions across processes.
"""

from __future__ import annotations

import os
import time

import numpy as np

from repype.stage import Stage

SWEEP = ["treestages.Render", "treestages.Blur", "treestages.Measure"]
"""The sweep pipeline as a `task.yml` lists it."""

TINY = ["treestages.Signal", "treestages.Summarize"]
"""The tiny-input pipeline as a `task.yml` lists it."""


def count(name: str) -> None:
    """Appends `name` to the counts file, if the environment names one."""
    path = os.environ.get("REPYPE_BENCH_COUNTS")
    if path:
        with open(path, "a") as file:
            file.write(name + "\n")


def render(input_id: int, delay: float, side: int) -> np.ndarray:
    """A float32 image seeded by the input id (a coarse random field, upsampled), after sleeping `delay` seconds."""
    count("render")
    time.sleep(delay)
    coarse = np.random.default_rng(input_id).standard_normal((8, 8)).astype(np.float32)
    return np.kron(coarse, np.ones((side // 8, side // 8), dtype=np.float32))


def blur(image: np.ndarray) -> np.ndarray:
    """A 3x3 box blur (wrapping at the edges)."""
    count("blur")
    out = (image + np.roll(image, 1, 0) + np.roll(image, -1, 0)) / 3
    return ((out + np.roll(out, 1, 1) + np.roll(out, -1, 1)) / 3).astype(np.float32)


def measure(smooth: np.ndarray, threshold: float) -> float:
    """The fraction of pixels above `threshold`."""
    count("measure")
    return float((smooth > threshold).mean())


def signal(input_id: int) -> np.ndarray:
    """16 float32 samples seeded by the input id."""
    return np.random.default_rng(input_id).random(16).astype(np.float32)


def summarize(values: np.ndarray) -> dict:
    """A small dict of statistics of `values`."""
    return {"count": len(values), "mean": round(float(values.mean()), 6), "peak": int(values.argmax()), "ok": True}


class Render(Stage):
    """The costly first stage of the sweep."""

    inputs = ("input_id",)
    outputs = ("image",)

    def process(self, input_id, pipeline, config, status=None):
        return {"image": render(input_id, config.get("delay", 0.05), config.get("side", 128))}


class Blur(Stage):
    """The cheap middle stage of the sweep."""

    inputs = ("image",)
    outputs = ("smooth",)

    def process(self, image, pipeline, config, status=None):
        time.sleep(config.get("delay", 0.0))
        return {"smooth": blur(image)}


class Measure(Stage):
    """The swept last stage."""

    inputs = ("smooth",)
    outputs = ("foreground",)

    def process(self, smooth, pipeline, config, status=None):
        time.sleep(config.get("delay", 0.0))
        return {"foreground": measure(smooth, config.get("threshold", 0.0))}


class Signal(Stage):
    """The tiny task's first stage: a 16-float array per input."""

    inputs = ("input_id",)
    outputs = ("signal",)

    def process(self, input_id, pipeline, config, status=None):
        return {"signal": signal(input_id)}


class Summarize(Stage):
    """The tiny task's second stage: a small dict per input."""

    inputs = ("signal",)
    outputs = ("summary",)

    def process(self, signal, pipeline, config, status=None):
        return {"summary": summarize(signal)}
