"""repype.config.Config: path keys, the `get` quirk, merge, copy, yaml, sha and equality."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from repype.config import Config

# --- constructor ------------------------------------------------------------------------------


def test_constructor_none_is_empty():
    config = Config()
    assert config.entries == {}
    assert Config(None).entries == {}
    # two empty configs do not share their dict
    Config()["x"] = 1
    assert Config().entries == {}


def test_constructor_wraps_dict_without_copy():
    entries = {"a": {"b": 1}}
    config = Config(entries)
    assert config.entries is entries
    config["a/c"] = 2
    config["d"] = 3
    assert entries == {"a": {"b": 1, "c": 2}, "d": 3}


def test_constructor_deep_copies_config():
    original = Config({"a": {"b": [1, 2]}})
    duplicate = Config(original)
    assert duplicate == original
    assert duplicate.entries is not original.entries
    duplicate["a/b"].append(3)
    duplicate["a/c"] = 4
    assert original.entries == {"a": {"b": [1, 2]}}


@pytest.mark.parametrize("other", [[("a", 1)], "a: 1", 1, ("a",), object()])
def test_constructor_rejects_other_types(other):
    with pytest.raises(ValueError):
        Config(other)


# --- path keys, get, [], in -------------------------------------------------------------------


def test_path_keys_address_nested_dicts():
    config = Config({"stage1": {"sub": {"param": 5}}})
    assert config["stage1/sub/param"] == 5
    assert config.get("stage1/sub/param", 0) == 5
    assert "stage1/sub/param" in config
    assert "stage1/sub" in config
    assert "stage1/other" not in config
    assert "stage2/sub/param" not in config
    config["stage2/x/y"] = "z"
    assert config.entries["stage2"] == {"x": {"y": "z"}}


def test_get_inserts_default_when_missing():
    config = Config({"a": 1})
    assert config.get("b/c", 7) == 7
    assert config.entries == {"a": 1, "b": {"c": 7}}
    # a second get returns the stored value, not the new default
    assert config.get("b/c", 8) == 7
    assert config.get("missing") is None
    assert "missing" in config
    assert config.entries["missing"] is None


def test_get_existing_key_does_not_change_entries():
    config = Config({"a": {"b": 1}})
    assert config.get("a/b", 99) == 1
    assert config.entries == {"a": {"b": 1}}


def test_get_wraps_dict_values_sharing_the_dict():
    entries = {"stage": {"p": 1}}
    config = Config(entries)
    section = config.get("stage", {})
    assert isinstance(section, Config)
    assert section.entries is entries["stage"]
    section["q"] = 2
    section["deep/r"] = 3
    assert entries == {"stage": {"p": 1, "q": 2, "deep": {"r": 3}}}


def test_get_default_dict_is_inserted_and_shared():
    config = Config()
    section = config.get("stage", {})
    assert isinstance(section, Config)
    section["enabled"] = False
    assert config.entries == {"stage": {"enabled": False}}
    assert config["stage/enabled"] is False


def test_get_default_config_is_stored_as_plain_dict():
    config = Config()
    config.get("stage", Config({"x": 1}))
    assert type(config.entries["stage"]) is dict
    assert config.entries == {"stage": {"x": 1}}


def test_getitem_missing_raises_keyerror_without_inserting():
    config = Config({"a": {"b": 1}})
    with pytest.raises(KeyError):
        config["c"]
    with pytest.raises(KeyError):
        config["a/c"]
    with pytest.raises(KeyError):
        config["x/y/z"]
    assert config.entries == {"a": {"b": 1}}


def test_getitem_wraps_dict_values_sharing_the_dict():
    config = Config({"a": {"b": {"c": 1}}})
    section = config["a/b"]
    assert isinstance(section, Config)
    section["c"] = 2
    assert config["a/b/c"] == 2


def test_getitem_returns_plain_values():
    config = Config({"a": [1, 2], "b": None, "c": 0})
    assert config["a"] == [1, 2]
    assert config["b"] is None
    assert config["c"] == 0
    assert "b" in config


# --- set_default, update, pop, setitem --------------------------------------------------------


def test_set_default_sets_only_if_missing():
    config = Config({"a": 1, "n": None})
    assert config.set_default("a", 2) == 1
    assert config["a"] == 1
    assert config.set_default("b/c", 3) == 3
    assert config["b/c"] == 3
    # None counts as present unless override_none
    assert config.set_default("n", 4) is None
    assert config["n"] is None
    assert config.set_default("n", 4, override_none=True) == 4
    assert config["n"] == 4
    # override_none does not override other values
    assert config.set_default("a", 5, override_none=True) == 1


def test_set_default_dict_returns_config():
    config = Config()
    result = config.set_default("s", {"x": 1})
    assert isinstance(result, Config)
    assert result.entries == {"x": 1}


def test_update_applies_function_to_old_value():
    config = Config({"a": {"b": 2}})
    assert config.update("a/b", lambda value: value * 10) == 20
    assert config["a/b"] == 20
    seen = []

    def func(value):
        seen.append(value)
        return "new"

    assert config.update("a/missing", func) == "new"
    assert seen == [None]
    assert config["a/missing"] == "new"


def test_setitem_stores_config_values_as_plain_dicts():
    config = Config()
    inner = Config({"x": {"y": 1}})
    config["a"] = inner
    assert type(config.entries["a"]) is dict
    assert config.entries["a"] is inner.entries
    assert config.entries == {"a": {"x": {"y": 1}}}


def test_pop_removes_and_returns():
    config = Config({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
    assert config.pop("a/b") == 1
    assert config.entries == {"a": {"c": {"d": 2}}, "e": 3}
    popped = config.pop("a/c")
    assert popped == Config({"d": 2})
    assert config.pop("e", 9) == 3
    assert config.entries == {"a": {}}


def test_pop_missing_returns_default_without_inserting():
    config = Config({"a": {"b": 1}})
    assert config.pop("x", "dflt") == "dflt"
    assert config.pop("a/x") is None
    assert config.pop("y/z", 0) == 0
    assert config.entries == {"a": {"b": 1}}


# --- merge, copy ------------------------------------------------------------------------------


def test_merge_is_deep_other_wins_returns_self():
    config = Config({"a": {"b": 1, "c": 2}, "d": 3, "e": {"f": 1}})
    result = config.merge(Config({"a": {"c": 20, "g": 30}, "e": 5, "h": {"i": 1}}))
    assert result is config
    assert config.entries == {"a": {"b": 1, "c": 20, "g": 30}, "d": 3, "e": 5, "h": {"i": 1}}


def test_merge_accepts_plain_dict_and_replaces_scalar_by_dict():
    config = Config({"a": 1})
    config.merge({"a": {"b": 2}})
    assert config.entries == {"a": {"b": 2}}


def test_merge_does_not_alias_other():
    other = Config({"a": {"b": [1]}})
    config = Config().merge(other)
    config["a/b"].append(2)
    config["a/c"] = 3
    assert other.entries == {"a": {"b": [1]}}


def test_copy_is_deep():
    config = Config({"a": {"b": [1, {"c": 2}]}})
    duplicate = config.copy()
    assert isinstance(duplicate, Config)
    assert duplicate == config
    duplicate["a/b"][1]["c"] = 3
    duplicate["a/x"] = 1
    assert config.entries == {"a": {"b": [1, {"c": 2}]}}


# --- yaml, sha, equality ----------------------------------------------------------------------


def test_yaml_is_readable_and_round_trips():
    entries = {"stage1": {"sigma": 1.5, "enabled": False, "sizes": [1, 2]}, "name": "x"}
    config = Config(entries)
    text = config.yaml
    assert isinstance(text, str)
    assert "sigma: 1.5" in text
    assert "!!python" not in text
    assert yaml.safe_load(text) == entries


def test_yaml_writes_tuples_as_lists():
    text = Config({"a": (1, 2)}).yaml
    assert "!!python" not in text
    assert yaml.safe_load(text) == {"a": [1, 2]}


def test_sha_is_hex_sha1_and_key_order_independent():
    first = Config({"a": 1, "b": {"c": 2, "d": 3}})
    second = Config({"b": {"d": 3, "c": 2}, "a": 1})
    assert len(first.sha) == 40
    int(first.sha, 16)
    assert first.sha == second.sha


def test_sha_changes_with_values_and_keys():
    base = Config({"a": 1, "b": {"c": 2}})
    assert base.sha != Config({"a": 2, "b": {"c": 2}}).sha
    assert base.sha != Config({"a": 1, "b": {"c": 3}}).sha
    assert base.sha != Config({"a": 1, "b": {"x": 2}}).sha
    assert base.sha != Config({"a": 1}).sha
    assert base.sha != Config({"a": "1", "b": {"c": 2}}).sha


def test_sha_follows_in_place_changes():
    config = Config({"a": 1})
    before = config.sha
    config["a"] = 2
    assert config.sha != before
    config["a"] = 1
    assert config.sha == before


def test_sha_accepts_mixed_key_types():
    # YAML readily produces int keys beside str keys, e.g. per-label hyperparameters
    config = Config({"labels": {1: 0.5, "default": 0.1}})
    assert len(config.sha) == 40


def test_sha_distinguishes_int_and_str_keys():
    first, second = Config({"labels": {1: 0.5}}), Config({"labels": {"1": 0.5}})
    assert first != second
    assert first.sha != second.sha


def test_equality_compares_entries():
    assert Config({"a": {"b": 1}}) == Config({"a": {"b": 1}})
    assert Config({"a": {"b": 1}}) != Config({"a": {"b": 2}})
    assert Config() == Config({})
    assert Config({"a": 1}) != {"a": 1}


# --- properties -------------------------------------------------------------------------------

segment = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3)
nested = st.recursive(
    leaf,
    lambda children: st.dictionaries(segment, children, min_size=1, max_size=4),
    max_leaves=15,
)
nested_dict = st.dictionaries(segment, nested, max_size=5)


def flatten(entries: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in entries.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def reference_merge(target: dict, other: dict) -> dict:
    result = copy.deepcopy(target)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = reference_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def shuffled_dict(entries: dict, reverse: bool) -> dict:
    items = sorted(entries.items(), reverse=reverse)
    return {key: shuffled_dict(value, not reverse) if isinstance(value, dict) else value for key, value in items}


@settings(max_examples=50, deadline=None)
@given(nested_dict)
def test_set_then_get_round_trip(entries):
    flat = flatten(entries)
    config = Config()
    for path, value in flat.items():
        config[path] = copy.deepcopy(value)
    assert config.entries == entries
    for path, value in flat.items():
        assert path in config
        assert config[path] == value
        got = config.get(path, "unused-default")
        assert (got.entries if isinstance(got, Config) else got) == value
    assert config.entries == entries


@settings(max_examples=50, deadline=None)
@given(nested_dict, nested_dict)
def test_merge_matches_reference(first, second):
    expected = reference_merge(first, second)
    second_before = copy.deepcopy(second)
    config = Config(copy.deepcopy(first))
    assert config.merge(Config(second)) is config
    assert config.entries == expected
    assert second == second_before
    assert Config(copy.deepcopy(first)).merge(second).entries == expected


@settings(max_examples=50, deadline=None)
@given(nested_dict)
def test_sha_independent_of_key_order(entries):
    assert Config(shuffled_dict(entries, True)).sha == Config(shuffled_dict(entries, False)).sha
    assert Config(entries).sha == Config(copy.deepcopy(entries)).sha
    assert Config(entries).copy() == Config(entries)
