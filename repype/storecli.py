"""`repype store ...`: inspect and maintain a store from the command line.

``repype store CMD URL`` runs one maintenance operation (`ls`, `du`, `verify`, `gc`) on the
store at a path or fsspec URL. Exit status 0 on success, 1 on failure or damage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import repype.store
from repype.store import StoreError


def store_parser() -> argparse.ArgumentParser:
    """The argument parser of `repype store ...`."""
    parser = argparse.ArgumentParser(prog="repype store", description="Inspect and maintain a repype store.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("ls", "tasks, inputs, fields and sizes"),
        ("du", "bytes per task, unique vs shared, dedup ratio"),
        ("verify", "re-hash every value and check every reference (exit 1 on damage)"),
        ("gc", "delete what no task reaches (a dry run unless --yes)"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("url", help="store path or fsspec URL")
        command.add_argument(
            "-o",
            "--storage-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="fsspec storage option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000",
        )
        if name == "verify":
            command.add_argument("--repair", action="store_true", help="delete damaged values and their records")
        if name == "gc":
            command.add_argument("--grace", type=float, default=86400.0, help="spare what is younger (seconds)")
            command.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    return parser


def store_main(argv: Sequence[str]) -> int:
    """Run `repype store ...` with `argv` (after the word `store`)."""
    args = store_parser().parse_args(argv)
    writes = (args.command == "verify" and args.repair) or (args.command == "gc" and args.yes)
    try:
        options = parse_storage_options(args.storage_option)
        store = repype.store.open(args.url, storage_options=options or None, mode="a" if writes else "r")
        if args.command == "ls":
            report = store.ls()
        elif args.command == "du":
            report = store.du()
        elif args.command == "verify":
            report = store.verify(repair=args.repair)
        else:
            report = store.gc(grace=args.grace, dry_run=not args.yes)
    except (StoreError, ValueError) as error:
        print(f"repype store {args.command}: {error}", file=sys.stderr)
        return 1
    print(report.format())
    return 0 if report.ok or getattr(report, "repaired", False) else 1


def parse_storage_options(pairs: list[str]) -> dict:
    """`KEY=VALUE` pairs as a dict; values that parse as YAML scalars (numbers, booleans) are typed."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"storage option '{pair}' is not KEY=VALUE")
        options[key] = yaml.safe_load(value) if value else ""
    return options
