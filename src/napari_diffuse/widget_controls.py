"""The dock widget's controls: one per :class:`~napari_diffuse.params.DiffuseParams` field,
the preset menu, and the sections they are grouped in.

Each parameter control is named after its field, has darktable's hard range and sits in
darktable's section. Where darktable shows a percentage (speeds, anisotropies,
sharpness, luminance masking threshold) the control shows one too, with two decimals:
``params value = round(control value / 100, 4)`` and ``control value = round(params
value * 100, 2)`` (:func:`control_value`, :func:`param_value`). Radii show their unit
(``px``; the dock adds a line in the layer's physical unit when it has a scale).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

from .params import FieldSpec

__all__ = ["CUSTOM", "GROUP_TITLES", "SECTIONS", "VALUE_RANGES", "PERCENT_DECIMALS",
           "PLAIN_DECIMALS", "control_value", "param_value", "make_control", "PresetMenu",
           "Section", "arrange", "short_label"]

#: The preset menu's entry for settings that match no preset.
CUSTOM = "custom"
#: The preset menu's group titles (entries that cannot be chosen), by preset group.
GROUP_TITLES = {"science": "— science —", "darktable": "— darktable (photographic) —",
                "user": "— your presets —"}
#: Decimals of the percent controls (0.01 % = 1e-4, darktable's resolution for speeds).
PERCENT_DECIMALS = 2
#: Decimals of the other float controls (edge sensitivity, edge threshold).
PLAIN_DECIMALS = 3
SECTIONS = {  # FieldSpec.section -> darktable's section title
    "properties": "properties",
    "speed": "speed (sharpen ↔ diffuse)",
    "direction": "direction",
    "edges": "edge management",
    "spatiality": "diffusion spatiality",
}
_STEPS = {"speed": 1.0, "direction": 10.0, "edges": 0.05, "spatiality": 1.0}
#: The intensities menu -> the api's ``value_range`` ("contrast limits": the layer's).
VALUE_RANGES = {"detect": None, "auto": "auto", "as stored": "dtype"}


def control_value(spec: FieldSpec, value: float) -> float:
    """Return the value a control shows for the parameter value ``value``.

    Percent fields show ``value * 100`` rounded to :data:`PERCENT_DECIMALS`; other floats
    are rounded to :data:`PLAIN_DECIMALS`; integers and booleans are unchanged.
    """
    if spec.kind is bool:
        return bool(value)
    if spec.kind is int:
        return int(value)
    if spec.percent:
        return round(value * 100.0, PERCENT_DECIMALS)
    return round(value, PLAIN_DECIMALS)


def param_value(spec: FieldSpec, shown: float) -> float:
    """Return the parameter value of a control showing ``shown`` (see :func:`control_value`)."""
    if spec.kind is bool:
        return bool(shown)
    if spec.kind is int:
        return int(shown)
    if spec.percent:
        return round(shown / 100.0, PERCENT_DECIMALS + 2)
    return round(shown, PLAIN_DECIMALS)


def make_control(spec: FieldSpec) -> SpinBox | FloatSpinBox | CheckBox:
    """The control of one field: a check box (bool), a spin box (int) or a float spin box."""
    origin = (f"darktable's '{spec.darktable_name}'" if spec.darktable_name is not None
              else "not in darktable")
    if spec.kind is bool:
        return CheckBox(name=spec.name, label=short_label(spec.label), value=bool(spec.default),
                        tooltip=f"{spec.label}: {spec.help}\n\nOn or off; {origin}.")
    factor = 100.0 if spec.percent else 1.0
    unit = " %" if spec.percent else (" px" if spec.name.startswith("radius") else "")
    tooltip = (f"{spec.label}: {spec.help}\n\nRange {spec.minimum * factor:g} to "
               f"{spec.maximum * factor:g}{unit}; {origin}.")
    label = short_label(spec.label) + (" (px)" if unit == " px" else "")
    common = dict(name=spec.name, label=label, tooltip=tooltip,
                  min=spec.minimum * factor, max=spec.maximum * factor)
    if spec.kind is int:
        control = SpinBox(value=int(spec.default), step=1, **common)
    else:
        step = 1.0 if spec.name == "sharpness" else _STEPS[spec.section]
        decimals = PERCENT_DECIMALS if spec.percent else PLAIN_DECIMALS
        control = FloatSpinBox(value=control_value(spec, spec.default), step=step, **common)
        control.native.setDecimals(decimals)
        # setDecimals may have clipped the range's last digits; set it again
        control.min, control.max = common["min"], common["max"]
    if spec.percent:  # integer spin boxes have no suffix: radii say px in their label
        control.native.setSuffix(unit)
    return control


class PresetMenu(ComboBox):
    """The preset menu: its group titles (:data:`GROUP_TITLES`) are shown but disabled.

    magicgui keeps the entries it already has where they are when the choices change
    (a new entry goes last); this menu is rebuilt in the order of its choices instead,
    keeping its value when it is still there.
    """

    def reset_choices(self, *_: Any) -> None:
        """Rebuild the entries from the choices callable, titles disabled."""
        value = self.value
        with self.changed.blocked():
            self.native.clear()
            super().reset_choices()
            if value in self.choices:
                self.value = value
        model = self.native.model()
        titles = set(GROUP_TITLES.values())
        for index in range(self.native.count()):
            if self.native.itemText(index) in titles:
                item = model.item(index)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled
                              & ~Qt.ItemFlag.ItemIsSelectable)


@dataclasses.dataclass
class Section:
    """A group of the dock: a title (None: always shown, no title), its widgets, and whether
    it starts folded."""

    title: str | None
    widgets: list
    folded: bool = False


def short_label(label: str) -> str:
    """A control's label without the manual's parenthesis ("1st order speed (gradient)" ->
    "1st order speed"), so the labels fit a narrow dock; the tooltip keeps the whole."""
    return label.split(" (")[0]


class _FitWidth(QObject):
    """Keeps a scroll area as wide as its content's minimum width plus its vertical scroll
    bar, each time the content's layout changes (napari's style, applied when the dock is
    shown, widens the controls), so that no horizontal scroll bar is needed."""

    def __init__(self, scroll: QScrollArea):
        super().__init__(scroll)
        self._scroll = scroll

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.LayoutRequest:
            scroll = self._scroll
            width = (watched.minimumSizeHint().width() + 2 * scroll.frameWidth()
                     + scroll.verticalScrollBar().sizeHint().width())
            if scroll.minimumWidth() != width:
                scroll.setMinimumWidth(width)
        return False


class _CompactWidth(QWidget):
    """The dock's widget: it asks for its minimum width (its widest control), not for the
    width of its longest texts (layer and preset names), which would widen the dock towards
    half the window; the user can still widen the dock."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.minimumSizeHint().width(), super().sizeHint().height())


