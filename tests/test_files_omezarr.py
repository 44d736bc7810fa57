"""OME-Zarr in and out (files.omezarr): lazy, chunk by chunk, metadata and pyramid kept."""

from __future__ import annotations

import sys
import threading

import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback

from napari_diffuse import files
from napari_diffuse.files import FileFormatError, ImageFile, MissingExtraError

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")
from ome_zarr.format import FormatV04  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_image, write_labels  # noqa: E402

HISTORY = "napari-diffuse 0.1.0 run --preset denoise"
WINDOW = {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}


def _source(path, fmt=None):
    """A CZYX OME-Zarr written by ome-zarr itself: 3 levels, units, channel names."""
    data = np.random.default_rng(1).random((2, 4, 64, 80), dtype=np.float32)
    micrometer = "micrometer"
    write_image(data, str(path), axes="czyx", fmt=fmt, scale_factors=[2, 4],
                scale={"c": 1.0, "z": 0.5, "y": 0.1625, "x": 0.1625},
                axes_units={"z": micrometer, "y": micrometer, "x": micrometer},
                storage_options={"chunks": (1, 1, 32, 32)},
                omero={"channels": [{"label": "DAPI", "color": "0000FF", "window": WINDOW},
                                    {"label": "GFP", "color": "00FF00", "window": WINDOW}]})
    return data


def _metadata(path):
    node = next(iter(Reader(parse_url(str(path)))()))
    return node.metadata, node.data


def test_read_is_lazy_with_axes_scale_units_and_names(tmp_path):
    source = tmp_path / "in.ome.zarr"
    data = _source(source)
    [image] = files.read_images(source)
    assert isinstance(image.data, da.Array) and image.data.chunksize == (1, 1, 32, 32)
    assert (image.kind, image.axes, image.channel_names) == ("ome-zarr", "CZYX", ("DAPI", "GFP"))
    assert image.scale == {"Z": 0.5, "Y": 0.1625, "X": 0.1625}
    assert image.units == {"Z": "micrometer", "Y": "micrometer", "X": "micrometer"}
    assert image.extra["ngff_levels"] == 3 and image.extra["ngff_downscale"] == {"Y": 2, "X": 2}
    np.testing.assert_array_equal(image.data.compute(), data)


@pytest.mark.parametrize("fmt", [None, FormatV04()], ids=["ngff-0.5", "ngff-0.4"])
def test_round_trip_is_a_valid_ome_zarr_with_the_same_metadata(tmp_path, fmt):
    source, target = tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr"
    data = _source(source, fmt)
    write_labels(np.ones((4, 64, 80), np.uint8), zarr.open_group(str(source)), name="cells",
                 axes="zyx", fmt=fmt, scaler=None, scale_factors=[2])
    [image] = files.read_images(source)
    files.write_images(target, [image.replace(data=image.data * 2)], HISTORY, inputs=[source])

    metadata, levels = _metadata(target)
    before, _ = _metadata(source)
    assert metadata["axes"] == before["axes"]
    assert metadata["channel_names"] == ["DAPI", "GFP"]
    assert metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 0.5, 0.1625, 0.1625]
    assert [level.shape for level in levels] == [(2, 4, 64, 80), (2, 4, 32, 40),
                                                  (2, 4, 16, 20)]
    np.testing.assert_allclose(levels[0].compute(), data * 2)
    block_mean = (data * 2).reshape(2, 4, 32, 2, 40, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(levels[1].compute(), block_mean, rtol=1e-6)
    group = zarr.open_group(str(target), mode="r")
    assert group.attrs["napari-diffuse"] == {"history": HISTORY}
    assert group.metadata.zarr_format == (2 if fmt else 3)
    assert (target / "labels" / "cells").is_dir()
    [back] = files.read_images(target)
    assert (back.axes, back.scale, back.units, back.channel_names) == (
        image.axes, image.scale, image.units, image.channel_names)
    assert back.extra["ngff_levels"] == 3


def test_numpy_image_gets_a_default_pyramid_and_ngff_axis_order(tmp_path):
    target = tmp_path / "out.ome.zarr"
    data = np.arange(600 * 700 * 3, dtype=np.uint16).reshape(600, 700, 3)
    image = ImageFile(data, "YXS", scale={"Y": 0.2, "X": 0.2}, units={"Y": "µm", "X": "µm"},
                      channel_names=("R", "G", "B"), alpha=np.full((600, 700, 1), 255, np.uint16),
                      extra={"ngff_translation": {"Y": 10.0}})
    files.write_images(target, [image], HISTORY)
    metadata, levels = _metadata(target)
    assert [axis["name"] for axis in metadata["axes"]] == ["c", "y", "x"]
    assert metadata["axes"][2]["unit"] == "micrometer"
    assert metadata["channel_names"] == ["R", "G", "B", "alpha"]
    assert [level.shape for level in levels] == [(4, 600, 700), (4, 300, 350), (4, 150, 175)]
    assert levels[1].dtype == np.uint16
    np.testing.assert_array_equal(levels[0][:3].compute(), np.moveaxis(data, 2, 0))
    translations = [t[1]["translation"] for t in metadata["coordinateTransformations"]]
    assert translations[0] == [0.0, 10.0, 0.0]
    assert translations[1] == pytest.approx([0.0, 10.1, 0.1])  # centre of a 2x2 block


def test_single_level_input_gets_a_pyramid(tmp_path):
    source, target = tmp_path / "flat.ome.zarr", tmp_path / "out.ome.zarr"
    write_image(np.zeros((64, 80), np.float32), str(source), axes="yx", scale_factors=[])
    [image] = files.read_images(source)
    assert image.extra["ngff_levels"] == 1
    files.write_images(target, [image], HISTORY)
    assert [level.shape for level in _metadata(target)[1]] == [(64, 80), (32, 40)]


def test_result_is_computed_once_chunk_by_chunk(tmp_path):
    """Each chunk of the result is computed exactly once, never the whole array: the
    pyramid levels are made from the level written to disk, not by recomputing."""
    calls, lock = [], threading.Lock()

    def compute_chunk(block):
        with lock:
            calls.append(block.shape)
        return block * 2

    result = da.ones((600, 700), np.float32, chunks=(256, 256)).map_blocks(
        compute_chunk, meta=np.array((), np.float32))
    files.write_images(tmp_path / "out.ome.zarr", [ImageFile(result, "YX")], HISTORY)
    assert sorted(calls) == sorted((rows, columns) for rows in result.chunks[0]
                                   for columns in result.chunks[1])
    _, levels = _metadata(tmp_path / "out.ome.zarr")
    assert len(levels) == 3 and float(levels[2].max().compute()) == 2.0


def test_writer_runs_on_the_active_distributed_client(tmp_path):
    distributed = pytest.importorskip("distributed")
    result = da.ones((300, 300), np.float32, chunks=(100, 100)) * 3
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=":0") as client:
        with distributed.get_task_stream(client) as stream:
            files.write_images(tmp_path / "out.ome.zarr", [ImageFile(result, "YX")], HISTORY)
    assert len(stream.data) >= 9  # the 3x3 chunks of level 0 ran on the cluster's worker
    _, levels = _metadata(tmp_path / "out.ome.zarr")
    assert float(levels[0].min().compute()) == 3.0


