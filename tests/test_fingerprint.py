"""repype.fingerprint and `Stage.sha`: the user code a stage reaches, installed distributions by version."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
import yaml

from repype import fingerprint
from repype.batch import Batch
from repype.status import Status
from repype.store import keys

ROOT = pathlib.Path(__file__).resolve().parent.parent

STAGE_MODULE = textwrap.dedent(
    '''
    """Stages that call helpers."""

    import os

    import numpy as np

    from repype.stage import Stage

    SCALE = {scale}
    NAMES = frozenset({{"alpha", "beta", "gamma", "delta"}})


    def inner(x):
        return np.multiply(x, SCALE)


    def helper(x):
        # a comment
        return inner(x) {helper_op} 1


    def unrelated(x):
        return x - {unrelated}


    class Uses(Stage):
        inputs = ("x",)
        outputs = ("y",)

        def process(self, x, pipeline, config, status=None):
            os.path.join("a", "b")
            return {{"y": helper(x) + int("alpha" in NAMES)}}
    '''
)
BASE = dict(scale="2", helper_op="+", unrelated="1")


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Writes and imports modules from a temporary directory: `modules(name, source)` → the fresh module."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def load(name: str, source: str):
        for other in written:  # modules import each other: re-import all of them
            sys.modules.pop(other, None)
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield load
    for name in written:
        sys.modules.pop(name, None)


def uses_sha(modules, **changes) -> str:
    source = STAGE_MODULE.format(**{**BASE, **changes})
    return modules(f"uses_{uuid.uuid4().hex}", source).Uses().sha


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(dict(helper_op="-"), id="helper-body"),
        pytest.param(dict(scale="3"), id="constant-a-helper-reads"),
        pytest.param(dict(scale="2.0"), id="constant-type"),
    ],
)
def test_sha_changes_with_reached_code(modules, changes):
    assert uses_sha(modules, **changes) != uses_sha(modules)


def test_sha_changes_with_a_helper_of_a_helper(modules):
    base = uses_sha(modules)
    edited = STAGE_MODULE.format(**BASE).replace("np.multiply(x, SCALE)", "np.multiply(x, SCALE) * 2")
    assert modules(f"uses_{uuid.uuid4().hex}", edited).Uses().sha != base


def test_sha_ignores_formatting_comments_docstrings_and_unreached_code(modules):
    base = uses_sha(modules)
    source = STAGE_MODULE.format(**BASE)
    reformatted = source.replace("# a comment", "# another comment\n    # and more").replace(
        "return inner(x) + 1", "return (\n        inner( x )\n        + 1\n    )"
    )
    documented = source.replace("def inner(x):\n", 'def inner(x):\n    """Scales x."""\n')
    assert modules(f"uses_{uuid.uuid4().hex}", reformatted).Uses().sha == base
    assert modules(f"uses_{uuid.uuid4().hex}", documented).Uses().sha == base
    assert uses_sha(modules, unrelated="7") == base


def test_signature_lists_the_closure_and_distributions_not_the_standard_library(modules):
    stage = modules(f"uses_{uuid.uuid4().hex}", STAGE_MODULE.format(**BASE)).Uses()
    signature = stage.signature
    assert set(signature["closure"]) == {"helper", "inner", "SCALE", "NAMES"}
    assert signature["closure"]["SCALE"] == "value:2"
    assert signature["distributions"] == {"numpy": np.__version__}  # `inner` calls numpy
    assert json.loads(json.dumps(signature)) == signature


def test_helpers_in_another_user_module_count_by_the_attributes_used(modules):
    helpers_name = f"helpers_{uuid.uuid4().hex}"
    helpers = "def used(x):\n    return x + {used}\n\n\ndef other(x):\n    return x + {other}\n"
    stage = textwrap.dedent(
        f"""
        import {helpers_name} as helpers
        from repype.stage import Stage

        class Calls(Stage):
            def process(self, pipeline, config, status=None):
                return {{"y": helpers.used(1)}}
        """
    )

    def sha(used: int, other: int) -> str:
        modules(helpers_name, helpers.format(used=used, other=other))
        return modules(f"calls_{uuid.uuid4().hex}", stage).Calls().sha

    base = sha(1, 1)
    assert sha(2, 1) != base
    assert sha(1, 2) == base


def test_decorated_and_recursive_helpers_are_followed(modules):
    template = textwrap.dedent(
        """
        import functools
        from repype.stage import Stage

        def logged(function):
            @functools.wraps(function)
            def wrapper(*args):
                return function(*args)
            return wrapper

        @logged
        def decorated(x):
            return x + {value}

        def even(n):
            return n == 0 or odd(n - 1)

        def odd(n):
            return n != 0 and even(n - {step})

        @functools.lru_cache
        def cached(x):
            return x * {factor}

        class Calls(Stage):
            def process(self, pipeline, config, status=None):
                return {{"y": decorated(1) + even(4) + cached(2)}}
        """
    )
    base = dict(value=1, step=1, factor=3)

    def sha(**changes) -> str:
        return modules(f"calls_{uuid.uuid4().hex}", template.format(**{**base, **changes})).Calls().sha

    first = sha()
    assert sha() == first
    assert sha(value=2) != first  # reached through the wrapper's closure cell
    assert sha(step=2) != first  # mutual recursion terminates and is covered
    assert sha(factor=4) != first  # through lru_cache's __wrapped__


def test_classes_instances_and_default_values_are_followed(modules):
    template = textwrap.dedent(
        """
        from repype.stage import Stage

        LIMIT = {limit}

        class Model:
            def predict(self, x):
                return x * {weight}

        MODEL = Model()

        def clip(x, limit=LIMIT):
            return min(x, limit)

        class Calls(Stage):
            def process(self, pipeline, config, status=None):
                return {{"y": clip(MODEL.predict(2))}}
        """
    )
    base = dict(limit=10, weight=2)

    def sha(**changes) -> str:
        return modules(f"calls_{uuid.uuid4().hex}", template.format(**{**base, **changes})).Calls().sha

    first = sha()
    assert sha(weight=3) != first  # the method of the class of a module-level instance
    assert sha(limit=11) != first  # a default value read from a global


def test_redefining_a_helper_in_a_notebook_changes_the_sha_of_an_existing_stage():
    namespace: dict = {}
    exec(compile(STAGE_MODULE.format(**BASE), "<cell 1>", "exec"), namespace)
    stage = namespace["Uses"]()
    before = stage.sha
    exec(compile("def inner(x):\n    return x * SCALE * 10\n", "<cell 2>", "exec"), namespace)
    assert stage.sha != before
    assert stage.signature["closure"]["<exec>.inner"].startswith("code:")  # no source: bytecode


def test_code_fingerprints_are_computed_once_per_function(modules, monkeypatch):
    stage = modules(f"uses_{uuid.uuid4().hex}", STAGE_MODULE.format(**BASE)).Uses()
    calls = []
    original = fingerprint._compute_fingerprint
    monkeypatch.setattr(
        fingerprint, "_compute_fingerprint", lambda function: calls.append(function) or original(function)
    )
    first = stage.sha
    assert len(calls) == 3  # process, helper, inner
    assert stage.sha == first
    assert type(stage)().sha == first
    assert len(calls) == 3


def test_origin_of_modules():
    assert fingerprint.origin("os", os.__file__) is fingerprint.STDLIB
    assert fingerprint.origin("math", None) is fingerprint.STDLIB  # built in, no file
    assert fingerprint.origin("numpy", np.__file__) == "numpy"
    assert fingerprint.origin("repype.stage", str(ROOT / "repype" / "stage.py")) == "repype"  # even editable
    assert fingerprint.origin("mine", "/home/user/project/mine.py") == fingerprint.USER
    assert fingerprint.origin(None, None) == fingerprint.USER  # exec'd code


# --- installed distributions ------------------------------------------------------------------


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """`install(version, body)` writes the package `fakedist_pkg` into a site-packages directory."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(version: str, body: str) -> None:
        for info in site.glob("*.dist-info"):
            shutil.rmtree(info)
        (site / "fakedist_pkg").mkdir(exist_ok=True)
        (site / "fakedist_pkg" / "__init__.py").write_text(f"def transform(x):\n    return {body}\n")
        info = site / f"fakedist-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakedist\nVersion: {version}\n")
        (info / "top_level.txt").write_text("fakedist_pkg\n")
        sys.modules.pop("fakedist_pkg", None)
        for cached in (fingerprint._packages_distributions, fingerprint._version):
            cached.cache_clear()
        importlib.invalidate_caches()

    yield install
    sys.modules.pop("fakedist_pkg", None)
    for cached in (fingerprint._packages_distributions, fingerprint._version):
        cached.cache_clear()


