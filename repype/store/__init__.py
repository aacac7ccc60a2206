"""The content-addressed store of repype, on Zarr v3 and any fsspec filesystem.

Open one with :func:`open`. Values are addressed by the xxh3-128 digest of their content and
stored once; stage executions are recorded under SHA-1 keys (:func:`repype.store.keys.stage_key`);
completed tasks are described by manifests that refs name. The store knows nothing of task
directories.
"""

from repype.store.browse import TaskView
from repype.store.codecs import FieldCodec, register_codec, unregister_codec
from repype.store.errors import (
    IntegrityError,
    IntegrityWarning,
    KeyMaterialError,
    PickleRefusedError,
    ReadOnlyError,
    SerializationError,
    StoreError,
    StoreFormatError,
    StoreMissingError,
    StoreUnavailableError,
)
from repype.store.keys import KEY_SCHEMA_VERSION, stage_key
from repype.store.manifests import InputEntry, Manifest, ManifestHeader, Record, Ref
from repype.store.store import Store, open

__all__ = [
    "KEY_SCHEMA_VERSION",
    "FieldCodec",
    "InputEntry",
    "IntegrityError",
    "IntegrityWarning",
    "KeyMaterialError",
    "Manifest",
    "ManifestHeader",
    "PickleRefusedError",
    "ReadOnlyError",
    "Record",
    "Ref",
    "SerializationError",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreMissingError",
    "StoreUnavailableError",
    "TaskView",
    "open",
    "register_codec",
    "stage_key",
    "unregister_codec",
]
