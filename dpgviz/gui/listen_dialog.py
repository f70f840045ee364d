"""File > Listen for recorded runs...: let a `dpgviz.Recorder` stream its run into this window.

A small window: the port (or HOST:PORT), Listen, and once listening, where the key is and the
line to put in the sampler. Listen hands the port to `LiveRuns.listen` (app.live); what
happened comes back through the workspace's notices. dearpygui and the workspace only.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.gui.status import INFO_COLOR
from dpgviz.ipc import LISTEN_PORT as DEFAULT_PORT  # not ipc.listen: it loads when the window listens

HELP = (
    "In your sampler:  rec = dpgviz.Recorder(vocab, mask_id, length, connect=\"127.0.0.1:PORT\")\n"
    "then rec.log(x, logits=logits) each step. Or start from the shell: python main.py --listen-runs PORT"
)


class ListenDialog:
    """The Listen for recorded runs... window and its File menu item."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.window = self.where = self.message = self.menu_item = 0

    def build(self, menu: int | str) -> None:
        children = dpg.get_item_children(menu, 1) or []
        before = children[-1] if children else 0  # above Quit
        self.menu_item = dpg.add_menu_item(
            label="Listen for recorded runs...", parent=menu, before=before, callback=lambda: self.show()
        )
        with dpg.window(label="Listen for recorded runs", show=False, width=620, height=200, pos=(240, 160)) as self.window:
            dpg.add_text(HELP, color=INFO_COLOR, wrap=590)
            with dpg.group(horizontal=True):
                self.where = dpg.add_input_text(label="port or HOST:PORT", width=200, default_value=str(DEFAULT_PORT))
                dpg.add_button(label="Listen", width=100, callback=lambda: self.listen())
                dpg.add_button(label="Close", width=100, callback=lambda: dpg.hide_item(self.window))
            self.message = dpg.add_text("", wrap=590)

    def show(self) -> None:
        self._describe()
        dpg.show_item(self.window)

    @property
    def is_shown(self) -> bool:
        return bool(self.window) and dpg.is_item_shown(self.window)

    def listen(self, where: str | None = None) -> bool:
        """Listen where the field says (or on `where`, as tests pass it)."""
        if where is not None:
            dpg.set_value(self.where, where)
        is_ok = self.workspace.live.listen(str(dpg.get_value(self.where)).strip() or str(DEFAULT_PORT))
        if is_ok:
            self._describe()
        else:
            dpg.set_value(self.message, "Cannot listen there: see the status bar.")
        return is_ok

    def _describe(self) -> None:
        listener = self.workspace.live.listener
        if listener is None:
            dpg.set_value(self.message, "Not listening.")
            return
        dpg.set_value(
            self.message,
            f"Listening on {listener.address}. A recorder on this machine finds the key itself; elsewhere give it "
            f"the connection file {listener.connection_file} (or $DPGVIZ_KEY).",
        )
