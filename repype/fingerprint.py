"""Code fingerprints: digests of functions, and of the user code and installed packages they reach.

A function's fingerprint is a digest of its syntax tree (comments, formatting and docstrings do
not count), or of its bytecode when no source is available. :func:`reach` follows what a set of
functions reads from their globals and closures — functions, classes, constants, module
attributes — transitively through the user's own code. Code of the standard library is not
followed and not recorded; code of installed distributions (anything under a `site-packages`
or `dist-packages` directory, and repype itself) is not followed either but identified by
distribution name and version. Everything here is identical across processes and
`PYTHONHASHSEED`s: no memory addresses, no set order.
"""

from __future__ import annotations

import ast
import dis
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import pathlib
import sys
import sysconfig
import textwrap
import types
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from repype.canonical import canonical_json

FRAMEWORK = "repype"
"""The framework's own modules count as an installed distribution, even in an editable install."""

STDLIB = None
"""The origin of standard-library (and built-in) code: neither followed nor recorded."""

USER = ""
"""The origin of user code: followed and fingerprinted."""


@dataclass
class Reach:
    """What a set of functions reaches.

    `code` maps a qualified name (`module.qualname`, `module.NAME` for constants) to the
    fingerprint of a user function, class or constant; `distributions` maps a distribution
    name to its version (`"unknown"` without metadata).
    """

    code: dict[str, str] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)


def code_fingerprint(function: types.FunctionType) -> str:
    """Digest of a function's code, stable across processes and formatting (computed once per function object).

    `ast:<sha1>` of the syntax tree without docstrings when the source is available, else
    `code:<sha1>` of the bytecode with its names, constants and default argument values.
    """
    return _facts(function).fingerprint


def reach(
    roots: Iterable[types.FunctionType],
    values: Mapping[str, Any] = {},
    exclude: Iterable[Any] = (),
    home: str | None = None,
) -> Reach:
    """The user code and distributions reached from the functions `roots` and the named `values`.

    The roots themselves are not entries of the result (their callers fingerprint them);
    `values` (e.g. class attributes that are not plain data) are entries under their names;
    objects in `exclude` (e.g. the classes whose methods the roots are) are not followed.
    Names of the module `home` appear without the module name, so that renaming the module
    of a stage changes nothing.
    """
    walker = _Walker(exclude, home)
    for function in roots:
        walker.references(function)
    for name in sorted(values):
        walker.value(name, values[name], frozenset())
    return Reach(dict(sorted(walker.code.items())), dict(sorted(walker.distributions.items())))


def origin(module_name: str | None, file: str | None) -> str | None:
    """Where code of module `module_name` (defined in `file`) comes from.

    :data:`USER` for the user's own code (including editable installs and code without a
    module, such as `exec`'d source), :data:`STDLIB` for the standard library and built-ins,
    otherwise the top-level package name of an installed distribution.
    """
    return _origin(module_name or "", os.fspath(file) if file else "")


def distribution_versions(top_level: str) -> dict[str, str]:
    """The installed distributions providing the top-level package `top_level`, with their versions."""
    names = _packages_distributions().get(top_level) or [top_level]
    return {name: _version(name) for name in names}


# --- per-function facts (cached) --------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    fingerprint: str
    globals: tuple[str, ...]  # names loaded from the globals, sorted
    names: frozenset[str]  # every name of the code, attributes included (for `module.attribute`)


_FACTS: weakref.WeakKeyDictionary[types.FunctionType, _Facts] = weakref.WeakKeyDictionary()
"""Facts by function object: reading and parsing the source of a function costs milliseconds."""


def _facts(function: types.FunctionType) -> _Facts:
    facts = _FACTS.get(function)
    if facts is None:
        global_names: set[str] = set()
        names: set[str] = set()
        _collect_names(function.__code__, global_names, names)
        facts = _Facts(_compute_fingerprint(function), tuple(sorted(global_names)), frozenset(names))
        _FACTS[function] = facts
    return facts


def _collect_names(code: types.CodeType, global_names: set[str], names: set[str]) -> None:
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            global_names.add(instruction.argval)
    names.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # comprehensions, lambdas, nested functions
            _collect_names(const, global_names, names)


