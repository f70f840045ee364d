"""The command line's exact forms: generate/inspect/models JSON, exit codes on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MASK = "\u2588"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli") / "out")


def test_generate_json_form(tiny):
    out = run("generate", "--model", str(tiny), "--length", "40", "--steps", "5", "--seed", "3", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    records = data["records"]
    assert [r["kind"] for r in records] == ["initial"] + ["prediction", "remask"] * 4 + ["prediction", "final"]
    assert set(records[0]) == {"iteration", "kind", "text", "masked"}
    assert records[0]["text"] == MASK * 40 and records[0]["masked"] == 40
    for r in records:
        assert len(r["text"]) == 40 and r["text"].count(MASK) == r["masked"]
    assert data["final_text"] == records[-1]["text"] and MASK not in data["final_text"]
    plain = run("generate", "--model", str(tiny), "--length", "40", "--steps", "5", "--seed", "3", "--device", "cpu")
    assert plain.stdout.rstrip("\n") == data["final_text"]  # same seed, same text, with or without --json


def test_generate_with_default_model_prints_text():
    out = run("generate", "--length", "64", "--steps", "4", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.rstrip("\n")) == 64


def test_inspect_json_form(tiny):
    out = run("inspect", "--model", str(tiny), "--text", f"hear{MASK}me", "--top", "3", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    positions = json.loads(out.stdout)["positions"]
    assert [p["pos"] for p in positions] == list(range(7))
    assert positions[0]["token"] == "h" and positions[4]["token"] is None
    for p in positions:
        assert len(p["top"]) == 3
        probs = [prob for _, prob in p["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert all(isinstance(c, str) for c, _ in p["top"])


def test_models_json_lists_default_first(tiny, tmp_path):
    out = run("models", "--models-dir", str(tiny.parent), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    models = json.loads(out.stdout)["models"]
    assert models[0]["default"] is True and models[0]["block_size"] == 1024
    assert set(models[0]) == {"name", "path", "meta", "block_size", "params", "default", "iter_num", "best_val_loss", "stand_ins"}
    mine = [m for m in models if m["path"] == str(tiny)]
    assert mine and mine[0]["default"] is False and mine[0]["block_size"] == 64 and mine[0]["meta"].endswith("meta.pkl")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["generate", "--length", "0"], "length"),
        (["generate", "--length", "5000", "--block-length", "0", "--device", "cpu"], "block size"),
        (["generate", "--length", "5000", "--block-length", "2000", "--device", "cpu"], "block size"),
        (["generate", "--temperature", "0"], "temperature"),
        (["generate", "--start-ratio", "0.1", "--end-ratio", "0.5"], "ratios"),
        (["generate", "--model", "/nonexistent/ckpt.pt", "--device", "cpu"], "does not exist"),
        (["inspect", "--text", "hello \u00e9", "--device", "cpu"], "not in the model's vocabulary"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args, needle):
    out = run(*args)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in out.stderr


def test_causal_checkpoint_is_refused_by_cli(tmp_path):
    path = make_checkpoint(tmp_path / "out", attention_type="causal")
    out = run("generate", "--model", str(path), "--length", "10", "--device", "cpu")
    assert out.returncode != 0 and "causal" in out.stderr and "Traceback" not in out.stderr


def test_default_length_is_capped_at_block_size(tiny):
    out = run("generate", "--model", str(tiny), "--steps", "3", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["final_text"]) == 64  # the tiny model's block size, not 1024


def test_each_command_is_found_in_its_module_and_the_window_imports_none() -> None:
    from dpgviz.cli import COMMAND_MODULES, MODULE_ORDER, command_module, command_named

    for name in MODULE_ORDER:  # the table lists exactly what each module registers (and `open`, the window's)
        listed = {c for c, m in COMMAND_MODULES.items() if m == name and c != "open"}
        assert listed == set(command_module(name).COMMANDS), name
    assert command_named(["--model", "generate", "-v"]) is None  # an option's value is no command
    assert command_named(["-v", "--device", "cpu", "score", "--model", "x"]) == "score"
    code = (
        "import sys\n"
        "from dpgviz.cli import parser_for\n"
        "args = parser_for(['--model', 'm', '-v']).parse_args(['--model', 'm', '-v'])\n"
        "assert args.command is None and args.model == 'm'\n"
        "print(sorted(m for m in sys.modules if m.startswith('dpgviz.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['dpgviz.cli.common']"


def test_an_unknown_command_lists_every_command() -> None:
    out = run("frobnicate")
    assert out.returncode == 2
    for name in ("generate", "worker", "bench", "score", "verify", "open"):
        assert f"'{name}'" in out.stderr


def test_the_package_version_is_the_projects() -> None:
    import tomllib

    import dpgviz

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert dpgviz.__version__ == project["version"]  # Help > About and session files say __version__
