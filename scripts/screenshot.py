"""Take docs/screenshot.png: the docked widget beside a live preview and a result.

Run headless with ``xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py
[OUTPUT.png]``: it opens a real napari viewer of 1600x1000, loads the fluorescence sample
through the plugin's sample-data contribution, docks the widget through npe2 at its own
width, runs the sample's suggested preset in the widget's worker (the result is shown to
the right of the input), turns the live preview on over a rectangle drawn in the middle
of the input, and saves the whole window (``viewer.screenshot(canvas_only=False)``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from imageio.v3 import imwrite
from qtpy.QtWidgets import QApplication

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
WINDOW_SIZE = (1600, 1000)
SAMPLE = "fluorescence"
GAP = 16  # pixels between the input and the result
PREVIEW_BOX = (128, 128, 384, 384)  # (y0, x0, y1, x1) on the 512x512 sample


def _wait_for(busy, timeout: float = 300.0) -> None:
    """Process Qt events until ``busy()`` is False."""
    app = QApplication.instance()
    deadline = time.monotonic() + timeout
    while busy():
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
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-diffuse",
                                                             "diffuse or sharpen")
        widget.input.value = before
        widget.preset.value = before.metadata["napari_diffuse"]["suggested_preset"]
        if widget.run() is None:
            raise RuntimeError(f"the widget refused to run: {widget.status.value}")
        _wait_for(lambda: widget.running)
        result = next(layer for layer in viewer.layers if layer is not before)
        result.translate = (0, before.data.shape[1] + GAP)  # beside the input
        y0, x0, y1, x1 = PREVIEW_BOX
        region = viewer.add_shapes([[(y0, x0), (y1, x1)]], shape_type="rectangle",
                                   name="preview region", edge_color="yellow",
                                   face_color="transparent", edge_width=2)
        viewer.layers.selection.active = before
        widget.preview_region.value = region
        widget.live_preview.value = True
        _wait_for(lambda: widget.previewing or not any(
            "[preview]" in layer.name for layer in viewer.layers))
        viewer.reset_view()
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
