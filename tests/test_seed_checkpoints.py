"""Checkpoints shaped like the seed trainer's: loaded safely, vocabulary and files found its way.

The trainer pickles its own dataclasses (`train_utils.StickyStageConfig`) next to the
weights. These tests build such files without the trainer: the dataclass lives in a
throwaway module that is removed from `sys.modules` before loading, so nothing could
import it, and the file also carries a tensor `best_val_loss`, a `training_context`
with tensors and an optimizer state.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from test_cli import run
from test_engine import VOCAB, make_checkpoint

from dpgviz.core.discovery import find_checkpoints, find_meta, peek_training_stats
from dpgviz.core.settings import GenerationSettings
from dpgviz.engine.checkpoint import CheckpointError, StandIn, load_model
from dpgviz.ipc.runner import run_via_worker

MODULE = "train_utils"  # the seed's module name; nothing by that name is importable here
STAND_IN_LINE = "config: train_utils.StickyStageConfig (not loaded; stored as data)"
MARKER = Path("/tmp/dpgviz-seed-pwned")

_TRAINER_SOURCE = '''
from dataclasses import dataclass

FLAG = []

@dataclass
class StickyStageConfig:
    val_loss_stale_count: int
    target_masked_ratio: float
    p1_probability: float
    p2_probability: float

    def __setstate__(self, state):  # would prove the real class ran, were it ever used
        FLAG.append("setstate")
        self.__dict__.update(state)

@dataclass
class RandomStageConfig:
    val_loss_stale_count: int
    max_masked_ratio: float

def make_config(*args):
    FLAG.append("called")
    return args
'''


def trainer_module() -> types.ModuleType:
    """A stand-in for the seed's train_utils, registered so pickle can save its instances."""
    module = types.ModuleType(MODULE)
    sys.modules[MODULE] = module  # before exec: @dataclass looks its module up there
    exec(_TRAINER_SOURCE, module.__dict__)
    return module


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class _CallsFunction:
    def __reduce__(self):
        return (sys.modules[MODULE].make_config, (1, 2))


def seed_checkpoint(path: Path, plain: Path, config: object = "sticky", iter_num: int = 30, **model_args) -> Path:
    """Write the weights of `plain` in the trainer's layout, with its extra entries, to `path`."""
    base = torch.load(plain, weights_only=True)
    module = trainer_module()
    try:
        if config == "sticky":
            config = module.StickyStageConfig(3, 0.6, 0.3, 0.1)
        elif config == "random":
            config = module.RandomStageConfig(2, 0.9)
        elif config == "calls":
            config = _CallsFunction()
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.ones(1, 4)).sum().backward()
        optimizer.step()  # so the state holds exp_avg tensors, as a real run's does
        checkpoint = {
            "model": base["model"],
            "optimizer": optimizer.state_dict(),
            "model_args": {**base["model_args"], **model_args},
            "iter_num": iter_num,
            "best_val_loss": torch.tensor(2.3456),
            "config": config,
            "training_context": {
                "current_stage": 1,
                "val_loss_stale_count": 0,
                "best_val_loss_for_stage": torch.tensor(2.5),
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)
    finally:
        del sys.modules[MODULE]  # from here on, nothing could import the trainer's classes
    assert importlib.util.find_spec(MODULE) is None
    return path


def seed_tree(root: Path, name: str = "ckpt_unmasking_30.pt") -> Path:
    """The seed's layout: root/out/<name> and root/data/shakespeare_char/meta.pkl."""
    plain = make_checkpoint(root / "plain")
    data = root / "data" / "shakespeare_char"
    data.mkdir(parents=True, exist_ok=True)
    (plain.parent / "meta.pkl").rename(data / "meta.pkl")
    return seed_checkpoint(root / "out" / name, plain)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return seed_tree(tmp_path_factory.mktemp("seed"))


# -- loading --------------------------------------------------------------------------------
@pytest.mark.parametrize("config,stood_for", [("sticky", "StickyStageConfig"), ("random", "RandomStageConfig")])
def test_seed_checkpoint_loads_with_same_logits_as_plain(tmp_path, config, stood_for):
    plain = make_checkpoint(tmp_path / "plain")
    path = seed_checkpoint(tmp_path / "plain" / "ckpt_unmasking_30.pt", plain, config)
    seed, reference = load_model(path, device="cpu"), load_model(plain, device="cpu")
    idx = torch.as_tensor(VOCAB.encode("Speak, speak.\nAll:\u2588\u2588 me"))[None]
    with torch.no_grad():
        assert torch.equal(seed.model(idx), reference.model(idx))
    assert seed.iter_num == 30 and seed.best_val_loss == pytest.approx(2.3456, abs=1e-6)
    assert seed.stand_ins == (f"config: train_utils.{stood_for} (not loaded; stored as data)",)
    info = seed.info()
    assert info.iter_num == 30 and info.stand_ins == seed.stand_ins
    assert MODULE not in sys.modules


def test_stand_in_keeps_fields_as_data_and_never_uses_the_real_class(tmp_path):
    plain = make_checkpoint(tmp_path / "plain")
    path = seed_checkpoint(tmp_path / "ckpt.pt", plain)
    module = trainer_module()  # importable now: the loader must still not touch it
    try:
        from dpgviz.engine.checkpoint import read_checkpoint

        config = read_checkpoint(path)["config"]
        assert module.FLAG == []
    finally:
        del sys.modules[MODULE]
    assert isinstance(config, StandIn) and not isinstance(config, module.StickyStageConfig)
    assert config.fields() == {
        "val_loss_stale_count": 3, "target_masked_ratio": 0.6, "p1_probability": 0.3, "p2_probability": 0.1,
    }


# -- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config,needle",
    [
        (_Boom(), "posix.system"),
        ("calls", "train_utils.make_config, a function"),
    ],
)
def test_code_in_config_is_refused_and_runs_nothing(tmp_path, config, needle):
    MARKER.unlink(missing_ok=True)
    plain = make_checkpoint(tmp_path / "plain")
    path = seed_checkpoint(tmp_path / "out" / "ckpt_unmasking_30.pt", plain, config)
    module = trainer_module()  # importable during the load, so a call would show in its FLAG
    try:
        with pytest.raises(CheckpointError, match="not a loadable checkpoint") as err:
            load_model(path, device="cpu")
    finally:
        del sys.modules[MODULE]
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not MARKER.exists() and module.FLAG == []


