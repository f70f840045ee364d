"""Keys and the mouse: Dear PyGui's handlers -> chords and canvas positions -> view state or workspace calls.

    Input.register()       key-press and mouse handlers under one handler registry
    Input.press(chord)     what a chord does (gui.keys lists them); real keys and tests come here
    pointer_down / move / up / hover   the canvas's mouse, in viewport pixels (tests call them too)

A shortcut fires only when no text or number box has the keyboard: `is_typing` looks at
every input item, active now or deactivated this frame. Enter typed in a settings box
ends the edit in the same frame its key-press handler fires, so "active" alone misses it
(it once opened the Replace box after typing a length). While a box has the keyboard a
chord goes to `box_keys` instead (the find bar's Enter / F3 / Escape in its own box).

Modifiers: a callback runs a frame or more after its key press, and a fast chord (xdotool,
a quick typist) has let go of Ctrl by then, so Ctrl+F read as F. So the modifiers are
followed through the callback queue, in the order the handlers saw them: a modifier
counts as held if it is down now, or a key-down handler saw it within MODIFIER_GRACE_FRAMES
frames (or MODIFIER_GRACE_S), its release has not come through the queue yet (release
handlers are registered after the key presses, so a release in the same frame as the key
comes after it) and no key pressed since it went down has used it (Shift+Enter, then F3 in
the frame Shift is let go: F3 alone). Measured with xdotool under Xvfb: the key and the
modifier's release come in the same frame. The grace counts frames, not only seconds: on a
loaded machine one frame took longer than MODIFIER_GRACE_S, Ctrl+F read as F (1 try in 4),
the text typed next went nowhere and Enter opened Replace.

Handlers are small: they change the view state or call one workspace operation. The
panels they reach are handed in (`Input(ws, canvas, settings, ...)`), never the App.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.gui.canvas import TokenCanvas
from dpgviz.gui.compare_view import CompareView
from dpgviz.gui.edit_bar import EditBar
from dpgviz.gui.inspector import HoverTip
from dpgviz.gui.keys import chord
from dpgviz.gui.settings_panel import SettingsPanel

log = logging.getLogger(__name__)

SCROLL_ROWS_PER_NOTCH = 3
MODIFIER_GRACE_S = 0.25  # a modifier seen down this recently counts as held (see the module docstring)
MODIFIER_GRACE_FRAMES = 2  # ... or this few frames ago, however long they took
MODIFIERS = {"ctrl": (dpg.mvKey_LControl, dpg.mvKey_RControl), "shift": (dpg.mvKey_LShift, dpg.mvKey_RShift)}

# Keys the app listens to (chord names in gui.keys); modifiers are read when one is pressed.
KEYS = {
    "left": dpg.mvKey_Left,
    "right": dpg.mvKey_Right,
    "home": dpg.mvKey_Home,
    "end": dpg.mvKey_End,
    "space": dpg.mvKey_Spacebar,
    "enter": dpg.mvKey_Return,
    "escape": dpg.mvKey_Escape,
    "a": dpg.mvKey_A,
    "m": dpg.mvKey_M,
    "p": dpg.mvKey_P,
    "r": dpg.mvKey_R,
    "u": dpg.mvKey_U,
    "i": dpg.mvKey_I,
    "f": dpg.mvKey_F,  # ctrl+f: Find (gui.find_bar)
    "g": dpg.mvKey_G,  # ctrl+g: Go to position
    "f3": dpg.mvKey_F3,  # next match (shift: previous)
    **{str(k): getattr(dpg, f"mvKey_{k}") for k in range(1, 9)},
}

# Windows Escape closes (Input.close_popup): dialogs and file dialogs; the main window has no title bar.
DIALOG_TYPES = frozenset(("mvAppItemType::mvWindowAppItem", "mvAppItemType::mvFileDialog"))

# Item types that take the keyboard while active (text, numbers, combos being typed in).
TYPING_TYPES = frozenset(
    f"mvAppItemType::{t}"
    for t in (
        "mvInputText", "mvInputInt", "mvInputFloat", "mvInputDouble", "mvInputIntMulti", "mvInputFloatMulti",
        "mvInputDoubleMulti", "mvDragInt", "mvDragFloat", "mvDragDouble", "mvSliderInt", "mvSliderFloat",
        "mvSliderDouble",
    )
)


class Input:
    """Keyboard shortcuts and the canvas's mouse (see the module docstring)."""

    def __init__(
        self,
        workspace: Workspace,
        canvas: TokenCanvas,
        settings: SettingsPanel,
        edit_bar: EditBar,
        hover_tip: HoverTip,
        compare_view: CompareView,
        *,
        show_inspector: Callable[[], None],
        show_zoom: Callable[[int], None],
    ) -> None:
        self.workspace, self.view = workspace, workspace.view
        self.canvas, self.settings, self.edit_bar = canvas, settings, edit_bar
        self.hover_tip, self.compare_view = hover_tip, compare_view
        self.show_inspector, self.show_zoom = show_inspector, show_zoom
        self.actions = self._actions()  # chord -> action (gui.keys lists them)
        self.closers: list[Callable[[], bool]] = []  # bars Escape closes (after a modal dialog); True: one was open
        # Chords for a box with the keyboard; True: it took the chord. Ctrl+Enter in the Prompt box starts the run.
        self.box_keys: list[Callable[[str], bool]] = [settings.prompt_key]
        self._modifier_seen = dict.fromkeys(MODIFIERS, -1.0)  # monotonic time each was last seen down; -1: let go
        self._modifier_frame = dict.fromkeys(MODIFIERS, -1)  # dpg frame count when each was last seen down
        # Asked before a key goes to the shortcuts: True while a bar waits for its box to take the
        # keyboard (Find just opened), so keys typed meanwhile do not fire shortcuts (Enter: Replace).
        self.keyboard_claims: list[Callable[[], bool]] = []
        self._modifier_used = dict.fromkeys(MODIFIERS, False)  # a key pressed since it went down was read with it
        self.is_dragging = False
        self.key_handlers: dict[int, int | str] = {}
        self._typing_items: tuple[int, list[int | str]] = (-1, [])  # (item count, input items) cache

    def register(self) -> None:
        """Key and mouse handlers (call inside the build, once)."""
        with dpg.handler_registry():
            for modifier, keys in MODIFIERS.items():  # before the key presses: seen first in a frame
                for key in keys:
                    dpg.add_key_down_handler(key, callback=self._seen(modifier))
            for name, key in KEYS.items():
                self.key_handlers[key] = dpg.add_key_press_handler(key, callback=self._on_key(name))
            for modifier, keys in MODIFIERS.items():  # after the key presses (see the module docstring)
                for key in keys:
                    dpg.add_key_release_handler(key, callback=self._seen(modifier, held=False))
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)
            dpg.add_mouse_click_handler(button=dpg.mvMouseButton_Left, callback=self._on_click)
            dpg.add_mouse_drag_handler(button=dpg.mvMouseButton_Left, threshold=1.0, callback=self._on_drag)
            dpg.add_mouse_release_handler(button=dpg.mvMouseButton_Left, callback=self._on_release)
            dpg.add_mouse_click_handler(button=dpg.mvMouseButton_Right, callback=self._on_right_click)
            dpg.add_mouse_move_handler(callback=self._on_mouse_move)

    # -- keys -------------------------------------------------------------------------
    def _actions(self) -> dict[str, Callable[[], None]]:
        """What each chord of gui.keys.SHORTCUTS does (Ctrl+O / Ctrl+S belong to the File menu)."""
        view, ws = self.view, self.workspace
        n = ws.n_records

        def seq_len() -> int:
            return ws.doc.total_len

        def shift_step(delta: int) -> None:
            if view.canvas_focus and view.selection() is not None:
                view.extend_selection(delta, seq_len())
            else:
                view.step(delta, n())

        def escape() -> None:
            if self.close_popup() or any(close() for close in self.closers):
                return
            if ws.is_running:
                ws.runs.stop()
            else:
                view.clear_selection()

        return {
            "left": lambda: view.step(-1, n()),
            "right": lambda: view.step(1, n()),
            "shift+left": lambda: shift_step(-1),
            "shift+right": lambda: shift_step(1),
            "home": lambda: view.home(n()),
            "end": lambda: view.end(n()),
            "space": lambda: view.toggle_play(n()),
            "ctrl+enter": self.settings.start,
            "escape": escape,
            "ctrl+r": self.settings.restart,
            "ctrl+a": lambda: view.select_all(seq_len()),
            "m": lambda: ws.edits.edit("mask"),
            "u": lambda: ws.edits.edit("unmask"),
            "p": lambda: ws.edits.edit("protect"),
            "shift+p": lambda: ws.edits.edit("unprotect"),
            "enter": self.edit_bar.focus_replace,
            "i": self.pin_hovered,
            **{str(k): self._candidate_picker(k) for k in range(1, 9)},
        }

    def _candidate_picker(self, k: int) -> Callable[[], None]:
        """Key k (1-8): place candidate k of the hovered token there, as an edit."""

        def pick() -> None:
            info = self.hover_tip.info
            if info is not None and k <= len(info.candidates):
                self.workspace.edits.pick_candidate(info.pos, info.candidates[k - 1][0])

        return pick

    def pin_hovered(self) -> None:
        """Pin the token under the mouse in the inspector, and show the inspector."""
        pos = self.view.hover_pos
        if pos is not None and 0 <= pos < self.workspace.doc.total_len:
            self.view.pin(pos)
            self.show_inspector()

    @staticmethod
    def close_popup() -> bool:
        """Escape closes an open dialog first, as its Cancel or its X would: any shown window but the
        main one (no title bar), modal or not, file dialogs included, now and as added later. The
        focused one goes first, else a modal one, else the last built; its on_close runs (the compare
        view lets go of its pair). A prompt that must be answered (no close button) stays. True if
        one was closed."""
        shown = []
        for item in dpg.get_windows():
            if dpg.get_item_type(item) not in DIALOG_TYPES or not dpg.is_item_shown(item):
                continue
            config = dpg.get_item_configuration(item)
            if not config.get("no_title_bar") and not config.get("no_close"):
                shown.append((item, config))
        if not shown:
            return False
        active = dpg.get_active_window()
        item, config = next(
            (w for w in shown if w[0] == active), next((w for w in shown if w[1].get("modal")), shown[-1])
        )
        dpg.hide_item(item)
        on_close = config.get("on_close")
        if callable(on_close):
            _call(on_close, item)
        return True

    def press(self, name: str) -> bool:
        """Do what chord `name` does (key handlers and tests come here); False if it means nothing."""
        action = self.actions.get(name)
        if action is None:
            return False
        action()
        return True

    def is_typing(self) -> bool:
        """A text or number box has the keyboard, or let go of it this frame (Enter, Tab): keys are its."""
        count = len(dpg.get_all_items())
        if self._typing_items[0] != count:  # windows built later (explorer, pickers) bring their own boxes
            items = [i for i in dpg.get_all_items() if dpg.get_item_type(i) in TYPING_TYPES]
            self._typing_items = (count, items)
        return any(dpg.is_item_active(i) or dpg.is_item_deactivated(i) for i in self._typing_items[1])

    def _seen(self, modifier: str, held: bool = True) -> Callable[[], None]:
        def seen() -> None:
            if held and self._modifier_seen[modifier] < 0:  # went down: no key has used it yet
                self._modifier_used[modifier] = False
            self._modifier_seen[modifier] = time.monotonic() if held else -1.0
            self._modifier_frame[modifier] = dpg.get_frame_count() if held else -1

        return seen

    def is_held(self, modifier: str) -> bool:
        """"ctrl" or "shift" goes with the key pressed now: down, or a moment ago for a fast chord
        (see the module docstring). Call once per key press: it marks the modifier used."""
        seen = self._modifier_seen[modifier]
        is_held = any(dpg.is_key_down(k) for k in MODIFIERS[modifier]) or (
            seen >= 0 and not self._modifier_used[modifier] and (
                time.monotonic() - seen < MODIFIER_GRACE_S
                or dpg.get_frame_count() - self._modifier_frame[modifier] <= MODIFIER_GRACE_FRAMES
            )
        )
        if is_held:
            self._modifier_used[modifier] = True
        return is_held

    def _on_key(self, name: str) -> Callable[[], None]:
        def on_key() -> None:
            pressed = chord(name, self.is_held("ctrl"), self.is_held("shift"))
            if not self.is_typing() and not any(claim() for claim in self.keyboard_claims):
                self.press(pressed)
            else:
                any(take(pressed) for take in self.box_keys)

        return on_key

    # -- mouse on the canvas -------------------------------------------------------------
    def pointer_down(self, x: float, y: float, shift: bool = False) -> None:
        """A left click at viewport pixel (x, y): select the token there (shift: extend)."""
        pos = self.canvas.pos_at_pixel(x, y)
        self.view.canvas_focus = self.canvas.cell_at_pixel(x, y) is not None
        if pos is None:
            self.is_dragging = False
            return
        self.view.select_tokens(pos, extend=shift)
        self.is_dragging = True

    def pointer_move(self, x: float, y: float) -> None:
        """The mouse moved with the button down: extend the selection to the token under it."""
        if self.is_dragging:
            pos = self.canvas.pos_at_pixel(x, y, clamp=True)
            if pos is not None:
                self.view.drag_to(pos)

    def pointer_up(self) -> None:
        self.is_dragging = False

    def pointer_hover(self, x: float, y: float) -> None:
        """The mouse is at viewport pixel (x, y): the token there is the tooltip's (None off the tokens)."""
        self.view.hover_pos = self.canvas.pos_at_pixel(x, y)

    def _on_mouse_move(self, sender: int, app_data: object) -> None:
        x, y = dpg.get_mouse_pos(local=False)
        self.view.hover_pos = self.canvas.pos_at_pixel(x, y) if self.canvas.is_hovered() else None

    def _on_right_click(self, sender: int, button: int) -> None:
        if self.canvas.is_hovered():
            x, y = dpg.get_mouse_pos(local=False)
            self.pointer_hover(x, y)
            self.pin_hovered()

    def _on_click(self, sender: int, button: int) -> None:
        x, y = dpg.get_mouse_pos(local=False)
        if self.canvas.is_hovered():
            self.pointer_down(x, y, dpg.is_key_down(dpg.mvKey_LShift) or dpg.is_key_down(dpg.mvKey_RShift))
        else:
            self.view.canvas_focus = False

    def _on_drag(self, sender: int, app_data: object) -> None:
        if self.is_dragging:
            x, y = dpg.get_mouse_pos(local=False)
            self.pointer_move(x, y)

    def _on_release(self, sender: int, button: int) -> None:
        self.pointer_up()

    def _on_wheel(self, sender: int, delta: int) -> None:
        if self.compare_view.scroll_pane(-int(delta) * SCROLL_ROWS_PER_NOTCH):
            return
        if not self.canvas.is_hovered():
            return
        if dpg.is_key_down(dpg.mvKey_LControl) or dpg.is_key_down(dpg.mvKey_RControl):
            self.canvas.zoom(self.view, self.view.font_px + int(delta))
            self.show_zoom(self.view.font_px)
        else:
            self.canvas.scroll_by(self.view, -int(delta) * SCROLL_ROWS_PER_NOTCH)


def _call(callback: Callable, sender: int | str) -> None:
    """Call a Dear PyGui callback as Dear PyGui would: with as many of (sender, app_data, user_data) as it takes."""
    try:
        n_args = len(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        n_args = 0
    callback(*(sender, None, None)[:n_args])
