"""The tokenizer interface without any tokenizer library: char and subword vocabularies."""

from __future__ import annotations

import numpy as np
import pytest

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.vocab import MASK_GLYPH, NEWLINE_GLYPH, VocabError, Vocabulary
from dpgviz.store.edits import EditError, apply_edit, encode_text

CHARS = Vocabulary.from_text("hello world\nHELLO")
# What engine.hf makes of a WordPiece vocabulary: word starts bring their space, specials never sampled.
SUBWORD = Vocabulary(
    itos=("[PAD]", "[CLS]", " the", " cat", "s", " sat", " on", "a", "t", "h", "e", " ", ".", "\n", " c", " \n\n"),
    never_sample=(0, 1),
)


def test_char_vocabulary_round_trips_one_id_per_character() -> None:
    text = "hello\nworld" + MASK_GLYPH
    ids = CHARS.encode(text)
    assert len(ids) == len(text) and ids[-1] == CHARS.mask_id
    assert CHARS.decode(ids) == text
    assert CHARS.is_char_level and (CHARS.display_widths() == 1).all()


def test_char_vocabulary_refuses_an_unknown_character_by_position() -> None:
    with pytest.raises(VocabError, match=r"character 'z' at position 2"):
        CHARS.encode("hez")


def test_subword_encode_takes_the_longest_token() -> None:
    ids = SUBWORD.encode(" the cats sat.")
    assert [SUBWORD.itos[i] for i in ids] == [" the", " cat", "s", " sat", "."]
    assert SUBWORD.decode(ids) == " the cats sat."


def test_subword_encode_falls_back_to_shorter_tokens_and_keeps_masks() -> None:
    ids = SUBWORD.encode(" cathat" + MASK_GLYPH + " on")
    assert [SUBWORD.itos[i] if i < SUBWORD.size else MASK_GLYPH for i in ids] == [" cat", "h", "a", "t", MASK_GLYPH, " on"]


def test_subword_encode_skips_whitespace_no_token_starts_with() -> None:
    """WordPiece has no token for a bare space or newline; its own tokenizer drops them."""
    vocab = Vocabulary(itos=(" the", " cat", "s", "."))
    assert [vocab.itos[i] for i in vocab.encode(" the cats .\n ")] == [" the", " cat", "s", "."]
    assert [vocab.itos[i] if i < vocab.size else "M" for i in vocab.encode(" the " + MASK_GLYPH)] == [" the", "M"]


def test_subword_encode_never_produces_special_tokens() -> None:
    with pytest.raises(VocabError, match=r"starts with '\['"):
        SUBWORD.encode("[CLS]")


def test_subword_widths_are_display_lengths_with_newlines_visible() -> None:
    widths = SUBWORD.display_widths()
    assert widths[SUBWORD.itos.index(" the")] == 4
    assert widths[SUBWORD.itos.index("s")] == 1
    assert widths[SUBWORD.mask_id] == 1
    strings = SUBWORD.strings(newline=NEWLINE_GLYPH)
    assert strings[SUBWORD.itos.index(" \n\n")] == " " + NEWLINE_GLYPH * 2  # no drawn token breaks its row
    assert widths[SUBWORD.itos.index(" \n\n")] == 3


def test_strings_returns_a_copy_of_its_cached_table() -> None:
    table = SUBWORD.strings()
    table[2] = "changed"
    assert SUBWORD.strings()[2] == " the"


def test_replace_edit_puts_whole_tokens_at_positions() -> None:
    tokens = np.full(6, SUBWORD.mask_id)
    ids = encode_text(" the cats", SUBWORD)
    new, _, changed = apply_edit(tokens, np.zeros(6, bool), "replace", 1, 5, mask_id=SUBWORD.mask_id, text_ids=ids)
    assert SUBWORD.decode(new[1:4]) == " the cats"
    assert new[4] == SUBWORD.mask_id and changed[1:4].all()


def test_encode_text_names_every_character_no_token_holds() -> None:
    with pytest.raises(EditError, match=r"'x', 'z'"):
        encode_text(" the x cat z", SUBWORD)


def test_model_info_without_never_sample_reads_as_none() -> None:
    data = ModelInfo("m", None, 8, 1, tuple("ab"), 3).to_dict()
    del data["never_sample"], data["dtype"], data["tokenizer"]  # a header written before subword models
    info = ModelInfo.from_dict(data)
    assert (info.never_sample, info.dtype, info.tokenizer) == ((), "float32", "char")
    assert info.vocab() == Vocabulary(itos=("a", "b"), model_vocab_size=3)
