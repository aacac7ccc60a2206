"""Reading docs/reliability.md: the catalogue of faults and the messages users see, checked by the tests."""

from __future__ import annotations

import pathlib
import re

CATALOGUE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


def catalogue(section: str) -> dict[str, str]:
    """Fault id → the first message in backticks of its row, for the rows under the `## section` heading."""
    rows: dict[str, str] = {}
    current = None
    for line in CATALOGUE.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if current == section and len(cells) == 4 and cells[0] != "id" and re.fullmatch(r"[a-z][a-z0-9-]*", cells[0]):
            rows[cells[0]] = re.search(r"`([^`]+)`", cells[2]).group(1)
    return rows


def as_pattern(message: str) -> str:
    """The documented message as a regex: `<placeholder>` is any word, `...` is anything."""
    pattern = re.escape(message)
    pattern = re.sub(r"<[a-z]+>", r"\\S+", pattern)
    return pattern.replace(re.escape("..."), ".*")
