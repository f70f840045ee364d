"""Find and Go to without a window (app.find): matches, counts, multi-character tokens, masked
positions, next/previous with wrapping, Go to's refusals, re-searching when the record changes."""

from __future__ import annotations

import numpy as np
import pytest

from dpgviz.app.find import CURRENT, MATCH, CodeTable, TextIndex, find_codes, parse_position
from dpgviz.app.workspace import Workspace
from dpgviz.bench.find import PASSAGE, text_store
from dpgviz.bench.synthetic import synthetic_vocab
from dpgviz.core.records import FLAG_MASKED, RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

CHARS = synthetic_vocab()


def one_record_store(vocab: Vocabulary, ids: np.ndarray, layout: RecordLayout | None = None) -> StepStore:
    """A store holding one record of `ids` (mask ids flagged masked)."""
    layout = layout or RecordLayout(seq_len=len(ids), n_ids=vocab.n_ids)
    store = StepStore(layout)
    branch = store.new_branch({}, label="t").id
    rec = layout.empty()
    rec.tokens[:] = ids
    rec.flags[:] = np.where(ids == vocab.mask_id, FLAG_MASKED, 0)
    rec.kind, rec.n_masked = "final", int((ids == vocab.mask_id).sum())
    store.append_record(rec, branch)
    return store


def workspace_showing(store: StepStore, vocab: Vocabulary) -> Workspace:
    ws = Workspace()
    ws.doc.show_store(store, vocab)
    return ws


def said(ws: Workspace) -> list[str]:
    return [n.text for n in ws.take_notices() if hasattr(n, "text")]


def test_finds_every_match_and_counts_them():
    text = "the cat and the hat; then the end"
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode(text)), CHARS)
    assert ws.find.search("the") == 4
    m = ws.find.matches()
    assert m.first.tolist() == [i for i in range(len(text)) if text.startswith("the", i)]
    assert (m.stop - m.first).tolist() == [3] * 4
    assert ws.find.count_text() == "1 of 4"
    assert ws.find.search("dog") == 0 and ws.find.count_text() == "no matches"
    assert ws.find.marks() is None
    ws.find.close()
    assert ws.find.count_text() == "" and ws.find.marks() is None


def test_lower_case_ignores_case_and_a_capital_matches_exactly():
    text = "The theme of THE play"
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode(text)), CHARS)
    assert ws.find.search("the") == 3
    assert ws.find.search("The") == 1 and ws.find.matches().first.tolist() == [0]
    assert ws.find.search("THE") == 1 and ws.find.matches().first.tolist() == [13]


def test_matches_do_not_overlap():
    codes = np.frombuffer("aaaaa".encode("utf-32-le"), dtype=np.uint32)
    assert find_codes(codes, np.frombuffer(b"a\0\0\0a\0\0\0", dtype=np.uint32)).tolist() == [0, 2]
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode("eeeee e")), CHARS)
    assert ws.find.search("ee") == 2


def test_a_masked_position_never_matches():
    ids = CHARS.encode("the cat, the dog, the end")
    ids[5] = CHARS.mask_id  # "c_t": the second letter of cat is masked
    ids[14] = CHARS.mask_id  # "the d_g"
    ws = workspace_showing(one_record_store(CHARS, ids), CHARS)
    assert ws.find.search("cat") == 0
    assert ws.find.search("the") == 3
    assert ws.find.search("dog") == 0 and ws.find.search("do") == 0 and ws.find.search("d") == 2
    assert ws.find.search("\u2588") == 0  # the mask's glyph is not text
    assert ws.find.search(" ") == 5  # spaces around a masked cell still match


