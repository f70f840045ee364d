"""The compare view: two branches in two canvases side by side, and their final texts diffed.

The workspace holds which two branches are compared (`Workspace.compare`); the left pane
shows the first at the record the timeline is on, the right pane the second at the same
iteration (`Workspace.compare_rows`), so scrubbing moves both. Each pane keeps its own
view state (scroll, zoom); the colour mode follows the main canvas. Cells whose tokens
differ at that iteration are tinted in both panes. Below, the two final texts with the
differing stretches bracketed, from a character diff (difflib).

dearpygui, numpy and the standard library only; no torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.inspect import NO_EXTRAS, CellExtras, RecordCells, ShownRecord
from dpgviz.app.view_state import ViewState
from dpgviz.app.workspace import Workspace
from dpgviz.core import color_modes
from dpgviz.core.vocab import Vocabulary
from dpgviz.gui.branches import branch_title
from dpgviz.gui.canvas import TokenCanvas
from dpgviz.gui.status import INFO_COLOR, Cached
from dpgviz.gui.theme import Fonts

WINDOW_SIZE = (1240, 720)
OPEN, CLOSE = "\u27e6", "\u27e7"  # white square brackets around a differing stretch


def char_diff(a: str, b: str) -> tuple[str, str, float]:
    """(a, b) with their differing stretches bracketed, and the share of characters in common."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    left, right = [], []
    for tag, i0, i1, j0, j1 in matcher.get_opcodes():
        if tag == "equal":
            left.append(a[i0:i1])
            right.append(b[j0:j1])
        else:
            left.append(f"{OPEN}{a[i0:i1]}{CLOSE}")
            right.append(f"{OPEN}{b[j0:j1]}{CLOSE}")
    return "".join(left), "".join(right), matcher.ratio()


