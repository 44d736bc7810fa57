"""Shared fixtures: where darktable's reference vectors are, a working OpenCL device, and a
napari viewer with the dock widget (for the widget tests, which skip without napari)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(os.environ.get(
    "NAPARI_DIFFUSE_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))


def reference_files() -> list[dict]:
    """The entries of the reference ``index.json`` (empty when the folder is absent)."""
    index = REFERENCE_DIR / "index.json"
    return json.loads(index.read_text())["files"] if index.exists() else []


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of darktable's parity vectors; required in CI, skipped elsewhere if absent."""
    if not (REFERENCE_DIR / "index.json").exists():
        message = (f"darktable reference vectors not found in {REFERENCE_DIR}; set "
                   "NAPARI_DIFFUSE_REFERENCE to the folder")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE_DIR


def require_opencl() -> None:
    """Skip the calling test without a working OpenCL device; fail instead in CI (PoCL)."""
    from napari_diffuse.backends import get_solver

    try:
        get_solver("opencl")
    except RuntimeError as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs an OpenCL device (PoCL): {error}")
        pytest.skip(f"no OpenCL device here: {error}")


@pytest.fixture(scope="session")
def opencl_device() -> None:
    """A working OpenCL device: required in CI, skipped elsewhere when missing."""
    require_opencl()


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer (napari's own fixture closes it after the test)."""
    return make_napari_viewer()


@pytest.fixture
def widget(viewer, qtbot):
    """The dock widget, docked in ``viewer``."""
    from napari_diffuse.widget import DiffuseWidget

    made = DiffuseWidget(viewer)
    viewer.window.add_dock_widget(made, name="diffuse or sharpen")
    return made