def test_multi_character_tokens_map_matches_back_to_positions():
    itos = (" the", " cat", "s", "\n", " sat", "at", " on", "the")
    vocab = Vocabulary(itos=itos)
    # text: " the cats sat\nthe cat"  positions: 0 " the" 1 " cat" 2 "s" 3 " sat" 4 "\n" 5 "the" 6 " cat"
    ids = np.array([0, 1, 2, 4, 3, 7, 1])
    ws = workspace_showing(one_record_store(vocab, ids), vocab)
    assert ws.find.search("cat") == 2
    m = ws.find.matches()
    assert m.first.tolist() == [1, 6] and m.stop.tolist() == [2, 7]  # inside one token each
    assert ws.find.search("cats sat") == 1  # across three tokens: " cat" "s" " sat"
    assert (ws.find.matches().first.tolist(), ws.find.matches().stop.tolist()) == ([1], [4])
    assert ws.find.search("at") == 3  # " cat", " sat", " cat": a match inside longer tokens
    assert ws.find.search("sat\nthe") == 1  # a newline token is text too
    marks = ws.find.marks().between(0, 7)
    assert marks.tolist() == [0, 0, 0, CURRENT, CURRENT, CURRENT, 0]
    ids[1] = vocab.mask_id
    ws2 = workspace_showing(one_record_store(vocab, ids), vocab)
    assert ws2.find.search("cat") == 1  # the masked " cat" is one mask character, not text


def test_text_index_of_a_subword_record_lines_up_with_decode():
    vocab = Vocabulary(itos=("ab", "c", "", "de\n"))
    ids = np.array([0, 2, 1, 3, 0, vocab.mask_id, 1])
    index = TextIndex(ids, CodeTable.of(vocab))
    text = "".join(chr(c) for c in index.codes())
    assert text == vocab.decode(ids, mask="\0")
    assert index.starts.tolist() == [0, 2, 2, 3, 6, 8, 9, 10]
    first, stop = index.find("bc")  # "ab" + "" + "c": the empty token between is covered, not skipped
    assert (first.tolist(), stop.tolist()) == ([0], [3])


def test_next_and_previous_wrap_and_say_the_count():
    text = "one two one two one"
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode(text)), CHARS)
    ws.find.search("one")
    assert ws.find.current_position() == 0 and ws.find.count_text() == "1 of 3"
    assert [ws.find.step(1) for _ in range(3)] == [8, 16, 0]  # wraps to the first
    assert ws.find.count_text() == "1 of 3"
    assert ws.find.step(-1) == 16 and ws.find.count_text() == "3 of 3"  # back past the first: the last
    marks = ws.find.marks().between(0, len(text))
    assert (marks == CURRENT).sum() == 3 and marks[16:19].tolist() == [CURRENT] * 3
    assert (marks == MATCH).sum() == 6
    assert marks[14:18].tolist() == [0, 0, CURRENT, CURRENT]  # a slice: only what lies in it
    assert ws.find.marks().between(10, 18).tolist() == [MATCH, 0, 0, 0, 0, 0, CURRENT, CURRENT]  # 8..10 begins before
    ws.find.search("")
    assert ws.find.step(1) is None and "type what to look for" in said(ws)[-1]
    ws.find.search("zzz")
    assert ws.find.step(1) is None and "no 'zzz'" in said(ws)[-1]


def test_a_new_query_starts_from_where_the_last_match_or_go_to_was():
    text = "ab cd ab cd ab cd"
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode(text)), CHARS)
    ws.find.search("ab")
    ws.find.step(1)  # the second "ab", at 6
    ws.find.search("cd")
    assert ws.find.current_position() == 9  # the first "cd" after 6
    assert ws.find.goto("13") == 13
    ws.find.search("ab")
    assert ws.find.current_position() == 0  # none at or after 13: wraps to the first
    assert ws.find.start_at(5) == 6 and ws.find.count_text() == "2 of 3"


def test_go_to_selects_the_position_as_a_click_does():
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode("x" * 300)), CHARS)
    ws.take_notices()
    assert ws.find.goto(" 1_99 ") == 199
    assert ws.view.selection() == (199, 200) and ws.view.canvas_focus
    assert "position 199 selected" in said(ws)[-1]
    assert ws.find.goto("299") == 299


