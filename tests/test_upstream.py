"""Code written for upstream repype 1.0.x runs unchanged: its usage notebook, its `__main__`, its module docs.

The notebook (`examples/segmentation.ipynb` upstream) is followed step by step, with a local
archive instead of the download; then one test per upstream idiom that once broke.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

import repype.batch
import repype.benchmark
import repype.cli
import repype.pipeline
import repype.stage
import repype.status
import repype.task
import repype.typing
from repype.config import Config

REPO = pathlib.Path(__file__).resolve().parent.parent

# The stages of upstream's notebook, as a user writes them (lists, upstream's type names), with a
# local "download": an archive of .npy images made from a seed.
STAGES = """
import io
import json
import zipfile

import numpy as np

import repype.stage
from repype.typing import Optional, PipelineData


def smooth(image, sigma):
    radius = max(int(round(sigma)), 1)
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    image = np.apply_along_axis(np.convolve, 0, image, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 1, image, kernel, mode="same")


class Download(repype.stage.Stage):
    outputs = ["download"]

    def process(self, pipeline, config, status: Optional[object] = None) -> PipelineData:
        rng = np.random.default_rng(config["seed"])
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as contents:
            for name in ("a.npy", "b.npy"):
                buffer = io.BytesIO()
                np.save(buffer, rng.random((32, 32)) ** 3)
                contents.writestr(name, buffer.getvalue())
        return dict(download=archive.getvalue())


class Unzip(repype.stage.Stage):
    inputs = ["input_id"]
    consumes = ["download"]
    outputs = ["image"]

    def process(self, input_id, download, pipeline, config, status=None) -> PipelineData:
        with zipfile.ZipFile(io.BytesIO(download)).open(input_id) as file:
            return dict(image=np.load(io.BytesIO(file.read())))


class Segmentation(repype.stage.Stage):
    inputs = ["image"]
    outputs = ["segmentation"]

    def process(self, image, pipeline, config, status=None) -> PipelineData:
        image = smooth(image, config.get("sigma", 1.0))
        return dict(segmentation=(image > image.mean()).astype(np.uint8) * 255)


class Output(repype.stage.Stage):
    inputs = ["input_id", "segmentation"]

    def process(self, input_id, segmentation, pipeline, config, status=None) -> PipelineData:
        filepath = pipeline.resolve("segmentation", input_id)
        filepath.parent.mkdir(parents=True, exist_ok=True)
        np.save(filepath, segmentation)
        return dict()
"""


def write_notebook_tree(base: pathlib.Path) -> pathlib.Path:
    """`examples/segmentation` of upstream's notebook, below `base`; returns the root task directory."""
    root = base / "examples" / "segmentation"
    (root / "sigma=2").mkdir(parents=True)
    (root / "segstages.py").write_text(STAGES)
    spec = {
        "runnable": True,
        "pipeline": ["segstages.Download", "segstages.Unzip", "segstages.Segmentation", "segstages.Output"],
        "config": {"download": {"seed": 7}},
        "scopes": {"segmentation": "seg/%s"},
        "input_ids": ["a.npy", "b.npy"],
    }
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    (root / "sigma=2" / "task.yml").write_text("config:\n  segmentation:\n    sigma: 2\n")
    return root


def repype_cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repype", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env={**os.environ, "REPYPE_CLI_INTERMEDIATE": "0", "PYTHONPATH": str(pathlib.Path(__file__).parent)},
    )


# The notebook's modified stage and its Task subclass (module level, so task processes import them).


class LiSegmentation(repype.stage.Stage):
    id = "segmentation"
    inputs = ["image"]
    outputs = ["segmentation"]

    def process(self, image, pipeline, config, status=None):
        import segstages

        image = segstages.smooth(image, config.get("sigma", 1.0))
        return dict(segmentation=(image > np.median(image)).astype(np.uint8) * 255)


class NotebookTask(repype.task.Task):
    def create_pipeline(self, *args, **kwargs):
        pipeline = super().create_pipeline(*args, **kwargs)
        pipeline.stages[pipeline.find("segmentation")] = LiSegmentation()
        return pipeline


