"""`repype store ...` on a task tree or a store: ls, du, show, verify, gc, table, plot, --json."""

from __future__ import annotations

import json
import shutil

import matplotlib.image
import pytest
import yaml
from example import copy_example, run_example
from tasktree import PIPELINE, write_tree

import repype.store
from repype.plot import plot_table
from repype.store import layout
from repype.storecli import open_target, store_main


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The example's sweep (small images), run once; tests that change it work on a copy."""
    root = copy_example(tmp_path_factory.mktemp("tree") / "blobs")
    run_example(root)
    return root


def call(capsys, *argv) -> tuple[int, str, str]:
    code = store_main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_dot_inside_a_tree_finds_its_store(tree, capsys, monkeypatch):
    monkeypatch.chdir(tree)
    code, out, _ = call(capsys, "ls", ".")
    assert code == 0, out
    assert f"6 task(s) in {tree / '.repype'}: 6 complete, 0 damaged" in out
    assert "sigma=3/threshold=0.6  complete         6  foreground, image, input_id, mask, objects, smooth" in out
    code, below, _ = call(capsys, "ls", "sigma=3")  # a task directory: the tasks at or below it
    assert code == 0 and "3 task(s)" in below and "sigma=1" not in below


def test_ls_and_du_differ_and_speak_json(tree, capsys):
    _, ls, _ = call(capsys, "ls", tree)
    _, du, _ = call(capsys, "du", tree)
    assert ls != du and "complete" in ls and "dedup ratio" in du and "unique" in du
    code, text, _ = call(capsys, "ls", tree, "--json")
    listing = json.loads(text)
    assert code == 0 and listing["ok"] is True
    assert [task["name"] for task in listing["tasks"]] == sorted(repype.store.open(str(tree / ".repype")).tasks())
    assert {task["status"] for task in listing["tasks"]} == {"complete"} and listing["tasks"][0]["inputs"] == 6
    usage = json.loads(call(capsys, "du", tree, "--json")[1])
    assert usage["dedup_ratio"] > 1 and usage["physical_bytes"] > 0 and len(usage["tasks"]) == 6
    checked = json.loads(call(capsys, "verify", tree, "--json")[1])
    assert checked["ok"] is True and checked["checked_manifests"] == 6


def test_gc_dry_run_says_how_to_delete(tree, capsys):
    code, out, _ = call(capsys, "gc", tree)
    assert code == 0 and out.rstrip().endswith("DRY RUN: nothing was deleted; run again with --yes to delete")
    report = json.loads(call(capsys, "gc", tree, "--json")[1])
    assert report["dry_run"] is True and report["blobs"] == []


def test_show_one_task_by_directory_or_name(tree, capsys):
    code, out, _ = call(capsys, "show", tree / "sigma=3" / "threshold=0.6")
    assert code == 0, out
    assert out.startswith(f"task sigma=3/threshold=0.6 in {tree / '.repype'}, completed ")
    assert "inputs (6): 1, 2, 3, 4, 5, 6" in out and "smooth      ndarray float32 48x48" in out
    assert "threshold: 0.6" in out and "sigma: 3" in out and "blobstages.Measure" in out
    document = json.loads(call(capsys, "show", tree, "sigma=1", "--json")[1])
    assert document["config"]["smooth"]["sigma"] == 1 and document["input_ids"] == [1, 2, 3, 4, 5, 6]
    assert set(document["stages"]) == {"synthesize", "smooth", "segment", "measure"}
    assert set(document["times"]["measure"]) == {"1", "2", "3", "4", "5", "6"}
    assert document["fields"]["mask"] == {"codec": "ndarray", "dtype": "|b1", "shape": [48, 48]}
    code, _, err = call(capsys, "show", tree, "sigma=9")
    assert code == 1 and "no task 'sigma=9'" in err and len(err.splitlines()) == 1
    code, _, err = call(capsys, "show", tree)  # the root of the example is not runnable
    assert code == 1 and "name the task" in err


def test_table_prints_writes_csv_and_pipes(tree, capsys, tmp_path):
    code, out, _ = call(capsys, "table", tree)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["task", "input_id", "segment/threshold", "smooth/sigma", "foreground", "objects"]
    assert len(lines) == 37
    csv = tmp_path / "sweep.csv"
    code, out, err = call(capsys, "table", tree / "sigma=1", "--config", "smooth", "--field", "objects", "--csv", csv)
    assert code == 0 and "wrote 18 row(s)" in err
    assert csv.read_text().splitlines()[:2] == ["task,input_id,smooth/sigma,objects", "sigma=1,1,1,1"]
    code, piped, _ = call(capsys, "table", tree, "--field", "objects,foreground", "--config", "segment", "--csv", "-")
    assert piped.splitlines()[0] == "task,input_id,segment/threshold,objects,foreground"
    assert len(piped.splitlines()) == 37
    code, _, err = call(capsys, "table", tree, "--field", "smooth")
    assert code == 1 and "field 'smooth'" in err and len(err.splitlines()) == 1


