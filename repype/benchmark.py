"""Benchmarks: tables of values (usually run times) indexed by stage id and input id."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from repype.files import write_text_atomically
from repype.typing import InputID

ValueType = TypeVar("ValueType")
"""The type of the values of a benchmark (upstream's name)."""


class Benchmark(Generic[ValueType]):
    """A table of values indexed by (stage id, input id), saved as CSV at `filepath`.

    The file is loaded when it exists. Input ids keep their type through save and load (the
    header stores them as JSON, so the int `1` and the string `"1"` stay distinct).
    """

    def __init__(self, filepath: str | os.PathLike) -> None:
        self.filepath = pathlib.Path(filepath)
        self._values: dict[str, dict[InputID, ValueType]] = {}
        self._input_ids: dict[InputID, None] = {}  # an ordered set: updates stay O(1)
        if self.filepath.exists():
            self._load()

    @property
    def stage_ids(self) -> list[str]:
        """Stage ids (rows), in order."""
        return list(self._values)

    @property
    def input_ids(self) -> list[InputID]:
        """Input ids (columns), in order."""
        return list(self._input_ids)

    def __getitem__(self, where: tuple[str, InputID]) -> ValueType:
        stage_id, input_id = where
        try:
            return self._values[stage_id][input_id]
        except KeyError:
            raise KeyError(f"no value for stage '{stage_id}' and input {input_id!r} in {self.filepath}") from None

    def __setitem__(self, where: tuple[str, InputID], value: ValueType) -> None:
        stage_id, input_id = where
        self._input_ids.setdefault(input_id)
        self._values.setdefault(stage_id, {})[input_id] = value

    def __contains__(self, where: tuple[str, InputID]) -> bool:
        stage_id, input_id = where
        return input_id in self._values.get(stage_id, {})

    def set(self, other: Benchmark[ValueType]) -> Benchmark[ValueType]:
        """Replaces the values of this benchmark by those of `other`; returns `self`."""
        self._values = {stage_id: dict(row) for stage_id, row in other._values.items()}
        self._input_ids = dict(other._input_ids)
        return self

    def retain(self, stage_ids: Iterable[str], input_ids: Iterable[InputID]) -> Benchmark[ValueType]:
        """Keeps only the given stages and inputs, in the given order; returns `self`."""
        input_ids = list(input_ids)
        self._values = {
            stage_id: {i: self._values[stage_id][i] for i in input_ids if i in self._values[stage_id]}
            for stage_id in stage_ids
            if stage_id in self._values
        }
        self._input_ids = dict.fromkeys(i for i in input_ids if any(i in row for row in self._values.values()))
        return self

    def save(self) -> None:
        """Writes the table to `filepath` (atomically: readers see the old or the new file)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")  # the reader's own line ending: a lone \r gets quoted
        writer.writerow(["stage", *(json.dumps(i) for i in self._input_ids)])
        for stage_id, row in self._values.items():
            writer.writerow([stage_id, *(json.dumps(row[i]) if i in row else "" for i in self._input_ids)])
        write_text_atomically(self.filepath, buffer.getvalue())

    def _load(self) -> None:
        with open(self.filepath, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
        if not rows:
            return
        self._input_ids = dict.fromkeys(_decode_input_id(cell) for cell in rows[0][1:])
        for row in rows[1:]:
            self._values[row[0]] = {
                input_id: json.loads(cell) for input_id, cell in zip(self._input_ids, row[1:]) if cell != ""
            }

    @property
    def df(self) -> Any:
        """The table as a `pandas.DataFrame` (rows: stage ids, columns: input ids); needs pandas."""
        import pandas

        return pandas.DataFrame(
            [[self._values[s].get(i) for i in self._input_ids] for s in self._values],
            index=list(self._values),
            columns=list(self._input_ids),
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Benchmark)
            and self._values == other._values
            and set(self._input_ids) == set(other._input_ids)
        )

    def __repr__(self) -> str:
        return f"<Benchmark {self.filepath}: {len(self._values)} stages x {len(self._input_ids)} inputs>"


def _decode_input_id(cell: str) -> InputID:
    """An input id from a header cell; plain text (files of the original framework) stays a string."""
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    return value if isinstance(value, int | str) and not isinstance(value, bool) else cell
