"""repype.pipeline: running stages on one input, structure, automatic hyperparameters, ordering."""

from __future__ import annotations

import math
import pathlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repype.config import Config
from repype.pipeline import Pipeline, StageError, create_pipeline
from repype.stage import Stage


class Recording(Stage):
    """Records `(stage id, inputs, config entries)` into a shared log on every `process` call."""

    def __init__(self, log: list | None = None) -> None:
        super().__init__()
        self.log = [] if log is None else log

    def process(self, pipeline, config, status=None, **inputs):
        self.log.append((self.id, dict(inputs), dict(config.entries)))
        return self.compute(config, **inputs)

    def compute(self, config, **inputs):
        raise NotImplementedError


class Load(Recording):
    id = "load"
    inputs = ("input_id",)
    outputs = ("raw",)

    def compute(self, config, input_id):
        return {"raw": f"raw-{input_id}"}


class Smooth(Recording):
    id = "smooth"
    inputs = ("raw",)
    outputs = ("smooth",)

    def compute(self, config, raw):
        return {"smooth": f"smooth({raw},{config.get('sigma', 1)})"}


class Segment(Recording):
    inputs = ("smooth",)
    outputs = ("seg",)

    def compute(self, config, smooth):
        return {"seg": f"seg({smooth})"}


class Measure(Recording):
    id = "measure"
    inputs = ("seg", "raw")
    outputs = ("size",)

    def compute(self, config, seg, raw):
        return {"size": len(seg) + len(raw)}


class Cleanup(Recording):
    """Consumes `smooth`: it must run after every other reader of `smooth`."""

    id = "cleanup"
    consumes = ("smooth",)
    outputs = ("summary",)

    def compute(self, config, smooth):
        return {"summary": smooth.upper()}


class Failing(Recording):
    id = "failing"
    inputs = ("raw",)
    outputs = ("never",)

    def compute(self, config, raw):
        raise ZeroDivisionError("boom")


class Threshold(Recording):
    id = "threshold"
    inputs = ("raw",)
    outputs = ("mask",)

    def configure(self, pipeline, input_id, *args, **kwargs):
        scale = kwargs.get("scale", 1)
        return {
            "level": (0.5 * scale, 2),
            "size": (3.0, 2.5, dict(type=int, min=1, max=10)),
        }

    def compute(self, config, raw):
        return {"mask": raw}


def chain(log=None) -> list[Recording]:
    log = [] if log is None else log
    return [Load(log), Smooth(log), Segment(log), Measure(log)]


def ran(log) -> list[str]:
    return [entry[0] for entry in log]


# --- process ----------------------------------------------------------------------------------


def test_process_runs_stages_in_order_and_returns_data_config_times():
    log = []
    pipeline = Pipeline(chain(log))
    config = Config({"smooth": {"sigma": 3}})
    data, out_config, times = pipeline.process(7, config)
    assert ran(log) == ["load", "smooth", "segment", "measure"]
    assert data == {
        "input_id": 7,
        "raw": "raw-7",
        "smooth": "smooth(raw-7,3)",
        "seg": "seg(smooth(raw-7,3))",
        "size": len("seg(smooth(raw-7,3))") + len("raw-7"),
    }
    assert isinstance(out_config, Config)
    assert out_config["smooth/sigma"] == 3
    assert set(times) == {"load", "smooth", "segment", "measure"}
    assert all(isinstance(value, float) and value >= 0 for value in times.values())


def test_process_sets_input_id_in_data():
    pipeline = Pipeline(chain())
    data, _, _ = pipeline.process("img-a", Config())
    assert data["input_id"] == "img-a"
    # also in supplied data
    given_data = {"input_id": "stale", "raw": "raw-x"}
    data, _, _ = pipeline.process("img-b", Config(), first_stage="smooth", data=given_data)
    assert data["input_id"] == "img-b"


def test_process_passes_inputs_to_stages():
    log = []
    Pipeline(chain(log)).process(1, Config())
    inputs = {entry[0]: entry[1] for entry in log}
    assert inputs["load"] == {"input_id": 1}
    assert inputs["smooth"] == {"raw": "raw-1"}
    assert inputs["measure"] == {"seg": "seg(smooth(raw-1,1))", "raw": "raw-1"}


