"""One field of a task, stacked across its inputs into a lazy `xarray.DataArray`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repype.optional import require
from repype.store.blobs import dimension_names


def axis_names(array: Any) -> list[str]:
    """Names of the axes of a stored array: those in its metadata, `dim_<axis>` for the default ones.

    Arrays stored without names (older stores) and eagerly loaded values get `dim_<axis>` too.
    """
    shape = tuple(array.shape)
    stored = getattr(getattr(array, "metadata", None), "dimension_names", None)
    if stored is None or list(stored) == dimension_names(shape) or None in stored:
        return [f"dim_{axis}" for axis in range(len(shape))]
    return list(stored)


def stack_field(view: Any, name: str, input_ids: list[Any] | None = None, dims: Sequence[str] | None = None) -> Any:
    """Field `name` of the inputs of `view` (a `TaskView`; default: all inputs) as one lazy DataArray.

    The first dimension is `input_id` (a coordinate holding the input ids); the others are the
    array's axes, named `dims` if given (one name per axis). Arrays stay in the store until
    computed (dask); small values (JSON numbers, raw-layout arrays) are read at once. The values
    of every input must have one shape, else ValueError names the task, the field and the shapes.
    """
    xarray = require("xarray", "TaskView.to_xarray")
    dask_array = require("dask.array", "TaskView.to_xarray")
    import zarr

    ids = view.input_ids if input_ids is None else list(input_ids)
    if not ids:
        raise ValueError(f"task '{view.name}' has no inputs to stack field '{name}' over")
    arrays, shapes, axes = [], {}, None
    for input_id in ids:
        value = view.field(input_id, name, lazy=True)
        if isinstance(value, zarr.Array):
            arrays.append(dask_array.from_zarr(value))
        else:
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ValueError(
                    f"task '{view.name}', input {input_id!r}, field '{name}': a {type(value).__name__} value "
                    "is neither an array nor a number, so it cannot be stacked into an xarray.DataArray"
                )
            value = array
            arrays.append(dask_array.from_array(value))
        shapes[input_id] = tuple(value.shape)
        if axes is None:
            axes = axis_names(value)
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{input_id!r}: {shape}" for input_id, shape in shapes.items())
        raise ValueError(
            f"task '{view.name}', field '{name}': the inputs' values differ in shape ({listed}), so they cannot "
            "be stacked; load them one at a time with field()"
        )
    shape = shapes[ids[0]]
    if dims is not None:
        if len(dims) != len(shape):
            raise ValueError(f"task '{view.name}', field '{name}': {list(dims)} do not name the axes of shape {shape}")
        axes = list(dims)
    return xarray.DataArray(
        dask_array.stack(arrays),
        dims=["input_id", *axes],
        coords={"input_id": ids},
        name=name,
        attrs={"task": view.name, "store": view.store.url},
    )
