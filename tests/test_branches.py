"""Branches: forking an edited record, the history a branch shows, delete/rename, edit operations.

Runs are real runs of the tiny random model of `session_data` (24 tokens, 4 steps); the
state machine at the end drives random sequences of edits, forks (with runs), deletes,
scrubbing and save/open round trips, checking the invariants after every step.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from session_data import _sampler

from dpgviz.core.records import FLAG_EDITED, FLAG_MASKED, FLAG_PROTECTED, KINDS, continue_point
from dpgviz.core.settings import GenerationSettings
from dpgviz.engine.sampler import StartState
from dpgviz.store.edits import (
    EditError,
    apply_edit,
    encode_text,
    parse_range,
    parse_replace,
    predicted_tokens,
)
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore

N, STEPS = 24, 4


def root_store() -> tuple[StepStore, GenerationSettings]:
    sampler = _sampler()
    settings = GenerationSettings(length=N, steps=STEPS, seed=0)
    store = StepStore(sampler.layout(settings), capacity=4, mask_id=sampler.vocab.mask_id)
    root = store.new_branch(settings.to_dict(), label="root")
    for rec in sampler.run(settings):
        store.append_record(rec, root.id)
    return store, settings


def snapshot(store: StepStore, rows) -> dict[str, np.ndarray]:
    return {name: np.array(store.column(name)[np.asarray(rows, dtype=np.int64)], copy=True) for name in store.columns}


def assert_same_bytes(store: StepStore, rows, snap: dict[str, np.ndarray]) -> None:
    for name, before in snap.items():
        now = store.column(name)[np.asarray(rows, dtype=np.int64)]
        assert now.tobytes() == before.tobytes(), name


def source_state(store: StepStore, branch: str, record: int) -> tuple[np.ndarray, np.ndarray]:
    row = int(store.history(branch)[record])
    return store.get("tokens", row).astype(np.int64), (store.get("flags", row) & FLAG_PROTECTED).astype(bool)


def run_child(store: StepStore, child: str, seed: int = 1) -> int:
    """Run the sampler from a child's edit record, appending its records; returns how many."""
    sampler = _sampler()
    edit = store.record(store.branches[child].rows[0])
    settings = GenerationSettings(length=N, steps=STEPS, seed=seed)
    if edit.iteration >= STEPS:
        return 0
    protected = (edit.flags & FLAG_PROTECTED).astype(bool)
    start = StartState(
        tokens=edit.tokens.astype(np.int64), iteration=edit.iteration, protected=protected,
        edited=(edit.flags & FLAG_EDITED).astype(bool), emit_initial=False,
    )
    n = 0
    for rec in sampler.run(settings, start):
        store.append_record(rec, child)
        n += 1
    return n


def fork_edited(store: StepStore, parent: str, record: int, protect: slice = slice(0, 4)) -> str:
    """Fork with positions 0..3 replaced by 'the ' and protected, and 10..13 masked."""
    vocab = _sampler().vocab
    tokens, protected = source_state(store, parent, record)
    edited = np.zeros(N, bool)
    for op, a, b, text in (("unprotect", 0, N, None), ("replace", 0, 4, "the "), ("protect", protect.start, protect.stop, None),
                           ("mask", 10, 14, None)):
        ids = encode_text(text, vocab) if text else None
        tokens, protected, changed = apply_edit(tokens, protected, op, a, b, mask_id=vocab.mask_id, text_ids=ids)
        edited |= changed
    child = store.fork(parent, record, tokens, protected, edited, {"seed": 1}, label="child",
                       edits=[{"op": "replace", "start": 0, "stop": 4, "text": "the "}])
    return child.id


# -- forking -------------------------------------------------------------------------------
def test_fork_leaves_the_parent_byte_identical_also_after_the_child_runs() -> None:
    store, _ = root_store()
    parent_rows = list(store.branches["0"].rows)
    snap = snapshot(store, parent_rows)
    child = fork_edited(store, "0", 3)
    assert_same_bytes(store, parent_rows, snap)
    assert run_child(store, child) > 0
    assert_same_bytes(store, parent_rows, snap)
    assert store.branches["0"].rows == parent_rows


