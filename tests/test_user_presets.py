"""User presets (save, list, load) and darktable imports (.dtpreset, XMP history)."""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from napari_diffuse.params import DiffuseParams
from napari_diffuse.presets import list_presets, load_preset
from napari_diffuse.user_presets import (
    CONFIG_DIR_VARIABLE,
    PresetFileWarning,
    config_dir,
    decode_darktable_params,
    list_user_presets,
    load_user_preset,
    presets_dir,
    read_darktable_file,
    save_user_preset,
)

# darktable 4.2.1's 17 diffuse presets: the raw 60-byte op_params blobs of its data.db
# (table presets, operation 'diffuse', op_version 2; from the darktable-cli peer's
# presets.json), under darktable 4.2.1's names, with the bundled preset each must equal.
DARKTABLE_BLOBS = {
    "lens deblur: soft": ("lens deblur: soft",
        "080000000000000008000000000040400000803f0000803f000000000000"
        "803f0000000000000000000080be0000003e000000bf0000803e00000000"),
    "lens deblur: medium": ("lens deblur: medium",
        "10000000000000000a000000000040400000803f0000803f000000000000"
        "803f0000000000000000000080be0000003e000000bf0000803e00000000"),
    "lens deblur: hard": ("lens deblur: hard",
        "18000000000000000c000000000040400000803f0000803f000000000000"
        "803f0000000000000000000080be0000003e000000bf0000803e00000000"),
    "dehaze": ("dehaze",
        "0a0000000000000000020000000020400000803e00000040000000000000"
        "00400000000000000000cdcc4cbecdcccc3dcdcc4cbecdcccc3d00000000"),
    "denoise: fine": ("denoise: fine",
        "20000000000000000100000000008040000080be00000040000000000000"
        "004000000000000000008fc2753d000000008fc2753d0000000002000000"),
    "denoise: medium": ("denoise: medium",
        "20000000000000000300000000008040000080be00000040000000000000"
        "00400000000000000000cdcc4c3d00000000cdcc4c3d0000000004000000"),
    "denoise: coarse": ("denoise: coarse",
        "20000000000000000600000000008040000080be00000040000000000000"
        "004000000000000000000ad7233d000000000ad7233d0000000008000000"),
    "surface blur": ("surface blur",
        "020000000000000020000000000080400000000000008040000080400000"
        "804000008040000000000000803f0000803f0000803f0000803f00000000"),
    "bloom": ("bloom",
        "010000000000000020000000000000000000000000000000000000000000"
        "000000000000000000000000003f0000003f0000003f0000003f00000000"),
    "sharpen demosaicing (no AA filter)": ("sharpen demosaicing: no AA filter",
        "0100000000000000040000000000803f000000000000803f0000803f0000"
        "803f0000803f00000000000080be000080be000080be000080be00000000"),
    "sharpen demosaicing (AA filter)": ("sharpen demosaicing: AA filter",
        "0100000000000000080000000000803f000000000000803f0000803f0000"
        "803f0000803f00000000000080be000080be000080be000080be00000000"),
    "simulate watercolor": ("simulate watercolor",
        "040000000000000040000000000000400000000000000000000000000000"
        "8040000080400000000000000000000000000000003f0000003f00000000"),
    "simulate line drawing": ("simulate line drawing",
        "32000000000000004000000000008040000000000000a0c00000a0c00000"
        "a0c00000a0c000000000000080bf000080bf000080bf000080bf00000000"),
    "add local contrast": ("local contrast",
        "0a00000000000000800100000000803f0000803f000020c0000000000000"
        "0000000020c000000000000000bf0000000000000000000000bf00020000"),
    "inpaint highlights": ("inpaint highlights",
        "200000000000000004000000000000000000000000000000000000000000"
        "000000000040e17ab43f0000000000000000000000000000003f00000000"),
    "fast sharpness": ("sharpness: fast",
        "0100000000000000800000000000803e0000803e00000000000000000000"
        "a04000000000000000000000000000000000000000bf0000000000000000"),
    "fast local contrast": ("local contrast: fast",
        "0100000000000000000200000ad7233ccdcc4c3d00000000000000000000"
        "a04000000000000000000000000000000000000000bf0000000000020000"),
}


@pytest.fixture(autouse=True)
def config_folder(tmp_path, monkeypatch):
    """Every test gets an empty config folder."""
    folder = tmp_path / "config"
    monkeypatch.setenv(CONFIG_DIR_VARIABLE, str(folder))
    return folder


def _gz(blob: bytes) -> str:
    packed = zlib.compress(blob)
    return "gz" + f"{len(blob) // len(packed) + 1:02d}" + base64.b64encode(packed).decode()


