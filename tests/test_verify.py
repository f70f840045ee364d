"""`main.py verify`: a saved branch re-runs bit for bit on the CPU (a plain run, an edited fork,
a run in blocks, a model comparison); a changed run diverges where it changed; a missing or
different model is refused in one line."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from score_data import tiny_pair
from test_cli import run

from dpgviz.store.session import checkpoint_sha256
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session

N, STEPS = 40, 5
IDENTICAL = re.compile(r"^identical: (\d+) records$")
DIVERGES = re.compile(r"^diverges at record (\d+) \(iteration (\d+), (\d+) positions differ\)$")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    tiny, perturbed = tiny_pair(folder)
    path = folder / "run.dpgviz"
    out = run("generate", "--model", str(tiny), "--length", str(N), "--steps", str(STEPS), "--seed", "5",
              "--device", "cpu", "--out", str(path))
    assert out.returncode == 0, out.stderr
    return path, tiny, perturbed


def verify(path, *args, cwd=None):
    return run("verify", str(path), *args, **({"cwd": cwd} if cwd else {}))


def test_a_generated_run_is_identical(made):
    out = verify(made[0])
    assert out.returncode == 0, out.stderr
    m = IDENTICAL.match(out.stdout.strip())
    assert m and int(m.group(1)) == 2 * STEPS + 1  # initial, prediction/remask per iteration, final


def test_the_session_records_what_a_rerun_needs(made):
    with open_session(made[0]) as session:
        assert session.model_sha256 == checkpoint_sha256(made[1])
        rt = session.runtime
        assert rt["torch"] and rt["numpy"] and rt["dpgviz"] and rt["device"] == "cpu"
        assert rt["dtype"] == "float32" and rt["threads"] >= 1 and rt["mkl_cbwr"] == "AUTO,STRICT"  # core.determinism
        s = session.settings
        assert s["seed"] == 5 and s["strategy"] == "seed" and s["schedule"] == "linear"


def test_an_edited_fork_is_identical(made, tmp_path):
    path = tmp_path / "fork.dpgviz"
    shutil.copy(made[0], path)
    out = run("branch", str(path), "--record", "4", "--mask", "5:20", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    child = out.stdout.strip().splitlines()[-1]
    got = verify(path, "--branch", child, "--json")
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    assert doc["identical"] and doc["line"].startswith("identical: ")
    with open_session(path) as session:  # every record but the edit (the user's input) was re-run
        assert doc["records"] == session.store.history_length(child) - 1


def test_a_run_in_blocks_is_identical(made, tmp_path):
    path = tmp_path / "blocks.dpgviz"
    out = run("generate", "--model", str(made[1]), "--length", "90", "--block-length", "32", "--steps", "3",
              "--device", "cpu", "--out", str(path))
    assert out.returncode == 0, out.stderr
    got = verify(path)
    assert got.returncode == 0, got.stderr
    assert IDENTICAL.match(got.stdout.strip()).group(1) == str(3 * (2 * 3 + 1))  # three blocks


def test_each_model_of_a_comparison_is_identical(made, tmp_path):
    path = tmp_path / "models.dpgviz"
    out = run("compare", "--models", f"{made[1]},{made[2]}", "--length", "24", "--steps", "3", "--device", "cpu",
              "--out", str(path))
    assert out.returncode == 0, out.stderr
    for branch in ("1", "2"):  # the second made by the perturbed model, found by its recorded hash
        got = verify(path, "--branch", branch)
        assert got.returncode == 0 and IDENTICAL.match(got.stdout.strip()), got.stderr


def test_a_changed_seed_diverges_at_the_first_prediction(made, tmp_path):
    with open_session(made[0]) as session:
        store = session.store.view()
        store.branches[session.root].settings["seed"] = 6  # as if the file lied about its seed
        path = tmp_path / "lied.dpgviz"
        save_session(path, store, session.vocab, settings=session.settings, model_path=session.model_path,
                     model_sha256=session.model_sha256, model_info=session.model_info, runtime=session.runtime)
    out = verify(path)
    assert out.returncode == 1, out.stderr
    m = DIVERGES.match(out.stdout.strip())
    assert m and m.group(1) == "1" and m.group(2) == "0" and int(m.group(3)) > 0


def test_another_model_is_refused_in_one_line_naming_both_hashes(made):
    out = verify(made[0], "--model", str(made[2]))
    assert out.returncode == 2 and out.stdout == ""
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("dpgviz: ") and "sha256" in line
    assert checkpoint_sha256(made[2])[:12] in line and checkpoint_sha256(made[1])[:12] in line


def test_a_missing_model_is_refused_in_one_line(made, tmp_path):
    gone = tmp_path / "gone"
    shutil.copytree(made[1].parent, gone)
    path = tmp_path / "gone.dpgviz"
    out = run("generate", "--model", str(gone / "ckpt.pt"), "--length", "16", "--steps", "2", "--device", "cpu",
              "--out", str(path))
    assert out.returncode == 0, out.stderr
    shutil.rmtree(gone)
    got = verify(path, cwd=tmp_path)  # no ./out here: only the embedded default is known
    assert got.returncode == 2
    line = got.stderr.strip().splitlines()[-1]
    assert "is not among the known models" in line and "sha256" in line
    found = verify(path, "--models-dir", str(made[1].parent), cwd=tmp_path)  # the same weights elsewhere: found by hash
    assert found.returncode == 0 and IDENTICAL.match(found.stdout.strip()), found.stderr