def test_installed_code_counts_by_version_not_by_content(modules, fake_distribution):
    stage = textwrap.dedent(
        """
        from fakedist_pkg import transform
        from repype.stage import Stage

        class Calls(Stage):
            def process(self, pipeline, config, status=None):
                return {"y": transform(1)}
        """
    )

    def signature(version: str, body: str) -> dict:
        fake_distribution(version, body)
        return modules(f"calls_{uuid.uuid4().hex}", stage).Calls().signature

    base = signature("1.0", "x * 2")
    assert base["distributions"] == {"fakedist": "1.0"}
    assert base["closure"] == {}
    assert signature("1.0", "x * 3") == base  # a change inside the installed package is not seen
    assert signature("1.1", "x * 2")["distributions"] == {"fakedist": "1.1"}  # its version is


def test_key_document_records_distributions():
    inputs = {"x": "a" * 32}
    document = keys.key_document("f" * 40, {}, inputs, distributions={"numpy": "2.0"})
    assert document["schema"] == 2
    assert document["distributions"] == {"numpy": "2.0"}
    older = keys.stage_key("f" * 40, {}, inputs, distributions={"numpy": "1.26"})
    assert keys.stage_key("f" * 40, {}, inputs, distributions={"numpy": "2.0"}) != older


# --- across processes -------------------------------------------------------------------------


