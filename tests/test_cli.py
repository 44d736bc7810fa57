"""The napari-diffuse command line, run as a real subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import tifffile

from napari_diffuse import diffuse, list_presets


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_diffuse.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_presets_lists_all():
    """Each group's presets, one per line (name, two spaces, description), science first."""
    result = cli("presets", cwd=None)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    listed = [line.strip().split("  ")[0] for line in lines if line.startswith("  ")]
    assert listed == list_presets("science") + list_presets("darktable")
    assert lines.index("science:") < lines.index("darktable:")


def test_run_on_a_tiff_stack_with_overrides(tmp_path):
    stack = np.random.default_rng(0).integers(0, 65535, (3, 24, 31), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", stack, photometric="minisblack")
    result = cli("run", tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--preset",
                 "denoise: fine", "--set", "iterations=2", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    out = tifffile.imread(tmp_path / "out.tif")
    expected = diffuse(stack, preset="denoise: fine", iterations=2, backend="numpy")
    np.testing.assert_array_equal(out, expected)


def test_run_on_an_rgb_png(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (20, 26, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "in.png", rgb)
    result = cli("run", tmp_path / "in.png", "-o", tmp_path / "out.png", "--preset", "bloom")
    assert result.returncode == 0, result.stderr
    out = iio.imread(tmp_path / "out.png")
    np.testing.assert_array_equal(out, diffuse(rgb, preset="bloom", channel_axis=-1))


def test_bad_input_exits_2_with_a_message(tmp_path):
    (tmp_path / "in.tif").write_bytes(b"")
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((8, 8), np.float32))
    out_of_range = cli("run", tmp_path / "ok.tif", "-o", tmp_path / "o.tif", "--set",
                       "iterations=900")
    assert out_of_range.returncode == 2
    last_line = out_of_range.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"napari-diffuse: error: --set 'iterations=900': iterations=900(\.0)? "
                        r"is out of range \(accepted range: 0 to 500\)", last_line)
    unknown = cli("run", tmp_path / "ok.tif", "-o", tmp_path / "o.tif", "--set", "speed=1")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1].startswith(
        "napari-diffuse: error: --set 'speed=1': expected FIELD=VALUE with FIELD one of")
    missing_device = subprocess.run(
        [sys.executable, "-m", "napari_diffuse.cli", "run", str(tmp_path / "ok.tif"), "-o",
         str(tmp_path / "o.tif"), "--backend", "opencl"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "NAPARI_DIFFUSE_OPENCL_DEVICE": "no such device"})
    assert missing_device.returncode == 2 and "Traceback" not in missing_device.stderr
    assert "no such device" in missing_device.stderr
    result = cli("run", tmp_path / "ok.tif", "-o", tmp_path / "o.bmp")
    assert result.returncode == 2 and "unsupported file type" in result.stderr
    assert cli("run", tmp_path / "in.tif", "-o", tmp_path / "o.tif").returncode == 2


def test_demo_writes_results_and_a_before_after_picture(tmp_path, opencl_device):
    result = cli("demo", "--out", tmp_path / "demo", "--backend", "opencl")
    assert result.returncode == 0, result.stderr
    picture = iio.imread(tmp_path / "demo" / "before_after.png")
    assert picture.ndim == 3 and picture.shape[1] == 512 and picture[..., :3].std() > 10
    for name in ("fluorescence", "blurred", "stars"):
        before = tifffile.imread(tmp_path / "demo" / f"{name}-before.tif")
        after = tifffile.imread(tmp_path / "demo" / f"{name}-after.tif")
        assert before.shape == after.shape and not np.array_equal(before, after)


def test_api_advice_reaches_the_shell_in_option_words():
    """Errors and warnings written for the API name the CLI's options instead."""
    from napari_diffuse.cli import _cli_words

    cases = {
        "pass nan='inpaint' or nan='keep'": "pass --nan inpaint or --nan keep",
        "Pass value_range='auto', value_range=(lo, hi)": "Pass --value-range auto, "
                                                         "--value-range lo hi",
        "channel_axis=None or channel_axis=-1": "--channel-axis none or --channel-axis -1",
        "above luminance_threshold=0.5 is inpainted, luminance_threshold=0 inpaints nothing":
            "above luminance_threshold=0.5 is inpainted, --set luminance_threshold=0 inpaints "
            "nothing",
        "--set 'luminance_threshold=9': luminance_threshold=9.0 is out of range":
            "--set 'luminance_threshold=9': luminance_threshold=9.0 is out of range",
        "or calibrate(image, 'inpaint', mask=...)": "or --calibrate inpaint",
        "without overwrite=True": "without --overwrite",
        "mask has shape (2, 3)": "--mask has shape (2, 3)",
        "an image mask has shape": "an image mask has shape",  # only a leading 'mask'
    }
    assert {text: _cli_words(text) for text in cases} == cases
