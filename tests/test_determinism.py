"""The determinism audit (`repype ROOT --check-determinism`): re-run recorded executions, mark those that differ."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import yaml

from repype import audit
from repype.batch import Batch
from repype.cli import batch_main
from repype.store import marks

STAGES = textwrap.dedent(
    """
    import numpy as np

    from repype.stage import Stage


    class Double(Stage):
        inputs = ("input_id",)
        outputs = ("doubled",)

        def process(self, input_id, pipeline, config, status=None):
            return {"doubled": np.full(4, 2.0 * input_id)}


    class Noisy(Stage):
        inputs = ("doubled",)
        outputs = ("noise",)

        def process(self, doubled, pipeline, config, status=None):
            return {"noise": np.random.random()}


    class Total(Stage):
        inputs = ("doubled",)
        outputs = ("total",)

        def process(self, doubled, pipeline, config, status=None):
            return {"total": float(doubled.sum())}
    """
)


def files(root: pathlib.Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def tree(tmp_path, monkeypatch) -> pathlib.Path:
    """A completed tree of two sibling tasks sharing the store: Double, then Noisy and Total."""
    root = tmp_path / "tree"
    root.mkdir()
    module = f"audited_{tmp_path.name.replace('-', '_')}"
    (root / f"{module}.py").write_text(STAGES)
    pipeline = [f"{module}.Double", f"{module}.Noisy", f"{module}.Total"]
    (root / "task.yml").write_text(yaml.safe_dump({"runnable": False, "pipeline": pipeline, "input_ids": "1-3"}))
    for name in ("a", "b"):
        (root / name).mkdir()
        (root / name / "task.yml").write_text(yaml.safe_dump({"runnable": True}))
    monkeypatch.syspath_prepend(str(root))
    batch = Batch()
    batch.load(root)
    for context in batch.pending:
        context.run()
    assert batch.pending == []
    return root


def test_audit_flags_the_random_stage_and_passes_the_deterministic_ones(tree, capsys):
    store = tree / ".repype"
    before = files(store)
    code = batch_main([str(tree), "--check-determinism"])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert "stage 'double': 3 of 3 re-run execution(s) matched" in lines  # shared by the siblings: once each
    assert "stage 'total': 3 of 3 re-run execution(s) matched" in lines
    assert "stage 'noisy': 0 of 3 re-run execution(s) matched - NOT DETERMINISTIC, marked in the store" in lines

    after = files(store)
    changed = {path for path in before if after.get(path) != before[path]}
    assert changed == set()  # no value, record, manifest or ref rewritten
    added = sorted(set(after) - set(before))
    assert added and all(path.startswith("marks/") for path in added)

    batch = Batch()
    batch.load(tree)
    context = batch.context(tree / "a")
    noisy = context.pipeline.stage("noisy")
    opened = context.task.open_store()
    evidence = marks.nondeterministic(opened, noisy.sha)
    assert evidence["stage"] == "noisy"
    assert set(evidence["recorded"]) == set(evidence["rerun"]) == {"noise"}
    assert evidence["recorded"] != evidence["rerun"]
    assert set(marks.nondeterministic_stages(opened)) == {noisy.sha}
    assert marks.nondeterministic(opened, context.pipeline.stage("total").sha) is None


def test_sample_and_deterministic_trees(tree, capsys):
    batch = Batch()
    batch.load(tree)
    contexts = batch.contexts
    results = audit.audit(contexts, fraction=1.0)
    assert {stage: result.rerun for stage, result in results.items()} == {"double": 3, "noisy": 3, "total": 3}
    assert results["total"].deterministic and not results["noisy"].deterministic
    recorded = _all_keys(tree)
    assert len(recorded) == 9
    some = audit.audit(contexts, fraction=0.5)
    assert sum(result.rerun for result in some.values()) == sum(audit.sampled(key, 0.5) for key in recorded)
    assert batch_main([str(tree), "--check-determinism", "--sample", "0"]) == 1
    assert "--sample must be a fraction" in capsys.readouterr().out


def test_audit_of_a_tree_never_run_creates_no_store(tmp_path, capsys):
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "task.yml").write_text(
        yaml.safe_dump({"runnable": True, "pipeline": ["taskstages.Load"], "input_ids": [1]})
    )
    assert batch_main([str(root), "--check-determinism"]) == 0
    assert "no recorded stage executions" in capsys.readouterr().out
    assert not (root / ".repype").exists()


def _all_keys(root: pathlib.Path) -> set[str]:
    return {path.parent.name for path in (root / ".repype" / "records").glob("*/*/zarr.json")}
