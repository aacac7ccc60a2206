"""repype.checks: spec keys, config sections and hyperparameters that match nothing; --strict."""

from __future__ import annotations

import pathlib

import pytest
from tasktree import PIPELINE, write_tree

from repype import checks
from repype.cli import batch_main
from repype.config import Config, TrackedConfig
from repype.status import Status
from repype.task import Task

# --- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("confg", checks.KNOWN_SPEC_KEYS, "config"),
        ("inputs_ids", checks.KNOWN_SPEC_KEYS, "input_ids"),
        ("treshold", ["threshold", "enabled"], "threshold"),
        ("gaussian_blur", ["gaussian-blur", "gaussian-blurs"], "gaussian-blur"),
        ("Scale", ["scale"], "scale"),
        ("zzz", ["threshold"], None),
    ],
)
def test_closest(name, candidates, expected):
    assert checks.closest(name, candidates) == expected


def test_spec_key_findings_name_task_key_and_suggestion():
    findings = checks.spec_key_findings("sweep/a", ["runnable", "confg", "inputs_ids", "pipeline"])
    assert [(f.kind, f.key, f.suggestion, f.error) for f in findings] == [
        ("spec-key", "confg", "config", False),
        ("spec-key", "inputs_ids", "input_ids", False),
    ]
    assert str(findings[0]) == "warning: task sweep/a: unknown spec key 'confg' (did you mean 'config'?)"


def test_config_section_findings_explain_hyphenated_stage_ids():
    findings = checks.config_section_findings(
        "t", ["gaussian_blur", "blurr", "threshold"], ["gaussian-blur", "threshold"]
    )
    messages = {finding.key: finding.message for finding in findings}
    assert set(messages) == {"blurr", "gaussian_blur"}
    assert "the stage id is 'gaussian-blur', not 'gaussian_blur'" in messages["gaussian_blur"]
    assert "did you mean 'gaussian-blur'?" in messages["blurr"]


def test_input_ids_findings():
    assert checks.input_ids_findings("t", [1, 2]) == []
    (empty,) = checks.input_ids_findings("t", [])
    assert empty.error and empty.kind == "input-ids"


def test_unread_hyperparameters_of_nested_sections():
    section = {"sigma": 1, "treshold": 2, "filter": {"size": 3, "mode": "x"}, "whole": {"a": 1, "b": 2}, "empty": {}}
    reads = {"sigma", "filter", "filter/size", "whole", "empty"}
    assert checks.unread_hyperparameters(section, reads) == ["filter/mode", "treshold"]
    assert checks.unread_hyperparameters(section, set()) == [
        "empty",
        "filter/mode",
        "filter/size",
        "sigma",
        "treshold",
        "whole/a",
        "whole/b",
    ]


def test_unread_findings_across_inputs():
    runs = [
        ({"segment": {"threshold": 0.5, "treshold": 0.9, "mode": "a"}}, {"segment": {"threshold", "mode"}}),
        ({"segment": {"threshold": 0.5, "treshold": 0.9, "mode": "b"}}, {"segment": {"threshold"}}),
        ({"other": {"x": 1}}, {}),  # a stage reused from the store read nothing, and is not reported
    ]
    (finding,) = checks.unread_findings("t", runs)
    assert (finding.kind, finding.key, finding.suggestion) == ("unread-hyperparameter", "segment/treshold", "threshold")
    assert "stage 'segment' never read the hyperparameter 'treshold' (did you mean 'threshold'?)" in finding.message


def test_unread_findings_leave_out_the_user_factors_of_automatic_hyperparameters():
    entries = {"segment": {"threshold": 0.5, "AF_threshold": 2, "AF_orphan": 1, "sub": {"size": 3, "AF_size": 1}}}
    findings = checks.unread_findings("t", [(entries, {"segment": {"threshold", "sub/size"}})])
    assert [finding.key for finding in findings] == ["segment/AF_orphan"]


def test_tracked_config_records_every_kind_of_read():
    entries = {"a": 1, "sub": {"b": 2, "c": 3}, "d": None}
    config = TrackedConfig(entries)
    assert config.get("a") == 1
    assert config["sub"]["b"] == 2
    assert "x" not in config
    assert config.get("sub/c") == 3
    config.set_default("d", 4, override_none=True)
    assert config.get("new", 5) == 5
    assert config.reads == {"a", "sub", "sub/b", "x", "sub/c", "d", "new"}
    assert entries["new"] == 5  # the get() quirk still inserts the default
    assert isinstance(config.get("sub"), Config)


# --- task trees -------------------------------------------------------------------------------


def tree(path: pathlib.Path, root: dict | None = None, a: dict | None = None, b: dict | None = None) -> pathlib.Path:
    """A root (not runnable) with the test pipeline and two runnable children; the dicts update their specs."""
    specs = {
        "": {"runnable": False, "pipeline": PIPELINE, "input_ids": [1, 2], "config": {"load": {"size": 8}}},
        "a": {"runnable": True},
        "b": {"runnable": True, "config": {"threshold": {"threshold": 0.9}}},
    }
    for rel, spec in (("", root), ("a", a), ("b", b)):
        specs[rel].update(spec or {})
    write_tree(path, specs)
    return path