def test_the_edit_record_holds_the_edited_state() -> None:
    store, _ = root_store()
    mask_id = store.mask_id
    src = store.record(store.history("0")[3])
    assert src.kind == "prediction"
    version = store.version
    child = fork_edited(store, "0", 3)
    assert store.version > version
    edit = store.record(store.branches[child].rows[0])
    assert edit.kind == "edit" and KINDS.index("edit") == len(KINDS) - 1
    assert edit.iteration == continue_point(src.kind, src.iteration)
    vocab = _sampler().vocab
    assert vocab.decode(edit.tokens[:4]) == "the " and (edit.tokens[10:14] == mask_id).all()
    assert edit.n_masked == int((edit.tokens == mask_id).sum())
    assert ((edit.flags & FLAG_MASKED) != 0).tolist() == (edit.tokens == mask_id).tolist()
    assert (edit.flags[:4] & FLAG_PROTECTED).all() and not (edit.flags[4:] & FLAG_PROTECTED).any()
    changed = edit.tokens != src.tokens
    assert (((edit.flags & FLAG_EDITED) != 0) == changed).all()
    stale = changed | (edit.tokens == mask_id)
    assert np.isnan(edit.confidence[stale].astype(np.float32)).all() and (edit.top_ids[stale] == 0).all()
    keep = ~stale
    assert np.array_equal(edit.confidence[keep], src.confidence[keep])  # untouched positions keep their beliefs
    assert np.array_equal(edit.top_ids[keep], src.top_ids[keep])
    assert (edit.target_masks, edit.forward_passes) == (src.target_masks, src.forward_passes)
    assert store.branches[child].edits[0]["text"] == "the " and store.branches[child].label == "child"


def test_fork_refuses_bad_input() -> None:
    store, _ = root_store()
    tokens, protected = source_state(store, "0", 2)
    none = np.zeros(N, bool)
    with pytest.raises(KeyError):
        store.fork("7", 0, tokens, protected, none, {})
    with pytest.raises(IndexError):
        store.fork("0", 99, tokens, protected, none, {})
    with pytest.raises(ValueError, match="shape"):
        store.fork("0", 2, tokens[:5], protected, none, {})
    masked_protected = protected.copy()
    masked_protected[tokens == store.mask_id] = True
    with pytest.raises(ValueError, match="protected position is masked"):
        store.fork("0", 2, tokens, masked_protected, none, {})
    assert store.branch_order == ["0"]


def test_protected_positions_never_change_in_the_child_run() -> None:
    store, _ = root_store()
    child = fork_edited(store, "0", 2, protect=slice(0, 12))  # 'the ' plus whatever is visible in 4..11
    rows = store.branches[child].rows
    assert run_child(store, child) > 0
    edit = store.record(rows[0])
    protected = (edit.flags & FLAG_PROTECTED).astype(bool)
    assert protected.sum() >= 4
    for row in store.branches[child].rows:
        rec = store.record(row)
        assert np.array_equal(rec.tokens[protected], edit.tokens[protected]), rec.kind
        assert (rec.flags[protected] & FLAG_PROTECTED).all()


def test_the_child_run_follows_the_edit_record_without_an_initial() -> None:
    store, _ = root_store()
    child = fork_edited(store, "0", 4)  # a remask at iteration 1: restart at 2
    run_child(store, child)
    kinds = [store.kind(r) for r in store.branches[child].rows]
    assert kinds == ["edit", "prediction", "remask", "prediction", "final"]
    its = [int(store.get("iteration", r)) for r in store.branches[child].rows]
    assert its == [2, 2, 2, 3, 3]
    first_prediction = store.record(store.branches[child].rows[1])
    edit = store.record(store.branches[child].rows[0])
    was_masked = edit.tokens == store.mask_id
    assert (((first_prediction.flags & 2) != 0) == was_masked).all()  # FLAG_NEW relative to the edit record


def test_history_is_the_parents_history_up_to_the_fork_then_the_childs_own() -> None:
    store, _ = root_store()
    root = store.history("0")
    assert root.tolist() == store.branches["0"].rows
    child = fork_edited(store, "0", 4)
    run_child(store, child)
    hist = store.history(child)
    assert hist.tolist() == root[:5].tolist() + store.branches[child].rows
    assert store.kind(int(hist[5])) == "edit"
    # A fork of a fork indexes the child's HISTORY: record 6 is the child's first prediction.
    grand = fork_edited(store, child, 6)
    run_child(store, grand, seed=2)
    assert store.history(grand).tolist() == hist[:7].tolist() + store.branches[grand].rows
    assert store.history_length(grand) == len(store.history(grand))
    assert store.children("0") == [child] and store.children(child) == [grand] and store.children(grand) == []


