"""The store's own chunk encoder writes exactly what zarr's array writer would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr.codecs
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from repype.store import blobs, codecs

COMPRESSORS = [zarr.codecs.ZstdCodec(level=1), zarr.codecs.ZstdCodec(level=3, checksum=True), None]


def both_ways(array: np.ndarray, compressors) -> tuple:
    encoded = codecs.encode(array, "x", pack_limit=None)  # a blob, however small
    chunks: list[tuple[str, bytes]] = []
    metadata = blobs.write_blob_chunks(encoded, compressors, chunks.extend)
    document = json.loads(metadata)
    stored_bytes = document["attributes"]["repype"].pop("stored_bytes")
    reference_chunks, reference = blobs._encode_with_zarr(
        encoded.array,
        blobs.blob_path(encoded.ref["digest"]),
        blobs.chunks_for(array.shape, array.dtype.itemsize),
        compressors,
        {"repype": {k: v for k, v in encoded.ref.items() if k != "stored"}},
    )
    assert stored_bytes == sum(len(data) for _, data in chunks)
    return (dict(chunks), document), (dict(reference_chunks), reference)


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(["bool", "i1", "<i4", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
    ),
    compressors=st.sampled_from(COMPRESSORS),
)
def test_fast_encoder_equals_zarr_writer(array, compressors):
    fast, reference = both_ways(array, compressors)
    assert fast == reference


@pytest.mark.parametrize("compressors", COMPRESSORS)
def test_fast_encoder_equals_zarr_writer_with_many_edge_chunks(monkeypatch, compressors):
    monkeypatch.setattr(blobs, "CHUNK_BYTES", 4096)
    array = np.random.default_rng(1).random((97, 61)).astype("f4")
    fast, reference = both_ways(array, compressors)
    assert len(fast[0]) > 4 and fast == reference


def test_other_compressors_go_through_zarr():
    blosc = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    assert blobs._chunk_compressor(blosc) is None
    fast, reference = both_ways(np.arange(1000.0), blosc)
    assert fast == reference
