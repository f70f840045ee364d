"""The session commands behind `show`, `export`, `open` and `generate --out`."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from session_data import FORK_RECORD, sampled_store

from dpgviz.cli.sessions import cmd_export, cmd_open, cmd_show, save_run
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.records import KINDS
from dpgviz.core.vocab import MASK_GLYPH
from dpgviz.store.session import SessionError, checkpoint_sha256


@pytest.fixture(scope="module")
def run():
    return sampled_store()


@pytest.fixture
def saved(run, tmp_path):
    store, vocab, settings = run
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"weights")
    info = ModelInfo(name="tiny", path=str(ckpt), block_size=128, params=1, itos=vocab.itos, n_ids=vocab.n_ids)
    return save_run(tmp_path / "run.dpgviz", store, info, settings.to_dict())


def test_save_run_takes_the_worker_info(run, saved):
    store, vocab, settings = run
    with cmd_open(saved) as s:
        assert s.vocab.itos == vocab.itos and s.vocab.n_ids == vocab.n_ids
        assert s.model_path.endswith("ckpt.pt") and s.model_sha256 == checkpoint_sha256(s.model_path)
        assert s.model_info["name"] == "tiny" and "itos" not in s.model_info
        assert s.settings == settings.to_dict()
        assert len(s.store) == len(store)


def test_show_json_has_the_agreed_form(run, saved, capsys):
    store, vocab, settings = run
    assert cmd_show(str(saved), None, True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in doc["branches"]] == ["0", "1"]
    assert doc["branches"][0] == {"id": "0", "parent": None, "fork_record": None, "settings": settings.to_dict()}
    assert doc["branches"][1]["parent"] == "0" and doc["branches"][1]["fork_record"] == FORK_RECORD
    records = doc["records"]
    assert len(records) == len(store.branches["0"].rows)
    assert set(records[0]) == {"iteration", "kind", "text", "masked"}
    assert records[0]["text"] == MASK_GLYPH * 64 and records[0]["masked"] == 64
    assert all(r["kind"] in KINDS for r in records)
    assert all(r["masked"] == r["text"].count(MASK_GLYPH) for r in records)
    assert doc["final_text"] == records[-1]["text"] and MASK_GLYPH not in doc["final_text"]


def test_show_json_of_a_child_branch_has_its_full_history(run, saved, capsys):
    """The parent's records up to and including the forked one, then the child's own."""
    store, vocab, _ = run
    cmd_show(str(saved), "1", True)
    doc = json.loads(capsys.readouterr().out)
    parent_rows, child_rows = store.branches["0"].rows[: FORK_RECORD + 1], store.branches["1"].rows
    texts = [vocab.decode(store.get("tokens", r)) for r in [*parent_rows, *child_rows]]
    assert [r["text"] for r in doc["records"]] == texts
    assert doc["records"][FORK_RECORD + 1]["kind"] == "initial"  # this fixture's child is a plain continue
    assert doc["final_text"] == vocab.decode(store.get("tokens", child_rows[-1]))


def test_show_text_summarises_the_session(saved, capsys):
    assert cmd_show(str(saved)) == 0
    out = capsys.readouterr().out
    assert "branches" in out and "from 0 @ record 4" in out and "\nfinal text\n" in out


def test_show_refuses_an_unknown_branch(saved, capsys):
    with pytest.raises(SessionError, match="no branch '5'"):
        cmd_show(str(saved), "5", True)
    assert capsys.readouterr().out == ""


def test_show_refuses_a_non_session(tmp_path):
    bad = tmp_path / "bad.dpgviz"
    bad.write_text("just text, nothing else here at all")
    with pytest.raises(SessionError, match="not a dpgviz session"):
        cmd_show(str(bad))


def test_export_command_writes_a_gif(saved, tmp_path, capsys):
    out = tmp_path / "run.gif"
    assert cmd_export(str(saved), "gif", "1", None, 60, str(out)) == 0
    assert capsys.readouterr().out == ""
    with Image.open(out) as im:
        assert im.n_frames > 1


def test_export_command_needs_an_output(saved):
    with pytest.raises(SessionError, match="--out"):
        cmd_export(str(saved), "png", None, None, 120, None)