def test_each_stage_receives_its_config_section():
    log = []
    pipeline = Pipeline(chain(log))
    config = Config({"smooth": {"sigma": 5}, "segment": {"k": 1}, "other": {"z": 0}})
    _, out_config, _ = pipeline.process(1, config)
    # `enabled` may have been inserted by Stage.run through the `get` quirk
    configs = {entry[0]: {k: v for k, v in entry[2].items() if k != "enabled"} for entry in log}
    assert configs == {"load": {}, "smooth": {"sigma": 5}, "segment": {"k": 1}, "measure": {}}
    # the returned config holds the (possibly inserted) sections of every stage
    assert "load" in out_config
    assert "measure" in out_config
    assert out_config["smooth/sigma"] == 5
    assert out_config.entries["other"] == {"z": 0}
    assert config.entries == {"smooth": {"sigma": 5}, "segment": {"k": 1}, "other": {"z": 0}}


def test_stage_config_defaults_inserted_by_stage_are_returned():
    log = []
    _, out_config, _ = Pipeline(chain(log)).process(1, Config())
    assert out_config["smooth/sigma"] == 1


def test_first_stage_equal_to_first_id_means_from_start():
    log = []
    data, _, times = Pipeline(chain(log)).process(2, Config(), first_stage="load")
    assert ran(log) == ["load", "smooth", "segment", "measure"]
    assert data["seg"] == "seg(smooth(raw-2,1))"
    assert set(times) == {"load", "smooth", "segment", "measure"}


def test_first_stage_plus_means_stage_after():
    log = []
    pipeline = Pipeline(chain(log))
    full, _, _ = pipeline.process(3, Config())
    log.clear()
    data = {"input_id": 3, "raw": "raw-3", "smooth": "given"}
    data, _, times = pipeline.process(3, Config(), first_stage="smooth+", data=data)
    assert ran(log) == ["segment", "measure"]
    assert data["seg"] == "seg(given)"
    assert set(times) == {"segment", "measure"}
    log.clear()
    pipeline.process(3, Config(), first_stage="load+", data=dict(full))
    assert ran(log) == ["smooth", "segment", "measure"]


def test_last_stage_limits_range_and_skips_the_rest():
    log = []
    stages = chain(log)
    skipped = []
    for stage in stages:
        stage.add_callback("skip", lambda stage, **kwargs: skipped.append(stage.id))
    data, _, times = Pipeline(stages).process(1, Config(), last_stage="smooth")
    assert ran(log) == ["load", "smooth"]
    assert skipped == ["segment", "measure"]
    assert set(times) == {"load", "smooth"}
    assert "seg" not in data


def test_first_stage_after_last_returns_at_once():
    log = []
    stages = chain(log)
    events = []
    for stage in stages:
        stage.add_callback("start", lambda stage, **kwargs: events.append(("start", stage.id)))
        stage.add_callback("skip", lambda stage, **kwargs: events.append(("skip", stage.id)))
    given_data = {"input_id": 1, "raw": "r"}
    data, config, times = Pipeline(stages).process(
        1, Config(), first_stage="segment", last_stage="smooth", data=given_data
    )
    assert log == []
    assert events == []
    assert times == {}
    assert data == {"input_id": 1, "raw": "r"}
    assert isinstance(config, Config)
    # also without data
    data, _, times = Pipeline(stages).process(1, Config(), first_stage="measure+", last_stage="measure")
    assert log == [] and times == {}


def test_data_required_when_starting_later():
    pipeline = Pipeline(chain())
    with pytest.raises(ValueError):
        pipeline.process(1, Config(), first_stage="smooth")
    with pytest.raises(ValueError):
        pipeline.process(1, Config(), first_stage="load+")


def test_stages_before_first_are_skipped_with_callback():
    log = []
    stages = chain(log)
    skipped = []
    stages[0].add_callback("skip", lambda stage, data, **kwargs: skipped.append((stage.id, dict(data))))
    data = {"input_id": 4, "raw": "raw-4"}
    pipeline = Pipeline(stages)
    data, _, times = pipeline.process(4, Config(), first_stage="smooth", data=data)
    assert ran(log) == ["smooth", "segment", "measure"]
    assert skipped == [("load", {"input_id": 4, "raw": "raw-4"})]
    assert "load" not in times


