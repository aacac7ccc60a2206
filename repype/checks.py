"""Configuration checks: spec keys, config sections and hyperparameters that match nothing.

Pure functions that return :class:`Finding` records: unknown spec keys and config sections
that name no stage of the pipeline (each with the closest valid name), a runnable task without
input ids, and hyperparameters a stage never read while it ran. The command line prints them
before anything runs; `--strict` (or the spec key `strict: true`) turns warnings into errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

from repype.spec import SPEC_KEYS

KNOWN_SPEC_KEYS = tuple(SPEC_KEYS)
"""The spec keys repype reads. A `Task` subclass may name its own in a class attribute `extra_spec_keys`."""


@dataclass(frozen=True)
class Finding:
    """One problem of one task.

    `kind` is `spec-key`, `config-section`, `input-ids` or `unread-hyperparameter`; `key` is the
    offending key (`stage/key` for hyperparameters); `suggestion` the closest valid name, if any;
    `error` tells whether it stops a run (warnings do not, unless strict).
    """

    task: str
    kind: str
    key: str
    message: str
    suggestion: str | None = None
    error: bool = False

    def __str__(self) -> str:
        return f"{'error' if self.error else 'warning'}: task {self.task}: {self.message}"


def closest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate closest to `name`, or None when none is similar enough.

    A candidate equal up to `-`/`_` and case wins; otherwise the highest `difflib` similarity
    to the candidate or to one of its `-`/`_`-separated words (`blurr` → `gaussian-blur`).
    """
    candidates = sorted(set(candidates))
    normal = _normal(name)
    for candidate in candidates:
        if _normal(candidate) == normal:
            return candidate
    best, best_score = None, (cutoff, 0.0)
    for candidate in candidates:
        whole = difflib.SequenceMatcher(None, normal, _normal(candidate)).ratio()
        words = [difflib.SequenceMatcher(None, normal, word).ratio() for word in _normal(candidate).split("-")]
        score = (max(whole, *words), whole)  # on a tie, the more similar whole name wins
        if score > best_score or (score == best_score and best is None):
            best, best_score = candidate, score
    return best


def _normal(name: str) -> str:
    return name.replace("_", "-").lower()


def _hint(name: str, suggestion: str | None, what: str = "name") -> str:
    if suggestion is None:
        return ""
    if _normal(suggestion) == _normal(name) and what != "name":
        return f" (the {what} is '{suggestion}', not '{name}')"
    return f" (did you mean '{suggestion}'?)"


def spec_key_findings(task: str, keys: Iterable[str], known: Collection[str] = KNOWN_SPEC_KEYS) -> list[Finding]:
    """A warning for every key of a task's specification that repype does not know."""
    findings = []
    for key in sorted(set(keys) - set(known), key=str):
        suggestion = closest(str(key), known)
        message = f"unknown spec key '{key}'{_hint(str(key), suggestion)}"
        findings.append(Finding(task, "spec-key", str(key), message, suggestion))
    return findings


def config_section_findings(task: str, sections: Iterable[str], stage_ids: Sequence[str]) -> list[Finding]:
    """A warning for every top-level config section that names no stage of the pipeline."""
    findings = []
    for section in sorted(set(sections) - set(stage_ids), key=str):
        suggestion = closest(str(section), stage_ids)
        hint = _hint(str(section), suggestion, what="stage id")
        message = f"config section '{section}' names no stage of the pipeline{hint}"
        findings.append(Finding(task, "config-section", str(section), message, suggestion))
    return findings


def input_ids_findings(task: str, input_ids: Sequence[Any]) -> list[Finding]:
    """An error when a runnable task's input ids are empty."""
    if input_ids:
        return []
    message = "runnable, but it has no input ids (spec key 'input_ids')"
    return [Finding(task, "input-ids", "input_ids", message, error=True)]


def unread_hyperparameters(section: Mapping[str, Any], reads: Collection[str], prefix: str = "") -> list[str]:
    """Paths of the leaves of `section` that are not in `reads`, sorted.

    A sub-section that was read as a whole, with none of its own keys read, counts as read
    entirely (it was probably handed on as a dict).
    """
    unread = []
    for key, value in section.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            deeper = any(read.startswith(path + "/") for read in reads)
            if path in reads and not deeper:
                continue
            unread += unread_hyperparameters(value, reads, path + "/")
        elif path not in reads:
            unread.append(path)
    return sorted(unread)


InputReads = tuple[Mapping[str, Any], Mapping[str, Collection[str]]]
"""An input's adopted config entries, and the keys each stage read while it ran on the input."""


