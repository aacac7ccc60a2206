"""Execution claims: a running stage execution's mark in the store, so that other processes wait for it.

Before a process runs a stage execution whose record is missing, it claims the execution's key:
it creates the node `claims/<key>.<generation>` exclusively (:meth:`Backend.create`: a hard link
on local disk, a conditional PUT with `If-None-Match: *` on S3), holding the claim's owner (one id
per acquisition), host, pid, and when it started and was last renewed. A heartbeat thread renews
every held claim each :data:`HEARTBEAT` seconds; a claim not renewed for :data:`EXPIRY` seconds
belongs to a process that died (or stalled), and may be taken over.

Generations make takeovers exclusive too: the current claim of a key is its highest generation;
a dead one is taken over by creating the next generation, which only one process can do. The
first claim of a key is generation 0, and a holder deletes its own generation and the older ones
when it releases, so generation 0 exists while any claim of the key does: a process that creates
generation 0 holds the key (one request). What remains of races: a holder that stalls for longer
than :data:`EXPIRY` is taken over and then runs on (the execution runs twice, with the same
result, since records are content addressed; when it then releases generation 0 while the taker
still holds generation 1, a third process may claim generation 0 and run it too); clocks of the
processes are taken to agree within a few seconds (a fast clock takes over early, a slow one late).

Claims are released when the claiming block ends (success or exception) and at process exit
(atexit); a process killed outright leaves its claims to expire. On read-only stores and on
storage without an atomic create (:attr:`Backend.supports_exclusive_create`), or after the store
refused a claim once, :meth:`Claims.acquire` returns None: executions then run unclaimed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
import uuid
import warnings
import weakref
from dataclasses import dataclass, replace

from repype.store import layout
from repype.store.backend import Backend
from repype.store.errors import StoreError

HEARTBEAT = 5.0
"""Seconds between renewals of held claims."""
EXPIRY = 30.0
"""A claim not renewed for this many seconds is dead: another process may take the execution over."""
RACES = 5
"""Attempts at claiming a key whose claims change under our feet, before running it unclaimed."""


@dataclass(frozen=True)
class Claim:
    """The claim of one process on the execution `key`, as stored (`held`: whether this object's caller holds it)."""

    key: str
    generation: int
    owner: str
    host: str
    pid: int
    started: float
    renewed: float
    held: bool = False

    @property
    def holder(self) -> str:
        """`host:pid` of the claiming process, for messages."""
        return f"{self.host}:{self.pid}"

    def is_live(self, now: float) -> bool:
        """Whether the claim was renewed within the last :data:`EXPIRY` seconds."""
        return self.renewed > now - EXPIRY


def claim_document(claim: Claim) -> bytes:
    """The `zarr.json` bytes of the node of `claim`."""
    fields = {name: getattr(claim, name) for name in ("key", "owner", "host", "pid", "started", "renewed")}
    return layout.group_document({"repype_claim": fields})


def parse_claim(node: str, metadata: bytes) -> Claim | None:
    """The claim stored at the node named `node` (`<key>.<generation>`), or None when it is damaged."""
    try:
        document = layout.read_attributes(metadata)["repype_claim"]
        key, generation = node.rsplit(".", 1)
        return Claim(
            key,
            int(generation),
            str(document["owner"]),
            str(document["host"]),
            int(document["pid"]),
            float(document["started"]),
            float(document["renewed"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_claims(backend: Backend, key: str | None = None) -> dict[str, Claim | None]:
    """Every claim of the store (or of `key`) by node name; None for a damaged one.

    A node without its `zarr.json` (a local create between making the node's directory and
    linking its document) is left out: it is nobody's claim yet.
    """
    nodes = [
        name
        for name in backend.list_dir(layout.CLAIMS)
        if name != layout.METADATA and (key is None or name.rsplit(".", 1)[0] == key)
    ]
    metadata = {node: layout.metadata_key(f"{layout.CLAIMS}/{node}") for node in nodes}
    documents = backend.get_many(metadata.values())
    return {
        node: parse_claim(node, documents[metadata[node]]) for node in nodes if documents[metadata[node]] is not None
    }


def current_claim(found: dict[str, Claim | None]) -> tuple[int, Claim | None]:
    """The highest generation among the claims `found` of one key and its claim (None: damaged); (-1, None) for none."""
    if not found:
        return -1, None
    node = max(found, key=_generation)
    return _generation(node), found[node]


def _generation(node: str) -> int:
    try:
        return int(node.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return -1


_ALL: weakref.WeakSet[Claims] = weakref.WeakSet()


class Claims:
    """The claims that this process holds in the store behind `backend`, renewed by one heartbeat thread."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.enabled = backend.supports_exclusive_create
        """Whether claims work on this store (False: read-only, no atomic create, or the store refused one)."""
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._group_written = False
        _ALL.add(self)

    def acquire(self, key: str) -> Claim | None:
        """Claims the execution `key`: the claim now in the store, or None when claims do not work here.

        A returned claim with `held` True is this caller's (release it with :meth:`release`);
        with `held` False, another live process (or another thread of this one) holds the key.
        """
        if not self.enabled:
            return None
        try:
            return self._acquire(key)
        except StoreError as error:
            self.enabled = False
            warnings.warn(f"{error}; stage executions run unclaimed from now on", RuntimeWarning, 2)
            return None

    def _acquire(self, key: str) -> Claim | None:
        if not self._group_written:
            self.backend.set(layout.metadata_key(layout.CLAIMS), layout.group_document())
            self._group_written = True
        generation = 0
        for _ in range(RACES):
            now = time.time()
            mine = Claim(key, generation, uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now, held=True)
            if self.backend.create(layout.metadata_key(layout.claim_path(key, generation)), claim_document(mine)):
                with self._lock:
                    self._held[key] = mine
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._renew, name="repype-claims", daemon=True)
                        self._thread.start()
                return mine
            top, current = current_claim(read_claims(self.backend, key))
            if current is not None and current.is_live(time.time()):
                return current
            generation = top + 1  # 0 when the claims were released meanwhile; else a takeover of a dead one
        return None

    def current(self, key: str) -> Claim | None:
        """The live claim on `key` (this process's or another's), or None: none, it died, or claims are off."""
        if not self.enabled:
            return None
        _, current = current_claim(read_claims(self.backend, key))
        return current if current is not None and current.is_live(time.time()) else None

    def release(self, claim: Claim) -> None:
        """Stops renewing `claim` and removes it and the older generations of its key (nothing when not held).

        The older generations are dead claims that `claim` took over; generation 0 goes last, so the
        key stays claimed until the release is done.
        """
        with self._lock:
            held = self._held.get(claim.key)
            if held is None or held.owner != claim.owner:
                return
            del self._held[claim.key]
        for generation in range(claim.generation, -1, -1):
            with contextlib.suppress(StoreError):  # an unreachable store lets the claim expire instead
                self.backend.delete_dir(layout.claim_path(claim.key, generation))

    def release_all(self) -> None:
        """Releases every claim this object holds (at process exit)."""
        for claim in list(self._held.values()):
            self.release(claim)

    def _renew(self) -> None:
        while True:
            time.sleep(HEARTBEAT)
            with self._lock:  # a release waits for the renewal in flight, which never resurrects a released claim
                if not self._held:
                    self._thread = None
                    return
                for key, claim in list(self._held.items()):
                    renewed = replace(claim, renewed=time.time())
                    with contextlib.suppress(StoreError):  # a missed renewal is retried; EXPIRY allows several
                        self.backend.set(
                            layout.metadata_key(layout.claim_path(key, claim.generation)), claim_document(renewed)
                        )
                        self._held[key] = renewed


@atexit.register
def _release_held() -> None:
    for claims in list(_ALL):
        claims.release_all()
