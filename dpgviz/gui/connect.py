"""File > Connect to worker...: use a worker on another machine (`python main.py worker`).

A small window: where (the connection file the worker wrote, or HOST:PORT), the key (only
for HOST:PORT; a connection file holds it), Connect. Connect hands both to
`Runs.connect`, which closes the worker in use and connects; whether that worked comes
back through the workspace's notices (Connected, or "disconnected from HOST:PORT" with
Reconnect in the status bar). The window stays open until the worker welcomes us; if none
does (a wrong port is refused within a second, ipc.remote.REFUSED_S) it says so
there, beside "Use the local model" (`Workspace.use_local_model`): a failed Connect always
has a way back without restarting the app. dearpygui and the workspace only.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.gui.status import INFO_COLOR

HELP = (
    "On the GPU host:\n    python main.py worker --connection-file worker.json\n"
    "Here: copy worker.json, tunnel its port\n    ssh -N -L PORT:127.0.0.1:PORT host\nand pick the file."
)
TEXT_PX = 540  # where the window's texts wrap


class ConnectDialog:
    """The Connect to worker... window and its File menu item."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.window = self.where = self.key = self.message = self.menu_item = self.file_dialog = self.help = 0
        self.local_button: int | str = 0
        self.waiting_for: str | None = None  # what Connect was pressed for, until it welcomed us or failed

    def build(self, menu: int | str) -> None:
        children = dpg.get_item_children(menu, 1) or []
        before = children[-1] if children else 0  # above Quit
        self.menu_item = dpg.add_menu_item(
            label="Connect to worker...", parent=menu, before=before, callback=lambda: self.show()
        )
        # Sized to its content (autosize), the help wrapped: at a fixed 560 x 210 its text ran past the edge
        with dpg.window(label="Connect to worker", show=False, autosize=True, pos=(240, 160)) as self.window:
            self.help = dpg.add_text(HELP, color=INFO_COLOR, wrap=TEXT_PX)
            with dpg.group(horizontal=True):
                self.where = dpg.add_input_text(label="file or HOST:PORT", width=330, hint="worker.json")
                dpg.add_button(label="File...", callback=lambda: dpg.show_item(self.file_dialog))
            self.key = dpg.add_input_text(label="key (HOST:PORT only)", width=330, password=True)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Connect", width=100, callback=lambda: self.connect())
                dpg.add_button(label="Cancel", width=100, callback=lambda: dpg.hide_item(self.window))
                self.local_button = dpg.add_button(label="Use the local model", callback=lambda: self.use_local())
            self.message = dpg.add_text("", wrap=TEXT_PX)
        with dpg.file_dialog(
            label="Connection file", show=False, modal=True, width=680, height=400, callback=self._on_file,
        ) as self.file_dialog:
            dpg.add_file_extension(".json")
            dpg.add_file_extension(".*")

    def show(self) -> None:
        dpg.set_value(self.message, "")
        dpg.show_item(self.window)

    @property
    def is_shown(self) -> bool:
        return bool(self.window) and dpg.is_item_shown(self.window)

    def _on_file(self, sender: int | str, app_data: dict) -> None:
        selections = (app_data or {}).get("selections") or {}
        path = next(iter(selections.values()), None) or (app_data or {}).get("file_path_name")
        if path:
            dpg.set_value(self.where, str(path))

    def connect(self, where: str | None = None, key: str | None = None) -> bool:
        """Connect to what the fields say (or to `where` / `key`, as tests and the CLI pass them)."""
        if where is not None:
            dpg.set_value(self.where, where)
            dpg.set_value(self.key, key or "")
        where = str(dpg.get_value(self.where)).strip()
        if not where:
            dpg.set_value(self.message, "Pick the worker's connection file, or type HOST:PORT and its key.")
            return False
        is_ok = self.workspace.runs.connect(where, str(dpg.get_value(self.key)).strip() or None)
        if is_ok:
            self.waiting_for = where
            dpg.set_value(self.message, f"Connecting to {where}...")
        else:
            dpg.set_value(self.message, "Cannot connect: see the status bar. Fix it, or use the local model.")
        return is_ok

    def use_local(self) -> bool:
        """Use the local worker and its default model again (after a Connect that failed, or to leave a remote one)."""
        self.waiting_for = None
        is_ok = self.workspace.use_local_model()
        if is_ok:
            dpg.hide_item(self.window)
        return is_ok

    def refresh(self) -> None:
        """Once a frame while a Connect is pending: close on the Welcome; on a refusal say so here, open."""
        if self.waiting_for is None:
            return
        runs = self.workspace.runs
        if runs.remote is not None:
            self.waiting_for = None
            dpg.hide_item(self.window)
        elif runs.disconnected is not None or runs.source is None:
            where, self.waiting_for = self.waiting_for, None
            dpg.set_value(
                self.message,
                f"No worker answered at {where} (the status bar says why). Fix the address and Connect again, "
                "or use the local model.",
            )
            dpg.show_item(self.window)
            dpg.focus_item(self.window)