@pytest.mark.slow
def test_the_usage_notebook_runs_unchanged(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = write_notebook_tree(tmp_path)
    monkeypatch.syspath_prepend(str(root))

    dry = repype_cli("examples/segmentation", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "2 task(s) selected" in dry.stdout
    done = repype_cli("examples/segmentation", "--run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 task(s) selected" in repype_cli("examples/segmentation", cwd=tmp_path).stdout
    first = np.load(root / "seg" / "a.npy")

    times = repype.benchmark.Benchmark("examples/segmentation/times.csv").df
    assert set(times.index) == {"download", "unzip", "segmentation", "output"}
    assert list(times.columns) == ["a.npy", "b.npy"]

    main = repype.cli.main("examples/segmentation", run=True, task_cls=NotebookTask, tasks=["examples/segmentation"])
    assert inspect.iscoroutinefunction(main)
    assert asyncio.run(main()) is True
    assert not np.array_equal(np.load(root / "seg" / "a.npy"), first)  # the modified stage ran

    batch = repype.batch.Batch(task_cls=NotebookTask)
    batch.load("examples/segmentation")
    assert [rc.task.path for rc in batch.contexts] == [root, root / "sigma=2"]
    assert [rc.task.path for rc in batch.pending] == [root / "sigma=2"]  # its pipeline changed too

    rc = batch.context("examples/segmentation/sigma=2")
    assert "sigma: 2" in rc.config.yaml
    rc.config["segmentation/sigma"] = 5.0
    capsys.readouterr()

    async def run_with_console():
        with repype.status.create() as status:
            assert status.filepath.exists()
            async with repype.cli.StatusReaderConsoleAdapter(status.filepath, blocking=True):
                rc.run(status=status)

    asyncio.run(run_with_console())
    assert re.search(r"completed \S+ \(\d+\.\d s\): \d+ run, \d+ reused", capsys.readouterr().out)
    assert not bool(rc.task.is_pending(rc.pipeline, rc.config))
    assert [rc.task.path for rc in batch.pending] == [root / "sigma=2"]  # task.yml still says sigma 2
    assert batch.pending[0].pending == "specification"


MAIN = """
import sys

import repype.cli
import repype.task


class MyTask(repype.task.Task):
    def create_config(self):
        config = super().create_config()
        config["segmentation/sigma"] = 3.0
        return config

    def run(self, config, pipeline=None, pickup=True, strip_marginals=True, status=None):  # upstream's signature
        return super().run(config, pipeline, pickup, strip_marginals, status)


if __name__ == "__main__":
    sys.exit(0 if repype.cli.run_cli(task_cls=MyTask) else 1)
"""


@pytest.mark.slow
def test_a_project_main_calls_run_cli_with_its_task_class(tmp_path):
    root = write_notebook_tree(tmp_path)
    (tmp_path / "myproject").mkdir()
    (tmp_path / "myproject" / "__init__.py").write_text("")
    (tmp_path / "myproject" / "__main__.py").write_text(MAIN)
    env = {**os.environ, "REPYPE_CLI_INTERMEDIATE": "0", "PYTHONPATH": str(tmp_path)}

    def project(*args):
        command = [sys.executable, "-m", "myproject", str(root), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)

    done = project("--run", "--task", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\[1/1\] completed \S+ \(\d+\.\d s\): \d+ run", done.stdout, re.MULTILINE)
    assert yaml.safe_load((root / ".task.json").read_text())["config"]["segmentation"]["sigma"] == 3.0
    assert project().returncode == 0
    failed = project("--task", str(tmp_path / "nowhere"))
    assert failed.returncode == 1 and "nowhere" in failed.stderr  # run_cli says False; the project exits 1


# --- one test per idiom that broke ------------------------------------------------------------------


def test_typing_module_has_upstream_names_and_is_used_by_repype():
    from repype.typing import Any, Dict, InputID, List, Optional, PathLike, Pipeline, PipelineData, TaskData  # noqa: F401

    assert PipelineData == dict[str, Any] and TaskData == dict[InputID, PipelineData]
    assert isinstance(1, InputID.__args__) and isinstance("a", InputID.__args__)
    assert isinstance(pathlib.Path("x"), PathLike.__args__)
    sources = [path for path in (REPO / "repype").rglob("*.py") if path.name != "typing.py"]
    redefined = [path.name for path in sources if re.search(r"^InputID\s*=", path.read_text(), re.MULTILINE)]
    assert redefined == []
    assert repype.task.InputID is repype.typing.InputID and repype.task.TaskData is repype.typing.TaskData


def test_main_returns_a_coroutine_function_and_run_cli_ex_a_bool(tmp_path, monkeypatch, capsys):
    root = write_notebook_tree(tmp_path)
    monkeypatch.syspath_prepend(str(root))
    main = repype.cli.main(root)
    assert inspect.iscoroutinefunction(main)
    assert asyncio.run(main()) is True
    assert "2 task(s) selected" in capsys.readouterr().out
    assert repype.cli.run_cli_ex(root, False, False, [root / "sigma=2"], [], repype.task.Task) is True
    assert "1 task(s) selected" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        repype.cli.main(root, run=True, reset=True)
    with pytest.raises(repype.cli.SelectionError, match="nowhere"):
        repype.cli.main(root, tasks=[tmp_path / "nowhere"])


def test_run_cli_parses_sys_argv(tmp_path, monkeypatch, capsys):
    root = write_notebook_tree(tmp_path)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "argv", ["myproject", str(root), "--task-dir", str(root / "sigma=2")])
    assert repype.cli.run_cli(task_cls=repype.task.Task) is True
    assert "1 task(s) selected" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["myproject", str(tmp_path / "missing")])
    assert repype.cli.run_cli() is False
    assert "missing" in capsys.readouterr().err


class ExtendedStatusReader(repype.cli.StatusReaderConsoleAdapter):
    """Upstream's documented way to add a kind of status update."""

    def format(self, positions, status, intermediate):
        if isinstance(status, dict) and status.get("info") == "custom":
            return f"*** {status['text']} ({status['number']})"
        return super().format(positions, status, intermediate)


def test_status_reader_console_adapter_can_be_subclassed(capsys):
    async def main():
        with repype.status.create() as status:
            async with ExtendedStatusReader(status.filepath):
                repype.status.update(status, info="custom", text="Text", number=42)
                repype.status.update(status, info="completed", task="t")

    asyncio.run(main())
    assert capsys.readouterr().out.splitlines() == ["*** Text (42)", "completed t"]


def test_status_has_upstream_members(tmp_path):
    with repype.status.create() as status:
        assert status.filepath.is_file() and status.root is status
        child = status.derive()
        assert child.root is status and child.filepath == status.filepath
        child.intermediate("half way")
        child.intermediate(None)
        assert list(child.progress(["a", "b"], details="items")) == ["a", "b"]
        status.write("message")
        status.update()
        entries = repype.status.StatusReader(status.filepath).read()
    assert [entry["data"] for entry in entries[:2]] == ["half way", None]
    assert entries[-1]["data"] == "message" and not entries[-1]["intermediate"]
    in_directory = repype.status.Status(path=tmp_path)  # upstream passes a directory
    in_directory.write("x")
    assert in_directory.filepath.parent == tmp_path and in_directory.filepath.is_file()


class Recorder(repype.status.StatusReader):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def handle_new_status(self, positions, status, intermediate):
        self.seen.append((len(positions), status, intermediate))


@pytest.mark.parametrize("blocking", [False, True])
def test_status_reader_is_an_async_context_manager(blocking):
    async def main():
        with repype.status.create() as status:
            reader = Recorder(status.filepath, loop=None, blocking=blocking)
            async with reader:
                status.write("top")
                repype.status.update(status.derive(), info="nested")
                if blocking:  # the loop's thread is busy; the reader's own thread follows the journal
                    deadline = asyncio.get_running_loop().time() + 10
                    while not reader.seen and asyncio.get_running_loop().time() < deadline:
                        import time

                        time.sleep(0.05)
                    assert reader.seen
            return reader.seen

    assert asyncio.run(main()) == [(1, "top", False), (2, {"info": "nested"}, False)]


def test_create_config_entry_is_a_module_level_function():
    config = Config({"stage": {"AF_sigma": 2}})
    repype.pipeline.create_config_entry(config, "stage/sigma", 1.5, 1, type=int, max=2)
    assert config["stage/sigma"] == 2
    repype.pipeline.create_config_entry(config, "stage/width", 4, 0.5, min=3)
    assert config["stage/width"] == 3


def test_task_run_without_pipeline_connects_callbacks(tmp_path, monkeypatch):
    root = write_notebook_tree(tmp_path)
    monkeypatch.syspath_prepend(str(root))
    ends = []

    class CallbackTask(repype.task.Task):
        def on_segmentation_end(self, input_id, **kwargs):
            ends.append(input_id)

    task = CallbackTask(root, yaml.safe_load((root / "task.yml").read_text()))
    task.run(task.create_config())
    assert ends == ["a.npy", "b.npy"]


def test_resolve_path_with_relative_task_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parent = repype.task.Task("task1", {})
    child = repype.task.Task("task1/task2", {}, parent=parent)
    assert child.resolve_path("{ROOTDIR}/file.txt") == tmp_path / "task1" / "file.txt"
    assert child.resolve_path("{DIRNAME}.txt") == tmp_path / "task1" / "task2" / "task2.txt"


def test_stage_fields_may_be_lists_on_the_instance():
    class First(repype.stage.Stage):
        def __init__(self):
            super().__init__()
            self.outputs = ["a"]

    class Second(repype.stage.Stage):
        pass

    second = Second()
    second.inputs = ["a"]
    second.outputs = ["b"]
    second.consumes = ["c"]
    assert second.inputs == frozenset({"a", "c"}) and second.outputs == frozenset({"b"})
    second.consumes = []
    pipeline = repype.pipeline.create_pipeline([second, First()])
    assert [stage.id for stage in pipeline.stages] == ["first", "second"]


def test_version_has_one_source_of_truth():
    import repype.version

    assert repype.__version__ == repype.version.VERSION == importlib.metadata.version("repype")
    assert repype.version.VERSION.startswith(
        f"{repype.version.VERSION_MAJOR}.{repype.version.VERSION_MINOR}.{repype.version.VERSION_PATCH}"
    )
    printed = subprocess.run([sys.executable, "-m", "repype", "--version"], capture_output=True, text=True)
    assert printed.returncode == 0 and printed.stdout.strip() == f"repype {repype.version.VERSION}"


def test_config_text_forms_match_upstream():
    config = Config()
    config["stage1/param1"] = 1000
    config["stage2/param2"] = 5
    config["stage1/sub/param1"] = "xyz"
    assert config.yaml == textwrap.dedent(
        """\
        stage1:
          param1: 1000
          sub:
            param1: xyz
        stage2:
          param2: 5"""
    )
    assert str(config) == json.dumps(config.entries, indent=2) and str(config).startswith('{\n  "stage1": {')
    assert repr(config) == "<Config, {'stage1': {'param1': 1000, 'sub': {'param1': 'xyz'}}, 'stage2': {'param2': 5}}>"
    assert Config().yaml == "" and io.StringIO(config.yaml).read()[-1] != "\n"


def test_smaller_upstream_names(tmp_path):
    import typing

    import repype.benchmark

    assert repype.cli.format_hms(59.6) == "01:00" and repype.cli.format_hms(3725) == "1:02:05"
    assert typing.get_args(repype.stage.StageEvent) == ("start", "end", "skip", "after")
    assert isinstance(repype.benchmark.ValueType, typing.TypeVar)
    root = write_notebook_tree(tmp_path)
    batch = repype.batch.Batch()
    batch.load(root)
    assert set(batch.resolved_tasks) == {root, root / "sigma=2"}