def _compute_fingerprint(function: types.FunctionType) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        defaults = [
            _constant_text(function.__defaults__),
            _constant_text(sorted((function.__kwdefaults__ or {}).items())),
        ]
        text = "|".join([_bytecode_text(function.__code__), *defaults])
        return "code:" + hashlib.sha1(text.encode("utf-8")).hexdigest()
    for node in ast.walk(tree):
        _strip_docstring(node)
    return "ast:" + hashlib.sha1(ast.dump(tree, include_attributes=False).encode("utf-8")).hexdigest()


def _strip_docstring(node: ast.AST) -> None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = node.body[1:] or [ast.Pass()]


def _bytecode_text(code: types.CodeType) -> str:
    """Bytecode, names and constants (nested code included), without addresses or line numbers."""
    constants = [_constant_text(const) for const in code.co_consts]
    parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames), repr(constants), str(code.co_argcount)]
    return "|".join(parts)


def _constant_text(const: Any) -> str:
    if isinstance(const, types.CodeType):
        return _bytecode_text(const)
    if isinstance(const, frozenset):  # iteration order depends on hash randomisation
        return "frozenset:" + repr(sorted(_constant_text(item) for item in const))
    return f"{type(const).__name__}:{const!r}"


# --- where code comes from --------------------------------------------------------------------


@functools.cache
def _origin(module_name: str, file: str) -> str | None:
    top = module_name.partition(".")[0]
    if top == FRAMEWORK:
        return FRAMEWORK
    if file:
        parts = pathlib.PurePath(file).parts
        if "site-packages" in parts or "dist-packages" in parts:
            return top or USER
        if any(_is_below(file, directory) for directory in _stdlib_directories()):
            return STDLIB
        return USER
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return STDLIB
    if top and top in _packages_distributions():
        return top
    return USER


def _is_below(file: str, directory: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(file), directory]) == directory
    except ValueError:  # on different drives
        return False


@functools.lru_cache(maxsize=1)
def _stdlib_directories() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(sorted({os.path.abspath(paths[name]) for name in ("stdlib", "platstdlib") if name in paths}))


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _module_origin(module: types.ModuleType) -> str | None:
    return origin(module.__name__, getattr(module, "__file__", None))


def _module_name(cls: type) -> str | None:
    return getattr(cls, "__module__", None)  # a class made by type() in exec'd code may have none


def _function_origin(function: types.FunctionType) -> str | None:
    namespace = function.__globals__
    return origin(namespace.get("__name__"), namespace.get("__file__"))


def _class_origin(cls: type) -> str | None:
    module = sys.modules.get(_module_name(cls) or "")
    found: Any = module
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if module is None:
        return USER
    where = _module_origin(module)
    if found is not cls and where is STDLIB:  # not where it says it is: defined in exec'd code
        return USER
    return where


# --- the walk ---------------------------------------------------------------------------------


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


