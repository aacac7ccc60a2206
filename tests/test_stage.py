"""Tests for repype.stage: stage ids, running stages, callbacks and implementation signatures."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repype.stage
import repype.status
from repype.stage import Stage, suggest_stage_id

# --- suggest_stage_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("TheGreatMapperStage", "the-great-mapper"),
        ("TheGreat123PCMapper", "the-great-123-pc-mapper"),
        ("Stage2", "stage-2"),
        ("ABCStage", "abc"),
        ("Foo_Bar", "foo-bar"),
        ("Stage", "stage"),
        ("FooStage2", "foo-stage-2"),
        ("fooBar", "foo-bar"),
        ("HTTPServer", "http-server"),
        ("_Private", "private"),
    ],
)
def test_suggest_stage_id_examples(class_name, expected):
    assert suggest_stage_id(class_name) == expected


@pytest.mark.parametrize("class_name", ["", "1Foo", "Foo-Bar", "Foo Bar", "Foo.Bar", "_", "__", "Foo+"])
def test_suggest_stage_id_rejects_invalid_names(class_name):
    with pytest.raises(AssertionError):
        suggest_stage_id(class_name)


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_capitalised = st.builds(
    lambda head, tail: head + tail, st.sampled_from(_UPPER), st.text(_LOWER, min_size=1, max_size=5)
).filter(lambda word: word != "Stage")
_all_caps = st.text(_UPPER, min_size=1, max_size=4)
_digits = st.text("0123456789", min_size=1, max_size=3)
_token = st.one_of(
    st.tuples(st.just("word"), _capitalised), st.tuples(st.just("caps"), _all_caps), st.tuples(st.just("num"), _digits)
)


def _expected_tokens(tokens: list[tuple[str, str]]) -> list[str]:
    """Reference model: adjacent all-caps runs merge, adjacent digit runs merge."""
    merged: list[tuple[str, str]] = []
    for kind, text in tokens:
        if merged and kind in ("caps", "num") and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return [text for _, text in merged]


@settings(max_examples=50, deadline=None)
@given(tokens=st.lists(_token, min_size=1, max_size=6), append_stage=st.booleans())
def test_suggest_stage_id_property(tokens, append_stage):
    if tokens[0][0] == "num":  # a class name cannot start with a digit
        tokens = [("word", "Lead"), *tokens]
    name = "".join(text for _, text in tokens) + ("Stage" if append_stage else "")
    result = suggest_stage_id(name)

    assert result == result.lower()
    parts = result.split("-")
    assert all(parts), result
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", result)
    expected = [token.lower() for token in _expected_tokens(tokens)]
    assert parts == expected
    if append_stage:
        assert not result.endswith("-stage")
        assert result != "stage"


@settings(max_examples=50, deadline=None)
@given(name=st.text(_UPPER + _LOWER + "0123456789_- .+", max_size=8))
def test_suggest_stage_id_invalid_or_valid(name):
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and re.search(r"[A-Za-z0-9]", name):
        result = suggest_stage_id(name)
        assert result and result == result.lower() and "--" not in result
    else:
        with pytest.raises(AssertionError):
            suggest_stage_id(name)


# --- stage instances ----------------------------------------------------------------------------


class Double(Stage):
    inputs = ["x"]
    outputs = ("y",)

    def process(self, pipeline, config, status=None, x=None):
        return {"y": 2 * x}


class CustomIdStage(Stage):
    id = "my-custom-id"


class ConsumingStage(Stage):
    inputs = {"a"}
    consumes = ["b"]
    outputs = {"c"}

    def process(self, pipeline, config, status=None, **inputs):
        return {"c": inputs["a"] + inputs["b"]}


def test_default_id_and_field_sets():
    stage = Double()
    assert stage.id == "double"
    assert stage.inputs == frozenset({"x"})
    assert stage.outputs == frozenset({"y"})
    assert stage.consumes == frozenset()
    for value in (stage.inputs, stage.outputs, stage.consumes):
        assert isinstance(value, frozenset)
    assert "double" in repr(stage)


def test_id_class_attribute_override():
    assert CustomIdStage().id == "my-custom-id"


def test_default_id_uses_suggest_stage_id():
    class TheGreatMapperStage(Stage):
        pass

    assert TheGreatMapperStage().id == "the-great-mapper"


def test_id_ending_with_plus_rejected():
    class Bad(Stage):
        id = "bad+"

    with pytest.raises(AssertionError, match=re.escape("bad+")):
        Bad()


def test_inputs_include_consumes():
    stage = ConsumingStage()
    assert stage.inputs == frozenset({"a", "b"})
    assert stage.consumes == frozenset({"b"})
    assert stage.outputs == frozenset({"c"})
    for value in (stage.inputs, stage.outputs, stage.consumes):
        assert isinstance(value, frozenset)


def test_base_process_not_implemented():
    with pytest.raises(NotImplementedError):
        Stage().process(None, {})

    class Nothing(Stage):
        inputs = ["x"]

    with pytest.raises(NotImplementedError, match="nothing"):
        Nothing().run(None, "i", {"x": 1}, {})


def test_run_updates_data_and_returns_seconds():
    data = {"x": 3, "other": "kept"}
    seconds = Double().run(None, "input-1", data, {})
    assert data == {"x": 3, "y": 6, "other": "kept"}
    assert isinstance(seconds, float)
    assert seconds >= 0


def test_run_measures_process_time():
    class Slow(Stage):
        outputs = ["z"]

        def process(self, pipeline, config, status=None):
            time.sleep(0.02)
            return {"z": 1}

    seconds = Slow().run(None, "i", {}, {})
    assert 0.015 <= seconds < 5


def test_run_passes_exactly_the_input_fields():
    received = []

    class Recorder(Stage):
        inputs = ["a", "b"]
        consumes = ["c"]
        outputs = ["d"]

        def process(self, pipeline, config, status=None, **inputs):
            received.append(dict(pipeline=pipeline, config=config, status=status, inputs=inputs))
            return {"d": 0}

    data = {"a": 1, "b": 2, "c": 3, "unrelated": 4, "input_id": "i"}
    config = {"param": 5}
    Recorder().run("the-pipeline", "i", data, config)
    assert received == [dict(pipeline="the-pipeline", config=config, status=None, inputs={"a": 1, "b": 2, "c": 3})]


def test_run_deletes_consumed_fields():
    data = {"a": 1, "b": 2, "keep": 0}
    ConsumingStage().run(None, "i", data, {})
    assert data == {"a": 1, "c": 3, "keep": 0}


def test_run_replaces_existing_output_field():
    data = {"x": 2, "y": "old"}
    Double().run(None, "i", data, {})
    assert data["y"] == 4


def test_run_missing_input_raises_key_error():
    with pytest.raises(KeyError, match="x"):
        Double().run(None, "i", {}, {})


@pytest.mark.parametrize(
    ("returned", "missing", "spurious"),
    [
        ({}, ["u", "v"], []),
        ({"u": 1}, ["v"], []),
        ({"u": 1, "v": 2, "w": 3}, [], ["w"]),
        ({"u": 1, "w": 3, "zz": 4}, ["v"], ["w", "zz"]),
    ],
)
def test_run_wrong_outputs(returned, missing, spurious):
    class WrongOutputs(Stage):
        id = "wrong-outputs-stage"
        outputs = ["u", "v"]

        def process(self, pipeline, config, status=None):
            return dict(returned)

    data = {"before": 0}
    ended = []
    stage = WrongOutputs()
    stage.add_callback("end", lambda **kw: ended.append(kw))
    with pytest.raises(AssertionError) as info:
        stage.run(None, "i", data, {})
    message = str(info.value)
    assert "wrong-outputs-stage" in message
    for name in missing + spurious:
        assert name in message
    assert repr(missing) in message
    assert repr(spurious) in message
    assert data == {"before": 0}
    assert ended == []


def test_run_non_dict_output_rejected():
    class ReturnsList(Stage):
        outputs = ["u"]

        def process(self, pipeline, config, status=None):
            return ["u"]

    with pytest.raises(AssertionError, match="returns-list"):
        ReturnsList().run(None, "i", {}, {})


class Counting(Stage):
    outputs = ["n"]
    calls = 0

    def process(self, pipeline, config, status=None):
        type(self).calls += 1
        return {"n": 1}


class DisabledByDefault(Counting):
    enabled_by_default = False


@pytest.mark.parametrize(
    ("cls", "config", "runs"),
    [
        (Counting, {}, True),
        (Counting, {"enabled": True}, True),
        (Counting, {"enabled": False}, False),
        (DisabledByDefault, {}, False),
        (DisabledByDefault, {"enabled": False}, False),
        (DisabledByDefault, {"enabled": True}, True),
    ],
)
def test_enabled(cls, config, runs, monkeypatch):
    monkeypatch.setattr(cls, "calls", 0)
    stage = cls()
    events = []
    for event in ("start", "end", "skip"):
        stage.add_callback(event, lambda event, **kw: events.append(event))
    data = {"x": 1}
    seconds = stage.run("p", "i", data, config)
    if runs:
        assert cls.calls == 1
        assert data == {"x": 1, "n": 1}
        assert events == ["start", "end"]
    else:
        assert cls.calls == 0
        assert data == {"x": 1}
        assert events == ["skip"]
        assert seconds == 0
        assert isinstance(seconds, float | int)


def test_disabled_stage_needs_no_inputs():
    data = {}
    assert Double().run(None, "i", data, {"enabled": False}) == 0
    assert data == {}


# --- callbacks ----------------------------------------------------------------------------------


def _recorder(log, name):
    def callback(**kwargs):
        log.append((name, kwargs))

    return callback


def test_callback_arguments_on_run():
    stage = Double()
    log = []
    stage.add_callback("start", _recorder(log, "start"))
    stage.add_callback("end", _recorder(log, "end"))
    data = {"x": 1}
    config = {"c": 1}
    stage.run("pipe", "input-7", data, config, status=None)
    assert [name for name, _ in log] == ["start", "end"]
    for name, kwargs in log:
        assert kwargs["stage"] is stage
        assert kwargs["event"] == name
        assert kwargs["pipeline"] == "pipe"
        assert kwargs["input_id"] == "input-7"
        assert kwargs["data"] is data
        assert kwargs["config"] is config
        assert kwargs["status"] is None
        assert set(kwargs) >= {"stage", "event", "pipeline", "input_id", "data", "config", "status"}


def test_start_sees_data_before_and_end_after():
    seen = {}
    stage = ConsumingStage()
    stage.add_callback("start", lambda data, **kw: seen.setdefault("start", dict(data)))
    stage.add_callback("end", lambda data, **kw: seen.setdefault("end", dict(data)))
    stage.run(None, "i", {"a": 1, "b": 2}, {})
    assert seen == {"start": {"a": 1, "b": 2}, "end": {"a": 1, "c": 3}}


def test_skip_callback_arguments():
    stage = Double()
    log = []
    stage.add_callback("skip", _recorder(log, "skip"))
    data = {"x": 1}
    config = {"enabled": False}
    assert stage.run("pipe", "in", data, config, extra="value") == 0
    assert len(log) == 1
    kwargs = log[0][1]
    assert kwargs["stage"] is stage
    assert kwargs["event"] == "skip"
    assert kwargs["pipeline"] == "pipe"
    assert kwargs["input_id"] == "in"
    assert kwargs["data"] is data
    assert kwargs["config"] is config
    assert kwargs["status"] is None
    assert kwargs["extra"] == "value"


def test_skip_method_fires_skip():
    stage = Double()
    log = []
    stage.add_callback("skip", _recorder(log, "skip"))
    data = {"x": 1}
    stage.skip("pipe", "in", data, {})
    assert [(name, kw["input_id"], kw["data"]) for name, kw in log] == [("skip", "in", {"x": 1})]


def test_after_is_end_and_skip():
    stage = Double()
    log = []
    callback = _recorder(log, "after")
    stage.add_callback("after", callback)
    stage.run(None, "i", {"x": 1}, {})
    stage.run(None, "j", {"x": 1}, {"enabled": False})
    assert [(kw["event"], kw["input_id"]) for _, kw in log] == [("end", "i"), ("skip", "j")]

    stage.remove_callback("after", callback)
    stage.run(None, "k", {"x": 1}, {})
    stage.run(None, "l", {"x": 1}, {"enabled": False})
    assert len(log) == 2


def test_remove_callback():
    stage = Double()
    log = []
    first, second = _recorder(log, "first"), _recorder(log, "second")
    stage.add_callback("start", first)
    stage.add_callback("start", second)
    stage.run(None, "i", {"x": 1}, {})
    assert [name for name, _ in log] == ["first", "second"]
    stage.remove_callback("start", first)
    log.clear()
    stage.run(None, "i", {"x": 1}, {})
    assert [name for name, _ in log] == ["second"]
    with pytest.raises(ValueError):
        stage.remove_callback("start", first)


def test_callbacks_are_per_instance():
    one, two = Double(), Double()
    log = []
    one.add_callback("end", _recorder(log, "one"))
    two.run(None, "i", {"x": 1}, {})
    assert log == []
    one.run(None, "i", {"x": 1}, {})
    assert [name for name, _ in log] == ["one"]


def test_unknown_event_rejected():
    with pytest.raises(ValueError, match="double"):
        Double().add_callback("finish", lambda **kw: None)


def test_callback_method_passes_kwargs():
    stage = Double()
    log = []
    stage.add_callback("end", _recorder(log, "end"))
    stage.callback("end", foo=1, bar="b")
    assert log == [("end", {"stage": stage, "event": "end", "foo": 1, "bar": "b"})]


def test_callback_may_remove_itself_during_call():
    stage = Double()
    log = []

    def once(stage, **kwargs):
        log.append(kwargs["input_id"])
        stage.remove_callback("start", once)

    stage.add_callback("start", once)
    stage.run(None, "a", {"x": 1}, {})
    stage.run(None, "b", {"x": 1}, {})
    assert log == ["a"]


def test_run_reports_to_status(tmp_path):
    status = repype.status.Status(path=tmp_path / "journal.jsonl")
    updates = []
    status.subscribe(updates.append)
    Double().run(None, "i", {"x": 1}, {}, status=status)
    Double().run(None, "i", {"x": 1}, {"enabled": False}, status=status)
    assert {"info": "start-stage", "stage": "double"} in updates
    assert {"info": "skip-stage", "stage": "double"} in updates


# --- configure, key_material, file_digest -------------------------------------------------------


def test_configure_and_key_material_defaults():
    stage = Double()
    assert stage.configure(None, "i") == {}
    assert stage.configure("pipeline", "i", 1, 2, option=3) == {}
    assert stage.key_material(None, "i", {}) is None


def test_file_digest(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"hello")
    first = repype.stage.file_digest(path)
    assert re.fullmatch(r"[0-9a-f]+", first)
    assert repype.stage.file_digest(str(path)) == first

    other = tmp_path / "copy.bin"
    other.write_bytes(b"hello")
    assert repype.stage.file_digest(other) == first

    path.write_bytes(b"hellp")
    assert repype.stage.file_digest(path) != first
    path.write_bytes(b"")
    empty = repype.stage.file_digest(path)
    assert empty not in (first, repype.stage.file_digest(other))


def test_file_digest_large_file(tmp_path):
    path = tmp_path / "big.bin"
    block = os.urandom(1 << 16)
    path.write_bytes(block * 80)  # > 4 MiB: read in several blocks
    first = repype.stage.file_digest(path)
    with open(path, "r+b") as file:
        file.seek((1 << 22) + 5)
        byte = file.read(1)
        file.seek((1 << 22) + 5)
        file.write(bytes([byte[0] ^ 1]))
    assert repype.stage.file_digest(path) != first


def test_key_material_override_with_file_digest(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("1 2 3")

    class ReadsFile(Stage):
        def key_material(self, pipeline, input_id, config):
            return repype.stage.file_digest(config["path"])

    stage = ReadsFile()
    before = stage.key_material(None, "i", {"path": str(path)})
    path.write_text("1 2 4")
    assert stage.key_material(None, "i", {"path": str(path)}) != before


# --- signature and sha --------------------------------------------------------------------------

_MODULE_TEMPLATE = '''
"""A module with one stage."""

from repype.stage import Stage


class Variant(Stage):
    """The stage docstring."""

    inputs = ["x"]
    outputs = ["y"]
    tags = {tags}
    {bump}

    def process(self, pipeline, config, status=None, x=None):
        """Doubles x."""
        # a comment
        factor = {factor}
        return {{"y": factor * x}}

    def configure(self, pipeline, input_id, *args, **kwargs):
        return {configure}
'''

_BASE_VALUES = dict(tags="['a', 'b']", bump="", factor="0.5", configure="{}")


def _variant_source(**changes) -> str:
    values = {**_BASE_VALUES, **changes}
    return textwrap.dedent(_MODULE_TEMPLATE).format(**values)


def _import_source(tmp_path, source: str):
    """Writes `source` to a new module file in tmp_path and imports it."""
    name = f"stage_variant_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    return module


def _exec_source(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<stage-variant>", "exec"), namespace)
    return namespace


def _sha_from_file(tmp_path, source: str, cls_name: str = "Variant") -> str:
    return getattr(_import_source(tmp_path, source), cls_name)().sha


def _sha_from_exec(source: str, cls_name: str = "Variant") -> str:
    return _exec_source(source)[cls_name]().sha


@pytest.fixture(params=["file", "exec"])
def make_sha(request, tmp_path):
    """sha of `Variant` built from source, either imported from a file (source) or exec'd (bytecode)."""
    if request.param == "file":
        return lambda source, cls_name="Variant": _sha_from_file(tmp_path, source, cls_name)
    return _sha_from_exec


