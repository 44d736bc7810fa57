"""Take docs/screenshot.png: the docked widget beside a before/after result.

Run headless with ``xvfb-run -a python scripts/screenshot.py [OUTPUT.png]``: it opens a
real napari viewer, loads the fluorescence sample through the plugin's sample-data
contribution, docks the widget through npe2, runs the sample's suggested preset in the
widget's worker and saves the whole window (``viewer.screenshot(canvas_only=False)``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from imageio.v3 import imwrite
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
WINDOW_SIZE = (1280, 1160)  # Xvfb has no window manager: taller than its screen is fine
DOCK_WIDTH = 490
SAMPLE = "fluorescence"
ZOOM = 4.0


def _wait_for(widget, timeout: float = 300.0) -> None:
    app = QApplication.instance()
    deadline = time.monotonic() + timeout
    while widget.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run did not finish within {timeout:.0f} s")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def _close_notifications(viewer) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    app = QApplication.instance()
    app.processEvents()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    app.processEvents()


def main(output: Path = OUTPUT) -> Path:
    """Build the scene and save the window picture to ``output``; return its path."""
    viewer = napari.Viewer(show=True, title="napari-diffuse")
    try:
        viewer.window._qt_window.resize(*WINDOW_SIZE)
        viewer.open_sample("napari-diffuse", SAMPLE)
        before = viewer.layers[-1]
        dock, widget = viewer.window.add_plugin_dock_widget("napari-diffuse",
                                                            "diffuse or sharpen")
        viewer.window._qt_window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
        widget.input.value = before
        widget.preset.value = before.metadata["napari_diffuse"]["suggested_preset"]
        if widget.run() is None:
            raise RuntimeError(f"the widget refused to run: {widget.status.value}")
        _wait_for(widget)
        viewer.canvas.grid.enabled = True
        viewer.canvas.grid.shape = (2, 1)  # the input above, the result below
        viewer.reset_view()
        viewer.scene.camera.zoom *= ZOOM  # close enough to see the noise go
        _close_notifications(viewer)
        picture = viewer.screenshot(canvas_only=False, flash=False)
    finally:
        viewer.close()
    if picture[..., :3].std() == 0:
        raise RuntimeError("the screenshot is blank")
    output.parent.mkdir(parents=True, exist_ok=True)
    imwrite(output, np.ascontiguousarray(picture[..., :3]), optimize=True)
    return output


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT))
