"""The types of the keys of a task specification (`task.yml`), checked before anything runs.

Each known key has one expected shape; a value of another shape is a :class:`SpecError` that
names the task, the key and what was expected. Keys that repype does not know are left alone
(Task subclasses may read keys of their own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from repype.typing import PathLike


class SpecError(ValueError):
    """A key of a task specification holds a value of the wrong type."""


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_input_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _is_input_ids(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_is_input_id(item) for item in value)
    return _is_input_id(value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(_is_str(item) for item in value)


def _is_scopes(value: Any) -> bool:
    return _is_mapping(value) and all(_is_str(key) and _is_str(item) for key, item in value.items())


SPEC_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "runnable": (lambda value: isinstance(value, bool), "true or false"),
    "pipeline": (lambda value: _is_str(value) or _is_str_list(value), "a dotted path or a list of dotted paths"),
    "config": (_is_mapping, "a mapping of stage ids to hyperparameters"),
    "base_config_path": (_is_str, "a path"),
    "scopes": (_is_scopes, "a mapping of scope names to path patterns"),
    "input_ids": (_is_input_ids, 'a list of ints and strings, an int, or a string such as "1, 3-5"'),
    "marginal_stages": (_is_str_list, "a list of stage ids or dotted stage class paths"),
    "store": (_is_str, "a path or an fsspec URL"),
    "storage_options": (_is_mapping, "a mapping of fsspec storage options"),
    "strict": (lambda value: isinstance(value, bool), "true or false"),
}
"""Every spec key repype reads: a check of its value and the words for what it expects."""


def validate_spec(path: PathLike, spec: Mapping[str, Any]) -> None:
    """Raises :class:`SpecError` for the first known key of `spec` whose value has the wrong type.

    A key given as null (an empty entry in YAML) counts as not given.
    """
    for key, (is_valid, expected) in SPEC_KEYS.items():
        value = spec.get(key)
        if value is not None and not is_valid(value):
            raise SpecError(f"task {path}: '{key}' must be {expected}, not {value!r} ({type(value).__name__})")
