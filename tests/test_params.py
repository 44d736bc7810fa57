"""DiffuseParams: defaults, ranges, conversions; presets as data files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_diffuse import DiffuseParams
from napari_diffuse.params import DARKTABLE_NAMES, FIELDS
from napari_diffuse.presets import read_preset_file

#: darktable's dt_iop_diffuse_params_t (src/iop/diffuse.c, params version 2), written out
#: here independently of params.FIELDS: field -> (darktable's name, minimum, maximum, default).
DARKTABLE_TABLE = {
    "iterations": ("iterations", 0, 500, 1),
    "radius_center": ("radius_center", 0, 1024, 0),
    "radius": ("radius", 0, 2048, 8),
    "first": ("first", -1.0, 1.0, 0.0),
    "second": ("second", -1.0, 1.0, 0.0),
    "third": ("third", -1.0, 1.0, 0.0),
    "fourth": ("fourth", -1.0, 1.0, 0.0),
    "anisotropy_first": ("anisotropy_first", -10.0, 10.0, 0.0),
    "anisotropy_second": ("anisotropy_second", -10.0, 10.0, 0.0),
    "anisotropy_third": ("anisotropy_third", -10.0, 10.0, 0.0),
    "anisotropy_fourth": ("anisotropy_fourth", -10.0, 10.0, 0.0),
    "sharpness": ("sharpness", -1.0, 1.0, 0.0),
    "edge_sensitivity": ("regularization", 0.0, 4.0, 0.0),
    "edge_threshold": ("variance_threshold", -2.0, 2.0, 0.0),
    "luminance_threshold": ("threshold", 0.0, 8.0, 0.0),
}


def test_defaults_are_darktables():
    p = DiffuseParams()
    assert p.keep_saturated is False  # ours, not darktable's: off, darktable's behaviour
    assert {name: getattr(p, name) for name in DARKTABLE_TABLE} == \
        {name: row[3] for name, row in DARKTABLE_TABLE.items()}
    assert p.to_darktable() == {row[0]: row[3] for row in DARKTABLE_TABLE.values()}


@pytest.mark.parametrize("name", sorted(DARKTABLE_TABLE))
def test_range_is_darktables(name):
    """The accepted range is darktable's, checked at its edges and just outside them."""
    _, low, high, _ = DARKTABLE_TABLE[name]
    assert getattr(DiffuseParams(**{name: low}), name) == low
    assert getattr(DiffuseParams(**{name: high}), name) == high
    step = 1 if isinstance(low, int) else 1e-3
    for bad in (low - step, high + step):
        with pytest.raises(ValueError) as err:
            DiffuseParams(**{name: bad})
        assert name in str(err.value) and f"{low:g} to {high:g}" in str(err.value)


def test_fields_follow_the_table_and_take_keywords_only():
    """The dataclass lists :data:`FIELDS` in order (``to_dict``, JSON, the widget), and a
    positional call, which would silently bind values to the wrong fields, is refused."""
    assert [f.name for f in dataclasses.fields(DiffuseParams)] == [f.name for f in FIELDS]
    values = DiffuseParams.from_preset("denoise: medium").to_dict()
    with pytest.raises(TypeError, match="positional"):
        DiffuseParams(*values.values())


def test_the_only_field_darktable_lacks_is_a_boolean():
    extra = [f for f in FIELDS if f.name not in DARKTABLE_TABLE]
    assert [(f.name, f.kind, f.darktable_name) for f in extra] == \
        [("keep_saturated", bool, None)]
    for bad in (2, -1, 0.5, "yes"):
        with pytest.raises(ValueError, match="keep_saturated"):
            DiffuseParams(keep_saturated=bad)


@pytest.mark.parametrize("good, value", [(True, True), (False, False), (1, True), (0, False),
                                         (1.0, True), (0.0, False), (np.bool_(True), True),
                                         (np.float32(1), True), (np.int64(0), False)])
def test_bool_field_takes_booleans_and_0_or_1(good, value):
    p = DiffuseParams(keep_saturated=good)
    assert p.keep_saturated is value and p == DiffuseParams(keep_saturated=value)


@pytest.mark.parametrize("bad", [0.5, 2, -1, "1", "true", None, float("nan"), [1]])
def test_bool_field_refuses_other_values(bad):
    with pytest.raises(ValueError) as err:
        DiffuseParams(keep_saturated=bad)
    assert f"keep_saturated={bad!r}" in str(err.value) and "True, False, 0 or 1" in str(err.value)


@pytest.mark.parametrize("bad", ["3", None, True, float("nan"), [1]])
def test_wrong_types_are_refused(bad):
    with pytest.raises(ValueError, match="sharpness"):
        DiffuseParams(sharpness=bad)


def test_integer_fields_need_whole_numbers():
    assert DiffuseParams(iterations=np.int64(4), radius=12.0).radius == 12
    with pytest.raises(ValueError, match="whole number"):
        DiffuseParams(iterations=2.5)


def test_is_immutable_and_replace_validates():
    p = DiffuseParams()
    with pytest.raises(AttributeError):
        p.iterations = 3
    q = p.replace(iterations=3, first=0.5)
    assert (q.iterations, q.first, p.iterations) == (3, 0.5, 1)
    with pytest.raises(ValueError, match="unknown parameter"):
        p.replace(speed=1)
    with pytest.raises(ValueError, match=r"names must be strings, not \[1\]"):
        DiffuseParams.from_dict({1: 2})
    with pytest.raises(ValueError, match=r"unknown preset \['bloom'\]; valid presets"):
        DiffuseParams.from_preset(["bloom"])
    with pytest.raises(ValueError, match="first"):
        p.replace(first=2)


def test_dict_json_and_darktable_round_trips():
    p = DiffuseParams.from_preset("dehaze")
    assert DiffuseParams.from_dict(p.to_dict()) == p
    assert DiffuseParams.from_json(p.to_json()) == p
    dt = p.to_darktable()
    assert set(dt) == set(DARKTABLE_NAMES) and len(dt) == 15
    # keep_saturated is ours, not darktable's: left out, and back at its default
    assert len(FIELDS) == 16 and "keep_saturated" not in dt
    kept = p.replace(keep_saturated=True)
    assert kept.to_darktable() == dt and DiffuseParams.from_darktable(dt).keep_saturated is False
    assert DiffuseParams.from_dict(kept.to_dict()) == kept
    assert DiffuseParams.from_json(kept.to_json()) == kept
    with pytest.raises(ValueError, match="unknown darktable parameter"):
        DiffuseParams.from_darktable({"keep_saturated": True})
    assert dt["regularization"] == p.edge_sensitivity and dt["threshold"] == 0
    assert DiffuseParams.from_darktable(dt) == p
    with pytest.raises(ValueError, match="unknown darktable parameter"):
        DiffuseParams.from_darktable({"edge_sensitivity": 1})
    with pytest.raises(ValueError, match="JSON object"):
        DiffuseParams.from_json("[1, 2]")


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        DiffuseParams.from_preset("denoise: extreme")
    assert "denoise: medium" in str(err.value) and "lens deblur: soft" in str(err.value)


@pytest.mark.parametrize("text, problem", [
    ("{not json", "malformed preset file"),
    ('{"name": "x"}', '"params" object'),
    ('{"name": "x", "params": {"iterations": 9999}}', "iterations"),
    ('{"name": "x", "params": {"speed": 1}}', "unknown parameter"),
])
def test_malformed_preset_file_names_file_and_problem(tmp_path, text, problem):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_preset_file(path)
    assert str(path) in str(err.value) and problem in str(err.value)