def unread_findings(task: str, runs: Iterable[InputReads]) -> list[Finding]:
    """Warnings for the hyperparameters a stage read on none of the inputs of the task.

    `runs` holds, for each input, its adopted config entries and the keys each stage read
    while it ran (stages reused from the store read nothing and are left out).
    """
    unread_by_stage: dict[str, set[str]] = {}
    reads_by_stage: dict[str, set[str]] = {}
    for entries, reads in runs:
        for stage_id, keys in reads.items():
            section = entries.get(stage_id)
            section = section if isinstance(section, Mapping) else {}
            factors = _automatic_factors(unread_hyperparameters(section, ()))
            unread = set(unread_hyperparameters(section, keys)) - set(factors)
            previous = unread_by_stage.get(stage_id)
            unread_by_stage[stage_id] = unread if previous is None else previous & unread
            reads_by_stage.setdefault(stage_id, set()).update(keys)
    findings = []
    for stage_id, unread in sorted(unread_by_stage.items()):
        for key in sorted(unread):
            suggestion = closest(key, reads_by_stage[stage_id] - {key})
            hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
            message = f"stage '{stage_id}' never read the hyperparameter '{key}'{hint}"
            findings.append(Finding(task, "unread-hyperparameter", f"{stage_id}/{key}", message, suggestion))
    return findings


def _automatic_factors(paths: Collection[str]) -> list[str]:
    """The user factors `.../AF_name` of automatic hyperparameters `.../name` (`Pipeline.configure` reads them)."""
    present = set(paths)
    factors = []
    for path in paths:
        parent, _, name = path.rpartition("/")
        if name.startswith("AF_") and "/".join(filter(None, [parent, name[3:]])) in present:
            factors.append(path)
    return factors


def task_findings(
    task: Any, pipeline: Any, config: Any, strict: bool = False, name: Callable[[Any], str] | None = None
) -> list[Finding]:
    """Every finding of a runnable task before it runs: errors when `strict` or `strict: true` in its spec.

    `task` is a `repype.task.Task`, `pipeline` and `config` what it runs with. A spec key or
    config section is reported for the task whose `task.yml` sets it (the task itself or an
    ancestor), named by `name(task)` (default: its path).
    """
    name = name or (lambda owner: str(owner.path))
    spec = task.full_spec
    known = (*KNOWN_SPEC_KEYS, *getattr(type(task), "extra_spec_keys", ()))
    findings = []
    for finding in spec_key_findings(name(task), spec.keys(), known):
        owner = _declaring(task, finding.key)
        findings.append(replace(finding, task=name(owner)))
    stage_ids = [stage.id for stage in pipeline.stages]
    for finding in config_section_findings(name(task), config.entries.keys(), stage_ids):
        owner = _declaring(task, finding.key, within="config")
        findings.append(replace(finding, task=name(owner)))
    findings += input_ids_findings(name(task), task.input_ids)  # invalid ones raise ValueError naming the task
    if strict or spec.get("strict", False):
        findings = [replace(finding, error=True) for finding in findings]
    return findings


def batch_findings(
    contexts: Iterable[Any], strict: bool = False, name: Callable[[Any], str] | None = None
) -> list[Finding]:
    """:func:`task_findings` of every run context (`repype.batch.RunContext`), in order, each finding once."""
    findings = (
        finding
        for context in contexts
        for finding in task_findings(context.task, context.pipeline, context.config, strict, name)
    )
    return list(dict.fromkeys(findings))


def _declaring(task: Any, key: str, within: str | None = None) -> Any:
    """The nearest of `task` and its ancestors whose own spec (or its section `within`) sets `key`.

    The task itself when none does (e.g. a config section from a `base_config_path` file).
    """
    for owner in (task, *task.parents):
        own = owner.spec if within is None else owner.spec.get(within)
        if isinstance(own, Mapping) and key in map(str, own):
            return owner
    return task


class ConfigurationError(ValueError):
    """Tasks' configurations have errors (see :func:`report`): nothing may run."""


def report(findings: Iterable[Finding], stream: IO[str]) -> None:
    """Prints each warning on one line of `stream`; raises :class:`ConfigurationError` listing the errors, if any.

    The error's text holds one line per error (the command line prints it after `repype: `).
    """
    errors = []
    for finding in findings:
        if finding.error:
            errors.append(str(finding))
        else:
            print(f"repype: {finding}", file=stream)
    if errors:
        raise ConfigurationError("\nrepype: ".join(errors))
