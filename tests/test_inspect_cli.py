"""`show --position` and the overview / plots exports, through the CLI's main()."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from session_data import sampled_store

from dpgviz.cli import main
from dpgviz.core.palette import STATE_NAMES, STATE_RGB
from dpgviz.export import export_session
from dpgviz.export.plots import SERIES_RGB
from dpgviz.store import overview as ov
from dpgviz.store.session import SessionError
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    store, vocab, settings = sampled_store()
    return save_session(tmp_path_factory.mktemp("s") / "run.dpgviz", store, vocab, settings=settings.to_dict())


def test_show_position_json_has_the_agreed_form(saved, capsys):
    assert main(["show", str(saved), "--position", "7", "--branch", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    with open_session(saved) as s:
        rows = s.rows("1")
        tokens = s.store.column("tokens")[rows, 7]
        masked = tokens == s.vocab.mask_id
        table = s.vocab.strings()
        top_probs = s.store.candidates_across(rows, 7)[1].astype(np.float32)
    assert doc["position"] == 7 and len(doc["history"]) == len(rows)
    keys = ["record", "iteration", "kind", "token", "state", "p", "entropy", "score", "top"]
    for i, h in enumerate(doc["history"]):
        assert list(h) == keys and h["record"] == i and h["state"] in STATE_NAMES
        assert h["token"] == (None if masked[i] else table[tokens[i]])
        assert (h["top"] == []) == (not top_probs[i].any())
        probs = [p for _, p in h["top"]]
        assert probs == sorted(probs, reverse=True)
        if h["top"]:  # the stored candidates, in probability order
            assert probs[0] == float(str(top_probs[i].max()))  # float32's shortest repr (issue 31)


def test_show_position_table_and_bad_positions(saved, capsys):
    assert main(["show", str(saved), "--position", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "branch 0, position 0" and out[1].split()[:4] == ["record", "iter", "kind", "state"]
    assert len(out) == 2 + 17 and out[2].split()[:5] == ["0", "0", "initial", "masked", "\u2588"]
    for bad in ("64", "-1"):
        assert main(["show", str(saved), "--position", bad]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"dpgviz: position {bad} is outside the sequence (positions 0..63)"
    assert main(["show", str(saved)]) == 0  # the plain form still prints the summary
    assert "final text" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["mask-state", "confidence", "entropy", "changed", "order"])
def test_export_overview_png(saved, tmp_path, mode):
    out = tmp_path / f"{mode}.png"
    assert main(["export", str(saved), "--format", "overview", "--mode", mode, "--branch", "1", "--out", str(out)]) == 0
    im = np.asarray(Image.open(out).convert("RGB"))
    with open_session(saved) as s:
        grid = ov.overview_image(s.store, s.rows("1"), mode, s.vocab.size)
    assert grid.shape == (18, 64, 3)
    scale = 600 // 64  # 64 positions are scaled up 9x towards 600 px
    h, w = 18 * scale, 64 * scale
    assert im.shape[0] > h and im.shape[1] >= w
    # The grid sits under the caption at (MARGIN_PX, MARGIN_PX + line): compare it pixel for pixel.
    top = 8 + 18
    np.testing.assert_array_equal(im[top : top + h : scale, 8 : 8 + w : scale], grid)
    if mode == "mask-state":
        assert (grid[0] == STATE_RGB[2]).all()  # record 0: all masked


def test_export_plots_png(saved, tmp_path):
    out = tmp_path / "plots.png"
    assert main(["export", str(saved), "--format", "plots", "--out", str(out)]) == 0
    im = Image.open(out)
    assert im.format == "PNG" and im.size == (972, 648)
    pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    # each series' line colour is drawn somewhere
    for rgb in SERIES_RGB.values():
        assert (pixels == rgb).all(axis=1).any()


def test_export_png_in_a_history_mode_and_refuses_an_unknown_mode(saved, tmp_path, capsys):
    """Every registered mode draws in a PNG (core.color_modes: the history modes too, once only the
    overview's); an unknown one is refused before anything is written."""
    out = tmp_path / "x.png"
    assert main(["export", str(saved), "--format", "png", "--mode", "order", "--out", str(out)]) == 0
    assert out.exists()
    assert main(["export", str(saved), "--format", "png", "--mode", "mask-state", "--out", str(out)]) == 0  # alias
    bad = tmp_path / "bad.png"
    with pytest.raises(SystemExit):
        main(["export", str(saved), "--format", "png", "--mode", "bogus", "--out", str(bad)])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err and not bad.exists()
    with open_session(saved) as s, pytest.raises(SessionError):
        export_session(s, "overview", tmp_path / "y.png", mode="bogus")
