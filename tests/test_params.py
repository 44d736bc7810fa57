"""DiffuseParams: defaults, ranges, conversions; presets as data files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_diffuse import DiffuseParams, list_presets
from napari_diffuse.params import DARKTABLE_NAMES, FIELDS
from napari_diffuse.presets import read_preset_file

PEER_PRESETS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "darktable-cli" / \
    "presets.json"
DARKTABLE_PRESET_NAMES = {  # darktable 4.2's names -> the 4.x/5.0 names used here
    "sharpen demosaicing (no AA filter)": "sharpen demosaicing: no AA filter",
    "sharpen demosaicing (AA filter)": "sharpen demosaicing: AA filter",
    "add local contrast": "local contrast",
    "fast sharpness": "sharpness: fast",
    "fast local contrast": "local contrast: fast",
}


def test_defaults_are_darktables():
    p = DiffuseParams()
    assert p.iterations == 1 and p.radius == 8
    assert p.keep_saturated is False  # ours, not darktable's: off, darktable's behaviour
    assert all(getattr(p, f.name) == 0 for f in FIELDS if f.name not in ("iterations", "radius"))
    assert [f.name for f in FIELDS] == list(p.to_dict())


@pytest.mark.parametrize("spec", FIELDS, ids=lambda f: f.name)
def test_range_is_enforced(spec):
    DiffuseParams(**{spec.name: spec.minimum})
    DiffuseParams(**{spec.name: spec.maximum})
    for bad in (spec.minimum - 1, spec.maximum + 1):
        with pytest.raises(ValueError) as err:
            DiffuseParams(**{spec.name: bad})
        message = str(err.value)
        accepted = "True, False, 0 or 1" if spec.kind is bool else \
            f"{spec.minimum:g} to {spec.maximum:g}"
        assert spec.name in message and accepted in message


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


def test_seventeen_presets_equal_darktables():
    names = list_presets("darktable")
    assert len(names) == 17
    peer = json.loads(PEER_PRESETS.read_text())["presets"]
    assert {DARKTABLE_PRESET_NAMES.get(k, k) for k in peer} == set(names)
    for dt_name, entry in peer.items():
        ours = DiffuseParams.from_preset(DARKTABLE_PRESET_NAMES.get(dt_name, dt_name))
        theirs = DiffuseParams.from_darktable(entry["params"])
        for key, value in theirs.to_dict().items():  # darktable stores float32
            assert np.float32(getattr(ours, key)) == np.float32(value), (dt_name, key)


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
