"""Field codecs: how a field value becomes bytes in the store, and its content digest.

* numpy arrays of bool, integer, float and complex dtypes: Zarr arrays (`ndarray`, native
  layout); fixed-width bytes/unicode, datetime and non-native byte orders are stored as raw
  bytes with a trailing item axis (`raw` layout) and restored to the exact dtype;
* values that JSON represents exactly: JSON (small ones inline, in the reference itself);
* values of a type with a registered :class:`FieldCodec`: that codec's bytes;
* tuples, sets, frozensets, bytes, numpy scalars, non-finite floats and dicts with non-string
  keys (nested in JSON-like data): tagged JSON (`repype.canonical`), so they load without
  unpickling and their digest does not depend on hash randomisation;
* anything else: a dill pickle.

Small values are packed: an array or encoded value of at most `pack_limit` bytes (by default
:data:`PACK_LIMIT`) lives inside its reference (`packed` layout, base64), and JSON of at most
that size inline as JSON, so that a tiny value costs no object of its own. `pack_limit=None`
packs nothing but JSON of at most :data:`INLINE_LIMIT` bytes.

A value's content digest is the xxh3-128 of its canonical encoding: a header naming codec,
dtype and shape, then the bytes. Identical values therefore share one digest, packed or not.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import xxhash

from repype.canonical import canonical, from_canonical
from repype.lazy import numpy as np  # imported on first use: a JSON value needs none
from repype.store.errors import IntegrityError, SerializationError

INLINE_LIMIT = 1024
"""JSON values whose canonical text is at most this many bytes live inside their reference."""

PACK_LIMIT = 4096
"""The default `pack_limit`: arrays and encoded values (pickles, codec bytes) of at most this many
bytes live inside their reference (so inside the stage record and the manifest), base64-encoded,
and JSON of at most this many bytes inline, instead of being a Zarr array each: a tiny value
costs no object of its own and loads without zarr. Their digest is the same as if they were
stored as arrays, so packing changes no key."""

ValueRef = dict[str, Any]

_NATIVE_KINDS = "biufc"
_RAW_KINDS = "SUMm"  # structured (V) dtypes are pickled: their field names need the full description


class FieldCodec:
    """Base class for codecs of user types: subclass it and :func:`register_codec` an instance.

    `name` must be unique and stable (it is part of every digest and stored reference);
    `types` lists the classes it encodes (subclasses included). The round trip
    `decode(encode(value))` must give a value equal to `value`, of the same type.
    """

    name: str = ""
    types: tuple[type, ...] = ()

    def encode(self, value: Any) -> bytes:
        """The bytes that represent `value`."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        """The value that `data` represents."""
        raise NotImplementedError


_CODECS: dict[str, FieldCodec] = {}
_RESERVED = {"json", "tagged", "ndarray", "pickle"}


def register_codec(codec: FieldCodec) -> None:
    """Makes `codec` encode values of `codec.types` (before the pickle fallback)."""
    if not codec.name or codec.name in _RESERVED:
        raise ValueError(f"codec name {codec.name!r} is empty or reserved")
    _CODECS[codec.name] = codec


def unregister_codec(name: str) -> None:
    """Removes the codec registered under `name` (values it stored can no longer be read)."""
    _CODECS.pop(name, None)


def codec_named(name: str) -> FieldCodec | None:
    """The registered codec called `name`, or None."""
    return _CODECS.get(name)


def _codec_for(value: Any) -> FieldCodec | None:
    for cls in type(value).__mro__:
        for codec in _CODECS.values():
            if cls in codec.types:
                return codec
    return None


@dataclass
class Encoded:
    """A value in its stored form: a reference and, unless inline, the array to write as blob."""

    ref: ValueRef
    array: np.ndarray | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def is_exact_json(value: Any) -> bool:
    """Whether JSON represents `value` exactly (types included), so it comes back unaltered."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if kind is list:
        return all(is_exact_json(item) for item in value)
    if kind is dict:
        return all(type(key) is str and is_exact_json(item) for key, item in value.items())
    return False


