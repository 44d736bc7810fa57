"""``napari-diffuse calibrate``, ``run --calibrate``, ``--mask`` and ``--value-range``.

Real subprocesses, real calibrations (``--backend numpy``, small regions: seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_diffuse import diffuse
from napari_diffuse.calibrate import calibrate
from napari_diffuse.params import DiffuseParams
from napari_diffuse.user_presets import CONFIG_DIR_VARIABLE, load_user_preset

REGION = (16, 16, 52, 52)  # 36 x 36 pixels


@pytest.fixture(autouse=True)
def config_folder(tmp_path, monkeypatch):
    """User presets go to a fresh folder (the subprocesses inherit the variable)."""
    monkeypatch.setenv(CONFIG_DIR_VARIABLE, str(tmp_path / "config"))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_diffuse.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def noisy_image() -> np.ndarray:
    """64x64 float32 in 0..1: a checkerboard of 16-pixel squares plus Gaussian noise."""
    y, x = np.mgrid[:64, :64]
    clean = 0.3 + 0.4 * ((x // 16 + y // 16) % 2)
    return (clean + np.random.default_rng(0).normal(0, 0.08, clean.shape)).astype(np.float32)


def first_json_object(text: str) -> dict:
    """The first JSON object in ``text`` (other lines around it are messages)."""
    start = text.index("{")
    return json.JSONDecoder().raw_decode(text[start:])[0]


@pytest.fixture
def noisy_tif(tmp_path):
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, noisy_image())
    return path


def test_calibrate_prints_the_apis_parameters_as_json(noisy_tif, tmp_path):
    result = cli("calibrate", noisy_tif, "--region", *REGION, "--backend", "numpy",
                 "-o", tmp_path / "out" / "params.json", "--save-preset", "my noisy")
    assert result.returncode == 0, result.stderr
    expected, report = calibrate(noisy_image(), region=REGION, backend="numpy",
                                 extra_output=True)
    assert DiffuseParams.from_json(result.stdout) == expected  # stdout: the JSON alone
    assert DiffuseParams.from_json((tmp_path / "out" / "params.json").read_text()) == expected
    assert load_user_preset("my noisy") == expected
    assert f"loss {report.loss:.3g} (input {report.input_loss:.3g})" in result.stderr
    assert f"region {REGION}" in result.stderr

    # the saved preset and the JSON file drive 'run'
    by_preset = cli("run", noisy_tif, "-o", tmp_path / "a.tif", "--preset", "my noisy",
                    "--backend", "numpy")
    by_file = cli("run", noisy_tif, "-o", tmp_path / "b.tif", "--params",
                  tmp_path / "out" / "params.json", "--backend", "numpy")
    assert by_preset.returncode == 0 and by_file.returncode == 0, by_preset.stderr
    expected_image = diffuse(noisy_image(), expected, backend="numpy")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), expected_image)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), expected_image)


def test_run_calibrate_denoise_runs_with_the_parameters_it_prints(noisy_tif, tmp_path):
    result = cli("run", noisy_tif, "-o", tmp_path / "out.tif", "--calibrate", "denoise",
                 "--region", *REGION, "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    printed = DiffuseParams.from_dict(first_json_object(result.stderr))
    assert printed == calibrate(noisy_image(), region=REGION, backend="numpy")
    out = tifffile.imread(tmp_path / "out.tif")
    assert not np.array_equal(out, noisy_image())
    np.testing.assert_array_equal(out, diffuse(noisy_image(), printed, backend="numpy"))
    assert "{" not in result.stdout  # the parameters go to stderr, stdout says what it wrote


def test_inpaint_with_a_mask_file(tmp_path):
    image = noisy_image()
    mask = np.zeros(image.shape, np.uint8)
    mask[28:34, 30:37] = 255
    image[mask != 0] = 1.0  # damaged pixels
    tifffile.imwrite(tmp_path / "in.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    result = cli("calibrate", tmp_path / "in.tif", "--task", "inpaint", "--mask",
                 tmp_path / "mask.tif", "--region", *REGION, "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    expected = calibrate(image, "inpaint", mask=mask != 0, region=REGION, backend="numpy")
    assert DiffuseParams.from_json(result.stdout) == expected

    run = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--mask",
              tmp_path / "mask.tif", "--params", tmp_path / "none.json")
    assert run.returncode == 2 and "--params" in run.stderr  # a missing file, named
    (tmp_path / "p.json").write_text(expected.to_json())
    run = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--mask",
              tmp_path / "mask.tif", "--params", tmp_path / "p.json", "--backend", "numpy")
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"),
                                  diffuse(image, expected, mask=mask != 0, backend="numpy"))


@pytest.mark.filterwarnings("ignore::napari_diffuse.errors.InpaintingWarning")  # 2 iterations
def test_set_takes_booleans(tmp_path):
    image = noisy_image()
    tifffile.imwrite(tmp_path / "in.tif", image)
    for value in ("true", "1"):
        result = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--preset",
                     "inpaint highlights", "--set", "luminance_threshold=0.6", "--set",
                     f"keep_saturated={value}", "--set", "iterations=2", "--backend", "numpy",
                     "--overwrite")
        assert result.returncode == 0, result.stderr
        expected = diffuse(image, preset="inpaint highlights", luminance_threshold=0.6,
                           keep_saturated=True, iterations=2, backend="numpy")
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), expected)
    result = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--set",
                 "keep_saturated=maybe")
    assert result.returncode == 2 and "keep_saturated" in result.stderr


@pytest.mark.parametrize("option, value_range", [
    (["auto"], "auto"), (["dtype"], "dtype"), (["-50", "3000"], (-50.0, 3000.0))],
    ids=["auto", "dtype", "numbers"])
def test_run_value_range(tmp_path, option, value_range):
    counts = np.random.default_rng(3).integers(0, 4096, (24, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", counts)
    result = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--preset",
                 "denoise: fine", "--set", "iterations=2", "--backend", "numpy",
                 "--value-range", *option)
    assert result.returncode == 0, result.stderr
    expected = diffuse(counts, preset="denoise: fine", iterations=2, backend="numpy",
                       value_range=value_range)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), expected)
    assert "warning" not in result.stderr  # a chosen value range is not second-guessed


def test_undetected_value_range_warns_in_one_line(tmp_path):
    counts = np.random.default_rng(3).integers(0, 4096, (24, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", counts)
    result = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--preset", "bloom",
                 "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("napari-diffuse: warning: ") and "auto" in warning
    assert "Pass --value-range auto" in warning and "value_range" not in warning  # CLI words
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"),
                                  diffuse(counts, preset="bloom", backend="numpy",
                                          value_range="auto"))


@pytest.mark.parametrize("args, message", [
    (["run", "{tif}", "-o", "{out}", "--value-range", "1", "x"], "--value-range"),
    (["run", "{tif}", "-o", "{out}", "--value-range", "auto", "2"], "--value-range"),
    (["run", "{tif}", "-o", "{out}", "--value-range", "5", "1"], "--value-range 5.0 1.0 must"),
    (["run", "{tif}", "-o", "{out}", "--set", "iterations=2.5"],
     "--set 'iterations=2.5': iterations=2.5 is not a whole number"),
    (["run", "{tif}", "-o", "{out}", "--mask", "{rgb}"], "--mask has shape (64, 64, 3)"),
    (["calibrate", "{tif}", "--value-range", "sometimes"], "--value-range"),
    (["calibrate", "{tif}", "--region", "0", "0", "10"], "--region"),
    (["calibrate", "{tif}", "--region", "0", "0", "10", "10"], "at least 32x32"),
    (["calibrate", "{tif}", "--region", "0", "0", "64", "99"], "outside the image"),
    (["calibrate", "{tif}", "--task", "sharpen"], "--task"),
    (["calibrate", "{tif}", "--task", "inpaint"], "--mask"),
    (["calibrate", "{tif}", "--channel-axis", "first"], "--channel-axis"),
    (["calibrate", "{tif}", "--channel-axis", "2"], "--channel-axis 2: out of range"),
    (["calibrate", "{tif}", "--mask", "{missing}"], "--mask"),
    (["run", "{tif}", "-o", "{out}", "--calibrate", "inpaint"], "--mask"),
    (["run", "{tif}", "-o", "{out}", "--calibrate", "denoise", "--preset", "bloom"],
     "--preset"),
    (["run", "{tif}", "-o", "{out}", "--region", "0", "0", "40", "40"], "--calibrate"),
    (["run", "{tif}", "-o", "{out}", "--preset", "no such preset"], "--preset"),
])
def test_bad_arguments_exit_2_naming_the_option(noisy_tif, tmp_path, args, message):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    filled = [a.format(tif=noisy_tif, out=tmp_path / "out.tif", rgb=tmp_path / "rgb.tif",
                       missing=tmp_path / "missing.tif") for a in args]
    result = cli(*filled)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.tif").exists()
