"""`main.py compare`: every strategy on one model and seed; JSON form, sibling-branch sessions, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run
from test_engine import make_checkpoint

from dpgviz.core.settings import STRATEGIES
from dpgviz.store.session_open import open_session

N, STEPS = 32, 5
ISSUE_FORM = "seed,random,llada,margin,entropy,threshold"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("compare") / "out")


def compare(tiny, *args: str):
    return run("compare", "--model", str(tiny), "--length", str(N), "--steps", str(STEPS), "--device", "cpu", *args)


def test_json_form_has_one_result_per_strategy_in_order(tiny):
    out = compare(tiny, "--strategies", ISSUE_FORM, "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [r["strategy"] for r in results] == ISSUE_FORM.split(",")
    for r in results:
        assert set(r) == {"strategy", "final_text", "forward_passes", "steps_per_s", "mean_confidence"}
        assert len(r["final_text"]) == N and "\u2588" not in r["final_text"]
        assert r["steps_per_s"] > 0 and 0 < r["mean_confidence"] <= 1
    passes = {r["strategy"]: r["forward_passes"] for r in results}
    assert passes["seed"] == 2 * STEPS - 1  # a second pass per remask
    assert passes["random"] == passes["llada"] == passes["margin"] == passes["entropy"] == STEPS
    assert STEPS <= passes["threshold"] <= N  # a random tiny model is unsure: it runs past `steps`
    # same seed, same numbers
    again = json.loads(compare(tiny, "--strategies", "llada,margin", "--seed", "3", "--json").stdout)["results"]
    assert [r["final_text"] for r in again] == [results[2]["final_text"], results[3]["final_text"]]


def test_out_keeps_every_run_as_a_sibling_branch(tiny, tmp_path):
    path = tmp_path / "cmp.dpgviz"
    out = compare(tiny, "--out", str(path), "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [r["strategy"] for r in results] == list(STRATEGIES)
    with open_session(path) as session:
        store, vocab = session.store, session.vocab
        root = store.branch_order[0]
        assert store.branches[root].parent is None and len(store.rows(root)) == 1
        children = store.children(root)
        assert [store.branches[c].label for c in children] == list(STRATEGIES)
        for child, result in zip(children, results, strict=True):
            b = store.branches[child]
            assert b.fork_record == 0 and b.settings["strategy"] == result["strategy"]
            history = store.history(child)
            kinds = [store.kind(int(r)) for r in history]
            assert kinds[0] == "initial" and kinds[1] == "prediction" and kinds[-1] == "final"
            final = store.get("tokens", int(history[-1]))
            assert vocab.decode(final) == result["final_text"]
            first = store.get("tokens", int(history[0]))
            assert (first == vocab.mask_id).all()
        assert np.unique([store.history_length(c) > 2 for c in children]).tolist() == [True]


def test_words_adds_word_validity(tiny, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the king and the queen\n", encoding="utf-8")
    out = compare(tiny, "--strategies", "llada", "--words", str(corpus), "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["results"]
    assert 0.0 <= row["word_validity"] <= 1.0


@pytest.mark.parametrize(
    "args,reason",
    [
        (("--strategies", "seed,nope"), "unknown strategy nope"),
        (("--strategies", "seed,seed"), "twice"),
        (("--strategies", "llada", "--top-p", "0"), "top-p"),
    ],
)
def test_refusals_are_one_line(tiny, args, reason):
    out = compare(tiny, *args)
    assert out.returncode == 2 and reason in out.stderr and out.stderr.count("\n") == 1, out.stderr