def test_delete_removes_descendants_and_ids_are_never_reused(tmp_path) -> None:
    store, _ = root_store()
    a = fork_edited(store, "0", 2)
    b = fork_edited(store, a, 3)
    c = fork_edited(store, "0", 1)
    version = store.version
    assert store.delete(a) == [a, b]
    assert store.version > version
    assert store.branch_order == ["0", c]
    fresh = store.new_branch({})
    assert fresh.id not in (a, b, c) and int(fresh.id) == 4
    store.rename(c, "kept")
    assert store.branches[c].label == "kept"
    with pytest.raises(KeyError):
        store.delete(a)
    # Deleting the newest branch (a second root, with no rows) and reopening still does
    # not hand out its id again.
    assert store.delete(fresh.id) == [fresh.id]
    with pytest.raises(ValueError, match="only root"):
        store.delete("0")
    save_session(tmp_path / "s.dpgviz", store, _sampler().vocab)
    with open_session(tmp_path / "s.dpgviz") as s:
        assert s.store.branch_order == ["0", c] and s.store.branches[c].label == "kept"
        d = fork_edited(s.store, c, 2)
        assert int(d) == int(fresh.id) + 1


def test_a_second_root_may_be_deleted_but_not_the_last() -> None:
    store, _ = root_store()
    other = store.new_branch({}, label="run 2")
    assert store.delete("0") == ["0"]
    with pytest.raises(ValueError, match="only root"):
        store.delete(other.id)


def test_mask_id_is_found_from_the_records_when_not_given() -> None:
    store, _ = root_store()
    bare = StepStore(store.layout)
    bare.new_branch({})
    bare.append_record(store.record(store.branches["0"].rows[0]), "0")
    assert bare.mask_of() == _sampler().vocab.mask_id


# -- session files --------------------------------------------------------------------------
def test_edits_labels_and_edit_records_survive_a_save(tmp_path) -> None:
    store, _ = root_store()
    child = fork_edited(store, "0", 3)
    run_child(store, child)
    path = save_session(tmp_path / "s.dpgviz", store, _sampler().vocab)
    with open_session(path) as s:
        assert s.store.tree() == store.tree()
        assert s.store.kind(s.store.branches[child].rows[0]) == "edit"
        assert s.rows(child).tolist() == store.history(child).tolist()
        assert s.store.mask_id == _sampler().vocab.mask_id


def test_a_file_without_edits_in_its_tree_still_opens(tmp_path) -> None:
    from test_session import _rewrite_header

    store, _ = root_store()
    child = fork_edited(store, "0", 3)
    path = save_session(tmp_path / "s.dpgviz", store, _sampler().vocab)

    def drop(header: dict) -> None:
        for b in header["tree"]:
            del b["edits"]

    _rewrite_header(path, drop)
    with open_session(path) as s:
        assert s.store.branches[child].edits == [] and s.store.branches[child].label == "child"


def test_a_tree_forking_from_past_the_parents_history_is_refused(tmp_path) -> None:
    from test_session import _rewrite_header

    from dpgviz.store.session import SessionError

    store, _ = root_store()
    fork_edited(store, "0", 3)
    path = save_session(tmp_path / "s.dpgviz", store, _sampler().vocab)
    _rewrite_header(path, lambda h: h["tree"][1].__setitem__("fork_record", 9))
    with pytest.raises(SessionError, match="forks from missing record"):
        open_session(path)


# -- edit operations -------------------------------------------------------------------------
M = 99  # mask id of these small examples


def test_mask_skips_protected_positions_and_refuses_an_all_protected_range() -> None:
    tokens, protected = np.arange(8), np.zeros(8, bool)
    protected[2] = True
    t, p, changed = apply_edit(tokens, protected, "mask", 1, 4, mask_id=M)
    assert t.tolist() == [0, M, 2, M, 4, 5, 6, 7] and changed.tolist() == [0, 1, 0, 1, 0, 0, 0, 0]
    assert np.array_equal(p, protected) and tokens.tolist() == list(range(8))  # inputs untouched
    with pytest.raises(EditError, match="protected"):
        apply_edit(tokens, protected, "mask", 2, 3, mask_id=M)


def test_unmask_puts_back_the_predicted_tokens() -> None:
    tokens = np.array([0, M, M, 3, M])
    predicted = np.array([0, 11, 12, 3, 14])
    t, _, changed = apply_edit(tokens, np.zeros(5, bool), "unmask", 0, 3, mask_id=M, predicted=predicted)
    assert t.tolist() == [0, 11, 12, 3, M] and changed.tolist() == [0, 1, 1, 0, 0]
    with pytest.raises(EditError, match="no prediction"):
        apply_edit(tokens, np.zeros(5, bool), "unmask", 0, 3, mask_id=M)


