"""Values as Zarr arrays: written chunks first and metadata last, verified by digest on read."""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import itertools
import json
import math
import os
from collections.abc import Callable
from typing import Any

import numcodecs
import numpy as np
import zarr
import zarr.codecs
from zarr.storage import MemoryStore

from repype.store.backend import Backend
from repype.store.codecs import Encoded, ValueRef, payload_digest
from repype.store.errors import IntegrityError, StoreError, where
from repype.store.layout import blob_path, metadata_key

CHUNK_BYTES = 1 << 20
"""Target size of an uncompressed chunk: big enough for fast bulk I/O, small enough that the
chunks of one value compress and write in parallel and lazy slices read little."""


def compressors_for(name: str | Any) -> Any:
    """Zarr compressors from a name (`'zstd'`, `'zstd:<level>'`, `'blosc-lz4'`, `'none'`) or a codec object."""
    if not isinstance(name, str):
        return name
    codec, _, level = name.partition(":")
    if codec == "zstd":
        return zarr.codecs.ZstdCodec(level=int(level or 1))
    if codec == "blosc-lz4":
        return zarr.codecs.BloscCodec(cname="lz4", clevel=int(level or 5), shuffle="shuffle")
    if codec == "none":
        return None
    raise StoreError(f"unknown compressor '{name}' (use zstd, zstd:<level>, blosc-lz4 or none)")


def dimension_names(shape: tuple[int, ...]) -> list[str]:
    """The names of a stored array's axes, written into its Zarr metadata (for xarray and other readers).

    `dim_<axis>_<length>`: a blob shares its fan-out group with unrelated blobs, and xarray opens
    a group only when every dimension name has one length in it. The names are metadata only:
    no digest or key depends on them, and arrays stored without them (older stores) still load.
    """
    return [f"dim_{axis}_{length}" for axis, length in enumerate(shape)]


def chunks_for(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape of about :data:`CHUNK_BYTES`, halving the largest dimension until it fits."""
    chunks = [max(1, size) for size in shape]
    while math.prod(chunks) * itemsize > CHUNK_BYTES and max(chunks) > 1:
        largest = chunks.index(max(chunks))
        chunks[largest] = math.ceil(chunks[largest] / 2)
    return tuple(chunks)


ChunkWriter = Callable[[list[tuple[str, bytes]]], None]


def write_blob_chunks(encoded: Encoded, compressors: Any, write: ChunkWriter) -> bytes:
    """Writes the chunks of a value's Zarr array with `write`; returns its metadata document (to write last).

    With zstd or no compression, chunks are compressed and written in parallel threads as each
    is ready (compression overlaps writing); other compressors go through zarr's array writer.
    """
    array = encoded.array
    path = blob_path(encoded.ref["digest"])
    chunks = chunks_for(array.shape, array.dtype.itemsize)
    attributes = {"repype": {k: v for k, v in encoded.ref.items() if k != "stored"}}
    compress = _chunk_compressor(compressors)
    if compress is None:
        encoded_chunks, document = _encode_with_zarr(array, path, chunks, compressors, attributes)
        write(encoded_chunks)
        sizes = [len(data) for _, data in encoded_chunks]
    else:
        sizes = _write_chunks(array, path, chunks, compress, write)
        document = _metadata_document(array.shape, array.dtype.str, chunks, compressors)
        document["attributes"] = attributes
    document["attributes"]["repype"]["stored_bytes"] = sum(sizes)
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _chunk_compressor(compressors: Any) -> Callable[[bytes], bytes] | None:
    """A bytes → bytes function equal to `compressors` in a Zarr v3 codec pipeline, or None when unknown."""
    if compressors is None:
        return bytes
    if isinstance(compressors, zarr.codecs.ZstdCodec):
        return numcodecs.Zstd(level=compressors.level, checksum=compressors.checksum).encode
    return None


def _write_chunks(
    array: np.ndarray, path: str, chunks: tuple[int, ...], compress: Callable[[bytes], bytes], write: ChunkWriter
) -> list[int]:
    """Writes the Zarr v3 chunks of `array` (regular grid, edge chunks padded with the fill value 0,
    little-endian); returns their stored sizes."""
    little = array.dtype.newbyteorder("<")
    grid = [range(math.ceil(size / chunk)) for size, chunk in zip(array.shape, chunks)]

    def encode_and_write(index: tuple[int, ...]) -> int:
        selection = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))
        block = array[selection]
        if block.shape != chunks:
            padded = np.zeros(chunks, dtype=little)
            padded[tuple(slice(0, size) for size in block.shape)] = block
            block = padded
        data = compress(np.ascontiguousarray(block, dtype=little).tobytes())
        write([("/".join([path, "c", *map(str, index)]), data)])
        return len(data)

    indices = list(itertools.product(*grid))
    if len(indices) == 1:
        return [encode_and_write(indices[0])]
    return list(_pool().map(encode_and_write, indices))


@functools.lru_cache(maxsize=256)
def _metadata_template(
    shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], compressors_key: str, compressors: Any
) -> dict[str, Any]:
    staged: dict[str, Any] = {}
    zarr.create_array(
        MemoryStore(staged),
        name="a",
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compressors=compressors,
        dimension_names=dimension_names(shape),
    )
    return json.loads(staged["a/zarr.json"].to_bytes())


def _metadata_document(shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], compressors: Any) -> dict:
    return copy.deepcopy(_metadata_template(shape, dtype, chunks, repr(compressors), compressors))


def _encode_with_zarr(
    array: np.ndarray, path: str, chunks: tuple[int, ...], compressors: Any, attributes: dict[str, Any]
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    staged: dict[str, Any] = {}
    zarr.create_array(
        MemoryStore(staged),
        name=path,
        data=array,
        chunks=chunks,
        compressors=compressors,
        attributes=attributes,
        dimension_names=dimension_names(array.shape),
        zarr_format=3,
        config={"write_empty_chunks": True},  # -0.0 equals the fill value 0 but is other bytes
    )
    document = json.loads(staged.pop(metadata_key(path)).to_bytes())
    return [(key, buffer.to_bytes()) for key, buffer in staged.items() if key.startswith(path + "/")], document


_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads that compress chunks (the compressors release the GIL)."""
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="repype-chunks")
    return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def read_payload(backend: Backend, ref: ValueRef, context: dict[str, Any] | None = None) -> np.ndarray:
    """The stored array of `ref`, verified against its digest; damage raises IntegrityError."""
    digest = ref["digest"]
    try:
        array = backend.open_array(blob_path(digest))
        payload = np.asarray(array[...]).reshape(array.shape)
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError) as error:
        raise IntegrityError(f"{where(context)}value {digest} is missing from the store") from error
    except StoreError:
        raise
    except Exception as error:
        raise IntegrityError(f"{where(context)}value {digest} cannot be decoded: {error}") from error
    if payload_digest(ref, payload) != digest:
        raise IntegrityError(f"{where(context)}value {digest} is damaged (its content does not match its digest)")
    return payload


def lazy_array(backend: Backend, ref: ValueRef, context: dict[str, Any] | None = None) -> zarr.Array:
    """The Zarr array of `ref` without reading its chunks (not verified: slices read what they need)."""
    try:
        return backend.open_array(blob_path(ref["digest"]))
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError) as error:
        raise IntegrityError(f"{where(context)}value {ref['digest']} is missing from the store") from error
