"""Errors of the store. They derive from :class:`StoreError`, never from `ValueError`."""

from __future__ import annotations

from typing import Any


def where(context: dict[str, Any] | None) -> str:
    """`task ..., input ..., field ...: ` for messages, from what the caller knows."""
    if not context:
        return ""
    parts = [f"{name} {context[name]!r}" for name in ("task", "input", "field") if context.get(name) is not None]
    return ", ".join(parts) + ": " if parts else ""


class StoreError(Exception):
    """Something went wrong in the store."""


class IntegrityError(StoreError):
    """A stored value or record is damaged: digest mismatch, undecodable or missing chunk, missing blob."""


class ReadOnlyError(StoreError):
    """A write was attempted on a store opened read-only."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached: unknown protocol, missing package, network or credentials."""


class StoreMissingError(StoreError):
    """The store does not exist (opened read-only before anything was written)."""


class SerializationError(StoreError):
    """A value cannot be stored (no codec can encode it)."""


class PickleRefusedError(StoreError):
    """A pickled value was not loaded because the store was opened with `allow_pickle=False`."""


class KeyMaterialError(StoreError):
    """A hyperparameter or key material value has no canonical form, so no stable key exists."""


class StoreFormatError(StoreError):
    """The store was written in a format this version of repype cannot write (or read)."""


class IntegrityWarning(UserWarning):
    """A damaged stage record was ignored: it is treated as missing, so its stage runs again and replaces it."""
