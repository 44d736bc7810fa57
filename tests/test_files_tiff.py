"""Every page, series and channel kept through the command line (issue 10, item 5).

Real files in ``tmp_path``, written and read back with the real tifffile and Pillow, no
mocks: ImageJ hyperstacks and OME-TIFF keep their axes, physical sizes, spacing, units,
channel names and ImageJ metadata; planar and contiguous RGB stay RGB; alpha passes through
untouched; every series of a TIFF is kept (or refused with one line); the output type is
checked before any computation; 128 corrupt TIFF and PNG files give exit 0 or a one-line
error naming the file, never a traceback nor a partial file.

The ImageJ round trip runs the command as a real process; the rest call
:func:`napari_diffuse.cli.main` in-process, for speed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_diffuse import diffuse
from napari_diffuse.cli import main

#: The ImageJ test's settings, as a user would type them (a light touch: changes ~1e-4).
FAST = ["--preset", "denoise: fine", "--set", "iterations=2", "--backend", "numpy"]
#: Everywhere else: one iteration of a strong preset, so that a channel diffused by mistake
#: (alpha) or left undiffused shows (``denoise: fine`` leaves 8-bit data unchanged).
BLOOM = ["--preset", "bloom", "--backend", "numpy"]


def expected(data, channel_axis=None, *, preset="bloom"):
    """What ``run`` with :data:`BLOOM` (or :data:`FAST` for ``preset="denoise: fine"``) and
    the default ``--value-range`` (None: detect) should give."""
    overrides = {"iterations": 2} if preset == "denoise: fine" else {}
    return diffuse(data, preset=preset, backend="numpy", channel_axis=channel_axis,
                   value_range=None, **overrides)


def run(capsys, *args) -> tuple[int, str]:
    """``napari-diffuse run ARGS...`` in-process: the exit status and what went to stderr."""
    capsys.readouterr()
    code = main(["run", *map(str, args)])
    return code, capsys.readouterr().err


def partials(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial" in p.name]


def noise(shape, dtype=np.float32, seed=0):
    """Random pixels: 0..1 for floats, the full range for integers."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


# --- 1. ImageJ hyperstack, as a real process ----------------------------------------------

