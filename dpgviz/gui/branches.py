"""The branch panel: the tree of runs and edits, what each branch is, rename, delete, compare.

Every run and every edit is a branch: a root run, or a child forked at a record of its
parent's timeline. The panel lists the tree (children indented under their parent; a
click shows that branch on the timeline), and for the branch shown: its parent and fork
record, the prompt or template it started from, what was edited (positions and text), its
settings and record counts, a name box, Delete, and Compare with another branch. It calls the workspace's operations only.

The list is rebuilt only when the tree changes (a branch added, deleted or renamed),
never per record. dearpygui only; no torch.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.gui.status import INFO_COLOR, Cached
from dpgviz.store.branch import Branch
from dpgviz.store.step_store import StepStore

TITLE_COLOR = (140, 180, 255)
SETTINGS_SHOWN = ("strategy", "steps", "temperature", "randomness", "seed", "length")


def branch_title(branch: Branch) -> str:
    return f"{branch.id}  {branch.label or ('run ' + branch.id)}"


def tree_lines(store: StepStore) -> list[tuple[str, int]]:
    """(branch id, depth) in display order: each branch followed by its descendants."""
    children: dict[str | None, list[str]] = {}
    for bid in store.branch_order:
        parent = store.branches[bid].parent
        children.setdefault(parent if parent in store.branches else None, []).append(bid)
    out: list[tuple[str, int]] = []
    stack = [(bid, 0) for bid in reversed(children.get(None, []))]
    while stack:
        bid, depth = stack.pop()
        out.append((bid, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(bid, [])))
    return out


PROMPT_SHOWN = 160  # characters of a prompt the details show; a longer one ends in "..."


def describe_prompt(settings: dict) -> str:
    """'prompt 'ROMEO:\\n'' (or template / chat) for the details view; 'none' without one."""
    text = str(settings.get("prompt", ""))
    if not text and not settings.get("template") and not settings.get("chat"):
        return "none"
    kind = "template" if settings.get("template") else "chat prompt" if settings.get("chat") else "prompt"
    shown = repr(text[:PROMPT_SHOWN]) + ("..." if len(text) > PROMPT_SHOWN else "")
    return f"{kind} {shown} ({len(text)} characters)"


def describe_edits(edits: list[dict]) -> str:
    """'mask 10:15; replace 20:25 = 'crown'' for the details view."""
    parts = []
    for e in edits:
        text = f" = {e['text']!r}" if e.get("text") is not None else ""
        parts.append(f"{e.get('op', '?')} {e.get('start', '?')}:{e.get('stop', '?')}{text}")
    return "; ".join(parts) if parts else "none"


class BranchPanel:
    """The branch tree and the shown branch's details and actions."""

    def __init__(
        self, workspace: Workspace, on_compare: Callable[[], None] = lambda: None,
        on_score: Callable[[], None] = lambda: None,
    ) -> None:
        self.workspace = workspace
        self.on_compare = on_compare  # the app shows the compare view
        self.on_score = on_score  # the app shows the Score with model dialog
        self.verify_button = self.score_button = 0
        self._cache = Cached()
        self._tree_key: tuple | None = None
        self._state: tuple | None = None  # (store, version, branch shown) last refreshed for
        self.list_group = self.details = self.name_input = self.delete_button = 0
        self.compare_combo = self.compare_button = 0
        self.items: dict[str, int | str] = {}  # branch id -> its selectable

    def build(self, parent: int | str) -> None:
        with dpg.group(parent=parent):
            dpg.add_text("Branches", color=TITLE_COLOR)
            with dpg.child_window(height=220, border=False) as self.list_group:
                pass
            dpg.add_separator()
            self.details = dpg.add_text("", wrap=0, color=INFO_COLOR)
            with dpg.group(horizontal=True):
                self.name_input = dpg.add_input_text(
                    hint="name", width=-70, on_enter=True, callback=lambda: self._rename()
                )
                dpg.add_button(label="Rename", width=62, callback=lambda: self._rename())
            self.delete_button = dpg.add_button(label="Delete branch", width=-1, callback=lambda: self._delete())
            with dpg.tooltip(self.delete_button):
                dpg.add_text("Delete the branch shown and every branch forked from it")
            with dpg.group(horizontal=True):
                self.verify_button = dpg.add_button(
                    label="Verify", width=90, callback=lambda: self.workspace.models.verify()
                )
                self.score_button = dpg.add_button(label="Score with model...", width=-1, callback=lambda: self.on_score())
            with dpg.tooltip(self.verify_button):
                dpg.add_text(
                    "Re-run this branch with the model that made it (found by its sha256) and the recorded\n"
                    "settings, seed, device, dtype and threads; compare every record bit for bit"
                )
            with dpg.tooltip(self.score_button):
                dpg.add_text("Run another model on exactly this branch's inputs: where the two disagree")
            dpg.add_separator()
            dpg.add_text("Compare with", color=TITLE_COLOR)
            self.compare_combo = dpg.add_combo([], width=-1)
            self.compare_button = dpg.add_button(label="Compare side by side", width=-1, callback=lambda: self.compare())

    # -- actions -------------------------------------------------------------------
    def _rename(self) -> None:
        ws = self.workspace
        if ws.view.branch is not None:
            ws.edits.rename_branch(ws.view.branch, str(dpg.get_value(self.name_input)))

    def _delete(self) -> None:
        ws = self.workspace
        if ws.view.branch is not None:
            ws.edits.delete_branch(ws.view.branch)

    def compare(self, other: str | None = None) -> None:
        """Compare the branch shown with `other` (default: the one picked in the combo)."""
        ws = self.workspace
        if other is None:
            picked = str(dpg.get_value(self.compare_combo))
            other = picked.split()[0] if picked else None
        if other is not None and ws.view.branch is not None and ws.compare.start(ws.view.branch, other):
            self.on_compare()

    def _select(self, branch: str) -> Callable[[], None]:
        return lambda: self.workspace.select_branch(branch)

    # -- refresh -------------------------------------------------------------------
    def refresh(self) -> None:
        ws, store = self.workspace, self.workspace.store
        state = (id(store), store.version if store is not None else 0, ws.view.branch, len(ws.models.verified),
                 tuple(ws.models.verified.get(ws.view.branch, {}).items()))
        if state == self._state:  # the frame path while scrubbing: nothing here changed
            return
        self._state = state
        key = None if store is None else (
            id(store), tuple(store.branch_order), tuple(store.branches[b].label for b in store.branch_order)
        )
        if key != self._tree_key:
            self._tree_key = key
            self._rebuild(store)
        for bid, item in self.items.items():
            self._cache.set(item, bid == ws.view.branch)
        shown = store.branches.get(ws.view.branch) if store is not None else None
        self._cache.set(self.details, self._details(store, shown) if shown is not None else "no branch yet")
        self._cache.configure(self.delete_button, enabled=shown is not None)

    def _rebuild(self, store: StepStore | None) -> None:
        dpg.delete_item(self.list_group, children_only=True)
        self.items.clear()
        self._cache = Cached()
        if store is None:
            dpg.configure_item(self.compare_combo, items=[])
            return
        for bid, depth in tree_lines(store):
            b = store.branches[bid]
            label = ("   " * depth) + ("└ " if depth else "") + branch_title(b)
            self.items[bid] = dpg.add_selectable(label=label, parent=self.list_group, callback=self._select(bid))
        dpg.configure_item(self.compare_combo, items=[branch_title(store.branches[b]) for b in store.branch_order])

    def _details(self, store: StepStore, b: Branch) -> str:
        s = b.settings or {}
        knobs = ", ".join(f"{k} {s[k]}" for k in SETTINGS_SHOWN if k in s)
        if b.parent is None:
            origin = "a root run"
        else:
            origin = f"forked from {b.parent} at record {b.fork_record + 1 if b.fork_record is not None else '?'}"
        lines = [
            branch_title(b),
            origin,
            f"edited: {describe_edits(b.edits)}",
            f"settings: {knobs or 'none recorded'}",
            f"records: {len(b.rows)} own, {store.history_length(b.id)} on its timeline",
        ]
        verified = self.workspace.models.verified.get(b.id)
        if verified is not None:  # the last Verify of this branch
            lines.append(f"verify: {verified.get('line', '?')}")
        if describe_prompt(s) != "none":  # a run that started from text: say which, under its origin
            lines.insert(2, f"started from: {describe_prompt(s)}")
        return "\n".join(lines)
