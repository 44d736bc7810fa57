"""Nothing lost on the command line: inputs never overwritten, existing outputs kept without
--overwrite, failed writes and Ctrl-C leave no partial file, batches go on past a bad file.

Every test runs the real command as a process; faults are real (a file-size limit set with
``setrlimit`` makes the write fail with EFBIG; Ctrl-C is a real SIGINT).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_diffuse import diffuse

FAST = ["--preset", "denoise: fine", "--set", "iterations=2", "--backend", "numpy"]


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "napari_diffuse.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, **kwargs)


def partials(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial" in p.name]


@pytest.fixture
def frame(tmp_path):
    image = np.random.default_rng(0).random((40, 48), dtype=np.float32)
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, image)
    return path, image


def test_writing_over_the_input_is_refused_and_the_input_is_unchanged(frame, tmp_path):
    path, _ = frame
    before = path.read_bytes()
    for output in (path, tmp_path / "." / "frame.tif", tmp_path):
        result = cli("run", path, "-o", output, *FAST, "--overwrite")
        assert result.returncode == 2, result.stderr
        assert "is an input file" in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == before
    os.link(path, tmp_path / "hard-link.tif")  # the same file under another name
    result = cli("run", path, "-o", tmp_path / "hard-link.tif", *FAST, "--overwrite")
    assert result.returncode == 2 and "is an input file" in result.stderr
    assert path.read_bytes() == before


def test_an_existing_output_survives_without_overwrite(frame, tmp_path):
    path, image = frame
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    result = cli("run", path, "-o", out, *FAST)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"napari-diffuse: error: {out}: already exists; refusing "
                                     "to replace it without --overwrite")
    assert out.read_bytes() == b"precious"
    result = cli("run", path, "-o", out, *FAST, "--overwrite")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(tifffile.imread(out), diffuse(
        image, preset="denoise: fine", iterations=2, backend="numpy"))


def _limit_file_size(limit: int):
    def limit_it():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_it


def test_a_write_that_fails_halfway_keeps_the_previous_output(tmp_path):
    """A real failed write (the process may not write files over 64 KiB): the previous
    output is intact, no partial file is left, the message names the file."""
    image = np.random.default_rng(1).random((256, 256), dtype=np.float32)  # 256 KiB
    tifffile.imwrite(tmp_path / "big.tif", image)
    out = tmp_path / "out.tif"
    previous = np.arange(64, dtype=np.uint8).reshape(8, 8)
    tifffile.imwrite(out, previous)
    before = out.read_bytes()
    result = cli("run", tmp_path / "big.tif", "-o", out, *FAST, "--overwrite",
                 preexec_fn=_limit_file_size(64 * 1024))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"napari-diffuse: error: {out}: writing failed: ")
    assert "nothing was written" in last and "Traceback" not in result.stderr
    assert out.read_bytes() == before and partials(tmp_path) == []
    # the negative control: the same run without the limit writes the file
    assert cli("run", tmp_path / "big.tif", "-o", out, *FAST, "--overwrite").returncode == 0
    assert out.read_bytes() != before


def test_ctrl_c_exits_130_with_one_line_and_no_partial_output(tmp_path):
    """A batch of a small then a slow file, interrupted by a real SIGINT while the slow one
    runs: the first output is complete, the second absent, no partial file, exit 130."""
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(2).random((32, 32), np.float32))
    tifffile.imwrite(tmp_path / "b.tif",
                     np.random.default_rng(3).random((1024, 1024), np.float32))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "napari_diffuse.cli", "run", str(tmp_path / "a.tif"),
         str(tmp_path / "b.tif"), "-o", str(out), "--preset", "denoise: medium", "--set",
         "iterations=200", "--backend", "numpy"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # "wrote .../a.tif (...)": b.tif is now running
    assert first.startswith(f"wrote {out / 'a.tif'}"), first + process.stderr.read()
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == ("napari-diffuse: interrupted; no partial output "
                                               "was left")
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"] and partials(tmp_path) == []
    assert tifffile.imread(out / "a.tif").shape == (32, 32)


def test_a_batch_with_a_bad_file_writes_the_good_ones_and_exits_2(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    images = {}
    for name in ("a", "c"):
        images[name] = np.random.default_rng(ord(name)).random((24, 28), dtype=np.float32)
        tifffile.imwrite(frames / f"{name}.tif", images[name])
    (frames / "b.tif").write_bytes(b"II*\x00 this is not a TIFF")
    result = cli("run", frames / "*.tif", "-o", tmp_path / "out", *FAST)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("napari-diffuse: error: ") and str(frames / "b.tif") in line
               for line in lines)
    assert lines[-1] == "2 of 3 files written, 1 failed" and "Traceback" not in result.stderr
    for name, image in images.items():
        np.testing.assert_array_equal(
            tifffile.imread(tmp_path / "out" / f"{name}.tif"),
            diffuse(image, preset="denoise: fine", iterations=2, backend="numpy"))
    assert not (tmp_path / "out" / "b.tif").exists()


def test_a_batch_is_checked_before_any_work(tmp_path, frame):
    path, _ = frame
    other = tmp_path / "sub"
    other.mkdir()
    tifffile.imwrite(other / "frame.tif", np.zeros((8, 8), np.float32))
    result = cli("run", path, other / "frame.tif", "-o", tmp_path / "out", *FAST)
    assert result.returncode == 2 and "would be written there" in result.stderr
    assert not (tmp_path / "out").exists()
    result = cli("run", path, tmp_path / "nothing-*.tif", "-o", tmp_path / "out", *FAST)
    assert result.returncode == 2 and "matches nothing" in result.stderr
    result = cli("run", path, other / "frame.tif", "-o", path, *FAST)
    assert result.returncode == 2 and "is a file" in result.stderr


def test_nan_option_on_the_command_line(tmp_path):
    image = np.random.default_rng(4).random((32, 40), dtype=np.float32)
    image[10:12, 5:30] = np.nan
    tifffile.imwrite(tmp_path / "holes.tif", image)
    refused = cli("run", tmp_path / "holes.tif", "-o", tmp_path / "out.tif", *FAST)
    assert refused.returncode == 2 and "--nan keep" in refused.stderr
    assert str(tmp_path / "holes.tif") in refused.stderr
    for policy in ("keep", "inpaint"):
        out = tmp_path / f"{policy}.tif"
        result = cli("run", tmp_path / "holes.tif", "-o", out, *FAST, "--nan", policy)
        assert result.returncode == 0, result.stderr
        expected = diffuse(image, preset="denoise: fine", iterations=2, backend="numpy",
                           nan=policy)
        np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_a_fits_frame_keeps_its_header_and_its_missing_pixels(tmp_path):
    """FITS defaults to --nan keep: NaN stays NaN, the header (WCS, EXPTIME) is kept and a
    HISTORY card names the tool and the parameters."""
    from astropy.io import fits

    image = np.random.default_rng(5).random((40, 44), dtype=np.float32) * 900 + 100
    image[:, :4] = np.nan  # a mosaic's empty edge
    header = fits.Header({"EXPTIME": 300.0, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
                          "CRVAL1": 150.1, "CRVAL2": 2.2, "CDELT1": -0.0002,
                          "CDELT2": 0.0002, "CUNIT1": "deg", "CUNIT2": "deg"})
    fits.PrimaryHDU(image, header).writeto(tmp_path / "frame.fits")
    out = tmp_path / "out.fits"
    result = cli("run", tmp_path / "frame.fits", "-o", out, *FAST, "--value-range", "auto")
    assert result.returncode == 0, result.stderr
    with fits.open(out) as hdus:
        written, data = hdus[0].header, hdus[0].data
        for key in header:
            assert written[key] == header[key], key
        history = "".join(str(card) for card in written["HISTORY"])
        assert history.startswith("napari-diffuse ") and '"iterations": 2' in history
        assert "nan='keep'" in history
        assert np.array_equal(np.isnan(data), np.isnan(image))
        expected = diffuse(image, preset="denoise: fine", iterations=2, backend="numpy",
                           value_range="auto", nan="keep")
        np.testing.assert_array_equal(data, expected)


def test_an_ome_zarr_gives_a_readable_ome_zarr_with_the_same_axes_and_scale(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.writer import write_image

    image = np.random.default_rng(6).random((2, 96, 80), dtype=np.float32)
    write_image(image, str(tmp_path / "in.ome.zarr"), axes="cyx",
                scale={"c": 1.0, "y": 0.325, "x": 0.325}, scale_factors=[2],
                axes_units={"y": "micrometer", "x": "micrometer"},
                storage_options={"chunks": (1, 48, 40)})
    out = tmp_path / "out.ome.zarr"
    result = cli("run", tmp_path / "in.ome.zarr", "-o", out, *FAST)
    assert result.returncode == 0, result.stderr
    node = next(iter(Reader(parse_url(str(out)))()))
    axes = node.metadata["axes"]
    assert [a["name"] for a in axes] == ["c", "y", "x"]
    assert [a.get("unit") for a in axes] == [None, "micrometer", "micrometer"]
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [1.0, 0.325, 0.325] and len(node.data) >= 2
    expected = diffuse(image, preset="denoise: fine", iterations=2, backend="numpy",
                       channel_axis=0)
    np.testing.assert_array_equal(np.asarray(node.data[0]), expected)


def test_calibration_sees_missing_pixels_filled(tmp_path):
    """FITS NaN (default keep) or --nan inpaint: calibrate on the started image instead of
    refusing the NaN in its region; --nan error still refuses (the negative control)."""
    from skimage import data as skdata

    clean = skdata.camera()[64:192, 64:192].astype(np.float32) / 255
    image = clean + np.random.default_rng(7).normal(0, 0.05, clean.shape).astype(np.float32)
    image[60:64, :] = np.nan
    tifffile.imwrite(tmp_path / "holes.tif", image)
    refused = cli("calibrate", tmp_path / "holes.tif", "--backend", "numpy", "--nan", "error",
                  "--region", "40", "40", "80", "80")
    assert refused.returncode == 2 and "NaN" in refused.stderr
    result = cli("calibrate", tmp_path / "holes.tif", "--backend", "numpy", "--nan", "keep",
                 "--region", "40", "40", "80", "80")
    assert result.returncode == 0, result.stderr
    assert '"iterations"' in result.stdout


def test_calibrate_output_never_replaces_the_input_or_an_old_file(frame, tmp_path):
    path, _ = frame
    before = path.read_bytes()
    result = cli("calibrate", path, "-o", path, "--backend", "numpy")
    assert result.returncode == 2 and "is an input file" in result.stderr, result.stderr
    assert path.read_bytes() == before
    params = tmp_path / "params.json"
    params.write_text("old")
    result = cli("calibrate", path, "-o", params, "--backend", "numpy")
    assert result.returncode == 2 and "without --overwrite" in result.stderr
    assert params.read_text() == "old"
    result = cli("calibrate", path, "-o", params, "--overwrite", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert json.loads(params.read_text())["iterations"] >= 1
    assert partials(tmp_path) == []


def test_the_batch_bar_follows_every_computation_and_never_goes_back(monkeypatch):
    import dask.array as da

    from napari_diffuse.cli import _BatchBar

    bar, seen = _BatchBar(1), []
    monkeypatch.setattr(bar, "fraction", seen.append)
    image = da.ones((64, 64), chunks=16)

    def write():  # as an OME-Zarr pyramid is written: one computation per level
        for level in (image, image[::2, ::2], image[::4, ::4]):
            level.sum().compute(scheduler="synchronous")

    bar.compute(write)
    bar.close()
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert any(0.5 < f < 1.0 for f in seen)  # it moves through the whole file
