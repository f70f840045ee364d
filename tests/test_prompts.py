"""Prompts, infilling templates and chat wrapping (core.prompt), the sampler and store around them,
and the `generate --prompt / --prompt-file / --init / --chat` commands on the default model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vocab_data import shakespeare_vocab

from dpgviz.core.prompt import (
    PromptError,
    context_note,
    continued,
    encode_prompt,
    fit_to_model,
    fixed_ranges,
    layout_for,
    padding_after_eos,
    prompt_json,
)
from dpgviz.core.records import FLAG_MASKED, FLAG_PROMPT, FLAG_PROTECTED, RecordLayout
from dpgviz.core.schedule import target_masks
from dpgviz.core.settings import MAX_LENGTH, REFERENCE_FIELDS, GenerationSettings
from dpgviz.core.vocab import MASK_GLYPH, Vocabulary

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "To be, or \u2588\u2588\u2588 \u2588\u2588 \u2588\u2588: that is the question"
SUBWORD = Vocabulary(itos=(" the", " cat", " sat", " on", " mat", ".", "s", " ", "a", "t"))


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return shakespeare_vocab()


# -- encoding (numpy only) --------------------------------------------------------------------
def test_a_prompt_is_its_tokens_then_length_masks(vocab: Vocabulary) -> None:
    enc = encode_prompt(GenerationSettings(prompt="ROMEO:\n", length=10), vocab)
    assert enc.n == 17 and enc.prefix_len == 7 and enc.n_generated == 10
    assert vocab.decode(enc.tokens) == "ROMEO:\n" + MASK_GLYPH * 10
    assert enc.fixed.tolist() == [True] * 7 + [False] * 10


def test_no_prompt_encodes_to_none(vocab: Vocabulary) -> None:
    assert encode_prompt(GenerationSettings(), vocab) is None


def test_a_template_fixes_everything_but_its_blocks(vocab: Vocabulary) -> None:
    enc = encode_prompt(GenerationSettings(prompt=TEMPLATE, template=True), vocab)
    assert enc.n == len(TEMPLATE) and enc.n_generated == TEMPLATE.count(MASK_GLYPH) == 7
    assert vocab.decode(enc.tokens) == TEMPLATE
    assert fixed_ranges(enc.fixed) == [[0, 10], [13, 14], [16, 17], [19, len(TEMPLATE)]]


def test_a_subword_template_makes_a_run_of_blocks_that_many_tokens() -> None:
    enc = encode_prompt(GenerationSettings(prompt=" the cat\u2588\u2588\u2588 on the mat.", template=True), SUBWORD)
    strings = SUBWORD.strings()
    assert [strings[i] for i in enc.tokens] == [" the", " cat", MASK_GLYPH, MASK_GLYPH, MASK_GLYPH, " on", " the", " mat", "."]
    assert enc.n_generated == 3


def test_a_chat_wrap_surrounds_the_prompt(vocab: Vocabulary) -> None:
    before, after = tuple(vocab.encode("USER: ")), tuple(vocab.encode("\nBOT:"))
    enc = encode_prompt(GenerationSettings(prompt="Hi", chat=True, length=4), vocab, (before, after))
    assert vocab.decode(enc.tokens) == "USER: Hi\nBOT:" + MASK_GLYPH * 4
    assert enc.prefix_len == 13


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (GenerationSettings(prompt="It costs 5\u20ac", length=8), "'\u20ac' (U+20AC)"),
        (GenerationSettings(prompt="", template=True), "the infilling template is empty"),
        (GenerationSettings(prompt="no holes here", template=True), "has no \u2588"),
        (GenerationSettings(prompt="a \u2588 b", length=8), "pass it as a template"),
        (GenerationSettings(prompt="Hi", length=MAX_LENGTH), "beyond the 65,536"),
        (GenerationSettings(prompt="Hi", chat=True, length=8), "has no chat template"),
        (GenerationSettings(prompt=TEMPLATE, template=True, block_length=8), "one block"),
    ],
)
def test_bad_prompts_are_refused_in_one_line(vocab: Vocabulary, settings: GenerationSettings, said: str) -> None:
    with pytest.raises(PromptError) as info:
        encode_prompt(settings, vocab)
    assert said in str(info.value) and "\n" not in str(info.value)


def test_every_missing_character_is_named(vocab: Vocabulary) -> None:
    with pytest.raises(PromptError, match=r"characters the model's vocabulary lacks: '5' \(U\+0035\), '\u20ac'"):
        encode_prompt(GenerationSettings(prompt="5\u20ac and 5\u20ac again", length=4), vocab)


def test_a_run_without_prompt_records_the_settings_it_always_did() -> None:
    assert set(GenerationSettings().to_dict()) == {f.name for f in dataclasses.fields(GenerationSettings)} - {
        "prompt", "template", "chat", "cache", "cache_refresh",  # recorded only when set (issues 22, 23)
        "prompt_ids", *REFERENCE_FIELDS,  # and a reference sampler's (issue 31)
    }
    assert GenerationSettings(prompt="x").to_dict()["prompt"] == "x"
    assert prompt_json({"steps": 3}) is None


def test_fit_caps_a_default_length_after_the_prompt_and_blocks_a_long_one(vocab: Vocabulary) -> None:
    capped, enc = fit_to_model(GenerationSettings(prompt="ROMEO:\n"), vocab, None, 128, cap_length=True)
    assert capped.length == 121 and enc.n == 128 and capped.block_length == 0
    blocked, _ = fit_to_model(GenerationSettings(prompt="ROMEO:\n", length=125), vocab, None, 128, auto_blocks=True)
    assert blocked.block_length == 128  # min(256, block size)
    with pytest.raises(PromptError, match="more than the model's block size 128"):
        fit_to_model(GenerationSettings(prompt="ROMEO:\n", length=125), vocab, None, 128)


def test_the_layout_of_a_block_run_after_a_prompt_carries_the_prompt(vocab: Vocabulary) -> None:
    settings = GenerationSettings(prompt="ROMEO:\n", length=50, block_length=16)
    layout = layout_for(settings, vocab.n_ids, encode_prompt(settings, vocab))
    assert (layout.seq_len, layout.total_len, layout.prefix_len, layout.n_blocks) == (16, 57, 7, 4)
    assert [layout.block_offset(b) for b in range(4)] == [7, 23, 39, 55] and layout.span(55) == 2
    assert layout.block_of(3) == (-1, 3) and layout.block_of(24) == (1, 1)
    assert RecordLayout.from_dict(layout.to_dict()) == layout == RecordLayout(**layout.to_dict())
    assert "prefix" not in RecordLayout(seq_len=16, total_len=40).to_dict()  # other layouts read as before


def test_a_long_prompt_before_blocks_is_said_to_keep_its_last_part(vocab: Vocabulary) -> None:
    settings = GenerationSettings(prompt="a" * 200, length=64, block_length=32)
    note = context_note(settings, encode_prompt(settings, vocab), 128)
    assert note is not None and "last 96" in note
    short = GenerationSettings(prompt="a" * 20, length=64, block_length=32)
    assert context_note(short, encode_prompt(short, vocab), 128) is None


def test_a_restart_keeps_the_branchs_prompt_not_the_box() -> None:
    panel = GenerationSettings(prompt="typed since", length=300, steps=9)
    kept = continued(panel, {"prompt": "ROMEO:\n", "length": 64, "steps": 4})
    assert (kept.prompt, kept.length, kept.steps) == ("ROMEO:\n", 64, 9)
    plain = continued(panel, {"length": 300})
    assert not plain.has_prompt and plain.length == 300


def test_padding_starts_at_the_first_generated_end_of_text() -> None:
    tokens = np.array([9, 1, 2, 9, 3, 9, 4])
    flags = np.array([FLAG_PROMPT | FLAG_PROTECTED, 0, 0, 0, 0, 0, FLAG_MASKED])
    assert padding_after_eos(tokens, flags, 9).tolist() == [False, False, False, True, True, True, True]
    assert padding_after_eos(tokens, flags, None) is None


# -- the sampler on a tiny model ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from model_data import tiny_checkpoint

    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.sampler import Sampler

    loaded = load_model(tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "m", block_size=64), device="cpu")
    return Sampler(loaded.adapter, loaded.vocab, "cpu")


def test_prompt_positions_never_change_and_are_flagged_prompt(tiny) -> None:
    settings = GenerationSettings(prompt="ROMEO:\n", length=40, steps=5, seed=3)
    prompt_ids = tiny.vocab.encode("ROMEO:\n")
    records = list(tiny.run(settings))
    assert len(records) == 2 * 5 + 1
    for rec in records:
        assert (rec.tokens[:7] == prompt_ids).all()
        assert ((rec.flags[:7] & (FLAG_PROMPT | FLAG_PROTECTED)) == FLAG_PROMPT | FLAG_PROTECTED).all()
        assert not (rec.flags[7:] & FLAG_PROMPT).any()
    assert records[-1].n_masked == 0 and records[0].n_masked == 40


def test_the_schedule_counts_only_the_generated_positions(tiny) -> None:
    settings = GenerationSettings(prompt="ROMEO:\n", length=40, steps=5, strategy="llada")
    remasks = [r for r in tiny.run(settings) if r.kind == "remask"]
    want = [target_masks(40, it, 5, settings.start_ratio, settings.end_ratio) for it in range(4)]
    assert [r.target_masks for r in remasks] == want == [r.n_masked for r in remasks]


def test_a_template_run_fills_only_its_holes(tiny) -> None:
    records = list(tiny.run(GenerationSettings(prompt=TEMPLATE, template=True, length=7, steps=3, seed=1)))
    final = tiny.vocab.decode(records[-1].tokens)
    assert len(final) == len(TEMPLATE) and MASK_GLYPH not in final
    assert all(a == b for a, b in zip(final, TEMPLATE, strict=True) if b != MASK_GLYPH)


def test_a_restart_from_a_prompt_run_keeps_it_fixed(tiny) -> None:
    from dpgviz.engine.sampler import StartState

    settings = GenerationSettings(prompt="ROMEO:\n", length=40, steps=5, seed=3)
    mid = list(tiny.run(settings))[4]  # a remask record
    start = StartState(mid.tokens.astype(np.int64), mid.iteration + 1, (mid.flags & FLAG_PROTECTED).astype(bool))
    again = list(tiny.run(dataclasses.replace(settings, seed=9), start))
    assert all((r.flags[:7] & FLAG_PROMPT).all() and (r.tokens[:7] == mid.tokens[:7]).all() for r in again)
    assert again[-1].n_masked == 0


def test_blocks_after_a_prompt_cover_the_generated_part_and_compose_whole(tiny) -> None:
    from dpgviz.store.blocks import Composer
    from dpgviz.store.step_store import StepStore

    prompt = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 2  # 122 > the 64-token window
    settings = GenerationSettings(prompt=prompt, length=40, block_length=16, steps=3, seed=2)
    layout = tiny.layout(settings)
    assert (layout.prefix_len, layout.seq_len, layout.n_blocks) == (len(prompt), 16, 3)
    store = StepStore(layout, capacity=64, mask_id=tiny.vocab.mask_id)
    branch = store.new_branch(settings.to_dict()).id
    records = list(tiny.run(settings))
    for rec in records:
        store.append_record(rec, branch)
    assert sorted({(r.block, r.offset) for r in records}) == [(0, 122), (1, 138), (2, 154)]
    comp = Composer(store, store.rows(branch), tiny.vocab.mask_id)
    texts = [tiny.vocab.decode(comp.field("tokens", r)) for r in range(len(records))]
    assert all(t.startswith(prompt) and len(t) == len(prompt) + 40 for t in texts)
    assert MASK_GLYPH not in texts[-1] and texts[0].endswith(MASK_GLYPH * 40)
    assert (comp.field("flags", 0)[: len(prompt)] == FLAG_PROMPT | FLAG_PROTECTED).all()


def test_a_session_keeps_the_prefix_and_the_end_of_text(tmp_path: Path, tiny) -> None:
    from dpgviz.store.session_open import open_session
    from dpgviz.store.session_save import save_session
    from dpgviz.store.step_store import StepStore

    settings = GenerationSettings(prompt="ROMEO:\n", length=20, block_length=8, steps=2)
    store = StepStore(tiny.layout(settings), capacity=32, mask_id=tiny.vocab.mask_id)
    branch = store.new_branch(settings.to_dict()).id
    for rec in tiny.run(settings):
        store.append_record(rec, branch)
    vocab = dataclasses.replace(tiny.vocab, eos_id=3)
    save_session(tmp_path / "s.dpgviz", store, vocab, settings=settings.to_dict())
    with open_session(tmp_path / "s.dpgviz") as session:
        assert session.store.layout == store.layout and session.store.layout.prefix_len == 7
        assert session.vocab.eos_id == 3 and session.store.branches[branch].settings["prompt"] == "ROMEO:\n"


def test_an_edit_of_a_prompt_run_keeps_the_prompt_cells(tiny) -> None:
    from dpgviz.store.step_store import StepStore

    settings = GenerationSettings(prompt="ROMEO:\n", length=20, steps=3)
    store = StepStore(tiny.layout(settings), capacity=32, mask_id=tiny.vocab.mask_id)
    root = store.new_branch(settings.to_dict()).id
    for rec in tiny.run(settings):
        store.append_record(rec, root)
    row = store.rows(root)[-1]
    tokens, flags = store.get("tokens", row).astype(np.int64), store.get("flags", row)
    tokens[10:14] = tiny.vocab.mask_id
    child = store.fork(root, 6, tokens, (flags & FLAG_PROTECTED) != 0, np.zeros(27, bool), settings.to_dict())
    edit_flags = store.get("flags", store.rows(child.id)[0])
    assert (edit_flags[:7] & FLAG_PROMPT).all() and not (edit_flags[7:] & FLAG_PROMPT).any()


# -- the command line on the default model ------------------------------------------------------
def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=240, env=env, cwd=cwd
    )


def test_generate_with_a_prompt_starts_every_record_with_it() -> None:
    proc = _cli("generate", "--prompt", "ROMEO:\n", "--length", "128", "--steps", "8", "--seed", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    final = doc["final_text"]
    assert final.startswith("ROMEO:\n") and len(final) == 7 + 128 and MASK_GLYPH not in final
    assert all(r["text"].startswith("ROMEO:\n") for r in doc["records"]) and len(doc["records"]) == 17
    assert doc["records"][0]["masked"] == 128
    assert doc["prompt"] == {"text": "ROMEO:\n", "template": False, "chat": False, "fixed": [[0, 7]]}


def test_generate_without_a_prompt_prints_what_it_always_did() -> None:
    proc = _cli("generate", "--length", "32", "--steps", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)) == ["final_text", "records"]


def test_generate_fills_an_infilling_template() -> None:
    proc = _cli("generate", "--init", TEMPLATE, "--steps", "4", "--seed", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)["final_text"]
    assert len(final) == len(TEMPLATE) and MASK_GLYPH not in final
    assert all(a == b for a, b in zip(final, TEMPLATE, strict=True) if b != MASK_GLYPH)


def test_a_prompt_file_before_blocks_starts_every_record(tmp_path: Path) -> None:
    prompt = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n") * 6
    (tmp_path / "prompt.txt").write_text(prompt, encoding="utf-8")
    proc = _cli("generate", "--prompt-file", str(tmp_path / "prompt.txt"), "--length", "600", "--block-length", "256",
                "--steps", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    assert all(r["text"].startswith(prompt) for r in records)
    assert sorted({r["offset"] for r in records}) == [len(prompt), len(prompt) + 256, len(prompt) + 512]
    final = records[-1]["full_text"]  # compact block records (issue 23): the whole sequence only in the last
    assert len(final) == len(prompt) + 600 and MASK_GLYPH not in final
    last = records[-1]["text"][len(prompt):]  # each record: the prompt, then its own block at its offset
    assert final[records[-1]["offset"]:] == last and len(last) == 600 - 512


def test_a_character_the_model_lacks_is_refused_by_name() -> None:
    proc = _cli("generate", "--prompt", "Five \u20ac, please", "--length", "16")
    assert proc.returncode == 2 and proc.stdout == ""
    said = [line for line in proc.stderr.splitlines() if line.startswith("dpgviz:")]
    assert len(said) == 1 and "'\u20ac' (U+20AC)" in said[0]


def test_chat_on_a_model_without_a_template_is_refused() -> None:
    proc = _cli("generate", "--prompt", "Hi", "--chat", "--length", "16")
    assert proc.returncode == 2 and "has no chat template" in proc.stderr


def test_show_and_branch_keep_the_prompt(tmp_path: Path) -> None:
    out = tmp_path / "run.dpgviz"
    assert _cli("generate", "--prompt", "ROMEO:\n", "--length", "40", "--steps", "3", "--out", str(out)).returncode == 0
    shown = json.loads(_cli("show", str(out), "--json").stdout)
    assert shown["prompt"]["fixed"] == [[0, 7]] and shown["final_text"].startswith("ROMEO:\n")
    assert "prompt    'ROMEO:\\n'" in _cli("show", str(out)).stdout
    proc = _cli("branch", str(out), "--record", "3", "--mask", "0:47", "--seed", "5")  # the prompt stays
    assert proc.returncode == 0, proc.stderr
    child = json.loads(_cli("show", str(out), "--branch", proc.stdout.split()[-1], "--json").stdout)
    assert all(r["text"].startswith("ROMEO:\n") for r in child["records"])
    assert child["prompt"]["fixed"] == [[0, 7]] and MASK_GLYPH not in child["final_text"]
