"""core.vocab: end tokens drawn as named glyphs, ids no token names as `<id>`, and ids in the model's space."""

from __future__ import annotations

import numpy as np

from dpgviz.core.vocab import EOS_GLYPH, EOT_GLYPH, MASK_GLYPH, Vocabulary, end_ids


def test_end_tokens_draw_as_named_glyphs_and_unnamed_ids_as_their_model_id() -> None:
    itos = ("a", "b", "<|eot_id|>", "<|endoftext|>", "<|startoftext|>")
    ends = end_ids(itos, [2, 3, 4])
    assert ends == (2, 3)  # the start token is special but no end
    v = Vocabulary(itos=itos, model_vocab_size=8, eos_ids=ends)
    table = v.strings()
    assert list(table) == ["a", "b", EOT_GLYPH, EOS_GLYPH, "<|startoftext|>", MASK_GLYPH, "<6>", "<7>"]
    assert v.display_widths()[2] == len(EOT_GLYPH)
    assert Vocabulary.from_dict(v.to_dict()) == v


def test_model_ids_put_the_mask_back_where_the_model_has_it() -> None:
    # A model whose mask is its id 1: dpgviz's ids are 0, 2, 3, 4 (as 0..3), then the mask (4).
    v = Vocabulary(itos=("a", "b", "c", "d"), model_mask_id=1, eos_id=3)
    assert v.eos_ids == (3,)
    assert v.model_ids(np.array([[0, 1, 2, 3, 4]])).tolist() == [[0, 2, 3, 4, 1]]
    plain = Vocabulary(itos=("a", "b"))  # the seed's char models: ids are the model's
    assert plain.model_ids(np.array([0, 1, 2])).tolist() == [0, 1, 2]