def test_signature_shape_and_sha_format():
    stage = Double()
    signature = stage.signature
    assert json.loads(json.dumps(signature)) == signature
    assert signature["id"] == "double"
    assert "process" in signature["methods"]
    assert signature["attributes"]["inputs"] == ["x"]
    assert signature["attributes"]["outputs"] == ["y"]
    assert re.fullmatch(r"[0-9a-f]{40}", stage.sha)


def test_signature_paths_source_and_bytecode(tmp_path):
    source = _variant_source()
    from_file = _import_source(tmp_path, source).Variant().signature["methods"]["process"]
    from_exec = _exec_source(source)["Variant"]().signature["methods"]["process"]
    assert from_file.startswith("ast:")
    assert from_exec.startswith("code:")


def test_sha_equal_for_instances_of_one_class():
    assert Double().sha == Double().sha
    assert Double().signature == Double().signature
    assert Double() == Double()
    assert hash(Double()) == hash(Double())
    assert len({Double(), Double()}) == 1


def test_equality_requires_same_type():
    class A(Stage):
        id = "same"

    class B(Stage):
        id = "same"

    class C(A):
        pass

    assert A().signature == B().signature
    assert A() != B()
    assert A() != C()
    assert A() != "same"
    assert A() == A()


def test_equality_requires_same_signature():
    class WithBump(Stage):
        signature_bump = 1

    first = WithBump()
    second = WithBump()
    second_class_signature = second.signature
    assert first == second
    second.id = "other"  # instance id enters the signature
    assert second.signature != second_class_signature
    assert first != second


