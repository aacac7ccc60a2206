"""Writer leases: a running writer's mark in the store, so that a concurrent gc spares what it writes.

A :class:`Store` holds a lease while a :meth:`Store.writing` block runs (a task's run holds one
until its manifest is committed): a small node under `leases/` with the time the writer started
and, renewed every :data:`HEARTBEAT` seconds, the time it last said it is still writing.
Values and records that a run writes stay unreferenced until its task's manifest is written,
so :func:`repype.store.maintenance.gc` spares everything written since the oldest live lease
started, whatever its grace period. A lease that was not renewed for :data:`EXPIRY` seconds
belongs to a writer that died; gc ignores and removes it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
import uuid

from repype.store import layout, manifests
from repype.store.backend import Backend
from repype.store.errors import IntegrityError, StoreError
from repype.store.manifests import Lease

HEARTBEAT = 10.0
"""Seconds between renewals of a held lease."""
EXPIRY = 60.0
"""A lease not renewed for this many seconds is dead."""
CLOCK_SKEW = 60.0
"""Seconds by which the clocks of writers, gc and the storage server may disagree."""

_HELD: set[WriterLease] = set()


class WriterLease:
    """The lease of one writer on the store behind `backend`: held from :meth:`hold` to :meth:`release`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Whether the lease is held."""
        return self._started is not None

    def hold(self) -> None:
        """Writes the lease (once) and starts renewing it."""
        if self._started is not None:
            return
        with self._lock:
            if self._started is not None:
                return
            started = time.time()
            self.backend.set(layout.metadata_key(layout.LEASES), layout.group_document())
            self._write(started)
            self._started = started
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew, name=f"repype-lease-{self.id[:8]}", daemon=True)
            self._thread.start()
            _HELD.add(self)

    def release(self) -> None:
        """Stops renewing and removes the lease from the store (nothing when not held)."""
        with self._lock:
            if self._started is None:
                return
            self._stop.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()
            self._started = None
            _HELD.discard(self)
        with contextlib.suppress(StoreError):  # an unreachable store lets the lease expire instead
            self.backend.delete_dir(layout.lease_path(self.id))

    def _write(self, started: float) -> None:
        lease = Lease(self.id, started, time.time(), socket.gethostname(), os.getpid())
        self.backend.set(layout.metadata_key(layout.lease_path(self.id)), manifests.lease_document(lease))

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with contextlib.suppress(StoreError):  # a missed renewal is retried; EXPIRY allows several
                self._write(self._started)


@atexit.register
def _release_held() -> None:
    for lease in list(_HELD):
        lease.release()


def read_leases(backend: Backend) -> list[Lease]:
    """Every lease in the store (damaged ones are left out: they protect nothing)."""
    ids = [name for name in backend.list_dir(layout.LEASES) if name != layout.METADATA]
    keys = {lease_id: layout.metadata_key(layout.lease_path(lease_id)) for lease_id in ids}
    documents = backend.get_many(keys.values())
    leases = []
    for lease_id, key in keys.items():
        raw = documents.get(key)
        if raw is not None:
            with contextlib.suppress(IntegrityError):
                leases.append(manifests.parse_lease(lease_id, raw))
    return leases


def is_live(lease: Lease, now: float) -> bool:
    """Whether the writer of `lease` renewed it recently enough to be taken as running."""
    return lease.renewed > now - EXPIRY - CLOCK_SKEW
