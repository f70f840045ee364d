"""Damaged files read honestly (issue 29): 1,000 seeded damages of recorder files, a window's journal and saved
sessions each read whole, or say "partial" with no more records than were written, or are refused in one line;
never a traceback. `show` exits 3 on a partial read (0 with --allow-partial); files of the format before the end
entry still read as they did; branch keeps a damaged original aside; the window says the file is damaged."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_recorder import toy_run

from dpgviz.cli.sessions import PARTIAL_EXIT, show_json
from dpgviz.store.journal import Journal
from dpgviz.store.journal_reader import recover
from dpgviz.store.session import SessionError
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session, set_aside_damaged
from dpgviz.store.step_store import StepStore

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
N_FILES = 1000
DAMAGES = ("flip", "truncate", "insert", "delete", "zero")


def show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "show", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, dict, int]]:
    """name -> (file bytes, its show --json document, records written) for each kind of file."""
    folder = tmp_path_factory.mktemp("originals")
    toy_run(folder / "one.dpgviz", length=32, n_records=20)
    toy_run(folder / "three.dpgviz", length=16, n_records=12, B=3, seed=1)
    with open_session(folder / "three.dpgviz") as s:  # a saved session of the same records
        save_session(folder / "saved.dpgviz", s.store, s.vocab, settings=s.settings)
        with Journal(folder / "window.dpgjournal") as journal:  # and the window's journal of them, as a run goes
            store = StepStore(s.store.layout)
            for bid in s.store.branch_order:
                store.new_branch(s.store.branches[bid].settings)
            for row in range(len(s.store)):
                store.append_record(s.store.record(row), str(s.store.columns["branch_index"][row]))
                if row % 3 == 2:  # a frame's sync: one entry of three records
                    journal.sync(store, s.vocab, {"settings": s.settings})
                    assert journal.wait()
            journal.close(delete=False)
    out = {}
    for name in ("one.dpgviz", "three.dpgviz", "saved.dpgviz", "window.dpgjournal"):
        path = folder / name
        with open_session(path) as s:
            assert s.damage is None
            out[name] = (path.read_bytes(), show_json(path), len(s.store))
    return out


def damage(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded damage of `data`: flipped bytes, a cut, bytes inserted or deleted, or a zeroed range."""
    kind = DAMAGES[int(rng.integers(len(DAMAGES)))]
    buf = bytearray(data)
    at = int(rng.integers(len(buf)))
    if kind == "flip":
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(len(buf)))] ^= int(rng.integers(1, 256))
    elif kind == "truncate":
        del buf[at:]
    elif kind == "insert":
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        del buf[at : at + int(rng.integers(1, 17))]
    else:
        n = int(rng.integers(1, 65))
        buf[at : at + n] = bytes(len(buf[at : at + n]))
    return bytes(buf), f"{kind} at byte {at}"


def check_read(doc: dict, original: dict, written: int, what: str) -> str:
    """'full' or 'partial' after asserting the read is honest: equal to the original, or a marked prefix of it."""
    if "partial" not in doc:
        assert doc == original, f"{what}: a read that says it is whole differs from what was written"
        return "full"
    assert doc["partial"] is True and isinstance(doc["damage"], str) and doc["damage"], what
    assert 0 < doc["records_recovered"] <= written, (what, doc["records_recovered"], written)
    if doc["records_written"] is not None:
        assert doc["records_recovered"] < doc["records_written"] <= written, (what, doc["records_written"])
    n = len(doc["records"])
    assert doc["records"] == original["records"][:n], f"{what}: a recovered record differs from the one written"
    assert doc["branches"] == original["branches"], what
    return "partial"


def damaged_files(originals: dict, n: int = N_FILES):
    """(name, damaged bytes, what was done) for n seeded damages, the kinds of file in turn."""
    rng = np.random.default_rng(29)
    names = sorted(originals)
    for i in range(n):
        name = names[i % len(names)]
        damaged, how = damage(originals[name][0], rng)
        yield name, damaged, f"file {i} ({name}, {how})"


def test_a_thousand_damaged_files_read_whole_or_say_partial_and_never_more_than_was_written(
    originals, tmp_path: Path
) -> None:
    outcomes: Counter = Counter()
    path = tmp_path / "damaged"
    for name, damaged, what in damaged_files(originals):
        _data, original, written = originals[name]
        path.write_bytes(damaged)
        try:
            doc = show_json(path)
        except SessionError as exc:  # a clean refusal: one line saying why
            assert "\n" not in str(exc) and str(exc), what
            outcomes[name, "refused"] += 1
            continue
        outcomes[name, check_read(doc, original, written, what)] += 1
    print(dict(outcomes))
    for name in ("one.dpgviz", "three.dpgviz", "window.dpgjournal"):
        assert outcomes[name, "partial"] > 50, outcomes  # the damages do reach records, and are said
    assert outcomes["saved.dpgviz", "refused"] > 100, outcomes


def test_the_real_command_exits_0_2_or_3_as_the_read_in_process_went(originals, tmp_path: Path) -> None:
    """The first eight damaged files of the thousand through `python main.py show F --json`."""
    seen = Counter()
    for k, (name, damaged, what) in enumerate(damaged_files(originals, 8)):
        _data, original, written = originals[name]
        path = tmp_path / f"damaged-{k}"
        path.write_bytes(damaged)
        proc = show(path, "--json")
        try:
            outcome = check_read(show_json(path), original, written, what)
        except SessionError as exc:
            assert (proc.returncode, proc.stdout) == (2, "") and proc.stderr.endswith(f"dpgviz: {exc}\n"), what
            seen["refused"] += 1
            continue
        assert proc.returncode == {"full": 0, "partial": 3}[outcome], (what, proc.stderr)
        assert json.loads(proc.stdout) == show_json(path), what
        seen[outcome] += 1
    assert seen["partial"] >= 3 and seen["refused"] >= 1, seen