def test_imagej_hyperstack_round_trip_keeps_axes_calibration_and_metadata(tmp_path):
    """A ZCYX ImageJ hyperstack (pixel 0.1625 um, z spacing 0.5 um, ranges, labels, info)
    comes back from the real ``napari-diffuse`` process as a ZCYX ImageJ hyperstack with the
    same calibration and metadata, the history line appended to Info, and each channel
    diffused on its own (``channel_axis=1``)."""
    data = noise((3, 2, 24, 20))
    labels = [f"z{z}c{c}" for z in range(3) for c in range(2)]
    source, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, data, imagej=True, resolution=(1 / 0.1625, 1 / 0.1625),
                     metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um",
                               "Ranges": (0.0, 1.0, 0.0, 0.5), "Labels": labels,
                               "Info": "acquired by the test"})
    result = subprocess.run([sys.executable, "-m", "napari_diffuse.cli", "run", str(source),
                             "-o", str(out), *FAST], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej
        assert len(tif.series) == 1 and tif.series[0].axes == "ZCYX"
        meta = tif.imagej_metadata
        xres, yres = tif.pages[0].resolution
        written = tif.series[0].asarray()
    assert 1 / xres == pytest.approx(0.1625, rel=1e-6)
    assert 1 / yres == pytest.approx(0.1625, rel=1e-6)
    assert meta["spacing"] == pytest.approx(0.5)
    assert meta["unit"] in ("um", "micron", "µm")
    assert tuple(meta["Ranges"]) == (0.0, 1.0, 0.0, 0.5)
    assert list(meta["Labels"]) == labels
    assert "acquired by the test" in meta["Info"]
    assert "napari-diffuse" in meta["Info"]
    want = expected(data, channel_axis=1, preset="denoise: fine")
    assert not np.array_equal(want, data)  # it was diffused
    np.testing.assert_array_equal(written, want)


# --- 2. OME-TIFF ---------------------------------------------------------------------------

def _ome_pixels(path) -> tuple[dict, bool]:
    with tifffile.TiffFile(path) as tif:
        is_ome = tif.is_ome
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"] if is_ome else {}
    image = ome.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    return image.get("Pixels", {}), is_ome


OME_META = {"axes": "TCZYX", "PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.25, "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 1.5,
            "PhysicalSizeZUnit": "µm", "Channel": {"Name": ["DAPI", "GFP"]}}


@pytest.mark.parametrize("name", ["out.ome.tif", "out.tif"])
def test_ome_tiff_round_trip_keeps_physical_sizes_units_and_channel_names(tmp_path, capsys,
                                                                          name):
    """A TCZYX OME-TIFF keeps its axes, PhysicalSizeX/Y/Z with units and channel names, and
    each channel is diffused on its own; written to a plain ``.tif`` name it stays OME."""
    data = noise((2, 2, 3, 20, 24), seed=1)
    source, out = tmp_path / "in.ome.tif", tmp_path / name
    tifffile.imwrite(source, data, metadata=OME_META)
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    pixels, is_ome = _ome_pixels(out)
    assert is_ome, f"{name} from an OME input is not an OME-TIFF"
    assert pixels["DimensionOrder"] == "XYZCT"  # OME order: TCZYX read backwards
    assert (pixels["SizeT"], pixels["SizeC"], pixels["SizeZ"], pixels["SizeY"],
            pixels["SizeX"]) == data.shape
    for letter, size in (("X", 0.2), ("Y", 0.25), ("Z", 1.5)):
        assert float(pixels[f"PhysicalSize{letter}"]) == pytest.approx(size, rel=1e-6)
        assert pixels.get(f"PhysicalSize{letter}Unit", "µm") == "µm"
    channels = pixels["Channel"]
    assert [c["Name"] for c in channels] == ["DAPI", "GFP"]
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TCZYX"
        written = tif.series[0].asarray()
    np.testing.assert_array_equal(written, expected(data, channel_axis=1))


# --- 3. RGB, planar and contiguous ---------------------------------------------------------

@pytest.mark.parametrize("planar", ["separate", "contig"])
def test_rgb_tiff_stays_rgb_with_its_planar_configuration(tmp_path, capsys, planar):
    """A planar (``SYX``) or contiguous (``YXS``) RGB TIFF comes out RGB with the same planar
    configuration, each colour channel diffused on its own (not made grayscale)."""
    shape, axis = ((3, 28, 32), 0) if planar == "separate" else ((28, 32, 3), -1)
    data = noise(shape, np.uint8, seed=2)
    source, out = tmp_path / f"{planar}.tif", tmp_path / f"{planar}-out.tif"
    tifffile.imwrite(source, data, photometric="rgb", planarconfig=planar)
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.planarconfig == (tifffile.PLANARCONFIG.SEPARATE if planar == "separate"
                                     else tifffile.PLANARCONFIG.CONTIG)
        written = tif.series[0].asarray()
    assert written.shape == shape
    want = expected(data, channel_axis=axis)
    np.testing.assert_array_equal(written, want)
    assert not np.array_equal(want[..., 0] if axis else want[0], want[..., 1] if axis
                              else want[1]), "channels should differ (not grayscale)"


# --- 4. alpha passes through ---------------------------------------------------------------

def _rgba(seed=3):
    rgba = noise((26, 30, 4), np.uint8, seed=seed)
    rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, rgba[..., 3] // 4)  # a noisy alpha
    return rgba


def test_alpha_negative_control_diffusing_all_four_channels_changes_alpha():
    """The control for the alpha tests: had alpha been diffused with the colours, it would
    differ from the input's, so an unchanged alpha proves it was passed through."""
    rgba = _rgba()
    assert not np.array_equal(expected(rgba, channel_axis=-1)[..., 3], rgba[..., 3])


def test_rgba_tiff_alpha_untouched_colours_diffused(tmp_path, capsys):
    """An RGBA TIFF (extra sample: unassociated alpha) keeps its alpha byte for byte and its
    extra-sample tag; the three colour channels equal ``diffuse(rgb, channel_axis=-1)``."""
    rgba = _rgba()
    source, out = tmp_path / "rgba.tif", tmp_path / "rgba-out.tif"
    tifffile.imwrite(source, rgba, photometric="rgb", extrasamples=["unassalpha"])
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert tuple(page.extrasamples) == (tifffile.EXTRASAMPLE.UNASSALPHA,)
        written = tif.series[0].asarray()
    assert written.shape == rgba.shape
    assert written[..., 3].tobytes() == rgba[..., 3].tobytes()
    np.testing.assert_array_equal(written[..., :3], expected(rgba[..., :3], channel_axis=-1))


def test_rgba_png_alpha_untouched_colours_diffused(tmp_path, capsys):
    """An RGBA PNG keeps its alpha byte for byte; the colours equal
    ``diffuse(rgb, channel_axis=-1)``; the history goes to the Software text chunk."""
    rgba = _rgba(seed=4)
    source, out = tmp_path / "rgba.png", tmp_path / "rgba-out.png"
    Image.fromarray(rgba, "RGBA").save(source)
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    with Image.open(out) as picture:
        assert picture.mode == "RGBA"
        written = np.asarray(picture)
        assert "napari-diffuse" in picture.text.get("Software", "")
    assert written[..., 3].tobytes() == rgba[..., 3].tobytes()
    np.testing.assert_array_equal(written[..., :3], expected(rgba[..., :3], channel_axis=-1))


# --- 5. every series kept ------------------------------------------------------------------

def test_a_tiff_written_page_by_page_keeps_every_page(tmp_path, capsys):
    """Four pages written one by one with ``TiffWriter`` (four series) give four series,
    each diffused on its own (the issue saw 1 page out and exit 0)."""
    pages = [noise((18, 22), seed=10 + i) for i in range(4)]
    source, out = tmp_path / "pages.tif", tmp_path / "pages-out.tif"
    with tifffile.TiffWriter(source) as writer:
        for page in pages:
            writer.write(page)
    with tifffile.TiffFile(source) as tif:
        assert len(tif.series) == 4  # the premise
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == 4 and len(tif.series) == 4
        written = [series.asarray() for series in tif.series]
    for got, page in zip(written, pages, strict=True):
        np.testing.assert_array_equal(got, expected(page))


def test_a_second_series_of_another_size_is_kept(tmp_path, capsys):
    """A TIFF with a 20x24 series and a 12x16 RGB series keeps both, shapes and colours."""
    first, second = noise((20, 24), seed=20), noise((12, 16, 3), np.uint8, seed=21)
    source, out = tmp_path / "two.tif", tmp_path / "two-out.tif"
    with tifffile.TiffWriter(source) as writer:
        writer.write(first)
        writer.write(second, photometric="rgb")
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    with tifffile.TiffFile(out) as tif:
        assert [s.shape for s in tif.series] == [first.shape, second.shape]
        assert [s.dtype for s in tif.series] == [first.dtype, second.dtype]
        got_first, got_second = (s.asarray() for s in tif.series)
    np.testing.assert_array_equal(got_first, expected(first))
    np.testing.assert_array_equal(got_second, expected(second, channel_axis=-1))


def test_several_series_to_png_are_refused_before_writing(tmp_path, capsys):
    """Two series cannot go into one PNG: exit 2, one line naming the output and saying
    what to write instead, and no output (nor partial) file."""
    source, out = tmp_path / "two.tif", tmp_path / "two.png"
    with tifffile.TiffWriter(source) as writer:
        writer.write(noise((16, 16), np.uint8, seed=30))
        writer.write(noise((8, 8), np.uint8, seed=31))
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-diffuse: error: ")
    assert str(out) in lines[0] and "2 series" in lines[0] and ".tif" in lines[0]
    assert not out.exists() and partials(tmp_path) == []


# --- 6. the output type is checked first ---------------------------------------------------

def test_output_type_is_checked_before_calibration(tmp_path, capsys):
    """A float32 TIFF to ``out.png`` with ``--calibrate denoise`` is refused at once: exit 2,
    one line naming out.png, no calibration ran (no summary on stderr), no output file."""
    source, out = tmp_path / "float.tif", tmp_path / "out.png"
    tifffile.imwrite(source, noise((64, 64), seed=40))
    code, err = run(capsys, source, "-o", out, "--calibrate", "denoise", "--backend",
                    "numpy")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-diffuse: error: ") and str(out) in lines[0]
    assert "float32" in lines[0]
    assert "calibrated in" not in err and "loss" not in err
    assert not out.exists() and partials(tmp_path) == []


# --- 7. fuzzing ----------------------------------------------------------------------------

def _valid_sources(folder) -> list:
    """Small valid TIFF and PNG files of several kinds, to corrupt."""
    folder.mkdir()
    gray8, gray16 = noise((16, 20), np.uint8, seed=50), noise((16, 20), np.uint16, seed=51)
    rgb, rgba = noise((16, 20, 3), np.uint8, seed=52), _rgba(seed=53)[:16, :20]
    files = {
        "plain.tif": lambda p: tifffile.imwrite(p, gray8),
        "zlib.tif": lambda p: tifffile.imwrite(p, gray16, compression="zlib"),
        "float.tif": lambda p: tifffile.imwrite(p, noise((2, 16, 20), seed=54)),
        "planar.tif": lambda p: tifffile.imwrite(p, np.moveaxis(rgb, -1, 0),
                                                 photometric="rgb", planarconfig="separate"),
        "rgba.tif": lambda p: tifffile.imwrite(p, rgba, photometric="rgb",
                                               extrasamples=["unassalpha"]),
        "imagej.tif": lambda p: tifffile.imwrite(
            p, noise((2, 16, 20), np.uint16, seed=55), imagej=True,
            resolution=(4.0, 4.0), metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"}),
        "stack.ome.tif": lambda p: tifffile.imwrite(
            p, noise((2, 16, 20), np.uint8, seed=56),
            metadata={"axes": "CYX", "PhysicalSizeX": 0.3, "Channel": {"Name": ["a", "b"]}}),
        "gray.png": lambda p: Image.fromarray(gray8).save(p),
        "gray16.png": lambda p: Image.fromarray(gray16).save(p),
        "rgb.png": lambda p: Image.fromarray(rgb).save(p),
        "rgba.png": lambda p: Image.fromarray(rgba, "RGBA").save(p),
    }
    paths = []
    for name, write in files.items():
        write(folder / name)
        paths.append(folder / name)
    return paths


def _corrupt_files(folder, sources) -> list:
    """128 corrupt files: truncations, flipped bytes at seeded offsets, random bytes."""
    rng = np.random.default_rng(2026)
    folder.mkdir()
    made = []

    def save(name, content):
        path = folder / name
        path.write_bytes(content)
        made.append(path)

    for i in range(44):  # truncated at lengths spread over the whole file
        source = sources[i % len(sources)]
        content = source.read_bytes()
        cut = int(rng.integers(0, len(content)))
        save(f"cut{i:03d}-{source.name}", content[:cut])
    for i in range(64):  # one to three bytes flipped, headers and pixels alike
        source = sources[i % len(sources)]
        content = bytearray(source.read_bytes())
        near_start = i % 2 == 0  # half in the first 256 bytes, where the structure is
        for _ in range(1 + i % 3):
            offset = int(rng.integers(0, min(256, len(content)) if near_start
                                      else len(content)))
            content[offset] ^= int(rng.integers(1, 256))
        save(f"flip{i:03d}-{source.name}", bytes(content))
    for i in range(20):  # random bytes under an image's name
        suffix = (".png", ".tif", ".ome.tif", ".tiff")[i % 4]
        size = int(rng.integers(0, 2048))
        save(f"random{i:03d}{suffix}", rng.bytes(size))
    assert len(made) == 128
    return made


def test_128_corrupt_files_give_one_line_naming_the_file_never_a_traceback(tmp_path, capsys):
    """Each of 128 truncated, byte-flipped or random TIFF and PNG files either runs (exit 0)
    or ends with exit 2 and a last stderr line ``napari-diffuse: error: `` naming the input;
    no exception escapes ``main`` and no partial file is left anywhere."""
    sources = _valid_sources(tmp_path / "valid")
    for source in sources:  # the premise: every source is valid
        code, err = run(capsys, source, "-o", tmp_path / "valid-out" / source.name,
                        "--preset", "bloom", "--backend", "numpy")
        assert code == 0, err
    outcomes = []
    for index, path in enumerate(_corrupt_files(tmp_path / "bad", sources)):
        out = tmp_path / "out" / f"{index:03d}-{path.name}"
        code, err = run(capsys, path, "-o", out, "--preset", "bloom", "--backend", "numpy")
        outcomes.append(code)
        assert code in (0, 2), (path.name, code, err)
        assert "Traceback" not in err, (path.name, err)
        if code == 2:
            last = err.strip().splitlines()[-1]
            assert last.startswith("napari-diffuse: error: "), (path.name, err)
            assert str(path) in last, (path.name, err)
            assert not out.exists(), path.name
        assert partials(tmp_path) == [], path.name
    assert outcomes.count(2) >= 64, "most corrupt files should be refused"


def test_random_bytes_png_is_reported_as_not_a_png_or_jpeg(tmp_path, capsys):
    """Random bytes named ``.png``: one line saying the file is not a PNG or JPEG image, and
    no advice to install an imageio plugin (the issue's 'pip install imageio[pyav]')."""
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(60).bytes(1000))
    code, err = run(capsys, path, "-o", tmp_path / "out.png", "--preset", "bloom",
                    "--backend", "numpy")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"napari-diffuse: error: {path}")
    assert "not a PNG or JPEG image" in lines[0]
    assert "pip install" not in err and "imageio" not in err


