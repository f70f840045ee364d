"""Find text in the record shown, and go to a position: the window-free half of Ctrl+F / Ctrl+G.

    ws.find.search("the")   matches of the text shown at the current record; the current
                            match is the first at or after where the last one was
    ws.find.marks()         where the matches are, for the canvas (Marks.between: MATCH or
                            CURRENT for the rows drawn only); the record shown is searched
                            again when it changes, so scrubbing re-searches
    ws.find.step(+1 / -1)   the next / previous match (wrapping); its position, to scroll to
    ws.find.goto("1234")    select position 1234 as a click does; a notice, never a raise

How a search runs at 65,536 tokens, with no per-token Python loop:

    CodeTable (once per vocabulary)   every id's display string as UTF-32 code points, flat,
                                      with each id's offset and length (and a case-folded copy)
    TextIndex (once per record)       the record's text as one code array: a gather of the
                                      table by token id (np.repeat of the offsets), and
                                      `starts`, each position's first character (np.cumsum of
                                      the lengths). Masked positions are the code 0, which no
                                      typed query holds, so no match crosses a masked position
    find_codes                        candidates where the query's first character is, narrowed
                                      by each later character in turn (vectorised over the
                                      candidates); character offsets map back to positions
                                      with np.searchsorted on `starts`

Tokens may be several characters (Hugging Face vocabularies: " the", "##ing" shown as
"ing"); the text searched is the display strings joined, as the canvas and `decode` show
it. A query with an upper-case letter matches case exactly; an all-lower-case one ignores
case ("smart case", as in many editors). Matches do not overlap.

numpy and the standard library (plus dpgviz.app/core); no dearpygui, no torch.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.inspect import Inspection
from dpgviz.app.notices import Notices
from dpgviz.core.vocab import Vocabulary

log = logging.getLogger(__name__)

MATCH, CURRENT = 1, 2  # values of marks(): a position inside a match, inside the current one
MAX_QUERY = 1000  # characters; a longer query (a pasted page) is cut, and said
MASK_CODE = 0  # the character a masked position reads as: typed text never holds it


@dataclass(frozen=True)
class CodeTable:
    """Each id's display string as code points: `flat[offsets[i]:offsets[i] + lengths[i]]`."""

    flat: np.ndarray  # (C,) uint32, every id's characters one after another
    flat_folded: np.ndarray  # (C,) the same, lower-cased where that keeps the length
    offsets: np.ndarray  # (n_ids,) int64
    lengths: np.ndarray  # (n_ids,) int64; the mask id is one MASK_CODE
    is_one_char: bool  # every id is one character (char models): a record's text is one gather

    @classmethod
    def of(cls, vocab: Vocabulary) -> CodeTable:
        """The table of `vocab` (a loop over the vocabulary, once per vocabulary)."""
        strings = [str(s) for s in vocab.strings(mask=chr(MASK_CODE))]
        folded = [_fold(s) for s in strings]
        lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
        offsets = np.zeros(len(strings), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return cls(_codes("".join(strings)), _codes("".join(folded)), offsets, lengths, bool((lengths == 1).all()))


def _codes(text: str) -> np.ndarray:
    """Code points of `text` as a uint32 array (one element per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class TextIndex:
    """The text of one record as code points, and where each position's characters start.

    The code arrays are gathered on first use, exact or case-folded, whichever a query needs.
    """

    def __init__(self, tokens: np.ndarray, table: CodeTable) -> None:
        tokens = np.asarray(tokens)
        if tokens.dtype.kind not in "iu":
            tokens = tokens.astype(np.int64)
        tokens = np.minimum(tokens, len(table.lengths) - 1)  # an id past the table: its last (reserved) entry
        self.table = table
        if table.is_one_char:  # one character per position: the ids index the table directly
            self.starts = np.arange(len(tokens) + 1, dtype=np.int64)
            self._src = tokens
        else:  # each position's characters: its id's offset, counted on from where it starts
            lengths = table.lengths[tokens]  # (n,)
            self.starts = np.zeros(len(tokens) + 1, dtype=np.int64)  # (n + 1,)
            np.cumsum(lengths, out=self.starts[1:])
            self._src = np.arange(self.starts[-1], dtype=np.int64) + np.repeat(
                table.offsets[tokens] - self.starts[:-1], lengths
            )  # (n_chars,)
        self._codes: dict[bool, np.ndarray] = {}

    @property
    def n_positions(self) -> int:
        return len(self.starts) - 1

    def codes(self, folded: bool = False) -> np.ndarray:
        """(n_chars,) uint32 code points of the text (lower-cased where `folded`)."""
        if folded not in self._codes:
            self._codes[folded] = (self.table.flat_folded if folded else self.table.flat)[self._src]
        return self._codes[folded]

    def find(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(first, stop) positions of each match of `query`, in order: match k covers
        positions [first[k], stop[k]). Smart case (see the module docstring)."""
        is_exact = query != query.lower()
        chars = find_codes(self.codes(folded=not is_exact), _codes(query if is_exact else _fold(query)))
        if self.table.is_one_char:
            return chars, chars + len(query)
        first = np.searchsorted(self.starts, chars, side="right") - 1
        stop = np.searchsorted(self.starts, chars + len(query) - 1, side="right")
        return first.astype(np.int64), stop.astype(np.int64)


def _fold(text: str) -> str:
    """`text` lower-cased, keeping its length (a character whose lower case is longer, "İ", stays):
    offsets into the folded text are offsets into the text."""
    folded = text.lower()
    return folded if len(folded) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def find_codes(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Offsets in `codes` where `query` starts, left to right and not overlapping (int64)."""
    m, n = len(query), len(codes)
    if m == 0 or m > n:
        return np.zeros(0, dtype=np.int64)
    cand = np.flatnonzero(codes[: n - m + 1] == query[0])  # (K,) then fewer with each character
    for k in range(1, m):  # characters of the query, not tokens
        cand = cand[codes[cand + k] == query[k]]
    if m > 1 and len(cand) > 1 and (np.diff(cand) < m).any():
        cand = _non_overlapping(cand, m)
    return cand.astype(np.int64)


def _non_overlapping(cand: np.ndarray, m: int) -> np.ndarray:
    """Keep a match only where the last kept one has ended (a query that overlaps itself, "aa")."""
    kept, end = [], -1
    for c in cand.tolist():  # only for self-overlapping queries; loops over matches, not tokens
        if c >= end:
            kept.append(c)
            end = c + m
    return np.asarray(kept, dtype=np.int64)


def parse_position(text: str, n_positions: int) -> int:
    """The position typed in Go to (digits, "_" or "," allowed); ValueError says why not."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    if not cleaned:
        raise ValueError(f"Type a position: 0..{n_positions - 1}.")
    try:
        pos = int(cleaned)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a position: type a whole number, 0..{n_positions - 1}.") from None
    if not 0 <= pos < n_positions:
        raise ValueError(f"Position {pos} is outside the sequence shown: positions are 0..{n_positions - 1}.")
    return pos


@dataclass(frozen=True)
class Marks:
    """Where the matches are, for the canvas: `between(a, b)` marks positions a..b-1 (only the
    rows drawn are ever marked); `key` changes whenever the matches or the current one do."""

    key: tuple
    first: np.ndarray  # (M,) int64, increasing: each match's first position
    stop: np.ndarray  # (M,) int64, non-decreasing (matches do not overlap): one past its last
    current: int | None  # index of the current match

    def between(self, start: int, stop: int) -> np.ndarray:
        """(stop - start,) uint8: 0, MATCH inside a match, CURRENT inside the current one."""
        n = max(0, stop - start)
        lo = int(np.searchsorted(self.stop, start, side="right"))  # the first match ending after start
        hi = int(np.searchsorted(self.first, stop, side="left"))  # past the last one starting before stop
        a = np.clip(self.first[lo:hi] - start, 0, n)
        b = np.clip(self.stop[lo:hi] - start, 0, n)
        # +1 where a match starts, -1 past its end: the running sum is > 0 inside a match
        edges = np.bincount(a, minlength=n + 1)[: n + 1] - np.bincount(b, minlength=n + 1)[: n + 1]
        marks = (np.cumsum(edges[:n]) > 0).astype(np.uint8) * np.uint8(MATCH)
        if self.current is not None and lo <= self.current < hi:
            k = self.current - lo
            marks[a[k] : b[k]] = CURRENT
        return marks


@dataclass
class Matches:
    """The matches of one query in one record's text."""

    key: tuple  # the record searched (see Find._record_key) and the query
    first: np.ndarray  # (M,) int64: first position of each match
    stop: np.ndarray  # (M,) int64: one past its last position
    n_positions: int

    def __len__(self) -> int:
        return len(self.first)

    def same_places(self, other: Matches) -> bool:
        """The same matches at the same positions of a sequence as long (perhaps of another record)."""
        return (self.n_positions == other.n_positions and np.array_equal(self.first, other.first)
                and np.array_equal(self.stop, other.stop))


NO_MATCHES = Matches((), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)


class Find:
    """The find bar's and Go to's state (see the module docstring)."""

    def __init__(self, doc: Document, inspect: Inspection, notices: Notices) -> None:
        self.doc, self.inspect, self.notices = doc, inspect, notices
        self.query = ""  # "" : no search (nothing marked, nothing computed while scrubbing)
        self.current: int | None = None  # index into the matches of the current one
        self.searches = 0  # times a text was searched (tests: scrubbing without a query costs none)
        self._anchor = 0  # position the current match starts at: a new search starts from here
        self._table: tuple[int, CodeTable] | None = None  # (id(vocab), table)
        self._index: tuple[tuple, TextIndex] | None = None  # the record's text, kept for the next query
        self._matches = NO_MATCHES
        self._marks: Marks | None = None
        self._version = 0  # counts changes of the matches or the current one (Marks.key)

    # -- searching -------------------------------------------------------------------------
    def search(self, query: str) -> int:
        """Search the record shown for `query` ("" ends the search); the number of matches.

        The current match becomes the first at or after the last current one.
        """
        if len(query) > MAX_QUERY:
            self.notices.say(f"Find searches for at most {MAX_QUERY} characters; the rest was left out.", is_error=True)
            query = query[:MAX_QUERY]
        query = query.replace(chr(MASK_CODE), "")
        if query != self.query:
            self.query = query
            self._matches = NO_MATCHES
            self.current = None
        return len(self.matches())

    def close(self) -> None:
        """End the search: nothing marked (the query box keeps its text)."""
        self.search("")

    def matches(self) -> Matches:
        """The matches in the record shown now; searched again only when that record changed."""
        if not self.query:
            return NO_MATCHES
        key = (*self._record_key(), self.query)
        if self._matches.key == key:
            return self._matches
        index, before = self._text_index(), self._matches
        if index is None:
            self._matches = dataclasses.replace(NO_MATCHES, key=key)
        else:
            first, stop = index.find(self.query)
            self._matches = Matches(key, first, stop, index.n_positions)
            self.searches += 1
        if not self._matches.same_places(before):  # a step that changed no match keeps its marks (and the canvas's tint)
            self._set_current(self._first_from(self._anchor))
        return self._matches

    def _record_key(self) -> tuple:
        """What the text shown depends on: the store and its records, the branch and record, the vocabulary."""
        store = self.doc.store
        if store is None:
            return (None,)
        n = self.doc.n_records()
        record = min(max(0, self.doc.view.record), n - 1) if n else 0
        return (id(store), store.version, self.doc.view.branch, record, id(self.doc.vocab))

    def _text_index(self) -> TextIndex | None:
        """The record shown as a TextIndex (kept per record: a new query reuses it)."""
        key, vocab = self._record_key(), self.doc.vocab
        if self._index is not None and self._index[0] == key:
            return self._index[1]
        shown = self.inspect.shown()
        if shown is None or vocab is None:
            return None
        if self._table is None or self._table[0] != id(vocab):
            self._table = (id(vocab), CodeTable.of(vocab))
        tokens = shown.get("tokens")
        index = TextIndex(tokens, self._table[1])
        self._index = (key, index)
        return index

    # -- moving between matches ------------------------------------------------------------
    def _first_from(self, pos: int) -> int | None:
        """Index of the first match starting at or after `pos` (wrapping to the first); None without matches."""
        first = self._matches.first
        if not len(first):
            return None
        k = int(np.searchsorted(first, pos, side="left"))
        return k if k < len(first) else 0

    def _set_current(self, k: int | None) -> None:
        self.current = k
        if k is not None:
            self._anchor = int(self._matches.first[k])
        self._version += 1

    def step(self, delta: int = 1) -> int | None:
        """Make the next (`delta` 1) or previous (-1) match current, wrapping; its first position.

        None, and a notice, when there is nothing to go to.
        """
        matches = self.matches()
        if not self.query:
            self.notices.say("Find: type what to look for first (Ctrl+F).")
            return None
        if not len(matches):
            self.notices.say(f"Find: no {self.query!r} in the text shown.", is_error=True)
            return None
        k = self.current
        self._set_current((0 if delta > 0 else len(matches) - 1) if k is None else (k + delta) % len(matches))
        pos = self.current_position()
        self.notices.say(f"Find {self.query!r}: match {self.current + 1} of {len(matches)}, position {pos}.")
        return pos

    def start_at(self, pos: int) -> int | None:
        """Make the first match at or after position `pos` current (wrapping), e.g. a click on
        the overview's marks; its first position, or None without matches."""
        self._anchor = max(0, int(pos))
        if not len(self.matches()):
            return None
        self._set_current(self._first_from(self._anchor))
        return self.current_position()

    def current_position(self) -> int | None:
        """First position of the current match, or None."""
        matches = self.matches()
        if self.current is None or not len(matches):
            return None
        return int(matches.first[self.current])

    def count_text(self) -> str:
        """What the find bar says: "3 of 41", "no matches", or "" with no query."""
        matches = self.matches()
        if not self.query:
            return ""
        if not len(matches):
            return "no matches"
        return f"{(self.current or 0) + 1} of {len(matches)}"

    def marks(self) -> Marks | None:
        """Positions to tint on the canvas (None with no query or no match); the same object while unchanged."""
        matches = self.matches()
        if not len(matches):
            return None
        key = (self._version,)  # bumped whenever the matches' places or the current one change
        if self._marks is None or self._marks.key != key:
            self._marks = Marks(key, matches.first, matches.stop, self.current)
        return self._marks

    # -- go to -----------------------------------------------------------------------------
    def goto(self, text: str) -> int | None:
        """Select the position typed (as a click on it does); None and a notice when it is not one."""
        n = self.doc.total_len
        if n == 0 or self.doc.n_records() == 0:
            self.notices.say("Go to: nothing is shown yet (generate a run or open a session).", is_error=True)
            return None
        try:
            pos = parse_position(text, n)
        except ValueError as exc:
            self.notices.say(f"Go to: {exc}", is_error=True)
            return None
        view = self.doc.view
        view.select_tokens(pos)
        view.canvas_focus = True  # as a click on the canvas: Shift+arrows extend from here
        self._anchor = pos  # the next search starts here
        self.notices.say(f"Go to: position {pos} selected.")
        return pos