def test_get_extra_stages():
    pipeline = Pipeline(chain())
    assert pipeline.get_extra_stages("segment", None, ["input_id"]) == ["load", "smooth"]
    assert pipeline.get_extra_stages("segment", None, ["input_id", "smooth"]) == ["load"]
    assert pipeline.get_extra_stages("segment", None, ["input_id", "raw", "smooth"]) == []
    assert pipeline.get_extra_stages("measure", "measure", ["seg"]) == ["load"]
    assert pipeline.get_extra_stages(None, None, []) == []
    assert pipeline.get_extra_stages("smooth+", None, ["raw"]) == ["smooth"]


def test_process_runs_extra_stages_for_missing_inputs():
    log = []
    stages = chain(log)
    skipped = []
    for stage in stages:
        stage.add_callback("skip", lambda stage, **kwargs: skipped.append(stage.id))
    data, _, times = Pipeline(stages).process(5, Config(), first_stage="segment", data={"input_id": 5, "raw": "mine"})
    assert ran(log) == ["smooth", "segment", "measure"]
    assert skipped == ["load"]
    assert data["raw"] == "mine"
    assert data["seg"] == "seg(smooth(mine,1))"
    assert set(times) == {"smooth", "segment", "measure"}


def test_disabled_stage_is_skipped():
    log = []
    stages = chain(log)
    skipped = []
    stages[3].add_callback("skip", lambda stage, **kwargs: skipped.append(stage.id))
    data, _, times = Pipeline(stages).process(1, Config({"measure": {"enabled": False}}))
    assert ran(log) == ["load", "smooth", "segment"]
    assert skipped == ["measure"]
    assert times["measure"] == 0
    assert "size" not in data


def test_stage_exception_raises_stage_error_with_cause():
    stages = [Load(), Failing()]
    pipeline = Pipeline(stages)
    with pytest.raises(StageError) as info:
        pipeline.process(1, Config())
    assert info.value.stage is stages[1]
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "failing" in str(info.value)


def test_stage_error_survives_pickling():
    stages = [Load(), Failing()]
    with pytest.raises(StageError) as info:
        Pipeline(stages).process(1, Config())
    restored = pickle.loads(pickle.dumps(info.value))
    assert isinstance(restored, StageError)
    assert restored.stage.id == "failing"
    assert "failing" in str(restored)
    assert "boom" in str(restored)


def test_wrong_outputs_raise_stage_error_naming_stage():
    class Wrong(Stage):
        id = "wrong"
        outputs = ("x",)

        def process(self, pipeline, config, status=None):
            return {"y": 1}

    with pytest.raises(StageError) as info:
        Pipeline([Wrong()]).process(1, Config())
    assert isinstance(info.value.__cause__, AssertionError)
    assert "wrong" in str(info.value.__cause__)


def test_process_passes_kwargs_to_stages():
    seen = []

    class WithExtra(Stage):
        id = "extra"
        outputs = ("out",)

        def process(self, pipeline, config, status=None, factor=1):
            seen.append(factor)
            return {"out": factor}

    data, _, _ = Pipeline([WithExtra()]).process(1, Config(), factor=6)
    assert seen == [6]
    assert data["out"] == 6


# --- structure --------------------------------------------------------------------------------


def test_find_and_stage():
    stages = chain()
    pipeline = Pipeline(stages)
    assert pipeline.find("load") == 0
    assert pipeline.find("segment") == 2
    assert pipeline.find("nope") == math.inf
    assert pipeline.find("nope", not_found_dummy=-1) == -1
    assert pipeline.find("nope", None) is None
    assert pipeline.stage("smooth") is stages[1]
    assert pipeline.stage("nope") is None


def test_append_returns_index_and_supports_after():
    pipeline = Pipeline()
    load, smooth, segment, measure = chain()
    assert pipeline.append(load) == 0
    assert pipeline.append(segment) == 1
    assert pipeline.append(smooth, after="load") == 1
    assert [stage.id for stage in pipeline.stages] == ["load", "smooth", "segment"]
    assert pipeline.append(measure, after=0) == 1
    assert [stage.id for stage in pipeline.stages] == ["load", "measure", "smooth", "segment"]


def test_append_rejects_same_object_or_id_twice():
    load = Load()
    pipeline = Pipeline([load])
    with pytest.raises(RuntimeError):
        pipeline.append(load)
    with pytest.raises(RuntimeError):
        pipeline.append(Load())
    assert pipeline.stages == [load]
    with pytest.raises(RuntimeError):
        Pipeline([Load(), Load()])


