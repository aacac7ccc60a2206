"""Task specifications (`task.yml`): the types of their keys, input ids, and dotted imports.

Each known key has one expected shape; a value of another shape is a :class:`SpecError` that
names the task, the key and what was expected. Keys that repype does not know are left alone
(Task subclasses may read keys of their own). :func:`decode_input_ids` and
:func:`load_from_module` read the `input_ids` and dotted-path values.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from repype.typing import InputID, PathLike


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


# --- input ids and dotted paths -------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_MALFORMED_RANGE = re.compile(r"^[\d\s]*-[\d\s-]*$")


def decode_input_ids(spec: str | int | list | tuple | None) -> list[InputID]:
    """Decode an `input_ids` specification into a sorted list of unique input ids.

    A list (or tuple) gives its unique items, sorted; a single int gives `[it]`; a string such
    as ``"1, 3-5, abc"`` gives ``[1, 3, 4, 5, 'abc']``: comma-separated tokens, where digits are
    ints, ``first-last`` is an inclusive range with ``first < last``, and any other token is a
    string id. Ints sort before strings. Malformed ranges and ids that are neither int nor str
    raise `ValueError`.
    """
    if spec is None:
        return []
    if isinstance(spec, bool):
        raise ValueError(f"input ids must be ints or strings, not {spec!r}")
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, str):
        return _sorted_ids(_decode_input_id_tokens(spec))
    if isinstance(spec, (list, tuple)):
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise ValueError(f"input ids must be ints or strings, not {item!r}")
        return _sorted_ids(spec)
    raise ValueError(f"cannot decode input ids from {spec!r} (expected a list, an int or a string)")


def _decode_input_id_tokens(spec: str) -> list[InputID]:
    ids: list[InputID] = []
    for token in (token.strip() for token in spec.split(",")):
        if not token:
            continue
        if token.isdigit():
            ids.append(int(token))
        elif match := _RANGE.match(token):
            first, last = int(match.group(1)), int(match.group(2))
            if first >= last:
                raise ValueError(f'malformed range "{token}" in input ids: the first id must be less than the last')
            ids.extend(range(first, last + 1))
        elif _MALFORMED_RANGE.match(token):
            raise ValueError(f'malformed range "{token}" in input ids "{spec}"')
        else:
            ids.append(token)
    return ids


def _sorted_ids(ids) -> list[InputID]:
    return sorted(set(ids), key=lambda item: (isinstance(item, str), item))


def load_from_module(name: str) -> Any:
    """Load an object by dotted path: the longest importable module prefix, then attributes.

    Raises `ImportError` naming `name` when no prefix imports or an attribute is missing; an
    error raised while importing an existing module is chained, not masked.
    """
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            current = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue
            raise ImportError(f"cannot import '{name}': {error}") from error
        except Exception as error:
            raise ImportError(f"cannot import '{name}': importing module '{module_name}' failed: {error}") from error
        for attribute in parts[split:]:
            try:
                current = getattr(current, attribute)
            except AttributeError as error:
                raise ImportError(f"cannot import '{name}': {error}") from error
        return current
    raise ImportError(f"cannot import '{name}': no module named '{parts[0]}'")
