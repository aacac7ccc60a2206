"""Stages of the bundled example: find bright blobs in synthetic fluorescence-like images.

Everything is computed from the input id (no data files, no network), so the example runs
anywhere. The task tree next to this file sweeps the smoothing and the threshold.
"""

from __future__ import annotations

import numpy as np

from repype.stage import Stage


class Synthesize(Stage):
    """Render an image with `blobs` Gaussian spots and noise, seeded by the input id."""

    inputs = ("input_id",)
    outputs = ("image",)

    def process(self, input_id, pipeline, config, status=None):
        size = config.get("size", 512)
        rng = np.random.default_rng(input_id)
        yy, xx = np.mgrid[0:size, 0:size]
        image = rng.normal(0.1, 0.05, (size, size))
        for _ in range(config.get("blobs", 40)):
            y, x = rng.uniform(0, size, 2)
            radius = rng.uniform(4, 12)
            image += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * radius**2))
        return {"image": image.astype(np.float32)}


class Smooth(Stage):
    """Gaussian smoothing in the Fourier domain with standard deviation `sigma` (pixels)."""

    inputs = ("image",)
    outputs = ("smooth",)

    def process(self, image, pipeline, config, status=None):
        sigma = config.get("sigma", 1.0)
        fy = np.fft.fftfreq(image.shape[0])[:, None]
        fx = np.fft.rfftfreq(image.shape[1])[None, :]
        kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
        smooth = np.fft.irfft2(np.fft.rfft2(image) * kernel, s=image.shape)
        return {"smooth": smooth.astype(np.float32)}


class Segment(Stage):
    """Foreground mask: pixels brighter than `threshold` times the image maximum."""

    inputs = ("smooth",)
    outputs = ("mask",)

    def process(self, smooth, pipeline, config, status=None):
        return {"mask": smooth > config.get("threshold", 0.5) * smooth.max()}


class Measure(Stage):
    """Object count (4-connected components) and foreground fraction of the mask."""

    inputs = ("mask",)
    outputs = ("objects", "foreground")

    def process(self, mask, pipeline, config, status=None):
        return {"objects": count_components(mask), "foreground": float(mask.mean())}


def count_components(mask: np.ndarray) -> int:
    """Number of 4-connected foreground components (union-find over runs of rows)."""
    parent: dict[int, int] = {}

    def find(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    labels = np.zeros(mask.shape, dtype=np.int64)
    next_label = 1
    for y, x in zip(*np.nonzero(mask)):
        neighbours = [labels[y - 1, x] if y else 0, labels[y, x - 1] if x else 0]
        neighbours = [n for n in neighbours if n]
        if not neighbours:
            parent[next_label] = next_label
            labels[y, x] = next_label
            next_label += 1
            continue
        roots = sorted({find(n) for n in neighbours})
        labels[y, x] = roots[0]
        for other in roots[1:]:
            parent[other] = roots[0]
    return len({find(label) for label in parent})
