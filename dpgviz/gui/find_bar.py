"""Find (Ctrl+F) and Go to position (Ctrl+G): two small bars above the canvas, and the
matches marked on the overview.

    Find  [box] 3 of 41 [<] [>] [x]   typing searches the record shown (app.find) and scrolls
                                     to the first match from where the last one was; Enter
                                     or F3 the next, Shift+Enter or Shift+F3 the previous
    Go to [box] [Go] [x]             Enter scrolls the canvas there and selects it, as a click

Keys inside the boxes: the app's shortcuts stay quiet while a text box has the keyboard
(gui.input `is_typing`) and hand the chord to `box_key`, which takes Enter, Escape and F3
when one of this bar's boxes has (or just let go of) the keyboard. Enter ends an ImGui
text edit, so after Enter the find box takes the keyboard back for the next Enter. F3,
Ctrl+F and Ctrl+G from anywhere else come through the app's key map (`actions`); Escape
closes an open bar (gui.input closes modal dialogs first).

The overview gets a strip of ticks above its picture, one column per match at its
position across the sequence (the current one white); a click there goes to the first
match from that position. Built with numpy (no per-match loop), redrawn only when the
matches change. dearpygui and numpy; no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.workspace import Workspace
from dpgviz.core.palette import PAGE_RGB
from dpgviz.gui import palette
from dpgviz.gui.status import ERROR_COLOR, INFO_COLOR, Cached

BOX_PX = 240
FOCUS_RETRY_S = 2.0  # a box that just opened asks for the keyboard each frame until it has it, this long at most
MARKS_PX = 8  # height of the overview's strip of match ticks
MATCH_RGB = palette.OVERLAY_RGBA["match"][:3]  # the canvas's match tint, opaque
CURRENT_RGB = (255, 255, 255)


class FindBar:
    """The find and go-to bars, and the overview's match strip (see the module docstring)."""

    def __init__(self, workspace: Workspace, reveal: Callable[[int], None]) -> None:
        self.workspace = workspace
        self.find = workspace.find
        self.reveal = reveal  # scrolls the canvas so a position is in view
        self.find_group = self.find_box = self.count = 0
        self.goto_group = self.goto_box = 0
        self.marks_image = self.marks_texture = 0
        self.marks_px = (0, MARKS_PX)
        self.ticks: np.ndarray | None = None  # (w,) uint8 of the strip last drawn: 0, 1 match, 2 current (tests)
        self._marks_key: tuple | None = None
        self._cache = Cached()
        self._focus_wanted: int | str | None = None  # a box asked for the keyboard and not given it yet
        self._focus_until = 0.0

    # -- building ------------------------------------------------------------------------
    def build(self, parent: int | str) -> None:
        """The two bars, hidden until Ctrl+F / Ctrl+G."""
        with dpg.group(horizontal=True, parent=parent, show=False) as self.find_group:
            dpg.add_text("Find")
            self.find_box = dpg.add_input_text(
                hint="text shown (Enter: next)", width=BOX_PX, auto_select_all=True,
                callback=lambda _s, value: self.search(value),
            )
            self.count = dpg.add_text("", color=INFO_COLOR)
            prev_button = dpg.add_button(label="<", callback=lambda: self.step(-1))
            next_button = dpg.add_button(label=">", callback=lambda: self.step(1))
            dpg.add_button(label="x", callback=lambda: self.close())
            for button, tip in ((prev_button, "Previous match (Shift+Enter, Shift+F3)"),
                                (next_button, "Next match (Enter, F3)")):
                with dpg.tooltip(button):
                    dpg.add_text(tip)
        with dpg.group(horizontal=True, parent=parent, show=False) as self.goto_group:
            dpg.add_text("Go to position")
            self.goto_box = dpg.add_input_text(
                hint="0.. (Enter)", width=120, on_enter=True, auto_select_all=True,
                callback=lambda _s, value: self.go(value),
            )
            dpg.add_button(label="Go", callback=lambda: self.go(dpg.get_value(self.goto_box)))
            dpg.add_button(label="x", callback=lambda: self.close())

    def build_marks(self, before: int | str, width: int) -> None:
        """The strip of match ticks, `width` px wide, placed just before item `before` (the overview's picture)."""
        self.marks_px = (width, MARKS_PX)
        with dpg.texture_registry():
            self.marks_texture = dpg.add_dynamic_texture(width, MARKS_PX, self._strip(np.zeros(width, np.uint8)))
        self.marks_image = dpg.add_image(self.marks_texture, width=width, height=MARKS_PX, before=before)
        with dpg.tooltip(self.marks_image):
            dpg.add_text("Find's matches across the sequence (the current one white); click to go there")
        with dpg.item_handler_registry() as handlers:
            dpg.add_item_clicked_handler(callback=lambda: self.click_marks(dpg.get_mouse_pos(local=False)[0]))
        dpg.bind_item_handler_registry(self.marks_image, handlers)

    def actions(self) -> dict[str, Callable[[], None]]:
        """Chords for the app's key map (gui.keys lists them)."""
        return {
            "ctrl+f": self.open_find,
            "ctrl+g": self.open_goto,
            "f3": lambda: self.step(1),
            "shift+f3": lambda: self.step(-1),
        }

    # -- opening and closing -----------------------------------------------------------------
    def open_find(self) -> None:
        """Show the find bar, the keyboard in its box; what it holds is searched again."""
        dpg.hide_item(self.goto_group)
        dpg.show_item(self.find_group)
        self._focus(self.find_box)
        self.search(str(dpg.get_value(self.find_box)))

    def open_goto(self) -> None:
        dpg.hide_item(self.find_group)
        self.find.close()
        dpg.show_item(self.goto_group)
        dpg.set_value(self.goto_box, "")  # a new position each time
        self._focus(self.goto_box)

    def _focus(self, box: int | str) -> None:
        """Give `box` the keyboard, and ask again each frame until it has it (`refresh`).

        A focus asked for in the frame a hidden bar is shown can be lost: the box is not laid
        out yet, and ImGui applies a focus request a frame later, to an item it then sees. Under
        load that happened 1 Ctrl+F in 4: the text typed next went nowhere and Enter opened Replace.
        Until the box has the keyboard it claims the keys (`is_claiming`), so they fire no shortcut."""
        dpg.focus_item(box)
        self._focus_wanted, self._focus_until = box, time.monotonic() + FOCUS_RETRY_S

    def is_claiming(self) -> bool:
        """A bar just opened and its box has not taken the keyboard yet (gui.input's `keyboard_claims`)."""
        return self._focus_wanted is not None

    def _keep_focus(self) -> None:
        box = self._focus_wanted
        if box is None:
            return
        if dpg.is_item_active(box) or not dpg.is_item_shown(box) or time.monotonic() > self._focus_until:
            self._focus_wanted = None
        else:
            dpg.focus_item(box)

    def close(self) -> bool:
        """Hide whichever bar is open and end the search; True if one was open (Escape)."""
        was_open = self.is_open()
        self._focus_wanted = None
        dpg.hide_item(self.find_group)
        dpg.hide_item(self.goto_group)
        self.find.close()
        return was_open

    def is_open(self) -> bool:
        return bool(self.find_group) and (dpg.is_item_shown(self.find_group) or dpg.is_item_shown(self.goto_group))

    # -- what the bars do ------------------------------------------------------------------
    def search(self, query: str) -> None:
        """The find box changed: search, and scroll to the current match."""
        self.find.search(query)
        self._reveal(self.find.current_position())

    def step(self, delta: int) -> None:
        """The next (1) or previous (-1) match, scrolled to."""
        self._reveal(self.find.step(delta))

    def go(self, text: str) -> None:
        """Go to the position typed: scroll there and select it; the bar closes (stays open on a mistake)."""
        pos = self.find.goto(str(text))
        if pos is None:
            dpg.focus_item(self.goto_box)
            return
        self.reveal(pos)
        dpg.hide_item(self.goto_group)

    def click_marks(self, x: float) -> None:
        """A click on the overview's strip at viewport x: the first match from that position."""
        x0 = dpg.get_item_rect_min(self.marks_image)[0]
        n = self.find.matches().n_positions
        if n:
            self._reveal(self.find.start_at(int((x - x0) * n / max(1, self.marks_px[0]))))

    def _reveal(self, pos: int | None) -> None:
        if pos is not None:
            self.reveal(pos)

    def box_key(self, pressed: str) -> bool:
        """A chord (gui.keys) while a text box has the keyboard: Enter / F3 (Shift: back) and Escape
        in this bar's boxes; True if it was one of them (gui.input's `box_keys`)."""
        find_has, goto_has = self._has_keyboard(self.find_box), self._has_keyboard(self.goto_box)
        if pressed == "escape" and (find_has or goto_has or self.is_claiming()):
            self.close()
            return True
        find_waits = self._focus_wanted == self.find_box  # just opened: Enter is the box's before it has the keyboard
        if (find_has or find_waits) and pressed in ("enter", "f3", "shift+enter", "shift+f3"):
            self.step(-1 if pressed.startswith("shift+") else 1)
            self._focus(self.find_box)  # Enter ended the edit: take the keyboard back for the next Enter
            return True
        return False  # the go-to box's Enter is its own callback (on_enter)

    @staticmethod
    def _has_keyboard(item: int | str) -> bool:
        return bool(item) and dpg.is_item_shown(item) and (dpg.is_item_active(item) or dpg.is_item_deactivated(item))

    # -- once a frame ----------------------------------------------------------------------
    def refresh(self) -> None:
        """The count ("3 of 41"), and the overview's ticks when the matches changed."""
        if not self.find_group:
            return
        self._keep_focus()
        text = self.find.count_text()
        self._cache.set(self.count, text)
        self._cache.configure(self.count, color=ERROR_COLOR if text == "no matches" else INFO_COLOR)
        if self.marks_texture:
            self._refresh_marks()

    def _refresh_marks(self) -> None:
        marks = self.find.marks()
        key = marks.key if marks is not None else None
        if key == self._marks_key:
            return
        self._marks_key = key
        w = self.marks_px[0]
        ticks = np.zeros(w, dtype=np.uint8)
        if marks is not None:
            n = max(1, self.find.matches().n_positions)
            ticks[(marks.first * w) // n] = 1  # a column per match, several per column at 65,536
            if marks.current is not None:
                ticks[(int(marks.first[marks.current]) * w) // n] = 2
        self.ticks = ticks
        dpg.set_value(self.marks_texture, self._strip(ticks))

    @staticmethod
    def _strip(ticks: np.ndarray) -> np.ndarray:
        """The strip's RGBA float texture from one tick value per column."""
        colors = np.array([PAGE_RGB, MATCH_RGB, CURRENT_RGB], dtype=np.float32) / 255.0  # (3, 3)
        rgba = np.ones((MARKS_PX, len(ticks), 4), dtype=np.float32)
        rgba[..., :3] = colors[ticks][None, :, :]
        return rgba.ravel()