def _dtpreset(name: str, op_params: str, operation: str = "diffuse", version: int = 2) -> str:
    # The layout darktable's dt_presets_save_to_file writes (src/common/presets.c).
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<darktable_preset version="1.0">
<preset>
<name>{name}</name>
<description>made in darktable</description>
<operation>{operation}</operation>
<op_params>{op_params}</op_params>
<op_version>{version}</op_version>
<enabled>1</enabled>
<autoapply>0</autoapply>
<model>%</model>
<maker>%</maker>
<lens>%</lens>
<iso_min>0.000000</iso_min>
<iso_max>340282346638528859811704183484516925440.000000</iso_max>
<exposure_min>0.000000</exposure_min>
<exposure_max>340282346638528859811704183484516925440.000000</exposure_max>
<aperture_min>0.000000</aperture_min>
<aperture_max>340282346638528859811704183484516925440.000000</aperture_max>
<focal_length_min>0</focal_length_min>
<focal_length_max>1000</focal_length_max>
<blendop_params>gz11eJxjYGBgkGAAgRNODGiAEV0AJ2iwh+CRyscOAAdeGQQ=</blendop_params>
<blendop_version>11</blendop_version>
<multi_priority>0</multi_priority>
<multi_name></multi_name>
<multi_name_hand_edited>0</multi_name_hand_edited>
<filter>0</filter>
<def>0</def>
<format>0</format>
</preset>
</darktable_preset>
"""


_XMP_ITEM = """     <rdf:li
      darktable:num="{num}"
      darktable:operation="{op}"
      darktable:enabled="1"
      darktable:modversion="{ver}"
      darktable:params="{params}"
      darktable:multi_name="{multi}"
      darktable:multi_priority="0"
      darktable:blendop_version="11"
      darktable:blendop_params="gz11eJxjYGBgkGAAgRNODGiAEV0AJ2iwh+CRyscOAAdeGQQ="/>
