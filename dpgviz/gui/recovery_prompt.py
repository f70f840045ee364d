"""The prompt at start when a dead process left unsaved work: Recover or Discard.

"Recover the unsaved work of <date> (N records, M branches)": Recover opens it like a
session (app.recovery.Recovery.accept), Discard deletes it. Modal, centred over the
window, shown only while `workspace.recovery.pending` holds a journal. dearpygui only.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace

INFO_COLOR = (170, 176, 188)


class RecoveryPrompt:
    """Recover / Discard the journal a dead process left (see the module docstring)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.window: int | str = 0
        self.text: int | str = 0
        self.recover_button = self.discard_button = 0

    def build(self, size: tuple[int, int]) -> None:
        width, height = 560, 150
        with dpg.window(
            label="Unsaved work found", modal=True, show=False, no_close=True, width=width, height=height,
            pos=(max(0, (size[0] - width) // 2), max(0, (size[1] - height) // 3)),
        ) as self.window:
            self.text = dpg.add_text("", wrap=width - 30)
            dpg.add_text("dpgviz stopped without saving them. Recovering opens them as an unsaved session.",
                         wrap=width - 30, color=INFO_COLOR)
            dpg.add_spacer(height=6)
            with dpg.group(horizontal=True):
                self.recover_button = dpg.add_button(label="Recover", width=120, callback=self.recover)
                self.discard_button = dpg.add_button(label="Discard", width=120, callback=self.discard)
        pending = self.pending()
        if pending is not None:
            dpg.set_value(self.text, pending.describe() + "?")
            dpg.show_item(self.window)

    def pending(self):  # -> store.journal_reader.RecoveryInfo | None
        recovery = self.workspace.recovery
        return recovery.pending if recovery is not None else None

    @property
    def is_shown(self) -> bool:
        return bool(self.window) and dpg.is_item_shown(self.window)

    def recover(self) -> None:
        dpg.hide_item(self.window)
        self.workspace.recovery.accept()

    def discard(self) -> None:
        dpg.hide_item(self.window)
        self.workspace.recovery.decline()