@pytest.mark.parametrize(
    "typed, says",
    [("", "Type a position: 0..299"), ("abc", "'abc' is not a position"), ("12.5", "not a position"),
     ("-1", "Position -1 is outside"), ("300", "Position 300 is outside the sequence shown: positions are 0..299"),
     ("99999999999999999999", "is outside")],
)
def test_go_to_refuses_what_is_not_a_position_with_a_notice(typed: str, says: str):
    ws = workspace_showing(one_record_store(CHARS, CHARS.encode("x" * 300)), CHARS)
    ws.view.select_tokens(5)
    ws.take_notices()
    assert ws.find.goto(typed) is None
    notices = ws.take_notices()
    assert notices[-1].is_error and says in notices[-1].text
    assert ws.view.selection() == (5, 6)  # unchanged


def test_go_to_with_nothing_shown_says_so():
    ws = Workspace()
    assert ws.find.goto("3") is None and "nothing is shown" in said(ws)[-1]
    assert ws.find.search("a") == 0 and ws.find.marks() is None
    with pytest.raises(ValueError, match=r"0\.\.9"):
        parse_position("10", 10)


def test_scrubbing_re_searches_the_new_record_and_costs_nothing_without_a_query():
    store = text_store(2000, 6, vocab=CHARS)
    ws = workspace_showing(store, CHARS)
    n = ws.n_records()
    for record in range(n):  # no query: scrubbing never builds or searches a text
        ws.view.select(record, n)
        assert ws.find.matches().first.size == 0 and ws.find.marks() is None
    assert ws.find.searches == 0 and ws.find._index is None
    ws.find.search("the")
    counts = {}
    for record in (0, n // 2, n - 1):
        ws.view.select(record, n)
        counts[record] = len(ws.find.matches())
        tokens = store.get("tokens", int(ws.rows()[record]))
        text = CHARS.decode(tokens, mask="\0").lower()
        assert counts[record] == text.count("the")  # the record shown, masks and all
    whole = "".join(np.resize(list(PASSAGE), 2000)).lower()  # the final record: no masks left
    assert counts[0] == 0 and 0 < counts[n // 2] < counts[n - 1] == whole.count("the")
    searched = ws.find.searches
    ws.find.matches(), ws.find.count_text(), ws.find.marks()
    assert ws.find.searches == searched  # the same record: not searched again


def test_the_composed_text_of_a_block_run_is_searched():
    vocab = CHARS
    layout = RecordLayout(seq_len=8, n_ids=vocab.n_ids, total_len=24)
    store = StepStore(layout)
    branch = store.new_branch({}, label="blocks").id
    text = "the cat the dog the end."  # 24 characters: three blocks of 8
    for block in range(3):
        ids = vocab.encode(text[8 * block : 8 * block + 8])
        for kind, tokens in (("initial", np.full(8, vocab.mask_id)), ("final", ids)):
            rec = layout.empty()
            rec.tokens[:] = tokens
            rec.flags[:] = np.where(tokens == vocab.mask_id, FLAG_MASKED, 0)
            rec.kind, rec.block, rec.offset = kind, block, 8 * block
            rec.n_masked = int((tokens == vocab.mask_id).sum())
            store.append_record(rec, branch)
    ws = workspace_showing(store, vocab)
    n = ws.n_records()
    assert ws.find.search("the") == 3  # the last record: every block composed
    assert ws.find.matches().first.tolist() == [0, 8, 16]
    assert ws.find.search("cat the") == 1  # across the first two blocks
    ws.view.select(2, n)  # block 1 started (masked), block 2 not yet: only block 0's text
    assert ws.find.search("the") == 1 and ws.find.search("cat the") == 0
    assert ws.find.goto("23") == 23  # positions are the whole sequence's