def test_writer_never_holds_more_than_a_chunk_per_task(tmp_path):
    """No task of the write, pyramid included, produces more than one chunk's data."""
    largest = []

    def record(key, value, *_):
        largest.append(getattr(value, "nbytes", 0))

    result = da.random.random((512, 512), chunks=(128, 128))  # float64: 128 KiB a chunk
    with Callback(posttask=record):
        files.write_images(tmp_path / "out.ome.zarr", [ImageFile(result, "YX")], HISTORY)
    assert len(largest) >= 16 and max(largest) <= 128 * 128 * 8 < result.nbytes
    _, levels = _metadata(tmp_path / "out.ome.zarr")
    np.testing.assert_array_equal(levels[0].compute(), result.compute())


@pytest.mark.parametrize("collection", ["plate", "bioformats2raw.layout"])
def test_collections_are_refused_naming_the_folder(tmp_path, collection):
    source = tmp_path / "screen.ome.zarr"
    zarr.open_group(str(source), mode="w").attrs[collection] = {"rows": []}
    with pytest.raises(FileFormatError, match="open one of its images") as caught:
        files.read_images(source)
    assert str(caught.value).startswith(str(source))


def test_check_refuses_several_images_and_unnamed_axes(tmp_path):
    image = ImageFile(np.zeros((4, 4), np.float32), "YX")
    with pytest.raises(FileFormatError, match="one image, not 2"):
        files.check_writable(tmp_path / "out.ome.zarr", [image, image])
    with pytest.raises(FileFormatError, match="'QYX'"):
        files.check_writable(tmp_path / "out.ome.zarr",
                             [ImageFile(np.zeros((2, 4, 4)), "QYX")])


def test_missing_zarr_names_the_extra(tmp_path, monkeypatch):
    image = ImageFile(np.zeros((4, 4), np.float32), "YX")
    files.write_images(tmp_path / "in.ome.zarr", [image], HISTORY)
    monkeypatch.setitem(sys.modules, "zarr", None)
    monkeypatch.setitem(sys.modules, "ome_zarr", None)
    for attempt in (lambda: files.read_images(tmp_path / "in.ome.zarr"),
                    lambda: files.check_writable(tmp_path / "out.ome.zarr", [image]),
                    lambda: files.write_images(tmp_path / "out.ome.zarr", [image], HISTORY)):
        with pytest.raises(MissingExtraError, match=r"pip install 'napari-diffuse\[zarr\]'"):
            attempt()
    assert not (tmp_path / "out.ome.zarr").exists()
