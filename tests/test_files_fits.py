"""FITS in and out (files.fits): headers, dtypes, scaling, NaN and every HDU kept."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_diffuse import files
from napari_diffuse.files import FileFormatError, ImageFile, MissingExtraError

fits = pytest.importorskip("astropy.io.fits")

HISTORY = "napari-diffuse 0.1.0 run --preset denoise --iterations 10 --nan keep"


def _wcs_header():
    header = fits.Header()
    for key, value in {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 83.82,
                       "CRVAL2": -5.39, "CRPIX1": 16.0, "CRPIX2": 12.0, "CDELT1": -2.5e-4,
                       "CDELT2": 2.5e-4, "EXPTIME": 120.0, "OBJECT": "M42"}.items():
        header[key] = value
    header["COMMENT"] = "flat-fielded"
    return header


def _frame(dtype):
    values = np.arange(24 * 32).reshape(24, 32) * 37 % 1000
    if dtype == "uint16":
        return (values * 60).astype(np.uint16)  # above 32767: stored as int16 + BZERO
    data = values.astype(dtype)
    if dtype == "float32":
        data[3, 5] = np.nan
    return data


@pytest.mark.parametrize("dtype", ["float32", "int16", "uint16"])
def test_round_trip_keeps_header_dtype_values_and_adds_history(tmp_path, dtype):
    source, target = tmp_path / "frame.fits", tmp_path / "out.fits"
    data = _frame(dtype)
    fits.PrimaryHDU(data, header=_wcs_header()).writeto(source)

    [image] = files.read_images(source)
    assert (image.kind, image.axes, image.nan_default) == ("fits", "YX", "keep")
    assert image.data.dtype == np.dtype(dtype) and image.data.dtype.isnative
    assert image.scale == {"Y": 2.5e-4, "X": 2.5e-4}
    assert image.units == {"Y": "deg", "X": "deg"}
    files.write_images(target, [image], HISTORY, inputs=[source])

    with fits.open(target) as written:
        header, result = written[0].header, written[0].data
        for key, value in _wcs_header().items():
            if key != "COMMENT":
                assert header[key] == value
        assert list(header["COMMENT"]) == ["flat-fielded"]
        assert list(header["HISTORY"]) == [HISTORY]
        assert result.dtype.type == np.dtype(dtype).type  # big-endian in the file
        np.testing.assert_array_equal(result, data)  # NaN where it was
    with fits.open(target, do_not_scale_image_data=True) as raw:
        assert raw[0].header.get("BZERO") == (32768 if dtype == "uint16" else None)


def test_long_history_is_split_into_cards(tmp_path):
    source, target = tmp_path / "in.fits", tmp_path / "out.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(source)
    history = "napari-diffuse 0.1.0 " + " ".join(f"--option-{n} {n}" for n in range(20))
    files.write_images(target, files.read_images(source), history)
    cards = list(fits.getheader(target)["HISTORY"])
    assert len(cards) > 1 and all(len(card) <= 72 for card in cards)
    assert "".join(cards) == history


def test_every_hdu_is_kept_in_place(tmp_path):
    """Empty primary, a Stokes cube, a spectral cube, a table and a 1-D spectrum."""
    source, target = tmp_path / "mef.fits", tmp_path / "out.fits"
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "VLT"
    stokes = fits.ImageHDU(np.random.default_rng(0).random((4, 8, 9), np.float32),
                           name="STOKES")
    stokes.header["CTYPE3"] = "STOKES"
    spectral = fits.ImageHDU(np.ones((5, 6, 7), np.int16), name="CUBE")
    spectral.header["CTYPE3"] = "FREQ"
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.arange(3, dtype=np.float32))],
        name="SOURCES")
    spectrum = fits.ImageHDU(np.arange(10.0), name="SPECTRUM")
    fits.HDUList([primary, stokes, table, spectral, spectrum]).writeto(source)

    images = files.read_images(source)
    assert [image.axes for image in images] == ["CYX", "ZYX"]
    assert [image.header["EXTNAME"] for image in images] == ["STOKES", "CUBE"]
    files.write_images(target, images, HISTORY)

    with fits.open(target) as written:
        assert [hdu.name for hdu in written] == ["PRIMARY", "STOKES", "SOURCES", "CUBE",
                                                 "SPECTRUM"]
        assert written[0].data is None and written[0].header["TELESCOP"] == "VLT"
        np.testing.assert_array_equal(written[1].data, stokes.data)
        np.testing.assert_array_equal(written[2].data["flux"], [0, 1, 2])
        assert written[3].data.dtype.type == np.int16
        np.testing.assert_array_equal(written[4].data, np.arange(10.0))
        assert list(written[1].header["HISTORY"]) == [HISTORY]


def test_scaled_integers_are_physical_on_read_and_requantised_on_write(tmp_path):
    source, target = tmp_path / "scaled.fits", tmp_path / "out.fits"
    raw = np.array([[0, 10, 20], [-32768, 40, 32767]], np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header.update(BSCALE=0.5, BZERO=1000.0, BLANK=-32768)
    hdu.writeto(source)

    [image] = files.read_images(source)
    assert image.data.dtype.kind == "f" and np.isnan(image.data[1, 0])
    assert image.data[0, 1] == 1005.0
    result = image.data + 0.5  # a computed result: floats, NaN kept
    result[0, 0] = 1e9  # beyond the stored range: clipped, not wrapped
    files.write_images(target, [image.replace(data=result)], HISTORY)

    with fits.open(target, do_not_scale_image_data=True) as written:
        header = written[0].header
        assert (header["BITPIX"], header["BSCALE"], header["BZERO"], header["BLANK"]) == (
            16, 0.5, 1000.0, -32768)
        np.testing.assert_array_equal(written[0].data, [[32767, 11, 21], [-32768, 41, 32767]])
    back = fits.getdata(target)
    assert np.isnan(back[1, 0]) and back[0, 1] == 1005.5


def test_integers_with_blank_pixels_stay_integers(tmp_path):
    source, target = tmp_path / "blank.fits", tmp_path / "out.fits"
    raw = np.array([[0, 10, 20], [-32768, 40, 32767]], np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BLANK"] = -32768  # no BSCALE/BZERO: plain integers with missing pixels
    hdu.writeto(source)
    [image] = files.read_images(source)
    assert np.isnan(image.data[1, 0])
    files.write_images(target, [image.replace(data=image.data + 0.4)], HISTORY)
    with fits.open(target, do_not_scale_image_data=True) as written:
        assert written[0].header["BITPIX"] == 16 and written[0].header["BLANK"] == -32768
        np.testing.assert_array_equal(written[0].data, [[0, 10, 20], [-32768, 40, 32767]])


def test_gzipped_fits_round_trip(tmp_path):
    source, target = tmp_path / "in.fits.gz", tmp_path / "out.fits.gz"
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    fits.PrimaryHDU(data).writeto(source)
    files.write_images(target, files.read_images(source), HISTORY)
    assert target.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(fits.getdata(target), data)


def test_image_without_header_gets_calibration_cards(tmp_path):
    target = tmp_path / "out.fits"
    image = ImageFile(np.zeros((2, 5, 6), np.float32), "ZYX",
                      scale={"Z": 0.5, "Y": 0.1625, "X": 0.1625},
                      units={"Z": "µm", "Y": "micron", "X": "µm"})
    files.write_images(target, [image], HISTORY)
    header = fits.getheader(target)
    assert (header["CDELT1"], header["CDELT3"], header["CUNIT1"], header["CUNIT3"]) == (
        0.1625, 0.5, "um", "um")
    [back] = files.read_images(target)
    assert back.scale == image.scale and back.units == {"Z": "um", "Y": "um", "X": "um"}


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file_is_one_line_naming_it(tmp_path, damage):
    good, bad = tmp_path / "good.fits", tmp_path / "bad.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((50, 50), np.float32)),
                  fits.ImageHDU(np.ones((50, 50), np.float32))]).writeto(good)
    content = good.read_bytes()
    bad.write_bytes(content[:-8000] if damage == "truncated" else b"SIMPLE = ?" + content[99:])
    with pytest.raises(FileFormatError) as caught:
        files.read_images(bad)
    message = str(caught.value)
    assert message.startswith(str(bad)) and "\n" not in message
    if damage == "truncated":
        assert "truncated" in message


def test_check_refuses_types_fits_cannot_store(tmp_path):
    image = ImageFile(np.zeros((4, 4), np.complex64), "YX")
    with pytest.raises(FileFormatError, match="complex64"):
        files.check_writable(tmp_path / "out.fits", [image])


def test_missing_astropy_names_the_extra(tmp_path, monkeypatch):
    source = tmp_path / "in.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(source)
    monkeypatch.setitem(sys.modules, "astropy", None)
    monkeypatch.setitem(sys.modules, "astropy.io.fits", None)
    image = ImageFile(np.zeros((4, 4), np.float32), "YX")
    for attempt in (lambda: files.read_images(source),
                    lambda: files.check_writable(tmp_path / "out.fits", [image]),
                    lambda: files.write_images(tmp_path / "out.fits", [image], HISTORY)):
        with pytest.raises(MissingExtraError, match=r"pip install 'napari-diffuse\[fits\]'"):
            attempt()
    assert not (tmp_path / "out.fits").exists()


def test_each_series_history_names_its_own_settings(tmp_path):
    from napari_diffuse import batch
    from napari_diffuse.params import DiffuseParams

    source, target = tmp_path / "two.fits", tmp_path / "out.fits"
    rng = np.random.default_rng(0)
    fits.HDUList([fits.PrimaryHDU(rng.random((20, 24), dtype=np.float32)),
                  fits.ImageHDU(rng.random((30, 24), dtype=np.float32))]).writeto(source)

    def per_series(image, _axis):  # e.g. calibrated on each series
        return DiffuseParams.from_preset("denoise: fine").replace(
            iterations=1 if image.data.shape[0] == 20 else 2)

    batch.diffuse_file(source, target, per_series, batch.Options(backend="numpy"))
    with fits.open(target) as written:
        history = "".join(written[0].header["HISTORY"])  # cards of 72 characters
    assert "series 0:" in history and "series 1:" in history
    assert history.count('"iterations": 1') == 1 and history.count('"iterations": 2') == 1