def _header(codec: str, dtype: str = "", shape: tuple | list = ()) -> bytes:
    return json.dumps([codec, dtype, list(shape)], separators=(",", ":")).encode("utf-8") + b"\n"


def digest_bytes(header: bytes, *payloads: Any) -> str:
    """xxh3-128 hex of `header` followed by the payloads (buffers)."""
    digest = xxhash.xxh3_128(header)
    for payload in payloads:
        digest.update(payload)
    return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """Content digest of a numpy array: dtype, shape and C-order bytes."""
    return digest_bytes(_header("ndarray", array.dtype.str, array.shape), _array_bytes(array))


def _array_bytes(array: np.ndarray) -> Any:
    contiguous = np.require(array, requirements="C")
    return contiguous.reshape(-1).view(np.uint8) if contiguous.size else b""


def _is_storable_array(value: Any) -> bool:
    if type(value) is not np.ndarray or value.dtype.hasobject:
        return False
    return value.dtype.kind in _NATIVE_KINDS + _RAW_KINDS and value.dtype.itemsize > 0


def encode(value: Any, field_name: str = "", pack_limit: int | None = PACK_LIMIT) -> Encoded:
    """The stored form of `value`; raises :class:`SerializationError` naming `field_name` when impossible.

    Arrays and encoded values of at most `pack_limit` bytes are packed into the reference, JSON
    of at most that size inline (see :data:`PACK_LIMIT`; None packs nothing, and inlines JSON
    up to :data:`INLINE_LIMIT` bytes).
    """
    with contextlib.suppress(UnicodeEncodeError):  # strings with lone surrogates are pickled
        if is_exact_json(value):
            return _encode_text("json", value, pack_limit)
    if _is_storable_array(value):
        return _encode_array(value, pack_limit)
    codec = _codec_for(value)
    if codec is not None:
        try:
            data = codec.encode(value)
        except Exception as error:
            raise SerializationError(f"field '{field_name}': codec '{codec.name}' failed: {error}") from error
        return _encode_bytes(codec.name, data, pack_limit)
    with contextlib.suppress(UnicodeEncodeError):
        if _is_taggable(value):
            document = canonical(value)
            if _exactly_equal(from_canonical(document), value):
                return _encode_text("tagged", document, pack_limit)
    import dill  # imported when first needed: most values are arrays or JSON

    try:
        return _encode_bytes("pickle", dill.dumps(value), pack_limit)
    except Exception as error:
        raise SerializationError(
            f"field '{field_name}': cannot store a {type(value).__name__} value: {error}"
        ) from error


def _encode_text(codec: str, document: Any, pack_limit: int | None) -> Encoded:
    """A JSON document (of `json` or `tagged` codec); small ones live inline in the reference."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    data = text.encode("utf-8")
    digest = digest_bytes(_header(codec), data)
    if len(data) <= max(INLINE_LIMIT, pack_limit or 0):
        return Encoded({"digest": digest, "codec": codec, "stored": True, "value": document})
    return Encoded(
        {"digest": digest, "codec": codec, "stored": False, "layout": "bytes"}, np.frombuffer(data, np.uint8)
    )


def is_inline(ref: ValueRef) -> bool:
    """Whether the value of `ref` is held in the reference itself (inline JSON, packed values)."""
    return "value" in ref or "packed" in ref


def packed_payload(ref: ValueRef) -> np.ndarray:
    """The payload packed into `ref` (an array of the reference's dtype and shape, or bytes as
    uint8), verified against its digest: pass it to :func:`decode`.

    Raises IntegrityError when it does not match its digest.
    """
    data = base64.b64decode(ref["packed"])
    if ref["codec"] == "ndarray":
        payload = np.frombuffer(data, np.dtype(ref["dtype"])).reshape(ref["shape"]).copy()
    else:
        payload = np.frombuffer(data, np.uint8)
    if payload_digest(ref, payload) != ref["digest"]:
        raise IntegrityError(f"value {ref['digest']} is damaged (its packed content does not match its digest)")
    return payload


def inline_value(ref: ValueRef) -> Any:
    """The JSON value held inside a reference (a fresh object on every call)."""
    if ref["codec"] == "tagged":
        return from_canonical(ref["value"])
    return copy.deepcopy(ref["value"])


_TAGGABLE_SCALARS = (type(None), bool, int, float, str, bytes)


def _is_taggable(value: Any) -> bool:
    """Whether tagged JSON can represent `value` (containers of plain scalars and small numpy scalars)."""
    kind = type(value)
    if kind in _TAGGABLE_SCALARS:
        return True
    if isinstance(value, np.generic):
        return value.dtype.kind in "biu" or (value.dtype.kind == "f" and value.dtype.itemsize <= 8)
    if kind in (list, tuple, set, frozenset):
        return all(_is_taggable(item) for item in value)
    if kind is dict:
        return all(_is_taggable(key) and _is_taggable(item) for key, item in value.items())
    return False


def _exactly_equal(left: Any, right: Any) -> bool:
    """Equal values of identical types, all the way down (NaN equals NaN)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(_exactly_equal, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_exactly_equal(item, right[key]) for key, item in left.items())
    if isinstance(left, float | np.floating):
        return bool(left == right or (left != left and right != right))
    return bool(left == right)


