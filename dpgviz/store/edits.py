"""Edit operations on one record's tokens: what the GUI's edit buttons and `main.py branch` share.

An edit works on copies of (tokens, protected) and returns the new pair plus `changed`,
the positions whose token it altered (the caller ORs these into the FLAG_EDITED mask it
passes to `StepStore.fork`). Ranges are token positions [start, stop), end exclusive.

    mask       sets the mask id on [start, stop). Protected positions are SKIPPED (the
               user fixed them; unprotect first), and a range that is all protected is an
               EditError, so a click never silently does nothing.
    unmask     puts back, at the masked positions of the range, the token the step's
               prediction sampled there (`predicted`, see `predicted_tokens`).
    replace    `text_ids` (L token ids, L <= stop - start: whole tokens, one per position, as
               `encode_text` splits the typed text) go to start..start+L and the rest of
               the range is masked: the same length replaces the selection, shorter text
               masks the rest; longer text is an EditError. A range holding protected
               positions is refused (replacing would silently drop the protection).
    protect    marks the VISIBLE positions of the range protected; masked ones are skipped
               (the sampler never changes a protected position, so a protected mask would
               stay masked forever) and a range with no visible position is an EditError.
    unprotect  clears protection on the range.

Every user mistake raises EditError (a ValueError) with a one-line message.

numpy and the standard library only: no torch, no dearpygui.
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.records import KINDS
from dpgviz.core.vocab import MASK_GLYPH, VocabError, Vocabulary
from dpgviz.store.step_store import StepStore

OPS = ("mask", "unmask", "replace", "protect", "unprotect")


class EditError(ValueError):
    """An edit cannot be made; the message says why in one line."""


def _check_range(start: int, stop: int, n: int) -> None:
    if not 0 <= start < stop <= n:
        raise EditError(f"range {start}:{stop} is not inside 0:{n} (start < stop, end exclusive)")


def apply_edit(
    tokens: np.ndarray,
    protected: np.ndarray,
    op: str,
    start: int,
    stop: int,
    *,
    mask_id: int,
    text_ids: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one edit to copies of `tokens` and `protected`; returns (tokens, protected, changed).

    See the module docstring for each op's rules. The inputs are never modified.
    """
    tokens = np.array(tokens, copy=True)
    protected = np.array(protected, dtype=bool, copy=True)
    before = tokens.copy()
    n = len(tokens)
    start, stop = int(start), int(stop)
    _check_range(start, stop, n)
    span = slice(start, stop)
    is_masked = tokens == mask_id
    if op == "mask":
        if protected[span].all():
            raise EditError(f"every position in {start}:{stop} is protected; unprotect them first")
        sel = ~protected[span]
        tokens[span][sel] = mask_id
    elif op == "unmask":
        if predicted is None:
            raise EditError("this record has no prediction to unmask from")
        predicted = np.asarray(predicted)
        if predicted.shape != tokens.shape:
            raise EditError(f"prediction has {predicted.shape[0]} positions, the record {n}")
        fill = is_masked[span] & (predicted[span] != mask_id)
        tokens[span][fill] = predicted[span][fill]
    elif op == "replace":
        if text_ids is None:
            raise EditError("replace needs text")
        text_ids = np.asarray(text_ids)
        if len(text_ids) > stop - start:
            raise EditError(f"text of {len(text_ids)} tokens does not fit the {stop - start} positions {start}:{stop}")
        if protected[span].any():
            first = start + int(np.flatnonzero(protected[span])[0])
            raise EditError(f"position {first} in {start}:{stop} is protected; unprotect it first")
        tokens[start : start + len(text_ids)] = text_ids
        tokens[start + len(text_ids) : stop] = mask_id
    elif op == "protect":
        visible = ~is_masked[span]
        if not visible.any():
            raise EditError(f"every position in {start}:{stop} is masked; only visible tokens can be protected")
        protected[span] |= visible
    elif op == "unprotect":
        protected[span] = False
    else:
        raise EditError(f"unknown edit {op!r}; choose one of {', '.join(OPS)}")
    return tokens, protected, tokens != before


def parse_range(text: str, seq_len: int) -> tuple[int, int]:
    """'A:B' -> (A, B), token positions, end exclusive; 'A:' runs to the end, ':B' from 0."""
    a, sep, b = str(text).partition(":")
    if not sep:
        raise EditError(f"range {text!r} is not START:STOP (end exclusive)")
    try:
        start = int(a) if a.strip() else 0
        stop = int(b) if b.strip() else seq_len
    except ValueError:
        raise EditError(f"range {text!r} is not START:STOP with integer positions") from None
    _check_range(start, stop, seq_len)
    return start, stop


def parse_replace(text: str) -> tuple[int, str]:
    """'POS:TEXT' -> (POS, TEXT); TEXT may itself hold colons and must not be empty."""
    pos, sep, body = str(text).partition(":")
    try:
        start = int(pos)
    except ValueError:
        raise EditError(f"replacement {text!r} is not POS:TEXT with an integer position") from None
    if not sep or not body:
        raise EditError(f"replacement {text!r} is not POS:TEXT with some text")
    if start < 0:
        raise EditError(f"replacement position {start} is negative")
    return start, body


def encode_text(text: str, vocab: Vocabulary) -> np.ndarray:
    """Token ids of `text` (MASK_GLYPH = the mask) by `Vocabulary.encode`: one per character for a
    char-level model, whole subword tokens (greedy longest match) otherwise. EditError names
    EVERY character no token holds, or where the text cannot be split into tokens."""
    bad = vocab.unknown_chars(text, MASK_GLYPH)
    if bad:
        raise EditError(f"characters not in the model's vocabulary: {', '.join(repr(ch) for ch in bad)}")
    try:
        return vocab.encode(text)
    except VocabError as exc:
        raise EditError(str(exc)) from None


_PREDICTED_KINDS = (KINDS.index("prediction"), KINDS.index("final"))


def predicted_tokens(store: StepStore, branch: str, record: int) -> np.ndarray | None:
    """Tokens the prediction behind history record `record` of `branch` sampled (a copy), or None.

    The nearest 'prediction' or 'final' record at or before `record` in the branch's
    history: its own tokens for those kinds, the prediction just before for a 'remask'.
    For an 'initial' or 'edit' record that is the last prediction before the fork (so
    unmasking an edit restores what the model had sampled); None when the history holds
    no prediction before it (a fresh run's 'initial').
    """
    hist = store.history(branch)
    if not -len(hist) <= record < len(hist):
        raise EditError(f"branch {branch!r} has records 0..{len(hist) - 1}, not {record}")
    upto = hist[: record % len(hist) + 1]
    kinds = store.column("kind")[upto]
    hits = np.flatnonzero(np.isin(kinds, _PREDICTED_KINDS))
    if hits.size == 0:
        return None
    return store.get("tokens", int(upto[hits[-1]])).copy()