def run_cli(capsys, *args, task_cls=Task) -> tuple[int, str, str]:
    code = batch_main([str(arg) for arg in args], task_cls=task_cls)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clean_tree_prints_no_warning(tmp_path, capsys):
    code, out, err = run_cli(capsys, tree(tmp_path / "t"))
    assert code == 0
    assert "warning" not in err and "error" not in err
    assert "DRY RUN" in out


def test_typos_give_warnings_in_the_dry_run(tmp_path, capsys):
    root = tree(
        tmp_path / "t",
        root={"confg": {"x": 1}},
        a={"config": {"scal": {"factor": 2}}},
        b={"config": {"threshold": {"threshold": 0.9}, "Threshold": {"x": 1}}},
    )
    code, out, err = run_cli(capsys, root)
    assert code == 0, err
    lines = err.splitlines()
    assert "repype: warning: task .: unknown spec key 'confg' (did you mean 'config'?)" in lines
    assert (
        "repype: warning: task a: config section 'scal' names no stage of the pipeline (did you mean 'scale'?)" in lines
    )
    assert any("task b: config section 'Threshold'" in line and "'threshold'" in line for line in lines)
    assert len(lines) == 3  # the root's typo once, not once per child
    assert "DRY RUN" in out


def test_no_input_ids_is_an_error_that_runs_nothing(tmp_path, capsys):
    root = tree(tmp_path / "t", root={"input_ids": None, "inputs_ids": "1-2"})
    code, _, err = run_cli(capsys, root, "--run")
    assert code == 1
    assert "unknown spec key 'inputs_ids' (did you mean 'input_ids'?)" in err
    assert "repype: error: task a: runnable, but it has no input ids (spec key 'input_ids')" in err.splitlines()
    assert "repype: error: task b: runnable, but it has no input ids (spec key 'input_ids')" in err.splitlines()
    assert not (root / ".repype").exists()
    assert not (root / "a" / ".sha.json").exists()


@pytest.mark.parametrize("how", ["flag", "spec"])
def test_strict_turns_warnings_into_errors_before_anything_runs(tmp_path, capsys, how):
    root = tree(tmp_path / "t", a={"config": {"scal": {"factor": 2}}}, root={"strict": True} if how == "spec" else {})
    args = [root, "--run", *(["--strict"] if how == "flag" else [])]
    code, out, err = run_cli(capsys, *args)
    assert code == 1
    assert "repype: error: task a: config section 'scal' names no stage" in err
    assert "completed" not in out
    assert not (root / ".repype").exists()


class CustomTask(Task):
    """An upstream pipeline's Task subclass reading its own spec key."""

    @property
    def owner(self) -> str:
        return self.full_spec.get("owner", "")


class DeclaringTask(CustomTask):
    extra_spec_keys = ("owner",)


def test_custom_spec_keys_of_task_subclasses_only_warn(tmp_path, capsys):
    root = tree(tmp_path / "t", root={"owner": "lab"})
    code, _, err = run_cli(capsys, root, task_cls=CustomTask)
    assert code == 0
    assert "unknown spec key 'owner'" in err
    code, _, err = run_cli(capsys, root, task_cls=DeclaringTask)
    assert code == 0
    assert err == ""


def test_run_reports_hyperparameters_no_stage_read(tmp_path):
    root = tree(tmp_path / "t", b={"config": {"threshold": {"treshold": 0.9}, "scale": {"factor": 2.0}}})
    task = Task(root / "b", {"runnable": True, "config": {"threshold": {"treshold": 0.9}, "scale": {"factor": 2.0}}})
    task.parent = Task(root, {"pipeline": PIPELINE, "input_ids": [1, 2], "config": {"load": {"size": 8}}})
    events: list[dict] = []
    status = Status(path=tmp_path / "journal.jsonl")
    status.subscribe(events.append)
    task.run(task.create_config(), status=status)
    (finding,) = task.findings
    assert finding.key == "threshold/treshold"
    assert finding.suggestion == "threshold"
    reported = [event for event in events if event.get("info") == "finding"]
    assert [event["text"] for event in reported] == [str(finding)]
    assert "never read the hyperparameter 'treshold' (did you mean 'threshold'?)" in reported[0]["text"]
    task.run(task.create_config(), status=status)
    assert task.findings == []  # everything reused: no stage ran, nothing to say


def test_unread_hyperparameters_travel_back_from_worker_processes(tmp_path):
    root = tree(tmp_path / "t")
    task = Task(root / "b", {"runnable": True, "config": {"scale": {"factr": 2.0}}})
    task.parent = Task(root, {"pipeline": PIPELINE, "input_ids": [1, 2], "config": {"load": {"size": 8}}})
    task.run(task.create_config(), executor=2)
    assert [(finding.key, finding.suggestion) for finding in task.findings] == [("scale/factr", "factor")]


def test_cli_run_prints_unread_hyperparameters(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REPYPE_CLI_INTERMEDIATE", "0")
    root = tree(tmp_path / "t", a={"config": {"threshold": {"treshold": 0.9}}})
    code, out, err = run_cli(capsys, root, "--run", "--task", root / "a")
    assert code == 0, err
    assert "stage 'threshold' never read the hyperparameter 'treshold' (did you mean 'threshold'?)" in out
