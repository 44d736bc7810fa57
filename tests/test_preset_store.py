"""The user preset store and darktable imports against hostile or broken files."""

from __future__ import annotations

import base64
import os
import signal
import time
import tracemalloc
import warnings
import zlib

import pytest

from napari_diffuse.params import DiffuseParams
from napari_diffuse.user_presets import (
    CONFIG_DIR_VARIABLE,
    MAX_DARKTABLE_FILE_BYTES,
    MAX_INFLATED_BYTES,
    MAX_PRESET_FILE_BYTES,
    PresetFileWarning,
    decode_darktable_params,
    list_user_presets,
    load_user_preset,
    presets_dir,
    read_darktable_file,
    save_user_preset,
)

GOOD = DiffuseParams(iterations=7, radius=5, first=0.0625)


@pytest.fixture(autouse=True)
def config_folder(tmp_path, monkeypatch):
    """Every test gets an empty config folder."""
    folder = tmp_path / "config"
    monkeypatch.setenv(CONFIG_DIR_VARIABLE, str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_hang():
    """A store that blocks on a FIFO fails the test instead of hanging the suite."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def _timeout(signum, frame):
        raise TimeoutError("the preset store blocked for 30 s")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _bigint(path):
    path.write_text('{"name": "bad", "params": {"iterations": %s}}' % ("9" * 400))


def _deep(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


def _deep_in_params(path):
    path.write_text('{"name": "bad", "params": {"radius": ' + "[" * 100_000 + "]" * 100_000 + "}}")


def _directory(path):
    path.mkdir()


def _invalid_utf8(path):
    path.write_bytes(b'{"name": "bad\xff\xfe", "params": {}}')


def _fifo(path):
    os.mkfifo(path)


def _broken_symlink(path):
    path.symlink_to(path.parent / "nowhere" / "gone.json")


def _too_large(path):
    # Valid JSON, but over the size limit: refused without being read.
    path.write_text('{"name": "bad", "params": {}, "description": "%s"}'
                    % ("x" * (MAX_PRESET_FILE_BYTES + 10)))


BAD_FILES = {
    "400-digit integer": (_bigint, "400-digit"),
    "100000-deep list": (_deep, "nested deeper"),
    "100000-deep list in params": (_deep_in_params, "nested deeper"),
    "directory": (_directory, "not a regular file"),
    "invalid UTF-8": (_invalid_utf8, "UTF-8"),
    "FIFO": (_fifo, "not a regular file"),
    "broken symlink": (_broken_symlink, "cannot read"),
    "too large": (_too_large, "larger than"),
}


def _store_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PresetFileWarning)]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_bad_file_is_skipped_with_one_warning(kind):
    make, problem = BAD_FILES[kind]
    save_user_preset("good", GOOD)
    make(presets_dir() / "bad.json")

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert list_user_presets() == ["good"]
    messages = _store_warnings(record)
    assert len(messages) == 1, messages
    assert "bad.json" in messages[0] and problem in messages[0], messages[0]

    assert load_user_preset("good") == GOOD
    save_user_preset("good", GOOD.replace(iterations=9))
    assert load_user_preset("good").iterations == 9
    save_user_preset("other", GOOD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PresetFileWarning)
        assert list_user_presets() == ["good", "other"]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_loading_a_bad_preset_by_name_names_the_file_and_the_problem(kind):
    make, problem = BAD_FILES[kind]
    save_user_preset("good", GOOD)
    make(presets_dir() / "bad.json")
    with pytest.raises(ValueError, match=problem) as info:
        load_user_preset("bad")
    assert "bad.json" in str(info.value)


def test_saving_never_writes_through_a_broken_symlink(tmp_path):
    presets_dir().mkdir(parents=True)
    target = tmp_path / "outside.json"
    (presets_dir() / "mine.json").symlink_to(target)
    path = save_user_preset("mine", GOOD)
    assert not target.exists() and path.name != "mine.json"
    assert load_user_preset("mine") == GOOD


# ----------------------------------------------------------------------------- zip bombs
def _bomb(size: int = 64 * 1024 * 1024) -> str:
    packed = zlib.compress(bytes(size), 9)
    return "gz99" + base64.b64encode(packed).decode()


def test_a_zip_bomb_is_refused_while_inflating():
    text = _bomb()
    assert len(text) < 100 * 1024  # about 85 KiB of text
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=f"more than {MAX_INFLATED_BYTES} bytes"):
            decode_darktable_params(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 4 * 1024 * 1024, f"inflating allocated {peak} bytes"


def test_a_zip_bomb_dtpreset_is_refused_naming_the_file(tmp_path):
    from test_user_presets import _dtpreset  # noqa: PLC0415 (the shared file builder)

    path = tmp_path / "bomb.dtpreset"
    path.write_text(_dtpreset("bomb", _bomb()))
    with pytest.raises(ValueError, match=f"more than {MAX_INFLATED_BYTES} bytes") as info:
        read_darktable_file(path)
    assert "bomb.dtpreset" in str(info.value)


def test_a_truncated_gz_blob_is_refused():
    blob = bytes(60)
    packed = zlib.compress(blob)[:-6]
    with pytest.raises(ValueError, match="cannot decode"):
        decode_darktable_params("gz02" + base64.b64encode(packed).decode())


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(b""), None),
    (lambda p: os.truncate(p, MAX_DARKTABLE_FILE_BYTES + 1), "larger than"),
    (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
])
def test_darktable_files_are_read_safely(tmp_path, make, problem):
    path = tmp_path / "odd.xmp"
    path.write_bytes(b"")
    make(path)
    with pytest.raises(ValueError, match=problem) as info:
        read_darktable_file(path)
    assert "odd.xmp" in str(info.value)


# ----------------------------------------------------------------------------- fields
def test_a_non_number_dtpreset_field_is_named(tmp_path):
    from test_user_presets import DARKTABLE_BLOBS, _dtpreset  # noqa: PLC0415

    path = tmp_path / "words.dtpreset"
    path.write_text(_dtpreset("words", DARKTABLE_BLOBS["dehaze"][1]).replace(
        "<op_version>2</op_version>", "<op_version>two</op_version>"))
    with pytest.raises(ValueError, match=r"op_version.*'two'.*not a whole number") as info:
        read_darktable_file(path)
    assert "words.dtpreset" in str(info.value)


@pytest.mark.parametrize("field, old, new", [
    ("history_end", 'darktable:history_end="1"', 'darktable:history_end="end"'),
    ("num", 'darktable:num="0"', 'darktable:num="first"'),
    ("modversion", 'darktable:modversion="2"', 'darktable:modversion="v2"'),
])
def test_a_non_number_xmp_field_is_named(tmp_path, field, old, new):
    from test_user_presets import DARKTABLE_BLOBS, _xmp  # noqa: PLC0415

    text = _xmp([("diffuse", 2, DARKTABLE_BLOBS["dehaze"][1], "")])
    assert old in text
    path = tmp_path / "photo.xmp"
    path.write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=rf"darktable:{field}.*not a whole number") as info:
        read_darktable_file(path)
    assert "photo.xmp" in str(info.value)


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("args, kwargs, error, message", [
    ((5, GOOD), {}, TypeError, "name must be a str, got int"),
    ((None, GOOD), {}, TypeError, "name must be a str, got NoneType"),
    (("mine", {"iterations": 2}), {}, TypeError, "params must be a DiffuseParams, got dict"),
    (("mine", GOOD), {"description": 5}, TypeError, "description must be a str, got int"),
    (("   ", GOOD), {}, ValueError, "needs a name"),
])
def test_save_user_preset_checks_its_arguments(config_folder, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        save_user_preset(*args, **kwargs)
    assert not config_folder.exists()  # nothing written


@pytest.mark.parametrize("args, error, message", [
    ((None,), TypeError, "encoded must be str or bytes, got NoneType"),
    ((60,), TypeError, "encoded must be str or bytes, got int"),
    (("00" * 60, "2"), TypeError, "version must be an int, got str"),
    (("00" * 60, 2.0), TypeError, "version must be an int, got float"),
])
def test_decode_darktable_params_checks_its_arguments(args, error, message):
    with pytest.raises(error, match=message):
        decode_darktable_params(*args)


def test_decode_accepts_bytearray():
    assert decode_darktable_params(bytearray(bytes.fromhex(
        "080000000000000008000000000040400000803f0000803f000000000000"
        "803f0000000000000000000080be0000003e000000bf0000803e00000000"))).iterations == 8
