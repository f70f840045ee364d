"""Keyboard shortcuts: one table of chords and what they do, for the key handlers and the Help menu.

A chord is a key name with its modifiers, "ctrl+r", "shift+left", "m". The app maps each
chord to an action; `chord` names what a key press was, so the same dispatch serves
real key presses and tests. Plain data, no dearpygui.
"""

from __future__ import annotations

# (chord, what it does), in the order the Help menu lists them.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("left", "previous step"),
    ("right", "next step"),
    ("home", "first step"),
    ("end", "last step, and follow a live run"),
    ("space", "play / pause"),
    ("ctrl+enter", "Start a new run"),
    ("escape", "close a dialog or the find bar, else stop the run (or clear the selection)"),
    ("ctrl+r", "Restart from the step shown"),
    ("ctrl+a", "select every token"),
    ("shift+left", "shrink / extend the selection (after a click on the canvas)"),
    ("shift+right", "extend the selection (after a click on the canvas)"),
    ("m", "mask the selection"),
    ("u", "unmask the selection (put back the prediction)"),
    ("p", "protect the selection"),
    ("shift+p", "unprotect the selection"),
    ("enter", "type a replacement for the selection"),
    ("i", "pin the token under the mouse in the inspector"),
    ("1", "place candidate 1 of the token under the mouse (2-8 likewise)"),
    ("2", ""), ("3", ""), ("4", ""), ("5", ""), ("6", ""), ("7", ""), ("8", ""),
    ("ctrl+f", "find text in the step shown (Enter / F3: next match, Shift: previous)"),
    ("f3", "next match of Find"),
    ("shift+f3", "previous match of Find"),
    ("ctrl+g", "go to a position (scroll there and select it)"),
    ("ctrl+o", "open a session"),
    ("ctrl+s", "save the session"),
)
MOUSE_HELP: tuple[tuple[str, str], ...] = (
    ("click / drag", "select tokens on the canvas"),
    ("shift+click", "extend the selection"),
    ("right-click", "pin the token in the inspector"),
    ("hover", "the token's candidates and numbers"),
    ("wheel", "scroll the canvas"),
    ("ctrl+wheel", "zoom the canvas"),
)


def chord(key: str, ctrl: bool = False, shift: bool = False) -> str:
    """The chord name of `key` pressed with these modifiers."""
    return ("ctrl+" if ctrl else "") + ("shift+" if shift else "") + key


def help_text() -> str:
    """The Help menu's list of keys and mouse actions."""
    width = max(len(c) for c, _ in SHORTCUTS + MOUSE_HELP)
    lines = [f"{c:<{width}}  {what}" for c, what in SHORTCUTS if what]  # 2-8 are described with 1
    lines.append("")
    lines += [f"{c:<{width}}  {what}" for c, what in MOUSE_HELP]
    return "\n".join(lines)


def is_one_newline_more(text: str, before: str) -> bool:
    """`text` is `before` with one newline typed into it (a Ctrl+Enter whose Ctrl came too late)."""
    if len(text) != len(before) + 1:
        return False
    return any(text[:i] + text[i + 1 :] == before for i, c in enumerate(text) if c == "\n")