# --- 8. JPEG, 16-bit PNG, corrupt mask -----------------------------------------------------

def test_jpeg_refuses_alpha(tmp_path, capsys):
    """An RGBA PNG to ``.jpg`` is refused before any work: exit 2, one line naming the JPEG
    and saying it has no alpha channel; nothing written."""
    source, out = tmp_path / "rgba.png", tmp_path / "out.jpg"
    Image.fromarray(_rgba(seed=70), "RGBA").save(source)
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "no alpha" in lines[0]
    assert not out.exists() and partials(tmp_path) == []


def test_16_bit_gray_png_round_trip(tmp_path, capsys):
    """A 16-bit gray PNG comes back a 16-bit gray PNG equal to ``diffuse`` of its pixels
    (not cut to 8 bits, nor refused as int32)."""
    gray = noise((24, 28), np.uint16, seed=71)
    source, out = tmp_path / "gray16.png", tmp_path / "gray16-out.png"
    Image.fromarray(gray).save(source)
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 0, err
    with Image.open(out) as picture:
        assert picture.mode.startswith("I")
        written = np.asarray(picture)
    assert written.dtype == np.uint16 or written.max() > 255
    np.testing.assert_array_equal(written.astype(np.uint16), expected(gray))


def test_corrupt_mask_names_the_mask_option(tmp_path, capsys):
    """A corrupt ``--mask`` file gives one line naming ``--mask`` and the mask's path."""
    source, mask, out = tmp_path / "in.tif", tmp_path / "mask.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, noise((32, 32), seed=72))
    tifffile.imwrite(mask, np.ones((32, 32), np.uint8))
    mask.write_bytes(mask.read_bytes()[:20])
    code, err = run(capsys, source, "-o", out, "--mask", mask, *BLOOM)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-diffuse: error: --mask ")
    assert str(mask) in lines[0]
    assert not out.exists() and partials(tmp_path) == []


def test_float_pixels_corrupted_to_nan_name_the_file_and_the_nan_option(tmp_path, capsys):
    """A float32 TIFF whose pixel bytes were corrupted into a NaN (4 bytes overwritten, the
    file otherwise valid) run on its own: exit 2, one line naming the input file and the
    command-line option that handles NaN (``--nan``), not the API's ``nan='inpaint'``.
    (In a batch the file is named; a single file must be too: issue 10 item 5.)"""
    image = noise((16, 16), seed=80)
    image[5, 6] = 0.123456789
    source, out = tmp_path / "float.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image)
    content = bytearray(source.read_bytes())
    at = bytes(content).index(np.float32(0.123456789).tobytes())
    content[at:at + 4] = np.float32(np.nan).tobytes()
    source.write_bytes(bytes(content))
    assert np.isnan(tifffile.imread(source)[5, 6])  # the premise: the corruption is a NaN
    code, err = run(capsys, source, "-o", out, *BLOOM)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-diffuse: error: "), err
    assert str(source) in lines[0], err
    assert "--nan" in lines[0], err
    assert not out.exists() and partials(tmp_path) == []
