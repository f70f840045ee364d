"""Runs made in blocks, seen whole: `show --position`, the overview, the plots, decoding order,
the PNG / GIF / HTML exports and the compact JSON all speak of the whole sequence at each record.

Real runs of a tiny random model (CPU): 512 tokens in blocks of 128 in-process and through
the CLI, a prompt before the blocks, and the issue's 2,048 tokens in blocks of 256. The
reference for "the whole sequence at record i" is `store.blocks.Composer.field`, checked
against a replay of every record in tests/test_semi_ar.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from model_data import tiny_checkpoint
from PIL import Image

from dpgviz.cli import main
from dpgviz.core.palette import STATE_MASKED, STATE_RGB, mask_states
from dpgviz.core.records import FLAG_MASKED, FLAG_PROMPT, KINDS
from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import MASK_GLYPH
from dpgviz.store import inspect as ins
from dpgviz.store import overview as ov
from dpgviz.store.blocks import Composer, records_json
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore

ROOT = Path(__file__).resolve().parents[1]
N, L = 512, 128  # 4 blocks


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("block_views") / "tiny", block_size=512)


@pytest.fixture(scope="module")
def sampler(ckpt):
    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.sampler import Sampler

    loaded = load_model(ckpt, device="cpu")
    return Sampler(loaded.model, loaded.vocab, "cpu")


def run_store(sampler, settings: GenerationSettings) -> StepStore:
    store = StepStore(sampler.layout(settings), capacity=64, mask_id=sampler.vocab.mask_id)
    branch = store.new_branch(settings.to_dict()).id
    for rec in sampler.run(settings):
        store.append_record(rec, branch)
    return store


@pytest.fixture(scope="module")
def saved(sampler, tmp_path_factory) -> Path:
    settings = GenerationSettings(length=N, block_length=L, steps=3, seed=4)
    store = run_store(sampler, settings)
    assert store.layout.is_blocks and (store.layout.seq_len, store.layout.total_len) == (L, N)
    return save_session(tmp_path_factory.mktemp("s") / "run.dpgviz", store, sampler.vocab, settings=settings.to_dict())


def composed(store: StepStore, rows: np.ndarray, field: str) -> np.ndarray:
    """(R, total_len) the whole sequence's `field` at every record, one record at a time."""
    comp = Composer(store, rows, store.mask_of())
    return np.stack([comp.field(field, i) for i in range(len(rows))])


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