class _Walker:
    """Collects the entries and distributions reached from functions, classes and values."""

    def __init__(self, exclude: Iterable[Any], home: str | None) -> None:
        self.home = home
        self.code: dict[str, str] = {}
        self.distributions: dict[str, str] = {}
        self._seen: set[int] = {id(item) for item in exclude}
        self._keep = list(exclude)  # the ids in _seen stay valid while the walk runs

    def _qualified_name(self, module_name: str | None, name: str) -> str:
        if module_name == self.home:
            return name
        return f"{module_name or '<exec>'}.{name}"

    def _first_visit(self, item: Any) -> bool:
        if id(item) in self._seen:
            return False
        self._seen.add(id(item))
        self._keep.append(item)
        return True

    def _entry(self, name: str, text: str) -> None:
        key, count = name, 1
        while key in self.code and self.code[key] != text:  # same name, different object (exec'd code)
            count += 1
            key = f"{name}#{count}"
        self.code[key] = text

    def _distribution(self, top_level: str) -> None:
        self.distributions.update(distribution_versions(top_level))

    def references(self, function: types.FunctionType) -> None:
        """Follows what `function` reads: globals, closure cells, default argument values."""
        facts = _facts(function)
        namespace = function.__globals__
        owner = self._qualified_name(namespace.get("__name__"), function.__qualname__)
        for name in facts.globals:
            if name in namespace:
                qualified = self._qualified_name(namespace.get("__name__"), name)
                if _is_mutable_data(namespace[name]):
                    self._mutable_global(qualified, namespace, name, facts.names)
                else:
                    self.value(qualified, namespace[name], facts.names)
        for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: the variable is not assigned yet
                continue
            self.value(f"{owner}.<{name}>", contents, facts.names)
        defaults = [*(function.__defaults__ or ()), *sorted((function.__kwdefaults__ or {}).items())]
        for index, default in enumerate(defaults):
            if default is not None:  # the commonest default; literal in the code anyway
                self.value(f"{owner}.<default {index}>", default, facts.names)

    def value(self, name: str, value: Any, names: frozenset[str]) -> None:
        """Records `value`, reached under `name` from code that mentions `names`."""
        if type(value) in _PLAIN:
            self._entry(name, _value_text(value))
        elif isinstance(value, types.ModuleType):
            self._module(value, names)
        elif isinstance(value, types.FunctionType):
            self._function(value)
        elif isinstance(value, type):
            self._class(value)
        elif isinstance(value, types.MethodType):
            self.value(name, value.__func__, names)
        elif isinstance(value, functools.partial):
            self.value(f"{name}.<partial>", [value.func, value.args, value.keywords], names)
        elif callable(value) and "__wrapped__" in getattr(value, "__dict__", {}):  # lru_cache, wraps
            if self._first_visit(value):
                self.value(name, value.__dict__["__wrapped__"], names)
        elif isinstance(value, types.BuiltinFunctionType):
            self._external(getattr(value, "__module__", None))
        else:
            self._data(name, value, names)

    def _mutable_global(self, qualified: str, namespace: dict[str, Any], name: str, names: frozenset[str]) -> None:
        """A module-level list, dict, set or array counts by the statements that assign it in the source.

        Its value at the time of hashing may differ run to run (a cache, a counter), so the value
        does not count; the code it holds (a table of functions) is followed.
        """
        source = _assignment_source(namespace.get("__file__"), name)
        if source is None:  # no source (or assigned elsewhere): its value counts, as for other data
            self.value(qualified, namespace[name], names)
            return
        self._entry(qualified, "assigned:" + hashlib.sha1(source.encode("utf-8")).hexdigest())
        for item in _code_items(namespace[name]):
            self.value(f"{qualified}.<item>", item, names)

    def _module(self, module: types.ModuleType, names: frozenset[str]) -> None:
        where = _module_origin(module)
        if where is STDLIB:
            return
        if where != USER:
            self._distribution(where)
            return
        namespace = vars(module)
        for attribute in sorted(names):  # `module.attribute`: only attributes the code names
            if attribute in namespace and not attribute.startswith("__"):
                self.value(self._qualified_name(module.__name__, attribute), namespace[attribute], names)

    def _follows(self, item: Any, where: str | None) -> bool:
        """Whether `item` (from `where`) is user code seen for the first time; records a distribution."""
        if where is STDLIB or not self._first_visit(item):
            return False
        if where != USER:
            self._distribution(where)
            return False
        return True

    def _function(self, function: types.FunctionType) -> None:
        if not self._follows(function, _function_origin(function)):
            return
        name = self._qualified_name(function.__globals__.get("__name__"), function.__qualname__)
        self._entry(name, code_fingerprint(function))
        self.references(function)

    def _class(self, cls: type) -> None:
        if not self._follows(cls, _class_origin(cls)):
            return
        description = self._class_description(cls)
        self._entry(self._qualified_name(_module_name(cls), cls.__qualname__), json.dumps(description, sort_keys=True))
        for base in cls.__bases__:
            self._class(base)

    def _class_description(self, cls: type) -> dict[str, Any]:
        """The methods (fingerprints) and plain attributes defined by `cls` itself, its bases by name.

        What the methods and the other class attributes reach is walked as well.
        """
        methods: dict[str, str] = {}
        attributes: dict[str, Any] = {}
        for name, member in vars(cls).items():
            function = function_of(member)
            if function is not None:
                methods[name] = code_fingerprint(function)
                self.references(function)
            elif not name.startswith("__"):
                jsonable = as_json(member)
                if jsonable is not NOT_JSON:
                    attributes[name] = jsonable
                else:
                    self.value(
                        self._qualified_name(_module_name(cls), f"{cls.__qualname__}.{name}"), member, frozenset()
                    )
        bases = [self._qualified_name(_module_name(base), base.__qualname__) for base in cls.__bases__]
        return {"methods": methods, "attributes": attributes, "bases": bases}

    def _external(self, module_name: str | None) -> None:
        where = origin(module_name, None) if module_name else STDLIB
        if where not in (STDLIB, USER):
            self._distribution(where)

    def _data(self, name: str, value: Any, names: frozenset[str]) -> None:
        try:
            self._entry(name, _value_text(value))
            return
        except TypeError:
            pass
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                self.value(f"{name}[{index}]", item, names)
        elif isinstance(value, Mapping):
            for key in sorted(value, key=repr):
                self.value(f"{name}[{key!r}]", value[key], names)
        elif isinstance(value, set | frozenset):
            for item in sorted(value, key=repr):
                self.value(f"{name}{{}}", item, names)
        else:  # an instance: its class counts, not its state
            self._entry(name, "instance:" + self._qualified_name(_module_name(type(value)), type(value).__qualname__))
            self._class(type(value))