def test_sha_stable_within_process(make_sha):
    source = _variant_source()
    assert make_sha(source) == make_sha(source)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(dict(factor="0.7"), id="literal-in-process"),
        pytest.param(dict(factor="x"), id="expression-in-process"),
        pytest.param(dict(configure="{'k': (1.0, 2.0)}"), id="configure"),
        pytest.param(dict(tags="['a', 'c']"), id="list-attribute"),
        pytest.param(dict(tags="{'a', 'c'}"), id="set-attribute"),
        pytest.param(dict(tags="('a', 'b', 'c')"), id="tuple-attribute"),
        pytest.param(dict(bump="signature_bump = 1"), id="signature-bump-added"),
    ],
)
def test_sha_changes(make_sha, changes):
    assert make_sha(_variant_source(**changes)) != make_sha(_variant_source())


def test_sha_changes_with_signature_bump_value(make_sha):
    one = make_sha(_variant_source(bump="signature_bump = 1"))
    two = make_sha(_variant_source(bump="signature_bump = 2"))
    text = make_sha(_variant_source(bump="signature_bump = '2024-01'"))
    assert len({one, two, text}) == 3


def test_sha_changes_with_added_method(make_sha):
    source = _variant_source() + "\n    def helper(self):\n        return 1\n"
    assert make_sha(source) != make_sha(_variant_source())