def test_shas_with_helpers_identical_across_processes_and_hash_seeds(tmp_path):
    name = f"uses_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(STAGE_MODULE.format(**BASE))
    code = f"import {name} as m; print(m.Uses().sha)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, sys.path)])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**env, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "1", "4242")
    ]
    shas = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        shas.append(stdout.strip())
    assert len(set(shas)) == 1
    sys.path.insert(0, str(tmp_path))
    try:
        assert importlib.import_module(name).Uses().sha == shas[0]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


# --- the bundled example ----------------------------------------------------------------------


def test_editing_count_components_reruns_measure_only(tmp_path, monkeypatch):
    root = tmp_path / "blobs"
    shutil.copytree(ROOT / "examples" / "blobs", root, ignore=shutil.ignore_patterns(".repype", "__pycache__"))
    spec = yaml.safe_load((root / "task.yml").read_text())
    spec["input_ids"] = "1-2"
    spec["config"]["synthesize"] = {"size": 40, "blobs": 4}
    (root / "task.yml").write_text(yaml.safe_dump(spec))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "blobstages", raising=False)

    def run_tree() -> list[dict]:
        sys.modules.pop("blobstages", None)
        importlib.invalidate_caches()
        batch = Batch()
        batch.load(root)
        events: list[dict] = []
        status = Status(path=tmp_path / "journal.jsonl")
        status.subscribe(events.append)
        for context in batch.pending:
            context.run(status=status)
        return [event for event in events if event.get("info") == "processed"]

    first = run_tree()
    assert first and sum(event["executed"] for event in first) > 0
    assert run_tree() == []  # nothing pending

    stages = root / "blobstages.py"
    source = stages.read_text()
    edited = source.replace("return len({find(label) for label in parent})", "return len({find(n) for n in parent})")
    assert edited != source
    stages.write_text(edited)
    sys.modules.pop("blobstages", None)
    batch = Batch()
    batch.load(root)
    assert [context.pending for context in batch.pending] == ["pipeline"] * 6  # measure's sha changed
    second = run_tree()
    assert len(second) == 6 * 2  # every task is pending again, every input runs
    for event in second:
        assert event["reused_stages"] == ["synthesize", "smooth", "segment"]
        assert event["executed"] == 1  # measure
    sys.modules.pop("blobstages", None)


MUTABLE_MODULE = """
from repype.stage import Stage

COUNTS = {{}}
LIMITS = {limits}


def double(x):
    return x * {factor}


TABLE = {{"double": double}}


class Counting(Stage):
    outputs = ("y",)

    def process(self, pipeline, config, status=None):
        COUNTS["runs"] = COUNTS.get("runs", 0) + 1
        return {{"y": TABLE["double"](LIMITS["high"])}}
"""


def counting_module(modules, limits='{"high": 3}', factor="2"):
    return modules(f"counting_{uuid.uuid4().hex}", MUTABLE_MODULE.format(limits=limits, factor=factor))


def test_a_module_level_cache_a_stage_updates_does_not_change_its_sha(modules):
    module = counting_module(modules)
    before = module.Counting().sha
    module.Counting().process(None, {})
    module.COUNTS["other"] = [1, 2, 3]
    assert module.Counting().sha == before


def test_editing_a_module_level_mutable_value_or_a_function_it_holds_changes_the_sha(modules):
    base = counting_module(modules).Counting().sha
    assert counting_module(modules).Counting().sha == base
    assert counting_module(modules, limits='{"high": 4}').Counting().sha != base
    assert counting_module(modules, factor="3").Counting().sha != base