def test_plot_writes_a_png(tree, capsys, tmp_path, monkeypatch):
    import repype.plot

    figures = []

    def keep(*args, **kwargs):
        figures.append(plot_table(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(repype.plot, "plot_table", keep)
    out_file = tmp_path / "plot.png"
    code, out, _ = call(
        capsys, "plot", tree, "--x", "segment/threshold", "--y", "objects", "--by", "smooth/sigma", "--out", out_file
    )
    assert code == 0, out
    assert "2 series, 36 point(s)" in out
    assert out_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(out_file).ndim == 3
    (axes,) = figures[0].axes  # the figure the PNG was drawn from
    assert [len(points.get_offsets()) for points in axes.collections] == [18, 18]
    assert axes.get_xlabel() == "segment/threshold" and axes.get_ylabel() == "objects"
    code, out, _ = call(capsys, "plot", tree / "sigma=3", "--x", "input_id", "--y", "foreground", "--out", out_file)
    assert code == 0 and "1 series, 18 point(s)" in out
    code, _, err = call(capsys, "plot", tree, "--x", "segment/thresold", "--y", "objects", "--out", out_file)
    assert code == 1 and "did you mean 'segment/threshold'" in err


def test_ls_reports_damaged_and_unstored_tasks(tree, capsys, tmp_path):
    root = tmp_path / "blobs"
    shutil.copytree(tree, root)
    store = repype.store.open(str(root / ".repype"))
    mask = store.task("sigma=1/threshold=0.3").refs(2)["smooth"]["digest"]  # an array node (the mask is packed)
    shutil.rmtree(root / ".repype" / layout.blob_path(mask))
    (root / "sigma=5").mkdir()
    (root / "sigma=5" / "task.yml").write_text(yaml.safe_dump({"runnable": True, "config": {"smooth": {"sigma": 5}}}))
    code, out, _ = call(capsys, "ls", root)
    assert code == 1
    damaged = [line for line in out.splitlines() if "damaged  " in line]
    assert len(damaged) >= 1 and all(mask in line for line in damaged)
    assert any(line.startswith("sigma=1/threshold=0.3") for line in damaged)
    assert "sigma=5                not stored" in out and "1 not stored (run them)" in out
    store.backend.delete_dir(layout.manifest_path(store.ref_target("sigma=3")))
    listing = json.loads(call(capsys, "ls", root / ".repype", "--json")[1])
    lost = next(task for task in listing["tasks"] if task["name"] == "sigma=3")
    assert listing["ok"] is False and lost["status"] == "damaged" and "manifest" in lost["problem"]


def test_targets_that_are_neither_tree_nor_store(tmp_path, capsys):
    code, _, err = call(capsys, "ls", tmp_path)
    assert code == 1 and "neither a task directory (it has no task.yml) nor a repype store" in err
    copy_example(tmp_path / "never-run")
    code, _, err = call(capsys, "ls", tmp_path / "never-run")
    assert code == 1 and "no repype store" in err and "run the tree first" in err
    assert not (tmp_path / "never-run" / ".repype").exists()  # a read-only command creates nothing


def test_missing_pandas_is_one_line_and_exit_1(tree, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)
    code, _, err = call(capsys, "table", tree)
    assert code == 1 and err.strip() == (
        "repype store table: a results table needs pandas, which is not installed: pip install 'repype[results]'"
    )


def test_an_s3_tree_needs_no_storage_options_on_the_command_line(s3_server, tmp_path, capsys):
    root = copy_example(
        tmp_path / "blobs",
        size=24,
        store=f"s3://{s3_server.new_bucket()}/sweep",
        storage_options=s3_server.storage_options,
    )
    for path in root.glob("sigma=*/threshold=*"):
        shutil.rmtree(path)  # two tasks are enough here
    run_example(root)
    code, out, _ = call(capsys, "ls", root)
    assert code == 0 and "2 task(s)" in out and "2 complete" in out and "testing" not in out
    code, out, _ = call(capsys, "table", root, "--field", "objects")
    assert code == 0 and out.splitlines()[0].split() == ["task", "input_id", "smooth/sigma", "objects"]
    assert len(out.splitlines()) == 13
    out_file = tmp_path / "s3.png"
    code, out, _ = call(capsys, "plot", root / "sigma=3", "--x", "smooth/sigma", "--y", "objects", "--out", out_file)
    assert code == 0 and "1 series, 6 point(s)" in out and out_file.is_file()
    url = yaml.safe_load((root / "task.yml").read_text())["store"]
    frame = repype.store.open(url, storage_options=s3_server.storage_options, mode="r").table(config=["smooth"])
    assert frame.groupby("task").size().to_dict() == {"sigma=1": 6, "sigma=3": 6}
    filesystem = open_target(str(root), {"key": "someone-else"}).store.backend.zarr_store.fs
    assert filesystem.key == "someone-else"  # options on the command line win over the tree's ...
    assert filesystem.endpoint_url == s3_server.endpoint_url  # ... and the tree's others stay


def test_show_and_ls_of_a_runnable_root_task(tmp_path, capsys):
    spec = {"runnable": True, "pipeline": PIPELINE, "input_ids": [1, 2], "config": {"threshold": {"threshold": 0.4}}}
    root = write_tree(tmp_path / "tree", {"": spec})[""]
    root.run(root.create_config())
    code, out, _ = call(capsys, "show", root.path)
    assert code == 0 and out.startswith("task . in ") and "threshold: 0.4" in out
    code, out, _ = call(capsys, "ls", root.path)
    assert code == 0 and "1 task(s)" in out and "summary" in out
