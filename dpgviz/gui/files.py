"""The File menu's session and export items: Open, Save, Save As and Export, with their dialogs.

    menu item -> file dialog -> Workspace.open / save / export (jobs run off the frame loop)

`SessionFiles` builds its items under the app's File menu, owns one file dialog per
kind of file (created once, shown again each time) and hands the chosen path to the
workspace, which does the work and reports back through its notices. It never reads
the `App`: export takes the canvas's column count through a callable.

dearpygui and the workspace only; no torch, no dpgviz.engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.core import color_modes
from dpgviz.store.session_format import SUFFIX

# (menu label, export format, file suffix); text and PNG take the record shown, the rest the branch.
EXPORTS: tuple[tuple[str, str, str], ...] = (
    ("Text of this step", "text", ".txt"),
    ("PNG of this step", "png", ".png"),
    ("GIF of this branch", "gif", ".gif"),
    ("HTML player", "html", ".html"),
    ("CSV statistics", "csv", ".csv"),
    ("JSON statistics", "json", ".json"),
    ("Overview PNG (steps x positions)", "overview", ".png"),
    ("Run plots PNG", "plots", ".png"),
)
DEFAULT_COLUMNS = 64  # export grid width when the canvas has not been laid out yet
DIALOG_SIZE = (720, 440)
EXT_COLOR = (140, 180, 255, 255)


class SessionFiles:
    """Open / Save / Save As / Export menu items and their dialogs, acting on one workspace."""

    def __init__(self, workspace: Workspace, columns: Callable[[], int] = lambda: DEFAULT_COLUMNS) -> None:
        self.workspace = workspace
        self.columns = columns  # the canvas's cells per row, for exports that look like it
        self.dialogs: dict[str, int | str] = {}  # "open", "save", then one per export format
        self.items: dict[str, int | str] = {}  # menu items, by the same keys

    # -- building ------------------------------------------------------------------
    def build(self, menu: int | str) -> None:
        """Menu items at the top of `menu` (above whatever it holds), the dialogs, Ctrl+O / Ctrl+S."""
        children = dpg.get_item_children(menu, 1) or []
        before = children[0] if children else 0
        self.items["open"] = dpg.add_menu_item(
            label="Open...", shortcut="Ctrl+O", parent=menu, before=before, callback=lambda: self.show("open")
        )
        self.items["save"] = dpg.add_menu_item(
            label="Save", shortcut="Ctrl+S", parent=menu, before=before, callback=lambda: self.save()
        )
        self.items["save_as"] = dpg.add_menu_item(
            label="Save As...", parent=menu, before=before, callback=lambda: self.show("save")
        )
        with dpg.menu(label="Export", parent=menu, before=before):
            for label, fmt, _suffix in EXPORTS:
                self.items[fmt] = dpg.add_menu_item(label=label + "...", callback=self._shower(fmt))
        if before:
            dpg.add_separator(parent=menu, before=before)

        self.dialogs["open"] = self._dialog("Open session", self._on_open_chosen, [SUFFIX, ".*"])
        self.dialogs["save"] = self._dialog("Save session as", self._on_save_chosen, [SUFFIX], "session")
        for label, fmt, suffix in EXPORTS:
            self.dialogs[fmt] = self._dialog(f"Export: {label}", self._export_chooser(fmt, suffix), [suffix], "dpgviz")

        with dpg.handler_registry():
            self.items["ctrl_o"] = dpg.add_key_press_handler(
                dpg.mvKey_O, callback=self._ctrl(lambda: self.show("open"))
            )
            self.items["ctrl_s"] = dpg.add_key_press_handler(dpg.mvKey_S, callback=self._ctrl(self.save))

    def _dialog(self, label: str, callback: Callable, suffixes: list[str], filename: str = "") -> int | str:
        with dpg.file_dialog(
            label=label,
            show=False,
            modal=True,
            callback=callback,
            width=DIALOG_SIZE[0],
            height=DIALOG_SIZE[1],
            default_path=str(Path.cwd()),
            default_filename=filename or ".",
        ) as dialog:
            for suffix in suffixes:
                dpg.add_file_extension(suffix, color=EXT_COLOR if suffix != ".*" else (255, 255, 255, 255))
        return dialog

    def _shower(self, key: str) -> Callable[[], None]:
        return lambda: self.show(key)

    def _ctrl(self, action: Callable[[], None]) -> Callable[[], None]:
        def on_key() -> None:
            if dpg.is_key_down(dpg.mvKey_LControl) or dpg.is_key_down(dpg.mvKey_RControl):
                action()

        return on_key

    def show(self, key: str) -> None:
        """Open the file dialog `key` ("open", "save" or an export format)."""
        ws = self.workspace
        if key != "open" and (ws.store is None or len(ws.store) == 0):
            ws.say("Nothing to save or export yet: generate a run or open a session.", is_error=True)
            return
        if key == "save" and ws.doc.path is not None:
            dpg.configure_item(self.dialogs[key], default_path=str(ws.doc.path.parent), default_filename=ws.doc.path.stem)
        dpg.show_item(self.dialogs[key])

    # -- actions -----------------------------------------------------------------------
    def _on_open_chosen(self, sender: int | str, app_data: dict) -> None:
        path = chosen_path(app_data)
        if path is not None:
            self.workspace.files.open(path)

    def save(self) -> None:
        """Save to the last path; the first save asks for one, as Save As does."""
        if self.workspace.doc.path is None:
            self.show("save")
        else:
            self.workspace.files.save()

    def _on_save_chosen(self, sender: int | str, app_data: dict) -> None:
        path = chosen_path(app_data, SUFFIX)
        if path is not None:
            self.workspace.files.save(path)

    def _export_chooser(self, fmt: str, suffix: str) -> Callable[[int | str, dict], None]:
        def on_chosen(sender: int | str, app_data: dict) -> None:
            path = chosen_path(app_data, suffix)
            if path is not None:
                self.export(fmt, path)

        return on_chosen

    def export(self, fmt: str, path: str | Path) -> None:
        """Export as the canvas shows it: its colour mode, its columns, the timeline's speed."""
        view = self.workspace.view
        columns = self.columns()
        spec = color_modes.get(view.color_mode)
        mode = spec.name if spec.overview else "state"  # a mode whose data only the window has: states
        self.workspace.files.export(
            fmt,
            path,
            mode=mode,
            columns=columns if columns > 1 else DEFAULT_COLUMNS,
            frame_ms=max(1, round(1000 / max(view.play_speed, 1e-3))),
        )


def chosen_path(app_data: object, suffix: str | None = None) -> Path | None:
    """The path a file dialog returned, with `suffix` added when the name lacks it.

    Dear PyGui appends the active filter to a typed name, and ".*" literally when that
    filter is active; a selected file comes in `selections` as well.
    """
    if not isinstance(app_data, dict):
        return None
    selections = app_data.get("selections") or {}
    name = next(iter(selections.values()), None) if suffix is None and selections else app_data.get("file_path_name")
    if not name:
        return None
    path = Path(str(name))
    if path.name.endswith(".*"):
        path = path.with_name(path.name[:-2])
    if suffix and not path.name.lower().endswith(suffix):
        path = path.with_name(path.name + suffix)
    return path
