"""The dock widget's preset management: the preset menu's entries, choosing one, saving
the current settings as a user preset, importing darktable's settings.

:class:`PresetsMixin` gives :class:`~napari_diffuse.widget.DiffuseWidget` a preset name
box (``widget.preset_name``), *save preset* (``widget.save_button``,
:meth:`PresetsMixin.save_preset`) and *import from darktable…* (``widget.import_button``,
:meth:`PresetsMixin.import_darktable`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from magicgui.widgets import LineEdit, PushButton
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QFileDialog

from .presets import GROUPS, list_presets, load_preset
from .user_presets import (
    PresetFileWarning,
    list_user_presets,
    load_user_preset,
    read_darktable_file,
    save_user_preset,
)
from .widget_calibrate import CALIBRATED
from .widget_controls import CUSTOM, GROUP_TITLES

__all__ = ["PresetsMixin"]


class PresetsMixin:
    """Preset management for :class:`~napari_diffuse.widget.DiffuseWidget`.

    It uses the widget's ``preset`` menu, ``params``, ``set_params()``, ``_calibrated``,
    ``_applying_preset``, ``native``, ``_say()`` and ``_fail()``.
    """

    def _make_preset_controls(self) -> list:
        """Create the preset name box and the save and import buttons; return them."""
        self.preset_name = LineEdit(
            name="preset_name", label="preset name",
            tooltip="The name under which 'save preset' stores the current settings.")
        self.save_button = PushButton(name="save_button", text="save preset")
        self.import_button = PushButton(
            name="import_button", text="import from darktable…",
            tooltip="Import the diffuse settings of a darktable .dtpreset file or XMP sidecar "
                    "as user presets.")
        self.save_button.changed.connect(lambda: self.save_preset())
        self.import_button.changed.connect(self._ask_darktable_file)
        return [self.preset_name, self.save_button, self.import_button]

    def _preset_choices(self, _widget=None) -> list[str]:
        choices = [CUSTOM] + ([CALIBRATED] if self._calibrated is not None else [])
        for group in GROUPS:
            choices += [GROUP_TITLES[group], *list_presets(group)]
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always", PresetFileWarning)
            user = list_user_presets()
        for warning in skipped:  # a broken preset file: a notification, not a traceback
            show_warning(str(warning.message))
        return choices + ([GROUP_TITLES["user"], *user] if user else [])

    def _on_preset_chosen(self, name: str) -> None:
        if name == CUSTOM or name in GROUP_TITLES.values():
            return
        if name == CALIBRATED:
            params = self._calibrated
        elif name in list_presets():
            params = load_preset(name)
        else:
            try:
                params = load_user_preset(name)
            except (ValueError, OSError) as err:  # its file went or broke since listed
                self.preset.reset_choices()
                self.preset.value = CUSTOM  # the menu names what the controls hold
                self._fail(f"preset {name!r} could not be loaded: {err}; the controls "
                           "keep their settings")
                return
        self._applying_preset = True
        try:
            self.set_params(params)
        finally:
            self._applying_preset = False
        self._base_preset, self._base_params = name, params
        self._tuned = True
        self._preview_settings_changed()

    def save_preset(self, name: str | None = None) -> Path | None:
        """Save the current settings as the user preset ``name`` (default: the name box).

        Returns the file written, or None after showing why it could not be saved.
        """
        name = (self.preset_name.value if name is None else name).strip()
        try:
            if name in (CUSTOM, CALIBRATED, *GROUP_TITLES.values()):
                raise ValueError(f"{name!r} is an entry of the preset menu; choose another name")
            path = save_user_preset(name, self.params)
        except (ValueError, TypeError, OSError) as err:
            self._fail(f"preset not saved: {err}")
            return None
        self.preset.reset_choices()
        self.preset.value = name
        self._say(f"saved preset {name!r} to {path}")
        return path

    def import_darktable(self, path: str | Path) -> list[str]:
        """Import darktable's diffuse settings from a ``.dtpreset`` or XMP file.

        Each preset or history item becomes a user preset (a bundled preset's name gets
        " (darktable)" appended); the last one is chosen, which sets the controls.

        Returns
        -------
        list of str
            The names of the presets saved (empty after showing why nothing was read).
        """
        try:
            entries = read_darktable_file(path)
            names = []
            for name, params in entries:
                name = f"{name} (darktable)" if name in list_presets() else name
                save_user_preset(name, params, description=f"imported from {Path(path).name}")
                names.append(name)
        except (ValueError, OSError) as err:
            self._fail(f"darktable import failed: {err}")
            return []
        self.preset.reset_choices()
        self.preset.value = names[-1]
        self._say(f"imported {len(names)} darktable setting(s) from {Path(path).name}: "
                  + ", ".join(names))
        return names

    def _ask_darktable_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.native, "Import darktable diffuse settings", str(Path.home()),
            "darktable presets and sidecars (*.dtpreset *.xmp *.XMP);;all files (*)")
        if path:
            self.import_darktable(path)