"""


def _xmp(items, history_end=None) -> str:
    history_end = len(items) if history_end is None else history_end
    body = "".join(_XMP_ITEM.format(num=i, op=op, ver=ver, params=params, multi=multi)
                   for i, (op, ver, params, multi) in enumerate(items))
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:darktable="http://darktable.sf.net/"
   darktable:xmp_version="5"
   darktable:history_end="{history_end}">
   <darktable:history>
    <rdf:Seq>
{body}    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


# ----------------------------------------------------------------------------- blobs
@pytest.mark.parametrize("darktable_name", sorted(DARKTABLE_BLOBS))
def test_darktable_blobs_decode_to_the_bundled_presets(darktable_name):
    bundled, blob_hex = DARKTABLE_BLOBS[darktable_name]
    assert decode_darktable_params(blob_hex) == load_preset(bundled)
    assert decode_darktable_params(bytes.fromhex(blob_hex)) == load_preset(bundled)
    assert decode_darktable_params(_gz(bytes.fromhex(blob_hex))) == load_preset(bundled)


PEER_PRESETS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "darktable-cli" / \
    "presets.json"


def test_the_17_blobs_are_darktables():
    """The blobs above are copies of darktable 4.2.1's data.db (the peer's presets.json)."""
    if not PEER_PRESETS.exists():  # shared/ lies beside the checkout in CI, not everywhere
        message = f"darktable's preset table not found at {PEER_PRESETS}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    peer = json.loads(PEER_PRESETS.read_text())["presets"]
    assert {name: entry["params_hex"].lower() for name, entry in peer.items()} == \
        {name: blob.lower() for name, (_, blob) in DARKTABLE_BLOBS.items()}


def test_the_17_vectors_cover_every_bundled_preset():
    assert sorted(bundled for bundled, _ in DARKTABLE_BLOBS.values()) == list_presets("darktable")


def test_float32_values_read_as_their_shortest_decimal():
    blob = bytes.fromhex(DARKTABLE_BLOBS["dehaze"][1])
    params = decode_darktable_params(blob)
    assert params.first == -0.2 and params.second == 0.1  # stored as -0.2f and 0.1f


def test_version_1_blob_has_no_central_radius():
    blob = bytes.fromhex(DARKTABLE_BLOBS["lens deblur: hard"][1])[:56]
    assert decode_darktable_params(blob, version=1) == load_preset("lens deblur: hard")


@pytest.mark.parametrize("encoded, version, message", [
    ("00" * 60, 3, "version 3 is not supported"),
    ("00" * 59, 2, "60 bytes, got 59"),
    ("zz" * 60, 2, "cannot decode"),
    ("gz12!!notbase64", 2, "cannot decode"),
])
def test_bad_blobs_are_refused_clearly(encoded, version, message):
    with pytest.raises(ValueError, match=message):
        decode_darktable_params(encoded, version)


def test_out_of_range_value_names_the_field():
    fields = [1000, 0.0, 8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0]
    blob = struct.pack("<ifi" + "f" * 11 + "i", *fields)
    with pytest.raises(ValueError, match="iterations=1000 is out of range"):
        decode_darktable_params(blob)


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("compressed", [False, True])
def test_dtpreset_file(tmp_path, compressed):
    blob = bytes.fromhex(DARKTABLE_BLOBS["lens deblur: medium"][1])
    path = tmp_path / "my deblur.dtpreset"
    path.write_text(_dtpreset("my deblur", _gz(blob) if compressed else blob.hex()))
    assert read_darktable_file(path) == [("my deblur", load_preset("lens deblur: medium"))]


def test_dtpreset_of_another_module_is_refused(tmp_path):
    path = tmp_path / "exposure.dtpreset"
    path.write_text(_dtpreset("bright", "00" * 8, operation="exposure"))
    with pytest.raises(ValueError, match="'exposure' module, not of 'diffuse'"):
        read_darktable_file(path)


def test_xmp_history_items(tmp_path):
    soft = DARKTABLE_BLOBS["lens deblur: soft"][1]
    dehaze = bytes.fromhex(DARKTABLE_BLOBS["dehaze"][1])
    path = tmp_path / "IMG_0001.CR2.xmp"
    path.write_text(_xmp([("colorin", 7, "gz48eJzjZBgFo4AegAEAAAD//w==", ""),
                          ("diffuse", 2, soft, ""),
                          ("flip", 2, "ffffffff", ""),
                          ("diffuse", 2, _gz(dehaze), "haze")]))
    assert read_darktable_file(path) == [
        ("IMG_0001: diffuse #1", load_preset("lens deblur: soft")),
        ("IMG_0001: haze #3", load_preset("dehaze")),
    ]


def test_xmp_items_above_history_end_are_left_out(tmp_path):
    soft = DARKTABLE_BLOBS["lens deblur: soft"][1]
    hard = DARKTABLE_BLOBS["lens deblur: hard"][1]
    path = tmp_path / "undone.xmp"
    path.write_text(_xmp([("diffuse", 2, soft, ""), ("diffuse", 2, hard, "")], history_end=1))
    assert read_darktable_file(path) == [("undone: diffuse #0", load_preset("lens deblur: soft"))]
    path.write_text(_xmp([("diffuse", 2, soft, "")], history_end=0))
    with pytest.raises(ValueError, match="below darktable:history_end"):
        read_darktable_file(path)


def test_xmp_history_as_child_elements(tmp_path):
    blob = DARKTABLE_BLOBS["lens deblur: hard"][1]
    path = tmp_path / "photo.xmp"
    path.write_text(f"""<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description xmlns:darktable="http://darktable.sf.net/">
   <darktable:history><rdf:Seq><rdf:li rdf:parseType="Resource">
    <darktable:num>0</darktable:num>
    <darktable:operation>diffuse</darktable:operation>
    <darktable:modversion>2</darktable:modversion>
    <darktable:params>{blob}</darktable:params>
   </rdf:li></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>""")
    assert read_darktable_file(path) == [("photo: diffuse #0", load_preset("lens deblur: hard"))]


@pytest.mark.parametrize("text, message", [
    ("not xml at all", "cannot read darktable file"),
    ("<html/>", "neither <darktable_preset>"),
    (_xmp([("exposure", 6, "00" * 8, "")]), "has no 'diffuse'"),
    (_xmp([("diffuse", 2, "00" * 10, "")]), "60 bytes, got 10"),
])
def test_unusable_files_are_refused_clearly(tmp_path, text, message):
    path = tmp_path / "broken.xmp"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_darktable_file(path)
    assert "broken.xmp" in str(info.value)


# ----------------------------------------------------------------------------- user presets
def test_config_folder_follows_the_environment(config_folder, monkeypatch):
    assert config_dir() == config_folder
    assert presets_dir() == config_folder / "presets"
    monkeypatch.delenv(CONFIG_DIR_VARIABLE)
    assert config_dir().name == "napari-diffuse"


def test_save_list_load_round_trip(config_folder):
    params = DiffuseParams(iterations=7, first=0.0625, anisotropy_third=-2.5, radius=5)
    assert list_user_presets() == []
    path = save_user_preset("  my cells / v2 ", params, description="for cells")
    assert path.parent == config_folder / "presets" and path.suffix == ".json"
    assert list_user_presets() == ["my cells / v2"]
    assert load_user_preset("my cells / v2") == params
    replaced = save_user_preset("my cells / v2", params.replace(iterations=9))
    assert replaced == path and len(list(path.parent.glob("*.json"))) == 1
    assert load_user_preset("my cells / v2").iterations == 9


def test_names_with_the_same_file_stem_get_their_own_files():
    save_user_preset("a/b", DiffuseParams(iterations=2))
    save_user_preset("a b", DiffuseParams(iterations=3))
    assert list_user_presets() == ["a b", "a/b"]
    assert load_user_preset("a/b").iterations == 2 and load_user_preset("a b").iterations == 3


@pytest.mark.parametrize("name, message", [("", "needs a name"), ("dehaze", "bundled preset")])
def test_bad_preset_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        save_user_preset(name, DiffuseParams())


def test_unknown_user_preset_lists_the_saved_ones():
    save_user_preset("mine", DiffuseParams())
    with pytest.raises(ValueError, match=r"no user preset called 'other'.*\['mine'\]"):
        load_user_preset("other")


def test_a_broken_file_does_not_hide_the_others():
    save_user_preset("good", DiffuseParams())
    (presets_dir() / "broken.json").write_text("{not json")
    with pytest.warns(PresetFileWarning, match="broken.json"):
        assert list_user_presets() == ["good"]