def arrange(container, sections: list[Section], footer: list) -> QWidget:
    """Lay ``container``'s widgets out in collapsible sections, and a footer below them.

    Every widget joins ``container`` (so ``container.<name>`` and ``reset_choices`` reach
    it); in the Qt layout each titled section becomes a :class:`superqt.QCollapsible`
    (folded or not), and the footer's widgets move below the scroll area, always visible.

    Returns
    -------
    QWidget
        The dock's widget: the scroll area of sections above the footer.
    """
    widgets = [w for section in sections for w in section.widgets] + list(footer)
    container.extend(widgets)
    layout = Container.native.fget(container).layout()  # the scroll area's inner widget
    rows = [layout.itemAt(i).widget() for i in range(layout.count())]
    for row in rows:
        layout.removeWidget(row)
    position = 0
    for section in sections:
        members = rows[position:position + len(section.widgets)]
        position += len(section.widgets)
        if section.title is None:
            for row in members:
                layout.addWidget(row)
            continue
        group = QCollapsible(section.title)
        group.setObjectName(section.title)
        group.setDuration(0)
        for row in members:
            group.addWidget(row)
        group.collapse(animate=False) if section.folded else group.expand(animate=False)
        layout.addWidget(group)
    layout.addStretch(1)
    scroll = container.root_native_widget  # magicgui sized it for the flat list of widgets
    scroll.widget().installEventFilter(_FitWidth(scroll))
    bottom = QWidget()
    bottom_layout = QVBoxLayout(bottom)
    bottom_layout.setContentsMargins(9, 3, 9, 6)
    for row in rows[position:]:
        bottom_layout.addWidget(row)
    dock = _CompactWidth()
    dock_layout = QVBoxLayout(dock)
    dock_layout.setContentsMargins(0, 0, 0, 0)
    dock_layout.setSpacing(0)
    dock_layout.addWidget(scroll, 1)
    dock_layout.addWidget(bottom, 0)
    return dock