def test_sha_changes_with_staticmethod_and_property(make_sha):
    template = (
        "\n    @staticmethod\n    def helper():\n        return {}\n"
        "\n    @property\n    def value(self):\n        return {}\n"
        "\n    @functools.cached_property\n    def cached(self):\n        return {}\n"
    )
    source = "import functools\n" + _variant_source()
    base = make_sha(source + template.format(1, 1, 1))
    assert make_sha(source + template.format(2, 1, 1)) != base
    assert make_sha(source + template.format(1, 2, 1)) != base
    assert make_sha(source + template.format(1, 1, 2)) != base


def test_sha_changes_with_inputs_outputs_and_id(make_sha):
    base = make_sha(_variant_source())
    assert make_sha(_variant_source().replace('inputs = ["x"]', 'inputs = ["x", "z"]')) != base
    assert make_sha(_variant_source().replace('outputs = ["y"]', 'outputs = ["y", "w"]')) != base
    renamed = _variant_source().replace("class Variant", "class Renamed")
    assert make_sha(renamed, "Renamed") != base  # the id enters the signature


def test_sha_ignores_set_attribute_order(make_sha):
    assert make_sha(_variant_source(tags="{'a', 'b', 'c'}")) == make_sha(_variant_source(tags="{'c', 'b', 'a'}"))
    assert make_sha(_variant_source(tags="frozenset({'a', 'b'})")) == make_sha(_variant_source(tags="{'b', 'a'}"))


