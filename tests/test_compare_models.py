"""`main.py compare --models A,B`: one strategy and seed on several models; JSON form, sibling
branches that record which model made them, refusals in one line."""

from __future__ import annotations

import json

import pytest
from score_data import other_vocab_checkpoint, tiny_pair
from test_cli import run

from dpgviz.store.session import checkpoint_sha256
from dpgviz.store.session_open import open_session

N, STEPS = 40, 5


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("models"))


def compare(*args: str):
    return run("compare", "--length", str(N), "--steps", str(STEPS), "--device", "cpu", "--seed", "2", *args)


def test_json_form_has_one_result_per_model_in_order(pair):
    tiny, perturbed = pair
    out = compare("--models", f"{tiny},{perturbed}", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [r["model"] for r in results] == [str(tiny), str(perturbed)]
    for r in results:
        assert set(r) == {"model", "final_text", "forward_passes", "steps_per_s", "mean_confidence"}
        assert len(r["final_text"]) == N and "\u2588" not in r["final_text"]
        assert r["forward_passes"] == 2 * STEPS - 1  # strategy seed (the default): a second pass per remask
        assert r["steps_per_s"] > 0 and 0 < r["mean_confidence"] <= 1


def test_out_keeps_each_model_as_a_sibling_branch_with_its_hash(pair, tmp_path):
    tiny, perturbed = pair
    path = tmp_path / "models.dpgviz"
    out = compare("--models", f"{tiny},{perturbed}", "--strategies", "llada", "--out", str(path))
    assert out.returncode == 0, out.stderr
    assert "one branch per model" in out.stdout
    with open_session(path) as session:
        store = session.store
        root = store.branch_order[0]
        assert len(store.rows(root)) == 1 and store.kind(int(store.rows(root)[0])) == "initial"
        children = store.children(root)
        assert len(children) == 2
        for child, ckpt in zip(children, pair, strict=True):
            b = store.branches[child]
            assert b.fork_record == 0 and b.settings["strategy"] == "llada" and b.settings["seed"] == 2
            assert b.provenance["model"]["sha256"] == checkpoint_sha256(ckpt)
            assert b.provenance["runtime"]["device"] == "cpu" and b.provenance["runtime"]["torch"]
        assert session.runtime["numpy"] and session.runtime["dpgviz"]


def test_models_without_a_shared_vocabulary_are_refused_in_one_line(pair, tmp_path):
    other = other_vocab_checkpoint(tmp_path / "abc")
    out = compare("--models", f"{pair[0]},{other}")
    assert out.returncode == 2 and out.stdout == ""
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("dpgviz: ") and "do not share a vocabulary" in last


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--models", "default"], "at least two models"),
        (["--models", "default,default"], "twice"),
        (["--models", "default,x", "--strategies", "seed,llada"], "one strategy"),
        (["--models", "default,/no/such/ckpt.pt"], "no such model"),
    ],
)
def test_bad_model_lists_are_refused(args, says):
    out = compare(*args)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr.strip().splitlines()[-1]
