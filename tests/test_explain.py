"""Every stored value explains itself: records keep their key documents, `explain` walks them back to the source."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest
import yaml
from example import copy_example, run_example

import repype.store
from repype.store import KEY_SCHEMA_VERSION, layout, manifests
from repype.store.marks import mark_nondeterministic
from repype.storecli import store_main
from repype.version import VERSION

CHAIN = ["objects", "mask", "smooth", "image", "input_id"]
"""The derivation of the example's leaf field `objects`: one field read per stage, back to the source."""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The bundled example's sweep (small images), run once; tests that write work on a copy."""
    root = copy_example(tmp_path_factory.mktemp("explain") / "blobs")
    run_example(root)
    return root


def copy_tree(tree, tmp_path):
    """A copy of the run tree (store included) that a test may change."""
    return shutil.copytree(tree, tmp_path / "blobs")


def call(capsys, *argv) -> tuple[int, str, str]:
    code = store_main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def chain(derivation) -> list:
    """The nodes of a derivation that reads one field per stage, from the value to the source."""
    nodes = [derivation]
    while nodes[-1].reads:
        assert len(nodes[-1].reads) == 1, nodes[-1]
        nodes.append(nodes[-1].reads[0])
    return nodes


def check_objects_chain(store, task: str, input_id, sigma, threshold, tasks_of_synthesize: list[str]) -> None:
    """`explain` of `objects` gives the right stages, shas, hyperparameters and digests, back to the input id."""
    view = store.task(task)
    explanation = view.explain(input_id, "objects")
    nodes = chain(explanation.derivation)
    refs = view.refs(input_id)
    assert [node.field for node in nodes] == CHAIN
    assert [node.digest for node in nodes] == [refs[name]["digest"] for name in CHAIN]
    assert [node.stage for node in nodes] == ["measure", "segment", "smooth", "synthesize", None]
    assert [node.stage_sha for node in nodes[:-1]] == [view.stages[node.stage] for node in nodes[:-1]]
    assert [node.hyperparameters for node in nodes[:-1]] == [
        {},
        {"threshold": threshold},
        {"sigma": sigma},
        {"size": 48, "blobs": 40},
    ]
    assert nodes[-1].value == input_id and nodes[-1].note.startswith("source")
    assert nodes[-1].digest == store.describe(input_id, field="input_id")["digest"]
    assert all(node.record in view.record_keys() for node in nodes[:-1])
    assert all(node.version == VERSION and node.run_time >= 0 and node.nondeterministic is None for node in nodes[:-1])
    assert nodes[0].tasks == [task] and nodes[3].tasks == tasks_of_synthesize
    document = json.loads(json.dumps(dataclasses.asdict(explanation), default=str))
    assert document["derivation"]["reads"][0]["reads"][0]["hyperparameters"] == {"sigma": sigma}


# --- records carry their derivation ---------------------------------------------------------------


def test_records_written_by_a_run_hold_documents_whose_sha1_is_their_key(tree):
    store = repype.store.open(str(tree / ".repype"), mode="r")
    view = store.task("sigma=3/threshold=0.6")
    records = store.get_records(sorted(view.record_keys()))
    assert len(records) == 4 * 6
    for key, record in records.items():
        text = json.dumps(record.document, sort_keys=True, separators=(",", ":"))
        assert hashlib.sha1(text.encode("utf-8")).hexdigest() == key
        assert record.version == VERSION and record.document["schema"] == KEY_SCHEMA_VERSION
        assert record.document["stage"] == view.stages[record.stage]
    synthesize = [record for record in records.values() if record.stage == "synthesize"]
    assert all(set(record.document["inputs"]) == {"input_id"} for record in synthesize)
    assert {
        record.document["hyperparameters"]["threshold"] for record in records.values() if record.stage == "segment"
    } == {0.6}


def test_verify_reports_a_record_whose_document_does_not_hash_to_its_key(tree, tmp_path, capsys):
    root = copy_tree(tree, tmp_path)
    store = repype.store.open(str(root / ".repype"))
    key = next(iter(store.task("sigma=1").record_keys()))
    record = store.get_record(key)
    forged = {**record.document, "hyperparameters": {"forged": True}}
    store.put_record(key, record.outputs, record.run_time, record.stage, forged)
    report = store.verify()
    assert not report.ok and list(report.broken_records) == [key]
    assert "its key document hashes to" in report.broken_records[key] and "not to its key" in report.broken_records[key]
    code, out, _ = call(capsys, "verify", root / ".repype")
    assert code == 1 and f"broken record {key}: its key document hashes to" in out


def test_old_records_explain_less_and_a_run_that_reuses_them_rewrites_them_with_their_document(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    store = repype.store.open(str(root / ".repype"))
    view = store.task("sigma=3")
    image = chain(view.explain(1, "objects").derivation)[3]
    old = store.get_record(image.record)
    format1 = {"outputs": old.outputs, "run_time": old.run_time, "created": old.created, "stage": old.stage}
    store.backend.set(
        layout.metadata_key(layout.record_path(old.key)), layout.group_document({"repype_record": format1})
    )
    reader = repype.store.open(str(root / ".repype"), mode="r")
    node = chain(reader.task("sigma=3").explain(1, "objects").derivation)[3]
    assert node.stage == "synthesize" and node.stage_sha is None and node.reads == [] and "format 1" in node.note
    assert reader.verify().ok  # a record without a document is not damage

    (root / "sigma=3" / "threshold=0.4").mkdir()
    (root / "sigma=3" / "threshold=0.4" / "task.yml").write_text("config: {segment: {threshold: 0.4}}\n")
    run_example(root)  # the new task reuses the old record of `synthesize` for input 1
    after = repype.store.open(str(root / ".repype"), mode="r")
    upgraded = after.get_record(old.key)
    assert upgraded.document is not None and upgraded.outputs == old.outputs
    assert manifests.parse_record(old.key, manifests.record_document(upgraded)) == upgraded
    assert len(after.tasks()) == 7
    check_objects_chain(after, "sigma=3/threshold=0.4", 1, 3, 0.4, after.tasks())


# --- explain ----------------------------------------------------------------------------------------


def test_explain_gives_the_full_chain_of_a_leaf_field_of_the_sweep(tree):
    store = repype.store.open(str(tree / ".repype"), mode="r")
    everyone = store.tasks()
    check_objects_chain(store, "sigma=3/threshold=0.6", 4, 3, 0.6, everyone)
    check_objects_chain(store, "sigma=1", 2, 1, 0.5, everyone)
    smooth = chain(store.task("sigma=3/threshold=0.3").explain(5, "objects").derivation)[2]
    assert smooth.tasks == ["sigma=3", "sigma=3/threshold=0.3", "sigma=3/threshold=0.6"]


def test_explain_on_s3_gives_the_same_chain(s3_server, tmp_path, capsys):
    root = copy_example(
        tmp_path / "blobs", store=f"s3://{s3_server.new_bucket()}/sweep", storage_options=s3_server.storage_options
    )
    for path in [*root.glob("sigma=1/threshold=*"), root / "sigma=3" / "threshold=0.3"]:
        shutil.rmtree(path)  # three tasks are enough here
    run_example(root)
    url = yaml.safe_load((root / "task.yml").read_text())["store"]
    store = repype.store.open(url, storage_options=s3_server.storage_options, mode="r")
    check_objects_chain(store, "sigma=3/threshold=0.6", 4, 3, 0.6, ["sigma=1", "sigma=3", "sigma=3/threshold=0.6"])
    code, out, _ = call(capsys, "explain", root, "sigma=3/threshold=0.6", 4, "objects", "--json")
    assert code == 0 and [node["stage"] for node in _json_chain(json.loads(out)["derivation"])] == [
        "measure",
        "segment",
        "smooth",
        "synthesize",
        None,
    ]


def _json_chain(node: dict) -> list[dict]:
    return [node, *(_json_chain(node["reads"][0]) if node["reads"] else [])]


def test_explain_shows_a_non_determinism_mark(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    store = repype.store.open(str(root / ".repype"))
    view = store.task("sigma=1")
    segment = chain(view.explain(3, "objects").derivation)[1]
    mark_nondeterministic(store, "segment", segment.stage_sha, segment.record, {"mask": "a" * 32}, {"mask": "b" * 32})
    nodes = chain(repype.store.open(str(root / ".repype"), mode="r").task("sigma=1").explain(3, "objects").derivation)
    assert nodes[1].nondeterministic["key"] == segment.record
    assert [node.nondeterministic is None for node in nodes] == [True, False, True, True, True]


def test_cli_explain_text_and_json_agree_with_the_python_tree(tree, capsys):
    explanation = repype.store.open(str(tree / ".repype"), mode="r").task("sigma=3").explain(2, "foreground")
    code, out, _ = call(capsys, "explain", tree, "sigma=3", 2, "foreground", "--json")
    assert code == 0 and json.loads(out) == json.loads(json.dumps(dataclasses.asdict(explanation), default=str))
    code, text, _ = call(capsys, "explain", tree / ".repype", "sigma=3", 2, "foreground")
    nodes = chain(explanation.derivation)
    assert code == 0 and text.splitlines()[0] == "field 'foreground' of input 2 in task 'sigma=3'"
    assert f"foreground  {nodes[0].digest[:12]}  ← stage 'measure' (code {nodes[0].stage_sha[:12]}" in text
    assert "hyperparameters: sigma=3" in text and "hyperparameters: threshold=0.5" in text
    assert "└── input_id  " in text and "= 2  (source: the input id)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sigma=9", "1", "objects"], "no task 'sigma=9' in the store"),
        (["sigma=1", "9", "objects"], "task 'sigma=1' has no input 9 (inputs: 1, 2, 3, 4, 5, 6)"),
        (["sigma=1", "1", "objcts"], "task 'sigma=1', input 1 has no field 'objcts'"),
    ],
)
def test_cli_explain_names_what_is_missing_in_one_line(tree, capsys, argv, message):
    code, out, err = call(capsys, "explain", tree, *argv)
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and message in err


def test_a_value_whose_record_is_gone_ends_its_chain_with_a_note(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    store = repype.store.open(str(root / ".repype"))
    smooth = chain(store.task("sigma=1").explain(2, "objects").derivation)[2]
    store.delete_record(smooth.record)
    nodes = chain(repype.store.open(str(root / ".repype"), mode="r").task("sigma=1").explain(2, "objects").derivation)
    assert [node.field for node in nodes] == ["objects", "mask", "smooth"]
    assert nodes[2].stage is None and nodes[2].digest == smooth.digest and "no record" in nodes[2].note