def test_sha_counts_non_json_attribute_by_class_or_canonical_value(make_sha):
    base = make_sha(_variant_source(tags="object()"))
    assert make_sha(_variant_source(tags="object()")) == base  # an instance counts by its class, not its address
    assert make_sha(_variant_source(tags="type('T', (), {})()")) != base
    nested = make_sha(_variant_source(tags="{'a': {1, 2}}"))  # not JSON, but canonical data
    assert nested not in (base, make_sha(_variant_source(tags="{'a': {1, 3}}")))
    assert make_sha(_variant_source(tags="{'a': {2, 1}}")) == nested
    assert make_sha(_variant_source(tags="[]")) != base


def test_sha_ignores_comment_changes(make_sha):
    source = _variant_source()
    edited = source.replace("# a comment", "# a different comment, and longer")
    assert edited != source
    assert make_sha(edited) == make_sha(source)


def test_sha_ignores_line_shifts(make_sha):
    source = _variant_source()
    shifted = source.replace('"""A module with one stage."""', '"""A module with one stage."""\n\n# extra\n# lines\n')
    assert make_sha(shifted) == make_sha(source)


def test_sha_from_source_ignores_docstrings_and_formatting(tmp_path):
    source = _variant_source()
    docstrings = source.replace('"""Doubles x."""', '"""Multiplies x by a factor."""').replace(
        '"""The stage docstring."""', '"""Another class docstring."""'
    )
    formatting = source.replace('return {"y": factor * x}', "return {\n            'y': factor*x,\n        }")
    base = _sha_from_file(tmp_path, source)
    assert _sha_from_file(tmp_path, docstrings) == base
    assert _sha_from_file(tmp_path, formatting) == base


