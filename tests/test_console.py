"""The batch-wide progress display: one line per completed task with an ETA, a live bar on a terminal, the summary."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from repype.console import ConsoleReader, format_completed, format_summary
from repype.progress import BatchProgress

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
T0 = float(int(time.time()))  # whole seconds: the differences below are exact


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def entry(at: float, data, status: str = "root", parent: str | None = None, intermediate: bool = False) -> dict:
    depth = 0 if status == "root" else 1 if parent == "root" else 2
    return {
        "status": status,
        "parent": parent,
        "depth": depth,
        "intermediate": intermediate,
        "time": T0 + at,
        "data": data,
    }


def plan_event(at: float = 0.0, tasks: int = 2, to_run: int = 8, estimated: float = 0.0, unestimated: int = 8):
    data = dict(info="batch-plan", tasks=tasks, to_run=to_run, reused=0, shared=2)
    return entry(at, {**data, "estimated_seconds": estimated, "unestimated": unestimated})


def task_events(status: str, task: str, start: float, inputs: list[tuple[int, int]], done: float) -> list[dict]:
    """The events of one task as the sequential batch reports them: `inputs` are (executed, reused) per input."""
    events = [
        entry(start, {"info": "enter", "task": task, "step": 0, "step_count": 2}, status, "root"),
        entry(
            start, {"info": "start", "task": task, "pickup": None, "first_stage": "load", "reused": 0}, status, "root"
        ),
    ]
    for number, (executed, reused) in enumerate(inputs):
        at = start + (done - start) * (number + 1) / (len(inputs) + 1)
        process = {"info": "process", "task": task, "input_id": number, "step": number, "step_count": len(inputs)}
        events.append(entry(at, process, status, "root"))
        processed = {"info": "processed", "input_id": number, "executed": executed, "reused": reused}
        events.append(entry(at, processed, status, "root"))
    events.append(entry(done, {"info": "completed", "task": task}, status, "root"))
    return events


def finished_event(at: float, completed: int = 2, failed: int = 0) -> dict:
    return entry(at, {"info": "finished", "completed": completed, "failed": failed, "skipped": 0, "seconds": at})


def show(tmp_path: pathlib.Path, entries: list[dict], stream=None, intermediate: bool = False) -> str:
    """What a console reader prints for a journal holding `entries`."""
    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(json.dumps(item) + "\n" for item in entries))
    stream = stream if stream is not None else io.StringIO()

    async def read() -> None:
        async with ConsoleReader(journal, interval=10, stream=stream, intermediate=intermediate):
            pass

    asyncio.run(read())
    return stream.getvalue()


def test_a_pipe_gets_one_plain_line_per_completed_task_with_counts_and_eta(tmp_path):
    entries = [
        plan_event(),
        *task_events("a", "/tree/a", 0.0, [(2, 0), (2, 0)], 4.0),
        *task_events("b", "/tree/b", 4.0, [(2, 2), (2, 2)], 8.0),
        finished_event(8.5),
    ]
    out = show(tmp_path, entries, stream=Terminal(), intermediate=False)  # muted: plain lines on a terminal too
    assert "\r" not in out and "\033" not in out
    lines = [line for line in out.splitlines() if line]
    assert lines[0] == "[1/2] completed /tree/a (4.0 s): 4 run, 0 reused; 4/8 stage executions, ETA 00:04"
    assert lines[1] == "[2/2] completed /tree/b (4.0 s): 4 run, 4 reused; 8/8 stage executions, ETA 00:00"
    assert lines[2].startswith("Batch finished in 00:08: 2 task(s) completed, 0 failed;")
    assert len(lines) == 3  # no per-input lines


def test_without_the_batch_plan_the_reader_shows_what_it_can(tmp_path):
    out = show(tmp_path, task_events("a", "/tree/a", 0.0, [(3, 1)], 2.0))
    assert "Processing input 0" in out and "input 0: 1 stage(s) reused, 3 run" in out
    assert out.splitlines()[-1] == "  completed /tree/a (2.0 s): 3 run, 1 reused"
    assert format_completed({"info": "completed", "task": "/tree/a"}) == "completed /tree/a"


def test_eta_from_recorded_times_scales_the_estimate_by_the_share_left():
    progress = BatchProgress()
    progress.observe(plan_event(to_run=10, estimated=20.0, unestimated=0))
    assert progress.remaining_seconds(T0) == 20.0  # known before anything ran
    progress.observe(entry(1.0, {"info": "processed", "task": "/t", "executed": 5, "reused": 0}))
    assert progress.remaining_seconds(T0 + 1.0) == 10.0
    assert progress.remaining_seconds(T0 + 4.0) == 7.0  # counts down until the next executions are reported
    assert progress.remaining_seconds(T0 + 60.0) == 0.0
    mixed = BatchProgress()
    mixed.observe(plan_event(to_run=10, estimated=10.0, unestimated=5))  # the others count as the recorded mean
    assert mixed.remaining_seconds(T0) == 20.0


def test_eta_falls_back_to_the_observed_rate_without_recorded_times():
    progress = BatchProgress()
    progress.observe(plan_event(to_run=10, estimated=0.0, unestimated=10))
    assert progress.remaining_seconds(T0) is None and progress.eta_text(T0) == "ETA unknown"
    progress.observe(entry(4.0, {"info": "processed", "task": "/t", "executed": 2, "reused": 0}))
    assert progress.remaining_seconds(T0 + 4.0) == 16.0  # 2 s per execution, 8 left
    assert progress.eta_text(T0 + 6.0) == "ETA 00:24"  # slower now: 3 s per execution so far
    assert BatchProgress().remaining_seconds(T0) is None  # no plan, no ETA


def test_interleaved_events_of_two_tasks_are_told_apart(tmp_path):
    a = task_events("a", "/tree/a", 0.0, [(3, 0), (3, 0)], 9.0)
    b = task_events("b", "/tree/b", 0.5, [(1, 2)], 3.0)
    merged = sorted(a + b, key=lambda item: item["time"])  # b completes first, amid a's inputs
    stage = entry(1.0, {"info": "start-stage", "stage": "load"}, "worker", "a", intermediate=True)  # a's child
    entries = [plan_event(to_run=7), stage, *merged, finished_event(9.0)]
    progress = BatchProgress()
    for item in entries:
        progress.observe(item)
    assert progress.task("/tree/a").executed == 6 and progress.task("/tree/b").reused == 2
    lines = [line for line in show(tmp_path, entries).splitlines() if line]
    assert lines[0].startswith("[1/2] completed /tree/b (2.5 s): 1 run, 2 reused; ")
    assert "/7 stage executions" in lines[0]
    assert lines[1].startswith("[2/2] completed /tree/a (9.0 s): 6 run, 0 reused; 7/7 stage executions")


def test_a_terminal_gets_a_live_bar_with_the_task_lines_above_it(tmp_path):
    entries = [
        plan_event(to_run=8, estimated=16.0, unestimated=0),
        *task_events("a", "/tree/a", 0.0, [(2, 0), (2, 0)], 4.0),
        entry(4.5, {"info": "start-stage", "stage": "segment"}, "b", "root", intermediate=True),
        *task_events("b", "/tree/b", 4.0, [(2, 2), (2, 2)], 8.0),
        finished_event(8.5),
    ]
    out = show(tmp_path, entries, stream=Terminal(), intermediate=True)
    assert "\033[" in out and "━" in out  # redrawn in place: rich's bar
    assert "8/8" in out and re.search(r"elapsed [0-9:]+, ETA [0-9:]+", out)
    first = out.index("[1/2] completed /tree/a (4.0 s): 4 run, 0 reused; 4/8 stage executions, ETA 00:07")
    assert first < out.index("[2/2] completed /tree/b") < out.index("Batch finished in")


def test_the_summary_counts_run_reused_shared_and_failed(tmp_path):
    data = {"completed": 1, "failed": 1, "skipped": 2, "seconds": 65.2}
    assert format_summary(data, run=12, reused=4, shared=3) == (
        "\nBatch finished in 01:05: 1 task(s) completed, 1 failed, 2 not started; "
        "12 stage execution(s) run, 4 reused from the store, 3 shared between tasks"
    )
    assert format_summary(data, run=12, reused=4).endswith("4 reused from the store")  # no plan, no shared count
    error = {"info": "error", "task": "/tree/b", "stage": "fail", "input_id": 1, "traceback": "Traceback: boom"}
    entries = [
        plan_event(),
        *task_events("a", "/tree/a", 0.0, [(2, 0)], 1.0),
        entry(1.5, error, "b", "root"),
        finished_event(2.0, completed=1, failed=1),
    ]
    out = show(tmp_path, entries)
    assert "Error in stage 'fail' on input 1 of task /tree/b:\nTraceback: boom" in out
    assert out.splitlines()[-1] == (
        "Batch finished in 00:02: 1 task(s) completed, 1 failed; "
        "2 stage execution(s) run, 0 reused from the store, 2 shared between tasks"
    )


@pytest.mark.slow
def test_running_the_example_in_a_pipe_prints_a_line_per_task_and_the_summary(tmp_path):
    root = tmp_path / "blobs"
    shutil.copytree(REPOSITORY / "examples" / "blobs", root)
    env = {key: value for key, value in os.environ.items() if key != "REPYPE_CLI_INTERMEDIATE"}
    done = subprocess.run(
        [sys.executable, "-m", "repype", "blobs", "--run"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stdout and "\033" not in done.stdout
    pattern = (
        r"\[(\d)/6\] completed (blobs/\S+) \(\d+\.\d s\): (\d+) run, (\d+) reused.*; (\d+)/90 stage executions, ETA \S+"
    )
    completed = [re.fullmatch(pattern, line) for line in done.stdout.splitlines() if "] completed " in line]
    assert [int(match.group(1)) for match in completed] == [1, 2, 3, 4, 5, 6]
    assert completed[0].group(2) == "blobs/sigma=1" and completed[0].group(3, 4) == ("24", "0")
    assert sum(int(match.group(3)) for match in completed) == int(completed[-1].group(5)) == 90
    assert "Processing input" not in done.stdout
    assert done.stdout.splitlines()[-1].endswith(
        "6 task(s) completed, 0 failed; 90 stage execution(s) run, 54 reused from the store, 18 shared between tasks"
    )
