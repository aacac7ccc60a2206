"""Type names shared by repype and by user code, as in upstream repype.

Besides repype's own aliases, this module re-exports every public name of the standard
`typing` module, so that ``from repype.typing import Dict, Optional, PipelineData`` works.
"""

import os
from typing import *  # noqa: F403 (the re-export is the point of this module)
from typing import Any, TypeVar

InputID = int | str
"""Identifier of one input of a task (each input is one run of the pipeline)."""

PipelineData = dict[str, Any]
"""Pipeline data object: the fields of one input, by name."""

TaskData = dict[InputID, PipelineData]
"""Task data object: the pipeline data object of each input, by input id."""

PathLike = str | os.PathLike
"""A path given as a string or a path object."""

Pipeline = TypeVar("Pipeline")
"""Forward declaration of :class:`repype.pipeline.Pipeline` (for annotations in modules it imports)."""