def _is_mutable_data(value: Any) -> bool:
    return isinstance(value, list | dict | set | bytearray) or (
        hasattr(value, "dtype") and hasattr(value, "flags") and getattr(value.flags, "writeable", False)
    )


def _code_items(value: Any) -> Iterable[Any]:
    """The functions, classes and modules held in a container, at any depth."""
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | set) else ()
    for item in items:
        if isinstance(item, types.FunctionType | types.MethodType | types.ModuleType | type | functools.partial):
            yield item
        elif isinstance(item, list | dict | set | tuple):
            yield from _code_items(list(item) if isinstance(item, tuple) else item)


_ASSIGNMENTS: dict[tuple[str, float], dict[str, str]] = {}
"""The module-level assignment statements of a source file, by (path, modification time)."""


def _assignment_source(file: str | None, name: str) -> str | None:
    """The syntax tree (as text) of the module-level statements of `file` that assign `name`, or None."""
    if not file or not file.endswith(".py"):
        return None
    try:
        cache_key = (file, os.path.getmtime(file))
    except OSError:
        return None
    if cache_key not in _ASSIGNMENTS:
        try:
            tree = ast.parse(pathlib.Path(file).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return None
        statements: dict[str, list[str]] = {}
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                for target in targets:
                    if isinstance(target, ast.Name):
                        statements.setdefault(target.id, []).append(ast.dump(node, include_attributes=False))
        _ASSIGNMENTS[cache_key] = {key: "\n".join(dumps) for key, dumps in statements.items()}
    return _ASSIGNMENTS[cache_key].get(name)


NOT_JSON = object()
"""What :func:`as_json` returns for a value that is not JSON-able."""


def as_json(value: Any) -> Any:
    """`value` as plain JSON data (sets sorted, tuples as lists), or :data:`NOT_JSON`."""
    if isinstance(value, set | frozenset):
        value = sorted(value, key=repr)
    elif isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return NOT_JSON
    return value


def function_of(member: Any) -> types.FunctionType | None:
    """The function behind a class member (plain, static or class method, property getter, cached property)."""
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    elif isinstance(member, functools.cached_property):
        member = member.func
    return member if isinstance(member, types.FunctionType) else None


def _value_text(value: Any) -> str:
    """A stable text for a data value; raises TypeError when it has none."""
    if hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tobytes"):  # arrays: by content
        digest = xxhash.xxh3_128(value.tobytes()).hexdigest()
        return f"array:{value.dtype.str}:{list(value.shape)}:{digest}"
    if isinstance(value, complex):
        return f"complex:{value!r}"
    return "value:" + canonical_json(value)