def test_fields_and_persistent_fields():
    pipeline = Pipeline([Load(), Smooth(), Segment(), Cleanup()])
    assert pipeline.fields == {"input_id", "raw", "smooth", "seg", "summary"}
    assert pipeline.persistent_fields == {"input_id", "raw", "seg", "summary"}
    assert Pipeline().fields == {"input_id"}
    assert Pipeline().persistent_fields == {"input_id"}


def test_consumed_field_is_removed_from_data():
    log = []
    pipeline = Pipeline([Load(log), Smooth(log), Segment(log), Cleanup(log)])
    data, _, _ = pipeline.process(1, Config())
    assert "smooth" not in data
    assert data["summary"] == "SMOOTH(RAW-1,1)"
    assert set(data) == pipeline.persistent_fields


def test_resolve(tmp_path, monkeypatch):
    pipeline = Pipeline(scopes={"result": str(tmp_path / "out" / "%s.png"), "rel": "rel/%s/x.txt"})
    assert pipeline.resolve("result", 3) == tmp_path.resolve() / "out" / "3.png"
    assert pipeline.resolve("result", "a") == tmp_path.resolve() / "out" / "a.png"
    monkeypatch.chdir(tmp_path)
    resolved = pipeline.resolve("rel", 1)
    assert pathlib.Path(resolved).is_absolute()
    assert pathlib.Path(resolved) == tmp_path.resolve() / "rel" / "1" / "x.txt"
    assert pipeline.resolve("unknown", 1) is None
    assert pipeline.resolve("result", None) is None
    assert pipeline.resolve("result") is None


# --- automatic hyperparameters ----------------------------------------------------------------


def test_configure_applies_rules_with_default_user_factor():
    pipeline = Pipeline([Load(), Threshold()])
    base = Config({"load": {"x": 1}})
    config = pipeline.configure(base, 1)
    assert isinstance(config, Config)
    assert config["threshold/level"] == pytest.approx(0.5 * 2)
    assert config["threshold/size"] == 7  # int(3.0 * 2.5)
    assert isinstance(config["threshold/size"], int)
    assert config["threshold/AF_level"] == 2
    assert config["load/x"] == 1
    assert base.entries == {"load": {"x": 1}}


def test_configure_passes_args_and_kwargs_to_stage():
    config = Pipeline([Threshold()]).configure(Config(), 1, scale=10)
    assert config["threshold/level"] == pytest.approx(0.5 * 10 * 2)


def test_configure_uses_user_factor():
    base = Config({"threshold": {"AF_level": 4, "AF_size": 2}})
    config = Pipeline([Threshold()]).configure(base, 1)
    assert config["threshold/level"] == pytest.approx(2.0)
    assert config["threshold/size"] == 6


def test_configure_keeps_explicit_values_overrides_none():
    base = Config({"threshold": {"level": 0.1, "size": None}})
    config = Pipeline([Threshold()]).configure(base, 1)
    assert config["threshold/level"] == 0.1
    assert config["threshold/size"] == 7


@pytest.mark.parametrize(("user_factor", "expected"), [(100, 10), (0, 1), (-5, 1), (3, 9), (3.4, 10)])
def test_configure_clamps_to_min_max(user_factor, expected):
    base = Config({"threshold": {"AF_size": user_factor}})
    config = Pipeline([Threshold()]).configure(base, 1)
    assert config["threshold/size"] == expected
    assert isinstance(config["threshold/size"], int)


def test_create_config_entry_directly():
    config = Config()
    Pipeline.create_config_entry(config, "stage/param", 2.0, 1.5)
    assert config["stage/param"] == pytest.approx(3.0)
    assert config["stage/AF_param"] == 1.5

    config = Config({"stage": {"AF_param": 10}})
    Pipeline.create_config_entry(config, "stage/param", 2.0, 1.5, type=int, max=15)
    assert config["stage/param"] == 15

    config = Config({"stage": {"param": 0.2}})
    Pipeline.create_config_entry(config, "stage/param", 2.0, 1.5, min=1)
    assert config["stage/param"] == 1  # clamping applies to explicit values too

    config = Config({"stage": {"param": 5.7}})
    Pipeline.create_config_entry(config, "stage/param", 2.0, 1.5, type=int)
    assert config["stage/param"] == 5

    config = Config({"a": {"b": {"param": None}}})
    Pipeline().create_config_entry(config, "a/b/param", 3, 2, type=float, min=0, max=100)
    assert config["a/b/param"] == 6.0
    assert isinstance(config["a/b/param"], float)
    assert config["a/b/AF_param"] == 2


