"""Results tables across a sweep: one row per task and input, hyperparameter and field columns."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from repype.lazy import numpy as np  # imported on first use: a JSON value needs none
from repype.optional import require
from repype.store.codecs import inline_value

CELL_ITEMS = 16
"""Values with more items than this (arrays, lists, dicts) are too big for a table cell."""

_SCALARS = (type(None), bool, int, float, str)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as `stage/key` paths (`{'smooth': {'sigma': 1}}` → `{'smooth/sigma': 1}`)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, path + "/"))
        else:
            flat[path] = value
    return flat


def _same(values: list[Any]) -> bool:
    texts = {json.dumps(value, sort_keys=True, default=repr) for value in values}
    return len(texts) == 1


def _closest(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def config_columns(configs: Mapping[str, dict[str, Any]], asked: Sequence[str] | None) -> list[str]:
    """The hyperparameter columns: those `asked` (a path or a section such as `smooth`), or by default every
    path whose value is not the same in all tasks (a path missing from some tasks differs).

    `configs` maps task names to flattened configs. An asked path in no task raises ValueError.
    """
    known = sorted({path for flat in configs.values() for path in flat})
    if asked is None:
        missing = object()
        return [path for path in known if not _same([flat.get(path, missing) for flat in configs.values()])]
    columns = []
    for name in asked:
        name = name.strip("/")
        matches = [path for path in known if path == name or path.startswith(name + "/")]
        if not matches:
            raise ValueError(f"no hyperparameter '{name}' in the tasks{_closest(name, known)} (known: {known})")
        columns += [path for path in matches if path not in columns]
    return columns


def scalar_fields(views: Sequence[Any]) -> list[str]:
    """Fields that hold an inline JSON scalar (number, string, bool, None) for every input that has them."""
    seen: dict[str, bool] = {}
    for view in views:
        for input_id in view.input_ids:
            for name, ref in view.refs(input_id).items():
                scalar = "value" in ref and isinstance(inline_value(ref), _SCALARS)
                seen[name] = seen.get(name, True) and scalar
    return sorted(name for name, scalar in seen.items() if scalar and name != "input_id")


def cell(view: Any, input_id: Any, name: str) -> Any:
    """The value of a field as a table cell: scalars as Python scalars, small containers as they are.

    A field the input lacks is None; a value with more than :data:`CELL_ITEMS` items raises
    ValueError naming the task, input and field (load such values with `TaskView.field`).
    """
    refs = view.refs(input_id)
    if name not in refs:
        return None
    shape = refs[name].get("shape")
    if shape is not None and int(np.prod(shape)) > CELL_ITEMS:
        raise _too_big(view, input_id, name, f"an array of shape {tuple(shape)}")
    value = view.field(input_id, name)
    if isinstance(value, np.ndarray | np.generic) and np.ndim(value) == 0:
        return value.item()
    if not isinstance(value, _SCALARS) and hasattr(value, "__len__") and len(value) > CELL_ITEMS:
        raise _too_big(view, input_id, name, f"a {type(value).__name__} of {len(value)} items")
    return value


def _too_big(view: Any, input_id: Any, name: str, what: str) -> ValueError:
    return ValueError(
        f"task '{view.name}', input {input_id!r}, field '{name}': {what} is too big for a table cell "
        f"(at most {CELL_ITEMS} items); load it with store.task('{view.name}').field({input_id!r}, '{name}')"
    )


def results_table(
    views: Sequence[Any], fields: Sequence[str] | None = None, config: Sequence[str] | None = None
) -> Any:
    """A pandas DataFrame with one row per task and input of `views` (`TaskView` objects).

    Columns: `task`, `input_id`, the hyperparameters `config` names as `stage/key` columns (default:
    every one that differs across the tasks, see :func:`config_columns`), then the `fields`
    (default: every scalar field, see :func:`scalar_fields`). A field named in no task raises
    ValueError with the closest name.
    """
    pandas = require("pandas", "a results table")
    configs = {view.name: flatten_config(view.config) for view in views}
    columns = config_columns(configs, None if config is None else list(config))
    if fields is None:
        names = scalar_fields(views)
    else:
        names = [name for name in dict.fromkeys(fields) if name not in ("task", "input_id")]
        known = sorted({field for view in views for field in view.fields})
        for name in names:
            if name not in known:
                raise ValueError(f"no field '{name}' in the tasks{_closest(name, known)} (fields: {known})")
    rows = []
    for view in views:
        flat = configs[view.name]
        for input_id in view.input_ids:
            row = {"task": view.name, "input_id": input_id}
            row.update({path: flat.get(path) for path in columns})
            row.update({name: cell(view, input_id, name) for name in names})
            rows.append(row)
    return pandas.DataFrame(rows, columns=["task", "input_id", *columns, *names])
