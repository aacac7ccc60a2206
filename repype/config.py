"""Hyperparameters: nested dictionaries addressed by path keys such as `'stage1/sub/param'`."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import yaml

from repype.canonical import canonical_json


class Config:
    """Nested dictionaries of hyperparameters, addressed by `/`-separated path keys.

    Args:
        other: `None` for an empty configuration, a `dict` to wrap (not copied), or a `Config`
            to deep-copy. Anything else raises `ValueError`.
    """

    def __init__(self, other: dict | Config | None = None) -> None:
        if other is None:
            other = {}
        if isinstance(other, Config):
            other = copy.deepcopy(other.entries)
        if not isinstance(other, dict):
            raise ValueError(f"Unknown argument type for Config: {type(other).__name__} ({other!r})")
        self.entries: dict = other

    def _parent_and_name(self, key: str, create: bool) -> tuple[dict | None, str]:
        """The dict that holds the last segment of `key`, and that segment."""
        *path, name = key.split("/")
        entries = self.entries
        for segment in path:
            if segment not in entries:
                if not create:
                    return None, name
                entries[segment] = {}
            entries = entries[segment]
            if not isinstance(entries, dict):
                raise KeyError(f"'{segment}' in key '{key}' is not a nested section")
        return entries, name

    @staticmethod
    def _wrap(value: Any) -> Any:
        return Config(value) if isinstance(value, dict) else value

    @staticmethod
    def _unwrap(value: Any) -> Any:
        return value.entries if isinstance(value, Config) else value

    def get(self, key: str, default: Any = None) -> Any:
        """The value at `key`; when missing, `default` is inserted at `key` and returned.

        Dict values come back as `Config` objects sharing the stored dict.
        """
        parent, name = self._parent_and_name(key, create=True)
        if name not in parent:
            parent[name] = self._unwrap(default)
        return self._wrap(parent[name])

    def __getitem__(self, key: str) -> Any:
        parent, name = self._parent_and_name(key, create=False)
        if parent is None or name not in parent:
            raise KeyError(key)
        return self._wrap(parent[name])

    def __contains__(self, key: str) -> bool:
        parent, name = self._parent_and_name(key, create=False)
        return parent is not None and name in parent

    def __setitem__(self, key: str, value: Any) -> None:
        parent, name = self._parent_and_name(key, create=True)
        parent[name] = self._unwrap(value)

    def set_default(self, key: str, default: Any, override_none: bool = False) -> Any:
        """Sets `key` to `default` only if it is missing (or `None`, when `override_none`).

        Returns the resulting value.
        """
        if key not in self or (override_none and self[key] is None):
            self[key] = default
        return self[key]

    def update(self, key: str, func: Callable[[Any], Any]) -> Any:
        """Sets `key` to `func(old value)` (the old value is `None` when missing); returns it."""
        self[key] = func(self[key] if key in self else None)  # noqa: SIM401 (get() would insert the key)
        return self[key]

    def pop(self, key: str, default: Any = None) -> Any:
        """Removes `key` and returns its value, or returns `default` when missing."""
        parent, name = self._parent_and_name(key, create=False)
        if parent is None or name not in parent:
            return default
        return self._wrap(parent.pop(name))

    def merge(self, other: Config | dict) -> Config:
        """Deep-merges `other` into this configuration (`other` wins); returns `self`."""
        _merge_into(self.entries, self._unwrap(other))
        return self

    def copy(self) -> Config:
        """A deep copy."""
        return Config(self)

    @property
    def yaml(self) -> str:
        """The entries as block-style YAML, in insertion order, without a trailing newline (as upstream).

        Tuples are written as lists and numpy scalars as numbers; an empty configuration is ``""``.
        """
        if not self.entries:
            return ""
        return yaml.safe_dump(_plain(self.entries), sort_keys=False, default_flow_style=False).rstrip("\n")

    @property
    def sha(self) -> str:
        """SHA-1 hex digest of the entries (key order does not matter; the int 1 and the str "1" differ)."""
        return hashlib.sha1(canonical_json(self.entries).encode("utf-8")).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and other.entries == self.entries

    def __str__(self) -> str:
        """The entries as indented JSON (as upstream); values JSON cannot hold are written as text."""
        return json.dumps(self.entries, indent=2, default=str)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}, {self.entries!s}>"


class TrackedConfig(Config):
    """A `Config` that records which keys are read, for reporting hyperparameters nobody read.

    `get`, `[]`, `in`, `pop`, `set_default` and `update` record the full path of their key in
    `reads` (a set shared by the sections it hands out, which are tracked too); reading
    `entries` directly is not seen. Wraps `other` (a dict) without copying, like `Config`.
    """

    def __init__(self, other: dict | None = None, reads: set[str] | None = None, prefix: str = "") -> None:
        super().__init__(other)
        self.reads: set[str] = set() if reads is None else reads
        self._prefix = prefix

    def _tracked(self, key: str, value: Any) -> Any:
        self.reads.add(self._prefix + key)
        if isinstance(value, Config):
            return TrackedConfig(value.entries, self.reads, f"{self._prefix}{key}/")
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self._tracked(key, super().get(key, default))

    def __getitem__(self, key: str) -> Any:
        self.reads.add(self._prefix + key)
        return self._tracked(key, super().__getitem__(key))

    def __contains__(self, key: str) -> bool:
        self.reads.add(self._prefix + key)
        return super().__contains__(key)

    def pop(self, key: str, default: Any = None) -> Any:
        return self._tracked(key, super().pop(key, default))


def _merge_into(target: dict, source: dict) -> None:
    for key, value in source.items():
        value = Config._unwrap(value)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _plain(value: Any) -> Any:
    """Values YAML can write without Python tags (tuples as lists, numpy scalars as numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