def test_configure_rejects_malformed_rules():
    class Bad(Stage):
        id = "bad"

        def configure(self, pipeline, input_id, *args, **kwargs):
            return {"x": (1,)}

    with pytest.raises(ValueError):
        Pipeline([Bad()]).configure(Config(), 1)


# --- create_pipeline --------------------------------------------------------------------------


def ids(pipeline: Pipeline) -> list[str]:
    return [stage.id for stage in pipeline.stages]


def test_create_pipeline_orders_by_data_flow():
    stages = chain()
    pipeline = create_pipeline(list(reversed(stages)))
    assert isinstance(pipeline, Pipeline)
    assert ids(pipeline) == ["load", "smooth", "segment", "measure"]
    assert all(a is b for a, b in zip(pipeline.stages, stages))


def test_create_pipeline_keeps_given_order_among_ready_stages():
    class Other(Recording):
        id = "other"
        inputs = ("raw",)
        outputs = ("other",)

    load, smooth = Load(), Smooth()
    assert ids(create_pipeline([Other(), smooth, load])) == ["load", "other", "smooth"]
    assert ids(create_pipeline([smooth, Other(), load])) == ["load", "smooth", "other"]


def test_create_pipeline_consumer_runs_after_other_readers():
    stages = [Cleanup(), Load(), Smooth(), Segment()]
    pipeline = create_pipeline(stages)
    assert ids(pipeline) == ["load", "smooth", "segment", "cleanup"]
    data, _, _ = pipeline.process(1, Config())
    assert data["seg"] == "seg(smooth(raw-1,1))"
    assert "smooth" not in data


def test_create_pipeline_passes_arguments_to_pipeline_cls():
    class MyPipeline(Pipeline):
        pass

    pipeline = create_pipeline(chain(), pipeline_cls=MyPipeline, scopes={"s": "/tmp/%s"})
    assert type(pipeline) is MyPipeline
    assert pipeline.scopes == {"s": "/tmp/%s"}
    assert pipeline.resolve("s", 1) == pathlib.Path("/tmp/1").resolve()


def test_create_pipeline_rejects_duplicate_ids():
    class Load2(Recording):
        id = "load"
        outputs = ("other",)

    with pytest.raises(AssertionError):
        create_pipeline([Load(), Load2()])


def test_create_pipeline_rejects_duplicate_outputs():
    class Load2(Recording):
        id = "load2"
        outputs = ("raw",)

    with pytest.raises(AssertionError):
        create_pipeline([Load(), Load2()])


def test_create_pipeline_unresolvable_names_stage_and_field():
    class NeedsGhost(Recording):
        id = "needs-ghost"
        inputs = ("ghost",)
        outputs = ("haunted",)

    with pytest.raises(RuntimeError) as info:
        create_pipeline([Load(), NeedsGhost()])
    message = str(info.value)
    assert "needs-ghost" in message
    assert "ghost" in message.replace("needs-ghost", "")


def test_create_pipeline_unresolvable_cycle():
    class A(Recording):
        id = "a"
        inputs = ("y",)
        outputs = ("x",)

    class B(Recording):
        id = "b"
        inputs = ("x",)
        outputs = ("y",)

    with pytest.raises(RuntimeError) as info:
        create_pipeline([A(), B()])
    assert "a" in str(info.value) and "b" in str(info.value)


@settings(max_examples=50, deadline=None)
@given(st.permutations(range(5)))
def test_create_pipeline_from_any_shuffle(order):
    stages = [Load(), Smooth(), Segment(), Measure(), Cleanup()]
    shuffled = [stages[index] for index in order]
    pipeline = create_pipeline(shuffled)
    order_ids = ids(pipeline)
    assert sorted(order_ids) == sorted(stage.id for stage in stages)
    available = {"input_id"}
    for position, stage in enumerate(pipeline.stages):
        assert stage.inputs <= available, (stage.id, order_ids)
        for later in pipeline.stages[position + 1 :]:
            assert not stage.consumes & later.inputs, (stage.id, later.id)
        available |= stage.outputs
    assert order_ids.index("cleanup") > order_ids.index("segment")
    assert order_ids[:3] == ["load", "smooth", "segment"]
