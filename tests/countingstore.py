"""Counting the requests a store makes, so that tests can assert batching.

:func:`counting` replaces the primitives of :class:`repype.store.backend.Backend` (on the class, so
stores opened anywhere in the process are counted, tasks' and runners' included) with wrappers
that log each call: which primitive, of which kind (`read`, `exists`, `list`, `stat`, `write`,
`delete`, `array`), on which store and which keys. repype's code is not changed.

A call of a bulk primitive (`get_many`, `set_many`, `set_in_order`, `delete_many`) is one call of several
requests: its requests are in flight at once, so it costs about one round trip, while each
single-key call costs one (a bulk call of no keys costs nothing and is not counted).
`RequestLog.calls` counts round trips, `RequestLog.requests` requests.
Reads of array chunks through zarr (`open_array`, then slicing) are logged as one `array` call.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from repype.store.backend import Backend

KINDS = {
    "get": "read",
    "get_many": "read",
    "exists": "exists",
    "list_prefix": "list",
    "list_dir": "list",
    "modified": "stat",
    "set": "write",
    "set_many": "write",
    "set_in_order": "write",
    "delete": "delete",
    "delete_dir": "delete",
    "delete_many": "delete",
    "open_array": "array",
}
"""Every primitive of a Backend that reaches the storage, and the kind of request it makes."""
BULK = {"get_many", "set_many", "set_in_order", "delete_many"}
"""The primitives that take many keys and make their requests at once (`set_in_order` in phases,
each phase's at once: one call into the event loop, about one round trip per phase)."""


@dataclass(frozen=True)
class Call:
    """One call of a backend primitive: `keys` are the keys (or prefix) it touched."""

    primitive: str
    kind: str
    url: str
    keys: tuple[str, ...]

    @property
    def requests(self) -> int:
        """Requests this call makes: one per key of a bulk call (none for no keys), else one."""
        return len(self.keys) if self.primitive in BULK else 1


@dataclass
class RequestLog:
    """The calls logged while :func:`counting` was active, in order."""

    log: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: Call) -> None:
        """Logs `call` (from any thread)."""
        with self._lock:
            self.log.append(call)

    def select(self, *kinds: str) -> list[Call]:
        """The calls of `kinds` (default: every kind) that make requests (a bulk call of no keys makes none)."""
        return [call for call in self.log if (not kinds or call.kind in kinds) and call.requests]

    def calls(self, *kinds: str) -> int:
        """Round trips of `kinds` (default: all): one per call, a bulk call included."""
        return len(self.select(*kinds))

    def requests(self, *kinds: str) -> int:
        """Requests of `kinds` (default: all): one per key, a bulk call counting each of its keys."""
        return sum(call.requests for call in self.select(*kinds))

    def keys(self, *kinds: str) -> list[str]:
        """The keys touched by calls of `kinds`, in order."""
        return [key for call in self.select(*kinds) for key in call.keys]

    def clear(self) -> None:
        """Forgets every call logged so far."""
        with self._lock:
            self.log.clear()

    def summary(self) -> str:
        """`kind: calls/requests` for each kind seen, for assertion messages and measurements."""
        kinds = sorted({call.kind for call in self.log})
        return ", ".join(f"{kind}: {self.calls(kind)}/{self.requests(kind)}" for kind in kinds) or "nothing"


def _keys_of(primitive: str, args: tuple[Any, ...]) -> tuple[str, ...]:
    if not args:
        return ()
    first = args[0]
    if primitive == "set_many":
        return tuple(key for key, _ in first)
    if primitive == "set_in_order":
        return tuple(key for phase in first for key, _ in phase)
    if primitive in ("get_many", "delete_many"):
        return tuple(first)
    return (first,)


def _materialized(primitive: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments with an iterable of keys or items turned into a list, so logging does not consume it."""
    if primitive == "set_in_order" and args:
        return ([list(phase) for phase in args[0]], *args[1:])
    if primitive in BULK and args:
        return (list(args[0]), *args[1:])
    return args


def _wrap(primitive: str, original: Callable[..., Any], log: RequestLog) -> Callable[..., Any]:
    @functools.wraps(original)
    def counted(self: Backend, *args: Any, **kwargs: Any) -> Any:
        args = _materialized(primitive, args)
        log.add(Call(primitive, KINDS[primitive], self.display_url, _keys_of(primitive, args)))
        return original(self, *args, **kwargs)

    return counted


@contextlib.contextmanager
def counting() -> Iterator[RequestLog]:
    """Logs every request of every Backend in this process while active; yields the log."""
    log = RequestLog()
    originals = {name: getattr(Backend, name) for name in KINDS}
    for name, original in originals.items():
        setattr(Backend, name, _wrap(name, original, log))
    try:
        yield log
    finally:
        for name, original in originals.items():
            setattr(Backend, name, original)