def test_replace_same_length_replaces_shorter_masks_the_rest_longer_is_refused() -> None:
    tokens, none = np.arange(6), np.zeros(6, bool)
    assert apply_edit(tokens, none, "replace", 1, 3, mask_id=M, text_ids=np.array([7, 8]))[0].tolist() == [0, 7, 8, 3, 4, 5]
    assert apply_edit(tokens, none, "replace", 1, 4, mask_id=M, text_ids=np.array([7]))[0].tolist() == [0, 7, M, M, 4, 5]
    with pytest.raises(EditError, match="does not fit"):
        apply_edit(tokens, none, "replace", 1, 2, mask_id=M, text_ids=np.array([7, 8]))
    protected = none.copy()
    protected[2] = True
    with pytest.raises(EditError, match=r"position 2 .* protected"):
        apply_edit(tokens, protected, "replace", 1, 3, mask_id=M, text_ids=np.array([7, 8]))


def test_protect_skips_masked_positions_and_unprotect_clears() -> None:
    tokens = np.array([0, M, 2, M])
    _, p, changed = apply_edit(tokens, np.zeros(4, bool), "protect", 0, 4, mask_id=M)
    assert p.tolist() == [True, False, True, False] and not changed.any()
    with pytest.raises(EditError, match="masked"):
        apply_edit(tokens, np.zeros(4, bool), "protect", 1, 2, mask_id=M)
    assert not apply_edit(tokens, p, "unprotect", 0, 4, mask_id=M)[1].any()


@pytest.mark.parametrize("start, stop", [(-1, 2), (3, 3), (4, 2), (0, 9)])
def test_ranges_outside_the_record_are_refused(start: int, stop: int) -> None:
    with pytest.raises(EditError, match="not inside 0:8"):
        apply_edit(np.arange(8), np.zeros(8, bool), "mask", start, stop, mask_id=M)


def test_unknown_op_is_refused() -> None:
    with pytest.raises(EditError, match="unknown edit 'swap'"):
        apply_edit(np.arange(8), np.zeros(8, bool), "swap", 0, 2, mask_id=M)


def test_parse_range_and_replace() -> None:
    assert parse_range("3:7", 10) == (3, 7)
    assert parse_range("3:", 10) == (3, 10) and parse_range(":2", 10) == (0, 2)
    for bad in ("3", "a:b", "5:5", "8:12"):
        with pytest.raises(EditError):
            parse_range(bad, 10)
    assert parse_replace("4:a:b") == (4, "a:b")
    for bad in ("x:hi", "4:", "4", "-1:hi"):
        with pytest.raises(EditError):
            parse_replace(bad)


def test_encode_text_names_every_character_outside_the_vocabulary() -> None:
    vocab = _sampler().vocab
    assert vocab.decode(encode_text("the \u2588", vocab)) == "the \u2588"
    with pytest.raises(EditError) as info:
        encode_text("caf\u00e9 \u20ac5 \u00e9", vocab)
    assert str(info.value) == "characters not in the model's vocabulary: '\u00e9', '\u20ac', '5'"


def test_predicted_tokens_of_each_kind() -> None:
    store, _ = root_store()
    hist = store.history("0")
    kinds = [store.kind(int(r)) for r in hist]
    assert kinds[:4] == ["initial", "prediction", "remask", "prediction"]
    assert predicted_tokens(store, "0", 0) is None  # a fresh run's initial: nothing predicted yet
    assert np.array_equal(predicted_tokens(store, "0", 1), store.get("tokens", int(hist[1])))
    assert np.array_equal(predicted_tokens(store, "0", 2), store.get("tokens", int(hist[1])))  # remask: its prediction
    assert np.array_equal(predicted_tokens(store, "0", -1), store.get("tokens", int(hist[-1])))  # final
    child = fork_edited(store, "0", 2)
    assert np.array_equal(predicted_tokens(store, child, 3), store.get("tokens", int(hist[1])))  # edit: before the fork


