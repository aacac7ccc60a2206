"""Errors of tasks (a leaf module: the task and the modules it uses raise them)."""

from __future__ import annotations


class TaskError(AssertionError):
    """A task cannot do what was asked (not runnable, no results, inconsistent results).

    Derives from `AssertionError` because the original framework asserted these conditions.
    """