# -- show --position ---------------------------------------------------------------------------
def test_show_position_in_a_late_block_is_masked_until_its_block_starts(saved, capsys):
    pos = 3 * L + 70  # the last block
    assert main(["show", str(saved), "--position", str(pos), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    with open_session(saved) as s:
        rows, store = s.rows(), s.store
        blocks = store.column("block")[rows]
        first = int(np.flatnonzero(blocks == 3)[0])  # the block's first record
        tokens = composed(store, rows, "tokens")[:, pos]
        table = s.vocab.strings()
    history = doc["history"]
    assert doc["position"] == pos and len(history) == len(rows) and first > 0
    for i, h in enumerate(history):
        assert h["record"] == i and h["kind"] == KINDS[int(store.column("kind")[rows[i]])]
        if i < first:  # the block has not started: masked, nothing predicted, no source
            assert (h["token"], h["state"], h["p"], h["top"], h["source"]) == (None, "masked", None, [], None)
        else:  # the block's latest record at or before i
            assert h["source"] == int(np.flatnonzero(blocks[: i + 1] == 3)[-1])
            assert h["token"] == (None if tokens[i] == s.vocab.mask_id else table[tokens[i]])
    assert history[-1]["token"] is not None and history[-1]["source"] == len(rows) - 1
    assert any(h["top"] for h in history[first:])  # the block's own predictions are there

    assert main(["show", str(saved), "--position", str(N)]) == 2
    assert f"positions 0..{N - 1}" in capsys.readouterr().err
    assert main(["show", str(saved), "--position", str(pos)]) == 0  # the table form too
    assert len(capsys.readouterr().out.splitlines()) == 2 + len(rows)


# -- overview, plots, decoding order -------------------------------------------------------------
def test_overview_is_the_whole_sequence_at_every_record(saved):
    with open_session(saved) as s:
        store, rows, vocab = s.store, s.rows(), s.vocab
        flags, tokens = composed(store, rows, "flags"), composed(store, rows, "tokens")
        confidence = composed(store, rows, "confidence").astype(np.float32)
        view = ov.overview_values(store, rows, "mask-state", vocab.size, 10_000, 10_000)
        assert view.codes.shape == (len(rows), N)  # positions across = the whole sequence
        assert np.array_equal(view.codes, mask_states(flags))
        conf = ov.overview_values(store, rows, "confidence", vocab.size, 10_000, 10_000)
        assert np.array_equal(conf.values, confidence, equal_nan=True)
        changed = ov.overview_values(store, rows, "changed", vocab.size, 10_000, 10_000)
        diff = np.zeros_like(tokens, dtype=bool)
        diff[1:] = (tokens[1:] != tokens[:-1]) & ((flags[1:] & FLAG_MASKED) == 0)
        assert np.array_equal(changed.codes == 1, diff)
        sampled = ov.overview_values(store, rows, "mask-state", vocab.size, 100, 10)  # downsampled: still all of it
        assert sampled.positions[-1] >= N - N // 100 - 1 and sampled.codes.shape == (10, 100)
        assert np.array_equal(sampled.codes, mask_states(flags[np.ix_(sampled.records, sampled.positions)]))


def test_decoding_order_is_composed(saved):
    with open_session(saved) as s:
        store, rows = s.store, s.rows()
        tokens, flags = composed(store, rows, "tokens"), composed(store, rows, "flags")
        # brute force: the first record from which the position is visible with its final token for good
        ok = ((flags & FLAG_MASKED) == 0) & (tokens == tokens[-1])
        for_good = np.logical_and.accumulate(ok[::-1], axis=0)[::-1]
        want = np.where(for_good.any(axis=0), np.argmax(for_good, axis=0), -1)
        commit = ins.commit_records(store, rows)
        assert commit.shape == (N,) and np.array_equal(commit, want)
        blocks = store.column("block")[rows]
        assert commit[3 * L :].min() >= np.flatnonzero(blocks == 3)[0]  # the last block settles last
        order = ov.overview_values(store, rows, "order", s.vocab.size, 10_000, 10_000)
        assert order.values.shape == (len(rows), N) and np.isfinite(order.values[-1]).all()


def test_plots_are_over_the_whole_sequence(saved):
    with open_session(saved) as s:
        store, rows = s.store, s.rows()
        flags = composed(store, rows, "flags")
        conf = composed(store, rows, "confidence").astype(np.float32)
        series = ins.run_series(store, rows)
    masked = (flags & FLAG_MASKED) != 0
    assert np.array_equal(series["masked_fraction"], masked.sum(axis=1) / N)
    assert series["masked_fraction"][0] == 1.0 and series["masked_fraction"][-1] == 0.0
    kinds = store.column("kind")[rows]
    finals = series["masked_fraction"][kinds == KINDS.index("final")]
    assert finals.tolist() == [3 / 4, 2 / 4, 1 / 4, 0.0]  # each finished block takes its quarter off
    assert (np.diff(series["masked_fraction"][kinds != KINDS.index("remask")]) <= 0).all()  # down but for remasks
    visible = ~masked & np.isfinite(conf)
    want = np.array([conf[i][visible[i]].mean() if visible[i].any() else np.nan for i in range(len(rows))])
    assert np.allclose(series["mean_confidence"], want, equal_nan=True, atol=1e-5)
    half = len(rows) // 2  # as the window extends them while records arrive
    parts = [ins.record_sums(store, rows[:half]), ins.record_sums(store, rows[half:])]
    sums = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    again = ins.series_from_sums(store, rows, sums)
    assert all(np.array_equal(again[k], series[k], equal_nan=True) for k in series)


def test_a_prompt_before_the_blocks_is_fixed_in_every_view(sampler):
    prompt = "ROMEO:\n"
    settings = GenerationSettings(prompt=prompt, length=200, block_length=64, steps=2, seed=1)
    store = run_store(sampler, settings)
    rows, P = store.rows("0"), len(prompt)
    assert store.layout.prefix_len == P and store.layout.total_len == P + 200
    history = ins.position_history(store, rows, 2, sampler.vocab)
    assert {h["token"] for h in history} == {prompt[2]} and {h["state"] for h in history} == {"prompt"}
    assert all(h["source"] is None for h in history)
    view = ov.overview_values(store, rows, "mask-state", sampler.vocab.size, 10_000, 10_000)
    assert view.codes.shape == (len(rows), P + 200)
    assert np.array_equal(view.codes, mask_states(composed(store, rows, "flags")))
    assert (ins.commit_records(store, rows)[:P] == 0).all()
    assert ins.run_series(store, rows)["masked_fraction"][0] == 200 / (P + 200)
    assert (composed(store, rows, "flags")[:, :P] & FLAG_PROMPT).all()


# -- PNG, GIF, HTML ---------------------------------------------------------------------------------
def test_png_and_gif_frames_show_every_position(saved, tmp_path):
    from dpgviz.export.images import FramePainter

    with open_session(saved) as s:
        rows = s.rows()
        k = int(np.flatnonzero(s.store.column("block")[rows] == 1)[2])  # inside block 2: blocks 3 and 4 masked
        flags = composed(s.store, rows, "flags")
        painter = FramePainter(s, columns=64)
        assert painter.fit.shown == N and "block 2 of 4" in painter.caption(k)
        assert f"{int((flags[k] & FLAG_MASKED).astype(bool).sum())} masked" in painter.caption(k)
        ys, xs = painter.positions()
    assert main(["export", str(saved), "--format", "png", "--record", str(k), "--out", str(tmp_path / "f.png")]) == 0
    with Image.open(tmp_path / "f.png") as im:
        frame = np.asarray(im.convert("RGB"))
    corner = frame[ys + 1, xs + 1]  # each cell's background, next to its top-left corner
    assert np.array_equal(corner, STATE_RGB[mask_states(flags[k])])  # all 512 cells, in their state's colour
    is_masked = (corner == STATE_RGB[STATE_MASKED]).all(axis=1)
    assert is_masked[2 * L :].all() and not is_masked[:L].any()  # later blocks masked, the first done

    assert main(["export", str(saved), "--format", "gif", "--out", str(tmp_path / "f.gif")]) == 0
    with Image.open(tmp_path / "f.gif") as im:
        assert im.n_frames == len(rows) and im.size == frame.shape[1::-1]
        first = np.asarray(im.convert("RGB"))
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("RGB"))
    grey = STATE_RGB[STATE_MASKED].astype(int)
    assert (np.abs(first[ys + 1, xs + 1].astype(int) - grey).max(axis=1) <= 6).all()  # all 512 masked
    assert not (np.abs(last[ys + 1, xs + 1].astype(int) - grey).max(axis=1) <= 6).any()


def _stream(text: str, records: int) -> np.ndarray:
    """The player's packed (records, positions) uint8 stream, un-deflated and un-XOR-ed."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8).reshape(records, -1)
    return np.bitwise_xor.accumulate(raw, axis=0)


def test_html_player_holds_the_whole_sequence_at_every_record(saved, tmp_path):
    from dpgviz.export.html import MASK_TOKEN_BIT, player_data

    with open_session(saved) as s:
        rows = s.rows()
        data = player_data(s)
        tokens, flags = composed(s.store, rows, "tokens"), composed(s.store, rows, "flags")
    assert data["seq_len"] == N and data["records"] == len(rows)
    got_flags = _stream(data["flags"], len(rows))
    assert np.array_equal(got_flags & ~np.uint8(MASK_TOKEN_BIT), flags)
    got_tokens = _stream(data["tokens"], len(rows))
    shown = (got_flags & MASK_TOKEN_BIT) == 0
    assert np.array_equal(got_tokens[shown], tokens[shown])
    assert [m for _, _, m in data["scalars"]] == ((flags & FLAG_MASKED) != 0).sum(axis=1).tolist()
    assert main(["export", str(saved), "--format", "html", "--out", str(tmp_path / "p.html")]) == 0
    assert f'"seq_len":{N},' in (tmp_path / "p.html").read_text(encoding="utf-8")


# -- compact JSON ------------------------------------------------------------------------------------
def test_compact_json_from_generate_and_show(ckpt, tmp_path, capsys):
    out = tmp_path / "g.dpgviz"
    base = ("generate", "--model", str(ckpt), "--length", str(N), "--block-length", str(L), "--steps", "2",
            "--seed", "5", "--device", "cpu", "--json")
    gen = cli(*base, "--out", str(out))
    assert gen.returncode == 0, gen.stderr
    doc = json.loads(gen.stdout)
    records = doc["records"]
    with open_session(out) as s:
        rows, store, table = s.rows(), s.store, s.vocab.strings()
        texts = ["".join(table[t]) for t in composed(store, rows, "tokens").astype(np.int64)]
    assert len(records) == len(rows) and doc["final_text"] == texts[-1] and MASK_GLYPH not in texts[-1]
    keys = ["iteration", "kind", "block", "offset", "text", "masked", "block_masked"]
    for i, r in enumerate(records):
        assert list(r) == keys + (["full_text"] if i == len(records) - 1 else [])
        assert r["offset"] == L * r["block"] and r["text"] == texts[i][r["offset"] : r["offset"] + L]
        assert r["masked"] == texts[i].count(MASK_GLYPH) and r["block_masked"] == r["text"].count(MASK_GLYPH)
    assert records[-1]["full_text"] == texts[-1]

    assert main(["show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["records"] == records and shown["final_text"] == doc["final_text"]  # one form, both commands
    assert main(["show", str(out), "--json", "--full-text"]) == 0
    full = json.loads(capsys.readouterr().out)["records"]
    assert [r["full_text"] for r in full] == texts  # --full-text: the whole text in every record
    assert [{k: v for k, v in r.items() if k != "full_text"} for r in full] == [
        {k: v for k, v in r.items() if k != "full_text"} for r in records
    ]
    gen_full = cli(*base, "--full-text")
    assert gen_full.returncode == 0, gen_full.stderr
    assert json.loads(gen_full.stdout)["records"] == full  # same seed, same run
    assert main(["show", str(out)]) == 0
    assert f"{N} tokens in blocks of {L}" in capsys.readouterr().out


def test_json_of_a_run_in_one_block_is_unchanged(ckpt, tmp_path, capsys):
    out = tmp_path / "one.dpgviz"
    gen = cli("generate", "--model", str(ckpt), "--length", "96", "--steps", "4", "--seed", "3", "--device", "cpu",
              "--json", "--full-text", "--out", str(out))
    assert gen.returncode == 0, gen.stderr
    doc = json.loads(gen.stdout)
    assert list(doc) == ["final_text", "records"]
    assert all(list(r) == ["iteration", "kind", "text", "masked"] for r in doc["records"])
    with open_session(out) as s:
        assert doc["records"] == records_json(s.store, s.rows(), s.vocab)
    assert doc["final_text"] == doc["records"][-1]["text"]
    assert main(["show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == doc["records"]


# -- the sizes ----------------------------------------------------------------------------------
def test_2048_tokens_in_blocks_of_256_position_1500_and_overview(sampler, tmp_path, capsys):
    settings = GenerationSettings(length=2048, block_length=256, steps=8, seed=1)
    store = run_store(sampler, settings)
    f = save_session(tmp_path / "F.dpgviz", store, sampler.vocab, settings=settings.to_dict())
    assert main(["show", str(f), "--position", "1500", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)["history"]
    rows = store.rows("0")
    started = int(np.flatnonzero(store.column("block")[rows] == 5)[0])  # 1500 is in block 6 (1280..1535)
    assert len(history) == len(rows) == 8 * 17
    assert all(h["token"] is None for h in history[:started]) and history[-1]["token"] is not None
    out = tmp_path / "O.png"
    assert main(["export", str(f), "--format", "overview", "--out", str(out)]) == 0
    from dpgviz.export.images import MARGIN_PX

    with Image.open(out) as im:
        picture = np.asarray(im.convert("RGB"))
    grid = ov.overview_image(store, rows, "mask-state", sampler.vocab.size, 2048, 2000)
    assert grid.shape == (len(rows), 2048, 3)  # one column per position
    top = MARGIN_PX + 18
    assert np.array_equal(picture[top : top + len(rows), MARGIN_PX : MARGIN_PX + 2048], grid)
