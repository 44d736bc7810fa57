"""The dock widget's live preview (being written: the checkbox only, for now)."""

from __future__ import annotations

from magicgui.widgets import CheckBox

__all__ = ["PreviewMixin"]


class PreviewMixin:
    """The live preview of :class:`~napari_diffuse.widget.DiffuseWidget`."""

    def _make_preview_controls(self) -> list:
        """Create the live preview controls; return them."""
        self.live_preview = CheckBox(name="live_preview", value=False, label="live preview")
        return [self.live_preview]

    def _preview_settings_changed(self) -> None:
        """A control or an input option changed: refresh the preview when it is on."""

    def _stop_preview(self) -> None:
        """Cancel a preview run (before a full run)."""
