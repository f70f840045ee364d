"""View state: what the user is looking at, separate from the widgets that show it.

The workspace's `Document` owns one `ViewState`; callbacks change it, panels read it. Nothing here
imports dearpygui, so the timeline logic (follow live, play, clamping) is testable
without a window.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MAX_PINNED = 8  # tokens the inspector shows at once; pinning one more drops the oldest


@dataclass
class ViewState:
    branch: str | None = None  # store branch shown on the canvas and timeline
    record: int = 0  # index into the branch's records (not a store row)
    color_mode: str = "state"  # palette.MODES key
    text_mode: bool = False  # reading layout (wrap at newlines) instead of the fixed grid
    hide_after_eos: bool = False  # View > Hide tokens after the first EOS: the canvas leaves them blank
    top_row: int = 0  # first canvas row shown
    font_px: int = 16  # canvas zoom: text size, and so cell size
    follow_live: bool = True  # jump to the newest record as records arrive
    playing: bool = False
    play_speed: float = 12.0  # records per second while playing
    sel_anchor: int | None = None  # token position where the selection started (click, shift-click keeps it)
    sel_cursor: int | None = None  # token position where it ends now (drag, shift-click, Shift+arrows)
    canvas_focus: bool = False  # the last click was on the canvas: Shift+arrows extend the selection
    hover_pos: int | None = None  # token position under the mouse (the tooltip's)
    pinned: list[int] = dataclasses.field(default_factory=list)  # positions shown in the inspector
    _play_credit: float = 0.0  # fraction of a record accumulated between frames

    # -- token selection ---------------------------------------------------------------
    def selection(self) -> tuple[int, int] | None:
        """Selected token positions as [start, stop), or None."""
        if self.sel_anchor is None or self.sel_cursor is None:
            return None
        a, b = sorted((self.sel_anchor, self.sel_cursor))
        return a, b + 1

    def select_tokens(self, pos: int, extend: bool = False) -> None:
        """A click on position `pos` (shift-click: extend from the anchor)."""
        if not extend or self.sel_anchor is None:
            self.sel_anchor = int(pos)
        self.sel_cursor = int(pos)

    def drag_to(self, pos: int) -> None:
        if self.sel_anchor is not None:
            self.sel_cursor = int(pos)

    def extend_selection(self, delta: int, seq_len: int) -> None:
        """Shift+Left/Right: move the selection's moving end by `delta` positions."""
        if self.sel_cursor is None:
            return
        self.sel_cursor = min(max(0, self.sel_cursor + int(delta)), seq_len - 1)

    def select_all(self, seq_len: int) -> None:
        if seq_len > 0:
            self.sel_anchor, self.sel_cursor = 0, seq_len - 1

    def clear_selection(self) -> None:
        self.sel_anchor = self.sel_cursor = None

    # -- pinned tokens (the inspector) -----------------------------------------------------
    def pin(self, pos: int) -> None:
        """Pin `pos` in the inspector (first in the list); pinning it again moves it first."""
        if pos in self.pinned:
            self.pinned.remove(pos)
        self.pinned.insert(0, int(pos))
        del self.pinned[MAX_PINNED:]

    def unpin(self, pos: int) -> None:
        if pos in self.pinned:
            self.pinned.remove(pos)

    def drop_positions(self, n_positions: int) -> str:
        """Forget pins, the selection and the hover at positions >= `n_positions` (a shorter
        sequence is shown now); what was dropped, for the status bar ("" when nothing was)."""
        gone = [p for p in self.pinned if not 0 <= p < n_positions]
        self.pinned = [p for p in self.pinned if 0 <= p < n_positions]
        said = [f"pinned position{'s' if len(gone) > 1 else ''} {', '.join(map(str, gone))}"] if gone else []
        ends = (self.sel_anchor, self.sel_cursor)
        if any(e is not None and not 0 <= e < n_positions for e in ends):
            self.clear_selection()
            said.append("the selection")
        if self.hover_pos is not None and not 0 <= self.hover_pos < n_positions:
            self.hover_pos = None
        return " and ".join(said).capitalize() if said else ""

    # -- selection -----------------------------------------------------------------
    def select(self, index: int, n_records: int, by_user: bool = True) -> None:
        """Show record `index` (clamped). A user moving off the newest record stops following."""
        last = max(0, n_records - 1)
        self.record = min(max(0, int(index)), last)
        if by_user and self.record < last:
            self.follow_live = False

    def step(self, delta: int, n_records: int) -> None:
        self.playing = False
        self.select(self.record + delta, n_records)

    def home(self, n_records: int) -> None:
        self.playing = False
        self.select(0, n_records)

    def end(self, n_records: int) -> None:
        """Jump to the newest record and follow from there."""
        self.playing = False
        self.select(n_records - 1, n_records)
        self.follow_live = True

    def toggle_play(self, n_records: int) -> None:
        self.playing = not self.playing
        self._play_credit = 0.0
        if self.playing:
            self.follow_live = False
            if self.record >= n_records - 1:  # at the end: play from the start
                self.record = 0

    # -- per frame -----------------------------------------------------------------
    def advance(self, n_records: int, dt_s: float) -> None:
        """Apply follow-live and play for one frame of `dt_s` seconds."""
        last = max(0, n_records - 1)
        if self.playing:
            self._play_credit += max(0.0, dt_s) * self.play_speed
            steps = int(self._play_credit)
            if steps:
                self._play_credit -= steps
                self.record = min(last, self.record + steps)
            if self.record >= last:  # caught up: keep tracking a live run from here
                self.playing = False
                self.follow_live = True
        elif self.follow_live:
            self.record = last
        self.record = min(max(0, self.record), last)