def test_show_exits_3_with_partial_json_and_0_with_allow_partial(originals, tmp_path: Path) -> None:
    data, original, written = originals["one.dpgviz"]
    from dpgviz.store.journal_format import _ENTRY, _PREFIX

    at, ends = _PREFIX.size, []
    while at < len(data):  # entry boundaries: the header, 20 batches, the end entry
        at += _ENTRY.size + int.from_bytes(data[at + 4 : at + 12], "little")
        ends.append(at)
    assert len(ends) == 22 and ends[-1] == len(data)
    bad = bytearray(data)
    bad[(ends[1] + ends[2]) // 2] ^= 0x10  # one flipped byte in record 2 (the case)
    path = tmp_path / "flipped.dpgviz"
    path.write_bytes(bytes(bad))
    proc = show(path, "--json")
    assert proc.returncode == PARTIAL_EXIT == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["partial"] is True and doc["records_recovered"] == 1 and doc["records_written"] == written == 20
    assert doc["records"] == original["records"][:1]
    assert "partial: 1 of 20 records recovered (the entry at byte" in proc.stderr
    assert show(path, "--json", "--allow-partial").returncode == 0
    text = show(path)  # the readable form says it on stderr and exits 3 too
    assert text.returncode == 3 and "partial: 1 of 20 records recovered" in text.stderr and "final text" in text.stdout
    out = tmp_path / "flipped.txt"  # export goes on with what was read, and says it is partial
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "export", str(path), "--format", "text", "--out",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.is_file() and "partial: 1 of 20 records recovered" in proc.stderr, proc.stderr
    whole = tmp_path / "whole.dpgviz"
    whole.write_bytes(data)
    proc = show(whole, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == original and '"partial"' not in proc.stdout


@pytest.mark.parametrize("entry", [2, 10, 21])
def test_a_file_cut_at_an_entry_boundary_is_partial_not_whole(originals, tmp_path: Path, entry: int) -> None:
    """Every entry passes its CRC, but the recorder's end entry is missing: the read says so."""
    data, _original, _written = originals["one.dpgviz"]
    from dpgviz.store.journal_format import _ENTRY, _PREFIX

    at = _PREFIX.size
    for _ in range(entry):
        at += _ENTRY.size + int.from_bytes(data[at + 4 : at + 12], "little")
    path = tmp_path / "cut.dpgviz"
    path.write_bytes(data[:at])
    doc = show_json(path)
    assert doc["partial"] is True and doc["records_recovered"] == entry - 1 and doc["records_written"] is None
    assert "no end entry" in doc["damage"]


def test_a_recorder_file_of_the_format_before_the_end_entry_reads_as_it_did() -> None:
    """tests/data/recorder-v1.dpgviz and its show --json were written by the code before this change (4dddf8a)."""
    path = DATA / "recorder-v1.dpgviz"
    with open_session(path) as session:
        assert session.damage is None and len(session.store) == 12
    proc = show(path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (DATA / "recorder-v1-show.json").read_text()  # byte for byte


def test_branch_and_score_keep_a_damaged_original_aside_before_saving_over_it(originals, tmp_path: Path) -> None:
    data, _original, _written = originals["one.dpgviz"]
    path = tmp_path / "cut.dpgviz"
    path.write_bytes(data[: len(data) - 100])  # the last record and the end entry torn
    with open_session(path) as session:
        assert session.damage is not None
        kept = set_aside_damaged(session, path)
        assert kept == tmp_path / "cut.dpgviz.damaged" and kept.read_bytes() == data[: len(data) - 100]
        assert set_aside_damaged(session, tmp_path / "elsewhere.dpgviz") is None  # not saved over: nothing kept
        assert set_aside_damaged(session, path) == tmp_path / "cut.dpgviz.damaged-2"  # never overwrites a copy
    with open_session(tmp_path / "cut.dpgviz.damaged") as again:
        assert again.damage is not None and len(again.store) == 19


def test_a_damaged_journal_recovers_what_precedes_the_damage_and_counts_what_follows(originals, tmp_path: Path) -> None:
    data, _original, written = originals["window.dpgjournal"]
    path = tmp_path / "window.dpgjournal"
    path.write_bytes(data[:-7])
    session = recover(path)
    assert session.damage is not None and session.damage.records_written is None
    assert "the entry at byte" in session.damage.reason and len(session.store) < written


def test_the_window_opens_a_damaged_file_says_so_and_does_not_save_over_it(originals, tmp_path: Path) -> None:
    from dpgviz.app.workspace import Workspace

    data, _original, _written = originals["one.dpgviz"]
    path = tmp_path / "cut.dpgviz"
    path.write_bytes(data[: len(data) - 100])  # 19 of 20 records readable
    with Workspace(device="cpu", journal=tmp_path / "journal.dpgjournal") as ws:
        assert ws.files.open(path)
        note = [n for n in ws.take_notices() if hasattr(n, "text")][-1]
        assert note.is_error and note.text.startswith("Opened cut.dpgviz: 19 records in 1 branch")
        assert "; the file is damaged after record 19 (the entry at byte" in note.text
        assert len(ws.store) == 19 and ws.doc.path is None  # Save asks where: the damaged file stays as it is
        ws.wait_for_job()  # the recorded model's check: its notice keeps saying it
        ws.update(0.01)
        assert "the file is damaged after record 19" in ws.take_notices()[-1].text
    assert path.read_bytes() == data[: len(data) - 100]
