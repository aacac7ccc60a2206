"""repype.status: updates, derived statuses, progress, the journal across processes, console output."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import pickle

import pytest

import repype.status
from repype.config import Config
from repype.console import ConsoleReader, format_update
from repype.pipeline import Pipeline
from repype.stage import Stage
from repype.status import Status, StatusReader


def collect(status: Status) -> list[dict]:
    updates: list[dict] = []
    status.subscribe(updates.append)
    return updates


# --- no-ops with None -------------------------------------------------------------------------


def test_functions_are_noops_without_status():
    assert repype.status.update(None, "text", info="x", n=1) is None
    assert repype.status.update(None, intermediate=True) is None
    assert repype.status.derive(None) is None
    assert list(repype.status.progress(None, [3, 1, 2])) == [3, 1, 2]
    assert list(repype.status.progress(None, (i * i for i in range(4)), iterations=4, details="d")) == [0, 1, 4, 9]
    assert list(repype.status.progress(None, [])) == []


# --- subscribers and derived statuses ---------------------------------------------------------


def test_subscribe_receives_update_dicts():
    with repype.status.create() as status:
        updates = collect(status)
        repype.status.update(status, info="x", n=1)
        repype.status.update(status, "hello")
        repype.status.update(status, "both", info="y", intermediate=True)
    assert updates == [{"info": "x", "n": 1}, {"text": "hello"}, {"text": "both", "info": "y"}]


def test_multiple_subscribers_all_called():
    with repype.status.create() as status:
        first, second = collect(status), collect(status)
        repype.status.update(status, info="a")
    assert first == second == [{"info": "a"}]


def test_derived_children_report_to_parent_subscribers():
    with repype.status.create() as status:
        root_updates = collect(status)
        child = repype.status.derive(status)
        assert isinstance(child, Status)
        assert child is not status
        assert child.parent is status
        assert child.path == status.path
        child_updates = collect(child)
        grandchild = repype.status.derive(child)
        repype.status.update(child, info="child")
        repype.status.update(grandchild, info="grandchild")
        repype.status.update(status, info="root")
    assert root_updates == [{"info": "child"}, {"info": "grandchild"}, {"info": "root"}]
    assert child_updates == [{"info": "child"}, {"info": "grandchild"}]


def test_progress_yields_items_and_reports_steps():
    with repype.status.create() as status:
        updates = collect(status)
        reader = StatusReader(status.path)
        items = list(repype.status.progress(status, ["a", "b", "c"], details="loading"))
        entries = reader.read()
    assert items == ["a", "b", "c"]
    assert all(update["info"] == "progress" for update in updates)
    assert all(update["max_steps"] == 3 for update in updates)
    assert all(update["details"] == "loading" for update in updates)
    assert [update["step"] for update in updates][:3] == [0, 1, 2]
    assert updates[-1]["step"] == 3
    assert all(entry["intermediate"] for entry in entries)
    assert len(entries) == len(updates)


def test_progress_reports_before_each_item():
    seen = []
    with repype.status.create() as status:
        updates = collect(status)
        for item in repype.status.progress(status, [10, 20]):
            seen.append((item, updates[-1]["step"]))
    assert seen == [(10, 0), (20, 1)]


def test_progress_with_explicit_iterations():
    with repype.status.create() as status:
        updates = collect(status)
        items = list(repype.status.progress(status, iter(range(4)), iterations=4))
    assert items == [0, 1, 2, 3]
    assert {update["max_steps"] for update in updates} == {4}
    assert updates[-1]["step"] == 4


def test_progress_without_len_reports_final_count():
    with repype.status.create() as status:
        updates = collect(status)
        assert list(repype.status.progress(status, iter("xyz"))) == ["x", "y", "z"]
    assert updates[-1]["step"] == 3
    assert format_update(updates[-1]) == "3/3"


# --- journal ----------------------------------------------------------------------------------


def test_status_reader_reads_entries_once_in_order():
    with repype.status.create() as status:
        reader = StatusReader(status.path)
        assert reader.read() == []
        child = status.derive()
        repype.status.update(status, info="a")
        repype.status.update(child, "b", intermediate=True)
        entries = reader.read()
        assert [entry["data"] for entry in entries] == [{"info": "a"}, {"text": "b"}]
        assert [entry["status"] for entry in entries] == [status.id, child.id]
        assert [entry["parent"] for entry in entries] == [None, status.id]
        assert [entry["intermediate"] for entry in entries] == [False, True]
        assert entries[0]["time"] <= entries[1]["time"]
        assert reader.read() == []
        repype.status.update(status, info="c")
        assert [entry["data"] for entry in reader.read()] == [{"info": "c"}]
        # a second reader starts from the beginning
        assert len(StatusReader(status.path).read()) == 3


def test_status_reader_waits_for_complete_lines():
    with repype.status.create() as status:
        reader = StatusReader(status.path)
        repype.status.update(status, info="a")
        with open(status.path, "a") as journal:
            journal.write('{"status": "x", "parent": null, "intermediate": false, "time": 1.0, "da')
        assert [entry["data"] for entry in reader.read()] == [{"info": "a"}]
        with open(status.path, "a") as journal:
            journal.write('ta": {"info": "late"}}\n')
        assert [entry["data"] for entry in reader.read()] == [{"info": "late"}]


def test_status_reader_missing_file_is_empty(tmp_path):
    assert StatusReader(tmp_path / "nothing.jsonl").read() == []


def test_status_with_explicit_path(tmp_path):
    path = tmp_path / "journal.jsonl"
    status = Status(path=path)
    repype.status.update(status, info="x")
    assert StatusReader(path).read()[0]["data"] == {"info": "x"}


def test_create_removes_journal_on_exit():
    with repype.status.create() as status:
        repype.status.update(status, info="x")
        path = status.path
        assert os.path.exists(path)
    assert not os.path.exists(path)


def test_create_removes_journal_on_error():
    with pytest.raises(KeyError), repype.status.create() as status:
        path = status.path
        raise KeyError("x")
    assert not os.path.exists(path)


def test_status_pickles_without_subscribers():
    with repype.status.create() as status:
        status.subscribe(lambda update: None)
        child = status.derive()
        restored = pickle.loads(pickle.dumps(child))
        assert restored.id == child.id
        assert restored.path == child.path
        assert restored.parent.id == status.id
        repype.status.update(restored, info="from copy")
        entry = StatusReader(status.path).read()[-1]
        assert entry["status"] == child.id
        assert entry["parent"] == status.id


def report_from_child(status: Status, derived: Status) -> None:
    """Runs in a spawned process."""
    repype.status.update(status, info="x", n=1)
    repype.status.update(repype.status.derive(status), info="child", n=2)
    repype.status.update(derived, "derived in parent", intermediate=True)


def test_status_reader_reads_updates_of_another_process():
    with repype.status.create() as status:
        derived = status.derive()
        process = multiprocessing.get_context("spawn").Process(target=report_from_child, args=(status, derived))
        process.start()
        process.join(60)
        assert process.exitcode == 0
        entries = StatusReader(status.path).read()
    assert [entry["data"] for entry in entries] == [
        {"info": "x", "n": 1},
        {"info": "child", "n": 2},
        {"text": "derived in parent"},
    ]
    first, second, third = entries
    assert first["status"] == status.id and first["parent"] is None
    assert second["parent"] == status.id and second["status"] not in (status.id, derived.id)
    assert third["status"] == derived.id and third["parent"] == status.id
    assert [entry["intermediate"] for entry in entries] == [False, False, True]


# --- console ----------------------------------------------------------------------------------


def test_console_reader_prints_non_intermediate_updates():
    stream = io.StringIO()

    async def main(status):
        async with ConsoleReader(status, interval=0.01, stream=stream):
            repype.status.update(status, "hello world")
            await asyncio.sleep(0.05)
            repype.status.update(status, "progress bar", intermediate=True)
            repype.status.update(status, info="completed", task="tasks/a")

    with repype.status.create() as status:
        asyncio.run(main(status))
    lines = stream.getvalue().splitlines()
    assert "hello world" in lines
    assert any("tasks/a" in line for line in lines)
    # not a terminal: intermediate updates are not shown
    assert "progress bar" not in stream.getvalue()
    assert "\033" not in stream.getvalue()


def test_console_reader_prints_updates_made_just_before_exit():
    stream = io.StringIO()

    async def main(status):
        async with ConsoleReader(status, interval=10, stream=stream):
            repype.status.update(status, "last words")

    with repype.status.create() as status:
        asyncio.run(main(status))
    assert stream.getvalue() == "last words\n"


def test_format_update_process_and_error():
    text = format_update({"info": "process", "input_id": 3, "step": 0, "step_count": 4})
    assert "1/4" in text
    assert "3" in text.replace("1/4", "")
    text = format_update({"info": "process", "input_id": "img-a", "step": 3, "step_count": 4})
    assert "4/4" in text and "img-a" in text
    text = format_update(
        {"info": "error", "task": "root/child", "stage": "segment", "traceback": "Traceback: ZeroDivisionError"}
    )
    assert "segment" in text
    assert "root/child" in text
    assert "ZeroDivisionError" in text
    text = format_update({"info": "error", "task": "root/child", "stage": None, "traceback": "tb"})
    assert "root/child" in text and "tb" in text and "None" not in text


def test_format_update_text_and_unknown():
    assert format_update({"text": "plain"}) == "plain"
    assert format_update({"info": "something-else"}) is None
    assert format_update({}) is None


# --- events of stages -------------------------------------------------------------------------


class Produce(Stage):
    id = "produce"
    outputs = ("value",)

    def process(self, pipeline, config, status=None):
        repype.status.update(status, info="inside", intermediate=True)
        return {"value": 1}


class Consume(Stage):
    id = "consume"
    inputs = ("value",)
    outputs = ("result",)

    def process(self, pipeline, config, status=None, value=None):
        return {"result": value + 1}


def test_stage_run_emits_start_stage_and_skip_emits_skip_stage():
    with repype.status.create() as status:
        updates = collect(status)
        reader = StatusReader(status.path)
        stage = Produce()
        data = {"input_id": 1}
        stage.run(None, 1, data, Config(), status=status)
        stage.skip(None, 1, data, Config(), status=status)
        entries = reader.read()
    assert updates == [
        {"info": "start-stage", "stage": "produce"},
        {"info": "inside"},
        {"info": "skip-stage", "stage": "produce"},
    ]
    assert entries[0]["intermediate"] is True
    assert entries[2]["intermediate"] is True


def test_pipeline_process_reports_stage_events():
    with repype.status.create() as status:
        updates = collect(status)
        Pipeline([Produce(), Consume()]).process(1, Config(), first_stage="consume", data={"value": 5}, status=status)
    assert updates == [{"info": "skip-stage", "stage": "produce"}, {"info": "start-stage", "stage": "consume"}]


def test_disabled_stage_emits_skip_stage():
    with repype.status.create() as status:
        updates = collect(status)
        Produce().run(None, 1, {"input_id": 1}, Config({"enabled": False}), status=status)
    assert updates == [{"info": "skip-stage", "stage": "produce"}]
