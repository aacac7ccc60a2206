"""Values as Zarr arrays: written chunks first and metadata last, verified by digest on read."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import zarr
import zarr.codecs
from zarr.storage import MemoryStore

from repype.store.backend import Backend
from repype.store.codecs import Encoded, ValueRef, payload_digest
from repype.store.errors import IntegrityError, StoreError
from repype.store.layout import blob_path, metadata_key

CHUNK_BYTES = 4 << 20
"""Target size of an uncompressed chunk."""


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


def chunks_for(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape of about :data:`CHUNK_BYTES`, halving the largest dimension until it fits."""
    chunks = [max(1, size) for size in shape]
    while math.prod(chunks) * itemsize > CHUNK_BYTES and max(chunks) > 1:
        largest = chunks.index(max(chunks))
        chunks[largest] = math.ceil(chunks[largest] / 2)
    return tuple(chunks)


def encode_blob(encoded: Encoded, compressors: Any) -> tuple[list[tuple[str, bytes]], bytes]:
    """The chunk keys and bytes of a value's Zarr array, and its metadata document (to write last)."""
    array = encoded.array
    path = blob_path(encoded.ref["digest"])
    staged: dict[str, Any] = {}
    attributes = {"repype": {k: v for k, v in encoded.ref.items() if k != "stored"}}
    zarr.create_array(
        MemoryStore(staged),
        name=path,
        data=array,
        chunks=chunks_for(array.shape, array.dtype.itemsize),
        compressors=compressors,
        attributes=attributes,
        zarr_format=3,
        config={"write_empty_chunks": True},  # -0.0 equals the fill value 0 but is other bytes
    )
    document = json.loads(staged.pop(metadata_key(path)).to_bytes())
    chunks = [(key, buffer.to_bytes()) for key, buffer in staged.items() if key.startswith(path + "/")]
    document["attributes"]["repype"]["stored_bytes"] = sum(len(data) for _, data in chunks)
    return chunks, json.dumps(document, separators=(",", ":")).encode("utf-8")


def where(context: dict[str, Any] | None) -> str:
    """`task ..., input ..., field ...` for messages, from what the caller knows."""
    if not context:
        return ""
    parts = [f"{name} {context[name]!r}" for name in ("task", "input", "field") if context.get(name) is not None]
    return ", ".join(parts) + ": " if parts else ""


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