def test_sha_from_bytecode_ignores_class_docstring():
    source = _variant_source()
    edited = source.replace('"""The stage docstring."""', '"""Another class docstring."""')
    assert _sha_from_exec(edited) == _sha_from_exec(source)


def test_sha_covers_methods_of_stage_bases(make_sha):
    template = textwrap.dedent(
        """
        from repype.stage import Stage

        class Base(Stage):
            def helper(self):
                return {value}

        class Variant(Base):
            outputs = ["y"]

            def process(self, pipeline, config, status=None):
                return {{"y": self.helper()}}
        """
    )
    assert make_sha(template.format(value=1)) != make_sha(template.format(value=2))


def test_sha_overridden_base_method_does_not_count(make_sha):
    template = textwrap.dedent(
        """
        from repype.stage import Stage

        class Base(Stage):
            def process(self, pipeline, config, status=None):
                return {value}

        class Variant(Base):
            def process(self, pipeline, config, status=None):
                return {{}}
        """
    )
    assert make_sha(template.format(value=1)) == make_sha(template.format(value=2))


def test_sha_bytecode_frozenset_constant_order():
    # `x in {...}` compiles to a frozenset constant; its order must not matter.
    template = textwrap.dedent(
        """
        from repype.stage import Stage

        class Variant(Stage):
            def process(self, pipeline, config, status=None, x=None):
                return {{"y": x in {{{members}}}}}
        """
    )
    first = _sha_from_exec(template.format(members="'a', 'b', 'c', 'd'"))
    assert _sha_from_exec(template.format(members="'d', 'c', 'b', 'a'")) == first
    assert _sha_from_exec(template.format(members="'a', 'b', 'c', 'e'")) != first


