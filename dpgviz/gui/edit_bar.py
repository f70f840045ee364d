"""The edit bar above the canvas: what is selected, and Mask / Unmask / Protect / Replace / Restart.

Buttons call the workspace's edit operations on the selection of the record shown; the
typed replacement stays in its box when it is refused (a character outside the model's
vocabulary), so nothing typed is lost. Keyboard shortcuts for the same actions live in
the app's key map (M, U, P, Enter, Ctrl+R). dearpygui only; no torch.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.gui.status import INFO_COLOR, Cached, FittedText

SELECTION_COLOR = (230, 230, 235)


class EditBar:
    """Selection readout, edit buttons, the replacement box and Restart from here."""

    def __init__(self, workspace: Workspace, restart: Callable[[], None]) -> None:
        self.workspace = workspace
        self.restart = restart  # reads the settings panel, then workspace.edits.restart
        self._cache = Cached()
        self._state: tuple | None = None
        self.selection_text = self.replace_input = self.restart_button = 0
        self.buttons: dict[str, int | str] = {}
        self.parent: int | str = 0
        # The readout gives way when the row is wider than the canvas (a 1280-pixel window): it ends
        # in '...' (whole on hover) so Restart, the row's last item, stays inside the panel.
        self.readout = FittedText(lambda: dpg.get_item_rect_max(self.selection_text)[0] + self.slack_px())

    def build(self, parent: int | str) -> None:
        self.parent = parent
        with dpg.group(horizontal=True, parent=parent):
            self.selection_text = self.readout.build(color=INFO_COLOR)
            for op, label, tip in (
                ("mask", "Mask", "Mask the selected tokens (M)"),
                ("unmask", "Unmask", "Put back what this step's prediction sampled there (U)"),
                ("protect", "Protect", "Keep the selected tokens fixed when the run restarts (P)"),
                ("unprotect", "Unprotect", "Let the sampler change them again (Shift+P)"),
            ):
                self.buttons[op] = dpg.add_button(label=label, callback=self._op(op))
                with dpg.tooltip(self.buttons[op]):
                    dpg.add_text(tip)
            self.replace_input = dpg.add_input_text(
                hint="new text (Enter)", width=130, on_enter=True, callback=lambda *_: self.replace()
            )
            self.buttons["replace"] = dpg.add_button(label="Replace", callback=lambda: self.replace())
            with dpg.tooltip(self.buttons["replace"]):
                dpg.add_text("Same length replaces the selection; shorter text masks the rest (Enter types)")
            self.restart_button = dpg.add_button(label="Restart", callback=lambda: self.restart())
            with dpg.tooltip(self.restart_button):
                dpg.add_text(
                    "Restart from here (Ctrl+R): run the model from the step shown, with the settings\n"
                    "on the left. An edit runs in its own branch; any other step starts a new branch."
                )

    def _op(self, op: str) -> Callable[[], None]:
        return lambda: self.workspace.edits.edit(op)

    def replace(self) -> None:
        """Replace the selection with the typed text; the text stays in the box if refused."""
        text = str(dpg.get_value(self.replace_input))
        if not text:
            dpg.focus_item(self.replace_input)
            self.workspace.say("Type the replacement, then press Enter.")
            return
        if self.workspace.edits.edit("replace", text):
            dpg.set_value(self.replace_input, "")

    def focus_replace(self) -> None:
        dpg.focus_item(self.replace_input)

    def slack_px(self) -> float:
        """Pixels between Restart's right edge and the panel's (negative: Restart is cut off there).
        The panel is a child window of the main window, whose origin is the viewport's."""
        right = dpg.get_item_pos(self.parent)[0] + dpg.get_item_rect_size(self.parent)[0] - 8  # its padding
        return right - dpg.get_item_rect_max(self.restart_button)[0]

    def refresh(self) -> None:
        ws = self.workspace
        self.readout.fit()
        sel = ws.view.selection()
        can_run = ws.runs.can_run
        state = (sel, id(ws.store), ws.store.version if ws.store is not None else 0, ws.view.branch, ws.is_running, can_run)
        if state == self._state:  # nothing it shows changed (the common frame)
            return
        self._state = state
        if sel is None:
            text = "select: click, drag"
        else:
            text = f"{sel[0]}:{sel[1]} ({sel[1] - sel[0]})"
        draft = ws.edits.draft()
        if draft is not None:
            text += " | edit not run yet"
        self.readout.set(text)
        has = sel is not None and ws.store is not None
        for item in self.buttons.values():
            self._cache.configure(item, enabled=has)
        # As the settings panel's Restart from here: only with a model to run (after a disconnect or a
        # worker's death there is none; Ctrl+R still says which model the records came from)
        self._cache.configure(self.restart_button, enabled=ws.n_records() > 0 and not ws.is_running and can_run)

    def input_items(self) -> list[int | str]:
        return [self.replace_input]