def _encode_array(value: np.ndarray, pack_limit: int | None) -> Encoded:
    digest = array_digest(value)
    ref = {"digest": digest, "codec": "ndarray", "stored": False, "dtype": value.dtype.str, "shape": list(value.shape)}
    if pack_limit is not None and value.nbytes <= pack_limit:
        return Encoded(_packed(ref, _array_bytes(value)))
    if value.dtype.kind in _NATIVE_KINDS and value.dtype.isnative:
        ref["layout"] = "native"
        return Encoded(ref, np.require(value, requirements="C"))
    ref["layout"] = "raw"
    raw = np.require(value, requirements="C").reshape(-1).view(np.uint8)
    return Encoded(ref, raw.reshape((*value.shape, value.dtype.itemsize)))


def _encode_bytes(codec: str, data: bytes, pack_limit: int | None) -> Encoded:
    ref = {"digest": digest_bytes(_header(codec), data), "codec": codec, "stored": False, "layout": "bytes"}
    if pack_limit is not None and len(data) <= pack_limit:
        return Encoded(_packed(ref, data))
    return Encoded(ref, np.frombuffer(data, np.uint8))


def _packed(ref: ValueRef, data: Any) -> ValueRef:
    """`ref` holding `data` (a buffer) itself, base64-encoded: the `packed` layout."""
    ref.update(stored=True, layout="packed", packed=base64.b64encode(data).decode("ascii"))
    return ref


def payload_digest(ref: ValueRef, payload: np.ndarray) -> str:
    """The digest of a value read back as `payload` (the stored array), to compare with `ref`."""
    if ref["codec"] == "ndarray":
        return array_digest(restore_array(ref, payload))
    return digest_bytes(_header(ref["codec"]), _array_bytes(payload))


def restore_array(ref: ValueRef, payload: np.ndarray) -> np.ndarray:
    """The array of an `ndarray` reference from its stored payload (exact dtype and shape)."""
    if ref.get("layout") == "raw":
        dtype = np.dtype(ref["dtype"])
        flat = np.require(payload, requirements="C").reshape(-1)
        return flat.view(dtype).reshape(ref["shape"]) if flat.size else np.zeros(ref["shape"], dtype)
    return payload


def decode(ref: ValueRef, payload: np.ndarray, allow_pickle: bool, refuse: Callable[[], Exception]) -> Any:
    """The value of `ref` from its stored payload. `refuse()` gives the error for refused pickles."""
    codec = ref["codec"]
    if codec == "ndarray":
        return restore_array(ref, payload)
    data = payload.tobytes()
    if codec in ("json", "tagged"):
        document = json.loads(data.decode("utf-8"))
        return from_canonical(document) if codec == "tagged" else document
    if codec == "pickle":
        if not allow_pickle:
            raise refuse()
        import dill

        return dill.loads(data)
    custom = codec_named(codec)
    if custom is None:
        raise SerializationError(f"no codec '{codec}' is registered (repype.store.register_codec) to read this value")
    return custom.decode(data)