_DEFAULT_TEMPLATE = textwrap.dedent(
    """
    from repype.stage import Stage

    class Variant(Stage):
        outputs = ["y"]

        def process(self, pipeline, config, status=None, factor={factor}):
            return {{"y": factor}}
    """
)


def test_sha_changes_with_default_argument_from_source(tmp_path):
    source = _DEFAULT_TEMPLATE.format(factor="0.5")
    edited = _DEFAULT_TEMPLATE.format(factor="0.7")
    assert _sha_from_file(tmp_path, edited) != _sha_from_file(tmp_path, source)


def test_sha_changes_with_default_argument_from_bytecode():
    source = _DEFAULT_TEMPLATE.format(factor="0.5")
    edited = _DEFAULT_TEMPLATE.format(factor="0.7")
    assert _sha_from_exec(edited) != _sha_from_exec(source)


def test_sha_covers_methods_of_mixins(make_sha):
    template = textwrap.dedent(
        """
        from repype.stage import Stage

        class Mixin:
            def process(self, pipeline, config, status=None):
                return {{"y": {value}}}

        class Variant(Mixin, Stage):
            outputs = ["y"]
        """
    )
    assert make_sha(template.format(value="0.5")) != make_sha(template.format(value="0.7"))


# --- sha across processes -----------------------------------------------------------------------

_CROSS_PROCESS_MODULE = textwrap.dedent(
    '''
    """Stages whose signatures must be the same in every process."""

    from repype.stage import Stage


    class SetStage(Stage):
        inputs = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}
        consumes = frozenset({"iota", "kappa", "lambda", "mu"})
        outputs = {"nu", "xi", "omicron", "pi", "rho"}
        tags = frozenset({"red", "green", "blue", "cyan", "magenta", "yellow", "black"})
        mapping = {"b": [1, 2], "a": {"z": 1, "y": 2}}
        signature_bump = ("v", 2)

        def process(self, pipeline, config, status=None, **inputs):
            allowed = {"one", "two", "three", "four", "five"}
            return {key: key in allowed for key in sorted(self.outputs)}

        def configure(self, pipeline, input_id, *args, **kwargs):
            return {"threshold": (0.5, 1.0, {"type": "float", "min": 0, "max": 1})}


    class PlainStage(Stage):
        id = "plain"
        outputs = ["y"]

        def process(self, pipeline, config, status=None):
            return {"y": 1}


    EXEC_SOURCE = """
    from repype.stage import Stage

    class ExecStage(Stage):
        inputs = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
        tags = frozenset({"red", "green", "blue", "cyan", "magenta"})

        def process(self, pipeline, config, status=None, **inputs):
            return {"y": sorted(inputs) if "alpha" in {"alpha", "beta", "gamma", "delta", "eps"} else 0}
    """


    def shas():
        namespace = {}
        exec(compile(EXEC_SOURCE, "<exec-stage>", "exec"), namespace)
        return {
            "set": SetStage().sha,
            "plain": PlainStage().sha,
            "exec": namespace["ExecStage"]().sha,
        }
    '''
)


def test_sha_identical_across_processes(tmp_path):
    module_name = f"cross_process_stages_{uuid.uuid4().hex}"
    (tmp_path / f"{module_name}.py").write_text(_CROSS_PROCESS_MODULE)
    code = f"import json, {module_name} as m; print(json.dumps(m.shas(), sort_keys=True))"
    results = []
    for seed in ("1", "2", "12345"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, sys.path)]),
        }
        completed = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert completed.returncode == 0, completed.stderr
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1] == results[2]

    module = _import_source(tmp_path, _CROSS_PROCESS_MODULE)
    in_process = module.shas()
    assert in_process == results[0]
    # the exec'd stage uses the bytecode path, the others the source path
    namespace = _exec_source(module.EXEC_SOURCE)
    assert namespace["ExecStage"]().signature["methods"]["process"].startswith("code:")
    assert module.SetStage().signature["methods"]["process"].startswith("ast:")
