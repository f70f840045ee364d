"""`main.py score`: a second model on one branch's exact inputs; the JS divergence from both
top-K lists; the layer saved in the session and shown by `show --position --json`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from score_data import other_vocab_checkpoint, tiny_pair
from test_cli import run

from dpgviz.store.layers import js_bits, layer_of
from dpgviz.store.session_open import open_session

N, STEPS = 40, 6


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(session made by the tiny model, tiny, perturbed)."""
    folder = tmp_path_factory.mktemp("score")
    tiny, perturbed = tiny_pair(folder)
    path = folder / "run.dpgviz"
    out = run("generate", "--model", str(tiny), "--length", str(N), "--steps", str(STEPS), "--seed", "4",
              "--device", "cpu", "--out", str(path))
    assert out.returncode == 0, out.stderr
    return path, tiny, perturbed


def score(path, model, *args):
    out = run("score", str(path), "--model", str(model), "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# -- the divergence itself (numpy only) -----------------------------------------------------
def _full_js(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        return float(np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a / m, 1)), 0)))

    return 0.5 * kl(p) + 0.5 * kl(q)


def test_js_is_exact_for_top_k_with_a_uniform_tail():
    rng, vocab, k = np.random.default_rng(0), 30, 5
    for _ in range(5):
        lists, full = [], []
        for _ in range(2):
            ids = rng.choice(vocab, k, replace=False)
            probs = np.sort(rng.dirichlet(np.ones(k)) * 0.9)[::-1]
            dist = np.full(vocab, 0.1 / (vocab - k))
            dist[ids] = probs
            lists.append((ids, probs))
            full.append(dist)
        got = js_bits(lists[0][0][None], lists[0][1][None], lists[1][0][None], lists[1][1][None], vocab)[0]
        assert got == pytest.approx(_full_js(*full), abs=1e-6)


def test_js_is_zero_for_the_same_lists_one_for_disjoint_certainty_nan_without_candidates():
    ids, probs = np.array([[3, 1, 2]]), np.array([[0.5, 0.3, 0.1]], dtype=np.float16)
    assert js_bits(ids, probs, ids, probs, 20)[0] == 0.0
    sure_a, sure_b = np.array([[1.0, 0.0, 0.0]]), np.array([[1.0, 0.0, 0.0]])
    assert js_bits(np.array([[1, 2, 3]]), sure_a, np.array([[4, 5, 6]]), sure_b, 20)[0] == pytest.approx(1.0)
    assert np.isnan(js_bits(ids, np.zeros((1, 3)), ids, probs, 20)[0])


# -- the command -------------------------------------------------------------------------
def test_scoring_a_branch_by_its_own_model_gives_zero_at_every_step(made, tmp_path):
    path, tiny, _ = made
    doc = score(path, tiny, "--out", str(tmp_path / "self.dpgviz"))
    assert set(doc) == {"mean_js", "mean_js_by_step"}
    assert len(doc["mean_js_by_step"]) == STEPS  # one per prediction record
    assert abs(doc["mean_js"]) <= 1e-6 and all(abs(v) <= 1e-6 for v in doc["mean_js_by_step"])
    with open_session(tmp_path / "self.dpgviz") as session:
        layer = layer_of(session.store, session.root)
        rows = layer.rows
        assert len(rows) == STEPS and all(session.store.kind(int(r)) == "prediction" for r in rows)
        for i, row in enumerate(rows):  # bit for bit the record's own values
            own = session.store.top_k(int(row))
            theirs = layer.top_k(i)
            assert np.array_equal(own[0], theirs[0]) and np.array_equal(own[1].view(np.uint16), theirs[1].view(np.uint16))
            assert np.array_equal(session.store.get("confidence", int(row)).view(np.uint16),
                                  layer.confidence[i].view(np.uint16))


def test_scoring_by_the_perturbed_model_is_positive_and_shown_per_position(made, tmp_path):
    path, _, perturbed = made
    copy = tmp_path / "copy.dpgviz"
    shutil.copy(path, copy)
    doc = score(copy, perturbed)  # no --out: the layer goes into the file itself
    assert doc["mean_js"] > 0 and len(doc["mean_js_by_step"]) == STEPS
    assert all(v is not None and v >= 0 for v in doc["mean_js_by_step"])
    shown = run("show", str(copy), "--position", "7", "--json")
    assert shown.returncode == 0, shown.stderr
    pos = json.loads(shown.stdout)
    assert pos["second_model"]["sha256"] and pos["second_model"]["path"].endswith("ckpt.pt")
    scored = [h for h in pos["history"] if h["second"] is not None]
    assert len(scored) == STEPS and all(h["kind"] == "prediction" for h in scored)
    first = scored[0]["second"]  # iteration 0: every position was masked, so it has candidates
    assert 0 < first["p"] <= 1 and first["entropy"] > 0 and len(first["top"]) == 8 and first["js"] >= 0
    assert all(h["second"] is None for h in pos["history"] if h["kind"] != "prediction")
    plain = json.loads(run("show", str(path), "--position", "7", "--json").stdout)
    assert "second_model" not in plain and "second" not in plain["history"][0]  # unscored: as before


def test_score_text_form_names_where_they_disagree_most(made, tmp_path):
    path, _, perturbed = made
    out = run("score", str(path), "--model", str(perturbed), "--out", str(tmp_path / "t.dpgviz"))
    assert out.returncode == 0, out.stderr
    assert "mean JS" in out.stdout and "most disagreement: record" in out.stdout


def test_a_model_of_another_vocabulary_is_refused_in_one_line(made, tmp_path):
    path = made[0]
    other = other_vocab_checkpoint(tmp_path / "abc")
    out = run("score", str(path), "--model", str(other), "--out", str(tmp_path / "x.dpgviz"))
    assert out.returncode == 2 and "do not share a vocabulary" in out.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.dpgviz").exists()
