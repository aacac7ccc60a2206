"""Key-value access to a Zarr store on any fsspec filesystem, chosen by URL.

A thin synchronous layer over zarr's asynchronous `Store` interface: plain paths and `file://`
URLs use `zarr.storage.LocalStore` (writes go to a temporary name, then are renamed), other
URLs `zarr.storage.FsspecStore` (single-object puts on object stores are atomic). A missing key
is `None`; backend failures become :class:`StoreUnavailableError` naming the URL without
credentials. Bulk operations run concurrently on zarr's event loop.

Local stores read, list and write their files directly (a write goes to `<key>.<uuid>.partial`
first, then is renamed, as zarr's `LocalStore` does) and import zarr only when deleting or opening
an array: listing tasks or reading a JSON field does not pay for importing it, and a write costs
no round trip through zarr's event loop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from repype.store.errors import ReadOnlyError, StoreError, StoreMissingError, StoreUnavailableError

if TYPE_CHECKING:
    import asyncio

    import zarr
    from zarr.abc.store import Store as ZarrStore

T = TypeVar("T")

CONCURRENCY = 32
"""Store requests in flight at once in bulk operations."""

S3_DEFAULTS = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 8, "retries": {"mode": "standard", "max_attempts": 3}},
    "max_concurrency": 1,
    "use_listings_cache": False,
    "retries": 1,
}
"""S3 options unless the user sets their own (`config_kwargs` entries one by one): bounded
timeouts and retries, so that an unreachable or hung endpoint fails a request within about 25 s
(botocore's 3 attempts of at most 8 s retry transient errors and throttling; `retries`, s3fs's
own count of attempts, is 1 because s3fs nests its retries, which multiplies the wait);
no split of single reads into concurrent ranges, which costs every read an extra HEAD request
(chunks are about 1 MB and zarr already reads them concurrently); no cached listings, which would
hide what other processes wrote since (gc relies on fresh listings)."""

EXCLUSIVE_CREATE_PROTOCOLS = ("s3", "s3a", "memory")
"""fsspec protocols whose `pipe_file(..., mode="create")` writes a key only when it is absent, atomically
(S3 sends `If-None-Match: *`, which AWS and moto's server honour; memory opens with mode `xb`).
Other filesystems (gcsfs, adlfs, ...) get no exclusive create here: what needs it degrades."""

_INSTALL_HINTS = {"s3": "pip install 'repype[s3]'", "gs": "pip install gcsfs", "az": "pip install adlfs"}


def redact(url: str) -> str:
    """`url` without credentials (user info) for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urllib.parse.urlunsplit(parts._replace(netloc=host + port))
    return url


def local_path(url: str) -> str | None:
    """The local directory of a plain path or `file://` URL, or None for other URLs."""
    if url.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    if "://" in url:
        return None
    return os.path.abspath(os.path.expanduser(url))


class Backend:
    """Synchronous key-value access to the Zarr store at `url`.

    Args:
        url: A local path or an fsspec URL.
        storage_options: Options for the fsspec filesystem (not allowed for local paths).
        read_only: Refuse every write with :class:`ReadOnlyError`.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, read_only: bool = False) -> None:
        self.url = url
        self.display_url = redact(url)
        self.read_only = read_only
        self.root = local_path(url)
        """The directory of a local store (read directly, without zarr), or None."""
        self._zarr_store: ZarrStore | None = None
        if self.root is None:
            self._zarr_store = self._open_fsspec(url, storage_options, read_only)
        elif not read_only:
            os.makedirs(self.root, exist_ok=True)
        elif not os.path.isdir(self.root):
            raise StoreMissingError(f"there is no repype store at {self.display_url}")
        self._prototype: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def zarr_store(self) -> ZarrStore:
        """The zarr store under this backend (a local one is created when first needed)."""
        if self._zarr_store is None:
            from zarr.storage import LocalStore

            self._zarr_store = LocalStore(self.root, read_only=self.read_only)
        return self._zarr_store

    @property
    def _buffers(self) -> Any:
        if self._prototype is None:
            from zarr.core.buffer import default_buffer_prototype

            self._prototype = default_buffer_prototype()
        return self._prototype

    def _open_fsspec(self, url: str, storage_options: dict[str, Any] | None, read_only: bool) -> ZarrStore:
        from zarr.storage import FsspecStore

        protocol = url.split("://", 1)[0]
        options = dict(storage_options or {})
        retries = None
        if protocol in ("s3", "s3a"):
            options = {**S3_DEFAULTS, **options}
            options["config_kwargs"] = {**S3_DEFAULTS["config_kwargs"], **(options["config_kwargs"] or {})}
            retries = options.pop("retries")  # an attribute of s3fs's filesystem, not an option it takes
        try:
            store = FsspecStore.from_url(url, storage_options=options, read_only=read_only)
            if retries is not None:
                store.fs.retries = retries
            return store
        except ImportError as error:
            hint = _INSTALL_HINTS.get(protocol, "install the fsspec implementation of this protocol")
            raise StoreUnavailableError(f"store {self.display_url}: {error} ({hint})") from None
        except ValueError as error:
            raise StoreUnavailableError(f"store {self.display_url}: unknown protocol '{protocol}': {error}") from None

    def _local_file(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    # --- running requests ---------------------------------------------------------------------

    def run(self, coroutine: Awaitable[T]) -> T:
        """Runs a coroutine on zarr's loop; backend failures become StoreUnavailableError."""
        from zarr.core.sync import sync

        try:
            return sync(coroutine)
        except StoreError:
            raise
        except (FileNotFoundError, KeyError):
            raise
        except Exception as error:
            raise StoreUnavailableError(
                f"store {self.display_url}: {type(error).__name__}: {_without_secrets(str(error))}"
            ) from error

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"store {self.display_url} is open read-only")

    async def _limited(self, job: Callable[[], Awaitable[T]]) -> T:
        import asyncio  # imported here, like zarr, so that reading a local store does not pay for it

        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(CONCURRENCY)
        async with self._semaphore:
            return await job()

    async def _gather(self, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
        import asyncio

        return await asyncio.gather(*(self._limited(job) for job in jobs))

    # --- reads -------------------------------------------------------------------------------

    async def _get(self, key: str) -> bytes | None:
        buffer = await self.zarr_store.get(key, self._buffers)
        return None if buffer is None else buffer.to_bytes()

    def _read_local(self, key: str) -> bytes | None:
        try:
            with open(self._local_file(key), "rb") as file:
                return file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def get(self, key: str) -> bytes | None:
        """The bytes at `key`, or None."""
        if self.root is not None:
            return self._read_local(key)
        return self.run(self._get(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """The bytes at each key (None where missing), fetched concurrently (local files one by one)."""
        keys = list(keys)
        if self.root is not None:
            return {key: self._read_local(key) for key in keys}

        async def fetch() -> list[bytes | None]:
            return await self._gather([lambda key=key: self._get(key) for key in keys])

        return dict(zip(keys, self.run(fetch())))

    def exists(self, key: str) -> bool:
        """Whether `key` exists."""
        if self.root is not None:
            return os.path.isfile(self._local_file(key))
        return self.run(self.zarr_store.exists(key))

    def list_prefix(self, prefix: str) -> list[str]:
        """Every key below `prefix` (recursively)."""
        if self.root is not None:
            base = self._local_file(prefix.rstrip("/")) if prefix.strip("/") else self.root
            return [
                os.path.relpath(os.path.join(directory, name), self.root).replace(os.sep, "/")
                for directory, _, names in os.walk(base)
                for name in names
            ]

        async def collect() -> list[str]:
            return [key async for key in self.zarr_store.list_prefix(prefix)]

        return self.run(collect())

    def list_dir(self, prefix: str) -> list[str]:
        """The names directly below `prefix` (keys and sub-directories)."""
        if self.root is not None:
            try:
                return os.listdir(self._local_file(prefix) if prefix.strip("/") else self.root)
            except (FileNotFoundError, NotADirectoryError):
                return []

        async def collect() -> list[str]:
            return [key async for key in self.zarr_store.list_dir(prefix)]

        return self.run(collect())

    def modified(self, key: str) -> float | None:
        """Modification time (seconds since the epoch) of `key`, or None when unknown."""
        try:
            if self.root is not None:
                return os.path.getmtime(self._local_file(key))
            store = self.zarr_store
            info = self.run(store.fs._info(f"{store.path}/{key}"))
        except (OSError, StoreError, KeyError):
            return None
        for name in ("LastModified", "mtime", "created"):
            value = info.get(name)
            if hasattr(value, "timestamp"):
                return value.timestamp()
            if isinstance(value, int | float):
                return float(value)
        return None

    # --- writes -------------------------------------------------------------------------------

    @property
    def supports_exclusive_create(self) -> bool:
        """Whether :meth:`create` works here: a writable local directory, or an fsspec protocol of
        :data:`EXCLUSIVE_CREATE_PROTOCOLS`."""
        if self.read_only:
            return False
        return self.root is not None or self.url.split("://", 1)[0] in EXCLUSIVE_CREATE_PROTOCOLS

    def create(self, key: str, data: bytes) -> bool:
        """Writes `data` at `key` only when nothing is there, atomically; True when this call wrote it.

        Of several processes creating the same key at once, exactly one gets True, and readers see
        the complete bytes or nothing. Local stores write a temporary file and hard-link it to its
        name (the link fails when the name exists); object stores send a conditional PUT. Raises
        :class:`StoreError` where :attr:`supports_exclusive_create` is False or the storage refuses.
        """
        self._check_writable()
        if not self.supports_exclusive_create:
            raise StoreError(f"store {self.display_url}: this storage offers no atomic create")
        if self.root is not None:
            return self._create_local(key, data)
        store = self.zarr_store

        async def put() -> bool:
            try:
                await store.fs._pipe_file(f"{store.path}/{key}", data, mode="create")
            except FileExistsError:
                return False
            return True

        with self._write_errors():
            return self.run(put())

    def _create_local(self, key: str, data: bytes) -> bool:
        path = self._local_file(key)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(temporary, "xb") as file:
                file.write(data)
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            return True
        except OSError as error:
            raise StoreUnavailableError(f"store {self.display_url}: cannot create {key}: {error}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def set(self, key: str, data: bytes) -> None:
        """Writes `data` at `key` (atomically: readers see the old or the new bytes)."""
        self._write_phases([[(key, data)]])

    def set_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Writes every `(key, data)` pair, concurrently."""
        self._write_phases([items])

    def set_in_order(self, phases: Iterable[Iterable[tuple[str, bytes]]]) -> None:
        """Writes the `(key, data)` pairs of each phase concurrently, a phase only once the one before
        it is written, all in one call into the event loop (nothing for no pairs).

        A failure stops before the next phase: what a later phase writes (a record, the metadata
        that completes a value) is never there without what the earlier ones write.
        """
        self._write_phases(phases)

    def _write_phases(self, phases: Iterable[Iterable[tuple[str, bytes]]]) -> None:
        self._check_writable()
        batches = [items for items in map(list, phases) if items]
        if not batches:
            return
        if self.root is not None:
            for key, data in (item for items in batches for item in items):
                self._write_local(key, data)
            return
        store, buffer = self.zarr_store, self._buffers.buffer

        async def put() -> None:
            for items in batches:
                await self._gather([lambda k=k, d=d: store.set(k, buffer.from_bytes(d)) for k, d in items])

        with self._write_errors():
            self.run(put())

    def _write_local(self, key: str, data: bytes) -> None:
        """Writes `data` at `key` of a local store: into a partial file beside it, then renamed over it."""
        path = self._local_file(key)
        partial = f"{os.path.splitext(path)[0]}.{uuid.uuid4().hex}.partial"
        try:
            try:
                file = open(partial, "wb")  # noqa: SIM115 -- opened before the directories only when they exist
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                file = open(partial, "wb")  # noqa: SIM115
            with file:
                file.write(data)
            os.replace(partial, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise StoreUnavailableError(f"store {self.display_url}: cannot write '{key}': {error}") from None

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A missing location while writing (an S3 bucket that does not exist) is a StoreUnavailableError."""
        try:
            yield
        except FileNotFoundError as error:
            raise StoreUnavailableError(
                f"store {self.display_url}: cannot write there ({error}); does the bucket or directory exist?"
            ) from None

    def delete(self, key: str) -> None:
        """Deletes `key` (no error when missing)."""
        self._check_writable()
        with contextlib.suppress(FileNotFoundError, KeyError):
            self.run(self.zarr_store.delete(key))

    def delete_dir(self, prefix: str) -> None:
        """Deletes every key below `prefix` (a local store removes its directory directly, without the event loop)."""
        self._check_writable()
        if self.root is None:
            self.run(self.zarr_store.delete_dir(prefix))
            return
        path = self._local_file(prefix)
        if os.path.isfile(path):
            raise StoreError(f"store {self.display_url}: {prefix} is a key, not a directory of keys")
        with contextlib.suppress(FileNotFoundError):  # missing, or removed meanwhile by another process
            shutil.rmtree(path)

    def delete_many(self, keys: Iterable[str]) -> None:
        """Deletes every key, concurrently (no error for missing ones)."""
        self._check_writable()
        keys = list(keys)

        async def remove(key: str) -> None:
            with contextlib.suppress(FileNotFoundError, KeyError):
                await self.zarr_store.delete(key)

        async def remove_all() -> None:
            await self._gather([lambda key=key: remove(key) for key in keys])

        if keys:
            self.run(remove_all())

    def open_array(self, path: str) -> zarr.Array:
        """The Zarr array at `path`, opened read-only."""
        import zarr

        store = self.zarr_store if self.read_only else self.zarr_store.with_read_only(True)
        return zarr.open_array(store=store, path=path, mode="r", zarr_format=3)


def _without_secrets(text: str) -> str:
    for marker in ("secret", "token", "password"):
        if marker in text.lower():
            return text.split(marker, 1)[0] + "[details hidden: they mention credentials]"
    return text