# -- random sequences ---------------------------------------------------------------------------
class BranchMachine(RuleBasedStateMachine):
    """Random edits, forks (with runs), deletes, scrubbing and save/open round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.store, _ = root_store()
        self.vocab = _sampler().vocab
        self.mask_id = self.vocab.mask_id
        self.folder = Path(tempfile.mkdtemp(prefix="branches-"))
        self.sessions: list = []
        self.snap = snapshot(self.store, np.arange(len(self.store)))
        self.branch, self.record = "0", 0
        self._load_record()

    def teardown(self) -> None:
        self.store = None
        for s in self.sessions:
            s.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _load_record(self) -> None:
        self.tokens, self.protected = source_state(self.store, self.branch, self.record)
        self.edited = np.zeros(N, bool)
        self.edits: list[dict] = []

    def _extend_snapshot(self) -> None:
        old = len(self.snap["tokens"])
        extra = snapshot(self.store, np.arange(old, len(self.store)))
        self.snap = {k: np.concatenate([self.snap[k], extra[k]]) for k in self.snap}

    @rule(k=st.integers(0, 10_000))
    def scrub(self, k: int) -> None:
        self.record = k % self.store.history_length(self.branch)
        self._load_record()

    @rule(k=st.integers(0, 10_000))
    def switch_branch(self, k: int) -> None:
        self.branch = self.store.branch_order[k % len(self.store.branch_order)]
        self.record = self.store.history_length(self.branch) - 1
        self._load_record()

    @rule(op=st.sampled_from(["mask", "unmask", "replace", "protect", "unprotect"]), a=st.integers(0, N - 1),
          length=st.integers(1, 6), text=st.text(alphabet="abc \n", min_size=1, max_size=6))
    def edit(self, op: str, a: int, length: int, text: str) -> None:
        b = min(N, a + length)
        before = (self.tokens.copy(), self.protected.copy())
        ids = encode_text(text[: b - a], self.vocab) if op == "replace" else None
        predicted = predicted_tokens(self.store, self.branch, self.record)
        try:
            self.tokens, self.protected, changed = apply_edit(
                self.tokens, self.protected, op, a, b, mask_id=self.mask_id, text_ids=ids, predicted=predicted
            )
        except EditError:
            assert np.array_equal(self.tokens, before[0]) and np.array_equal(self.protected, before[1])
            return
        self.edited |= changed
        self.edits.append({"op": op, "start": a, "stop": b, "text": text if op == "replace" else None})
        assert not (self.protected & (self.tokens == self.mask_id)).any()

    @rule(run=st.booleans(), seed=st.integers(0, 3))
    def fork(self, run: bool, seed: int) -> None:
        child = self.store.fork(self.branch, self.record, self.tokens, self.protected, self.edited,
                                {"seed": seed}, label=f"c{seed}", edits=self.edits)
        if run:
            run_child(self.store, child.id, seed)
        self._extend_snapshot()
        self.branch = child.id
        self.record = self.store.history_length(child.id) - len(child.rows)  # the edit record
        self._load_record()

    @precondition(lambda self: len(self.store.branch_order) > 1)
    @rule(k=st.integers(0, 10_000))
    def delete(self, k: int) -> None:
        victim = self.store.branch_order[1 + k % (len(self.store.branch_order) - 1)]  # never the first root
        removed = self.store.delete(victim)
        assert victim in removed and not set(removed) & set(self.store.branch_order)
        if self.branch in removed:
            self.branch = "0"
            self.record = self.store.history_length("0") - 1
            self._load_record()

    @rule()
    def save_and_open(self) -> None:
        path = self.folder / f"s{len(self.sessions)}.dpgviz"
        save_session(path, self.store, self.vocab)
        session = open_session(path)
        self.sessions.append(session)
        fresh = session.store
        assert fresh.tree() == self.store.tree()
        for b in self.store.branch_order:
            assert fresh.history(b).tolist() == self.store.history(b).tolist()
        self.store = fresh  # carry on in the memory-mapped store
        self._load_record()

    @invariant()
    def rows_never_change(self) -> None:
        assert_same_bytes(self.store, np.arange(len(self.store)), self.snap)

    @invariant()
    def history_composes(self) -> None:
        for b in self.store.branch_order:
            branch = self.store.branches[b]
            own = self.store.rows(b).tolist()
            if branch.parent is None:
                assert self.store.history(b).tolist() == own
            else:
                assert branch.parent in self.store.branches
                want = self.store.history(branch.parent)[: branch.fork_record + 1].tolist() + own
                assert self.store.history(b).tolist() == want

    @invariant()
    def protected_never_change_in_children(self) -> None:
        for b in self.store.branch_order:
            rows = self.store.branches[b].rows
            if self.store.branches[b].parent is None or not rows:
                continue
            edit = self.store.record(rows[0])
            assert edit.kind == "edit"
            protected = (edit.flags & FLAG_PROTECTED).astype(bool)
            tokens = self.store.column("tokens")[rows][:, protected]
            assert (tokens == edit.tokens[protected]).all()


BranchMachine.TestCase.settings = hyp_settings(max_examples=25, stateful_step_count=12, deadline=None)
test_branch_machine = BranchMachine.TestCase