@pytest.mark.parametrize("reduce_to", [(eval, ("1+1",)), (exec, ("import os",))])
def test_builtins_stay_refused(tmp_path, reduce_to):
    class Payload:
        def __reduce__(self):
            return reduce_to

    plain = make_checkpoint(tmp_path / "plain")
    base = torch.load(plain, weights_only=True)
    path = tmp_path / "ckpt.pt"
    torch.save({**base, "config": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"builtins\.\w+, module builtins is never loaded"):
        load_model(path, device="cpu")


def test_remasking_and_causal_seed_checkpoints_are_refused(tmp_path):
    plain = make_checkpoint(tmp_path / "plain")
    binary = seed_checkpoint(tmp_path / "ckpt_remasking_binary_30.pt", plain, binary_classification=True)
    with pytest.raises(CheckpointError, match="remasking classifier"):
        load_model(binary, device="cpu")
    causal = seed_checkpoint(tmp_path / "ckpt_unmasking_31.pt", plain, attention_type="causal")
    with pytest.raises(CheckpointError, match="causal"):
        load_model(causal, device="cpu")
    data = causal.read_bytes()
    causal.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut short|not a checkpoint"):
        load_model(causal, device="cpu")


# -- vocabulary search ----------------------------------------------------------------------
def _meta(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(VOCAB.to_meta(), fh)
    return path


def test_vocabulary_search_order(tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "root", tmp_path / "cwd"
    ckpt = root / "out" / "ckpt_unmasking_30.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.touch()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    only = _meta(root / "data" / "tiny_words" / "meta.pkl")
    assert find_meta(ckpt) == only  # 4. the only data/*/meta.pkl
    _meta(elsewhere / "data" / "other" / "meta.pkl")
    assert find_meta(ckpt) is None  # two data sets are ambiguous
    parents_default = _meta(root / "data" / "shakespeare_char" / "meta.pkl")
    assert find_meta(ckpt) == parents_default  # 3. the seed's default, under the checkpoint's parents
    cwd_default = _meta(elsewhere / "data" / "shakespeare_char" / "meta.pkl")
    assert find_meta(ckpt) == cwd_default  # ... and under the current folder first
    named = _meta(root / "data" / "tiny_words" / "meta.pkl")
    assert find_meta(ckpt, "tiny_words") == named  # 2. the data set the checkpoint names
    assert find_meta(ckpt, "missing_set") == cwd_default
    beside = _meta(ckpt.with_name("meta.pkl"))
    assert find_meta(ckpt, "tiny_words") == beside  # 1. beside the checkpoint wins


def test_dataset_named_in_a_config_dict_is_used(tmp_path, monkeypatch):
    plain = make_checkpoint(tmp_path / "plain")
    (plain.parent / "meta.pkl").unlink()
    base = torch.load(plain, weights_only=True)
    path = tmp_path / "run" / "out" / "ckpt.pt"
    path.parent.mkdir(parents=True)
    torch.save({**base, "config": {"dataset": "words", "batch_size": 8}}, path)
    _meta(tmp_path / "run" / "data" / "chars" / "meta.pkl")
    named = _meta(tmp_path / "run" / "data" / "words" / "meta.pkl")
    monkeypatch.chdir(tmp_path)
    assert load_model(path, device="cpu").meta_path == named


def test_no_vocabulary_lists_the_places_searched(tmp_path, monkeypatch):
    plain = make_checkpoint(tmp_path / "plain")
    (plain.parent / "meta.pkl").unlink()
    path = seed_checkpoint(tmp_path / "root" / "out" / "ckpt_unmasking_30.pt", plain)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "--meta" in message
    assert str(path.with_name("meta.pkl")) in message
    assert str(tmp_path / "data" / "shakespeare_char" / "meta.pkl") in message
    assert str(tmp_path / "root" / "data" / "shakespeare_char" / "meta.pkl") in message
    assert "data/*/meta.pkl" in message


# -- discovery ------------------------------------------------------------------------------
def test_trainer_files_are_listed_by_iteration_with_their_numbers(tmp_path):
    plain = make_checkpoint(tmp_path / "plain")
    out = tmp_path / "out"
    for it in (5, 100, 30):
        seed_checkpoint(out / f"ckpt_unmasking_{it}.pt", plain, iter_num=it)
    seed_checkpoint(out / "ckpt_unmasking_1.pt", plain, iter_num=50)  # the file's number wins over its name
    base = torch.load(plain, weights_only=True)
    torch.save(base, out / "ckpt.pt")
    torch.save(base, out / "ckpt_remasking_7.pt")  # no iter_num inside: the trainer's name gives it
    entries = find_checkpoints(out)[1:]
    assert [(e.path.name, e.iter_num) for e in entries] == [
        ("ckpt_unmasking_5.pt", 5), ("ckpt_remasking_7.pt", 7), ("ckpt_unmasking_30.pt", 30),
        ("ckpt_unmasking_1.pt", 50), ("ckpt_unmasking_100.pt", 100), ("ckpt.pt", None),
    ]
    assert entries[0].best_val_loss == pytest.approx(2.3456, abs=1e-6)
    assert entries[0].label() == "out/ckpt_unmasking_5.pt  (iter 5, val 2.346)"
    assert entries[1].label() == "out/ckpt_remasking_7.pt  (iter 7)"
    assert entries[-1].label() == "out/ckpt.pt" and entries[-1].best_val_loss is None


def test_peek_reads_numbers_without_running_anything(tmp_path):
    MARKER.unlink(missing_ok=True)
    plain = make_checkpoint(tmp_path / "plain")
    evil = seed_checkpoint(tmp_path / "ckpt_unmasking_7.pt", plain, _Boom())
    assert peek_training_stats(evil) == (30, pytest.approx(2.3456, abs=1e-6))
    assert not MARKER.exists()
    (tmp_path / "junk.pt").write_text("not a zip")
    assert peek_training_stats(tmp_path / "junk.pt") == (None, None)


# -- the commands and the app's worker, run from the seed's tree ----------------------------
def test_generate_inspect_and_models_from_the_seed_tree(tree):
    root = tree.parent.parent
    out = run("generate", "--model", "out/ckpt_unmasking_30.pt", "--length", "40", "--steps", "3", "--device", "cpu", cwd=root)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.rstrip("\n")) == 40
    out = run("inspect", "--model", "out/ckpt_unmasking_30.pt", "--text", "hear me", "--json", "--device", "cpu", cwd=root)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["positions"]) == 7
    out = run("models", "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    mine = [m for m in json.loads(out.stdout)["models"] if m["path"] == "out/ckpt_unmasking_30.pt"]
    assert mine and mine[0]["iter_num"] == 30 and mine[0]["best_val_loss"] == pytest.approx(2.3456, abs=1e-6)
    assert mine[0]["stand_ins"] == [STAND_IN_LINE]
    assert mine[0]["meta"].endswith(str(Path("data") / "shakespeare_char" / "meta.pkl"))
    text = run("models", cwd=root)
    assert text.returncode == 0, text.stderr
    line = next(s for s in text.stdout.splitlines() if s.endswith("out/ckpt_unmasking_30.pt"))
    assert "iter 30" in line and "val 2.3456" in line
    assert STAND_IN_LINE in text.stdout


def test_app_worker_loads_the_seed_checkpoint(tree):
    info, store, branch, summary = run_via_worker(GenerationSettings(length=32, steps=3), tree, None, "cpu")
    assert info.iter_num == 30 and info.best_val_loss == pytest.approx(2.3456, abs=1e-6)
    assert info.stand_ins == (STAND_IN_LINE,)
    assert info.meta == str(tree.parent.parent / "data" / "shakespeare_char" / "meta.pkl")
    assert len(store.branches[branch].rows) > 0
