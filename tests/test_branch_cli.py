"""`main.py branch`: fork a saved session at a record, edit, run on, save; refusals leave the file as it was."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli import run
from test_engine import make_checkpoint

MASK = "\u2588"
N, STEPS = 24, 4


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("branch")
    ckpt = make_checkpoint(folder / "out")
    session = folder / "s.dpgviz"
    out = run("generate", "--model", str(ckpt), "--length", str(N), "--steps", str(STEPS), "--device", "cpu",
              "--out", str(session))
    assert out.returncode == 0, out.stderr
    return ckpt, session


@pytest.fixture
def session(made, tmp_path):
    path = tmp_path / "s.dpgviz"
    shutil.copy(made[1], path)
    return path


def show(path, *args: str) -> dict:
    out = run("show", str(path), "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_branch_prints_the_new_id_and_show_has_the_full_history(session):
    root = show(session)["records"]
    out = run("branch", str(session), "--record", "3", "--replace", "0:the ", "--protect", "0:4", "--mask", "10:14",
              "--seed", "5", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.splitlines()[-1]
    assert new_id == "1"
    doc = show(session, "--branch", new_id)
    records = doc["records"]
    assert records[:4] == root[:4]  # the parent's history up to the forked record
    edit = records[4]
    assert edit["kind"] == "edit" and edit["text"].startswith("the ") and edit["text"][10:14] == MASK * 4
    assert edit["iteration"] == root[3]["iteration"] + 1  # a prediction: the restart begins after it
    assert [r["kind"] for r in records[5:]] == ["prediction", "remask", "prediction", "final"]
    assert all(r["text"].startswith("the ") for r in records[4:])  # protected text stays in every child record
    assert MASK not in doc["final_text"]
    child = next(b for b in doc["branches"] if b["id"] == new_id)
    assert child["parent"] == "0" and child["fork_record"] == 3 and child["settings"]["seed"] == 5
    # A fork of the fork, counting from the end of the child's history.
    out = run("branch", str(session), "--branch", new_id, "--record", "-3", "--unmask", "0:24", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    grand = show(session, "--branch", out.stdout.splitlines()[-1])["records"]
    assert grand[: len(records) - 2] == records[:-2] and grand[len(records) - 2]["kind"] == "edit"


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--record", "3", "--mask", "5:2"], "range 5:2"),
        (["--record", "3", "--mask", "0:99"], "not inside 0:24"),
        (["--record", "3", "--branch", "7"], "no branch '7'"),
        (["--record", "99"], "records 0..8, not 99"),
        (["--record", "3", "--replace", "0:caf\u00e9\u20ac"], "characters not in the model's vocabulary: '\u00e9', '\u20ac'"),
        (["--record", "3", "--replace", "22:the"], "not inside 0:24"),
        (["--record", "-1"], "pass --steps above 4"),
    ],
)
def test_refusals_exit_non_zero_with_one_line_and_leave_the_file(session, args, reason):
    before = session.read_bytes()
    out = run("branch", str(session), *args, "--device", "cpu")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], out.stderr
    assert out.stdout == ""
    assert session.read_bytes() == before


def test_a_missing_model_names_the_recorded_one_and_the_flag(made, tmp_path):
    ckpt, original = made
    folder = tmp_path / "elsewhere"
    shutil.copytree(ckpt.parent, folder)
    moved = tmp_path / "s.dpgviz"
    out = run("generate", "--model", str(folder / ckpt.name), "--length", str(N), "--steps", str(STEPS),
              "--device", "cpu", "--out", str(moved))
    assert out.returncode == 0, out.stderr
    shutil.rmtree(folder)
    before = moved.read_bytes()
    out = run("branch", str(moved), "--record", "2", "--device", "cpu")
    assert out.returncode != 0
    line = out.stderr.strip()
    assert "\n" not in line and str(folder / ckpt.name) in line and "--model" in line
    assert moved.read_bytes() == before
    out = run("branch", str(moved), "--record", "2", "--model", str(ckpt), "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "1"