class CompareView:
    """A window with two canvases and the diff of the two branches' final texts."""

    def __init__(self, workspace: Workspace, fonts: Fonts) -> None:
        self.workspace = workspace
        self.fonts = fonts
        self.panes = (TokenCanvas(fonts), TokenCanvas(fonts))
        self.views = (ViewState(follow_live=False), ViewState(follow_live=False))
        self.window = self.header = self.left_text = self.right_text = self.summary = 0
        self.pickers: list[int | str] = []  # a branch combo over each pane: compare any two
        self._picker_key: tuple | None = None
        self._cache = Cached()
        self._highlight_key: tuple | None = None
        self.highlight: np.ndarray | None = None  # positions whose tokens differ at the shown iteration
        self._diff_key: tuple | None = None
        self._vocab_key: int | None = None
        self._is_shown = False
        self._orders: dict[str, np.ndarray] = {}  # branch -> decoding order, of the store as of _orders_key
        self._orders_key: tuple | None = None

    def build(self) -> None:
        with dpg.window(
            label="Compare branches", width=WINDOW_SIZE[0], height=WINDOW_SIZE[1], show=False,
            on_close=lambda: self.close(),
        ) as self.window:
            self.header = dpg.add_text("", color=INFO_COLOR)
            with dpg.group(horizontal=True):
                for side, pane in enumerate(self.panes):
                    with dpg.child_window(width=WINDOW_SIZE[0] // 2 - 14, height=-190, border=True) as box:
                        self.pickers.append(dpg.add_combo([], width=-1, callback=self._picker_callback(side)))
                        pane.build(box)
            self.summary = dpg.add_text("", color=INFO_COLOR)
            with dpg.group(horizontal=True):
                with dpg.child_window(width=WINDOW_SIZE[0] // 2 - 14, height=-1):
                    self.left_text = dpg.add_text("", wrap=WINDOW_SIZE[0] // 2 - 40)
                with dpg.child_window(width=WINDOW_SIZE[0] // 2 - 14, height=-1):
                    self.right_text = dpg.add_text("", wrap=WINDOW_SIZE[0] // 2 - 40)

    def show(self) -> None:
        dpg.show_item(self.window)
        dpg.focus_item(self.window)
        self._is_shown = True

    def close(self) -> None:
        self.workspace.compare.pair = None
        dpg.hide_item(self.window)
        self._is_shown = False

    @property
    def is_shown(self) -> bool:
        """Kept here rather than asked of Dear PyGui every frame (the window's X calls close())."""
        return self._is_shown

    def refresh(self, color_mode: str) -> None:
        """Once a frame: both panes at the shown iteration, the tint where they differ, the diff."""
        ws = self.workspace
        if ws.compare.pair is None or ws.store is None or ws.vocab is None:
            if self.is_shown:
                dpg.hide_item(self.window)
                self._is_shown = False
            return
        if not self.is_shown:
            self.show()
        store, vocab = ws.store, ws.vocab
        if self._vocab_key != id(vocab):
            for pane in self.panes:
                pane.set_vocabulary(list(vocab.itos), vocab.n_ids)
            self._vocab_key = id(vocab)
        rows = ws.compare.rows()
        if rows is None:
            return
        if self._highlight_key != rows:  # the same array object while the rows stay
            self._highlight_key = rows
            self.highlight = store.get("tokens", rows[0]) != store.get("tokens", rows[1])
        for pane, view, branch, row in zip(self.panes, self.views, ws.compare.pair, rows, strict=True):
            view.branch, view.color_mode, view.text_mode = branch, color_mode, ws.view.text_mode
            pane.refresh(ShownRecord.of_row(store, row, branch), view, highlight=self.highlight,
                         extras=self._extras(color_mode, branch, row))
        self._refresh_pickers()
        iteration = int(store.columns["iteration"][rows[0]])
        self._cache.set(
            self.header,
            f"iteration {iteration + 1}: {int(self.highlight.sum())} of {len(self.highlight)} positions differ "
            "(tinted). The timeline scrubs both.",
        )
        self._refresh_diff(vocab)

    def _extras(self, color_mode: str, branch: str, row: int) -> CellExtras:
        """A derived mode's values in a pane (core.color_modes: its `values` over the pane's record,
        app.inspect.RecordCells). Every derived mode gets its array: one missing was a KeyError
        that closed the view."""
        spec = color_modes.get(color_mode)
        if not spec.derived:
            return NO_EXTRAS
        ws = self.workspace
        store, rows = ws.store, ws.rows(branch)
        at = np.flatnonzero(rows == row)
        record = int(at[0]) if len(at) else 0
        positions = None
        if store.layout.is_blocks:  # the pane shows the row's own block: its slice of the whole sequence
            offset = store.layout.block_offset(int(store.columns["block"][row]))
            positions = slice(offset, offset + store.layout.seq_len)
        cells = RecordCells(store, rows, record, ws.vocab, branch, lambda: self._commit(branch), positions)
        values = spec.cell_values(cells)[0]
        return CellExtras((spec.name, id(store), store.version, branch, row), {spec.name: values})

    def _commit(self, branch: str) -> np.ndarray:
        """Decoding order of `branch` (store.inspect.commit_records), once per store version."""
        from dpgviz.store.inspect import commit_records

        ws, store = self.workspace, self.workspace.store
        key = (id(store), store.version)
        if self._orders_key != key:  # the store changed: both panes' orders are computed again
            self._orders_key, self._orders = key, {}
        if branch not in self._orders:
            self._orders[branch] = commit_records(store, ws.rows(branch))
        return self._orders[branch]

    def _refresh_pickers(self) -> None:
        """Every branch in each pane's combo (rebuilt when the branches change), the compared ones picked."""
        ws, store = self.workspace, self.workspace.store
        key = (id(store), store.version, ws.compare.pair)
        if key == self._picker_key:
            return
        self._picker_key = key
        titles = [branch_title(store.branches[b]) for b in store.branch_order]
        for picker, branch in zip(self.pickers, ws.compare.pair, strict=True):
            dpg.configure_item(picker, items=titles)
            dpg.set_value(picker, branch_title(store.branches[branch]))

    def pick(self, side: int, branch: str) -> bool:
        """Show `branch` in pane `side` (0 left, 1 right); picking the other pane's branch swaps them."""
        ws = self.workspace
        if ws.compare.pair is None:
            return False
        pair = list(ws.compare.pair)
        if pair[1 - side] == branch:
            pair.reverse()
        else:
            pair[side] = branch
        return ws.compare.start(*pair)

    def _picker_callback(self, side: int) -> Callable[[int | str, str], None]:
        def on_pick(sender: int | str, title: str) -> None:
            store = self.workspace.store
            chosen = next((b for b in store.branch_order if branch_title(store.branches[b]) == title), None)
            if chosen is not None:
                self.pick(side, chosen)

        return on_pick

    def _refresh_diff(self, vocab: Vocabulary) -> None:
        ws, store = self.workspace, self.workspace.store
        finals = [ws.rows(b) for b in ws.compare.pair]
        if not all(len(r) for r in finals):
            return
        key = (ws.compare.pair, int(finals[0][-1]), int(finals[1][-1]))
        if key == self._diff_key:
            return
        self._diff_key = key
        a, b = (vocab.decode(store.get("tokens", int(r[-1]))) for r in finals)
        left, right, ratio = char_diff(a, b)
        dpg.set_value(self.summary, f"Final texts: {100 * ratio:.1f}% alike; differing stretches in {OPEN} {CLOSE}")
        dpg.set_value(self.left_text, left)
        dpg.set_value(self.right_text, right)

    def scroll_pane(self, delta_rows: int) -> bool:
        """Mouse wheel over a pane scrolls that pane only; True when it was over one."""
        for pane, view in zip(self.panes, self.views, strict=True):
            if self.is_shown and pane.is_hovered():
                pane.scroll_by(view, delta_rows)
                return True
        return False
