"""`explain` and `--why` against a store holding R recorded executions of one stage, local and on S3.

A task with the pipeline `load` -> `segment` (the swept `threshold`) and one input is run once;
then R - 1 more executions of `segment` are recorded, each with another threshold (what a long
sweep leaves behind), each with its key document. Timed, in-process, on a store opened afresh
(no cache):

* `explain`: `TaskView.explain(1, "mask")`: the derivation of the task's leaf field back to the
  input id (reads the input's entry, its records, every task's manifest, one mark per stage);
* `--why`: `repype.why.why(context, ...)` after the task's threshold was edited: lists every
  record, reads them all in one batch, compares the stage's key document with each and names
  the nearest (`segment/threshold: ... → ...`).

On S3 (a moto server on 127.0.0.1, as `bench_s3.py` starts it) the HTTP requests are counted too.
Writing R records to moto takes about 20 ms per request, so S3 uses fewer records than local disk.

Headlines: `why_seconds_local` (goal < 1 s at 10,000 records, the full mode; the quick and tiny
modes use fewer, named in the table) and `explain_seconds_local`.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common
from bench_s3 import counting, measured, moto_server, new_bucket
from common import Result, Table, goal, pick, scratch

import repype.store
from repype.batch import Batch
from repype.stage import Stage
from repype.store.keys import document_key
from repype.why import why

PIPELINE = ["bench_provenance.Load", "bench_provenance.Segment"]
PIPELINE_IDS = ["segment", "load"]
"""The stages of the derivation of `mask`, from the value back."""
WRITERS = 8


class Load(Stage):
    """A small vector seeded by the input id."""

    inputs = ("input_id",)
    outputs = ("raw",)

    def process(self, input_id, pipeline, config, status=None):
        return {"raw": [float((input_id * 7 + index) % 11) for index in range(config.get("size", 16))]}


class Segment(Stage):
    """Which entries are above `threshold`."""

    inputs = ("raw",)
    outputs = ("mask",)

    def process(self, raw, pipeline, config, status=None):
        return {"mask": [value > config.get("threshold", 5.0) for value in raw]}


def write_tree(root: pathlib.Path, store: str | None = None, options: dict | None = None) -> pathlib.Path:
    """A runnable root task with the pipeline, one input and `threshold` 5."""
    root.mkdir(parents=True)
    spec: dict = {"runnable": True, "pipeline": PIPELINE, "input_ids": [1], "config": {"segment": {"threshold": 5.0}}}
    if store:
        spec.update(store=store, storage_options=options)
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    return root


def load(root: pathlib.Path):
    batch = Batch()
    batch.load(root)
    return batch.context(root)


def add_executions(store, count: int) -> None:
    """Records `count` more executions of `segment`, each with another threshold, from the one recorded."""
    (record,) = [r for r in store.get_records(sorted(store.task(".").record_keys())).values() if r.stage == "segment"]

    def put(index: int) -> None:
        # two parts differ from the recorded execution, so that it stays the nearest one
        document = {**record.document, "hyperparameters": {"threshold": 100.0 + index, "other": index}}
        store.put_record(document_key(document), record.outputs, 0.01, "segment", document)

    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(put, range(count)))


def edit_threshold(root: pathlib.Path, threshold: float) -> None:
    spec = yaml.safe_load((root / "task.yml").read_text())
    spec["config"]["segment"]["threshold"] = threshold
    (root / "task.yml").write_text(yaml.safe_dump(spec))


def measure(root: pathlib.Path, records: int, open_store) -> dict[str, tuple[float, int, dict]]:
    """Runs the tree, adds executions, then times explain and why: (seconds, S3 requests, by kind) of each."""
    load(root).run(return_data=False)
    add_executions(open_store("a"), records - 1)
    found = {}
    explanation = []
    found["explain"] = measured(lambda: explanation.append(open_store("r").task(".").explain(1, "mask")))
    assert [node.stage for node in (explanation[0].derivation, explanation[0].derivation.reads[0])] == PIPELINE_IDS
    edit_threshold(root, 5.5)
    context = load(root)
    result = []
    found["why"] = measured(lambda: result.append(why(context, ".")))
    reasons = [reason for entry in result[0].stages for reason in entry.reasons]
    assert reasons == ["segment/threshold: 5.0 → 5.5"], reasons
    return found


def run(mode: str) -> Result:
    local_records = pick(mode, 100, 2000, 10000)
    s3_records = pick(mode, 20, 200, 1000)
    table = Table(
        "explain and --why with R recorded executions of the stage",
        ["store", "records (R)", "command", "seconds", "S3 requests", "requests by kind"],
    )
    with scratch() as tmp, moto_server() as endpoint, counting():
        local_url = str(tmp / "local" / ".repype")
        local = measure(write_tree(tmp / "local"), local_records, lambda mode: repype.store.open(local_url, mode=mode))
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        s3_url = f"s3://{new_bucket(endpoint)}/prov"
        s3 = measure(
            write_tree(tmp / "s3", s3_url, options),
            s3_records,
            lambda mode: repype.store.open(s3_url, storage_options=options, mode=mode),
        )
    for label, records, found in (("local", local_records, local), ("s3 (moto)", s3_records, s3)):
        for name, (seconds, requests, kinds) in found.items():
            table.add(label, records, name, seconds, requests if label != "local" else "-", kinds or "-")
    why_seconds = local["why"][0]
    verdict = goal(why_seconds, 1.0, at_least=False) if local_records == 10000 else "n/a (full mode only)"
    table.notes.append(f"--why at {local_records} local records: {why_seconds:.3f} s (goal < 1 s at 10,000: {verdict})")
    headlines = {"why_seconds_local": round(why_seconds, 3), "explain_seconds_local": round(local["explain"][0], 3)}
    return Result([table], headlines)


if __name__ == "__main__":
    common.main(run, description=__doc__)
