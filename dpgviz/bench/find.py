"""`dpgviz bench find`: what Find (Ctrl+F) costs at 65,536 tokens, next to a step switch.

    xvfb-run -a -s "-screen 0 1600x1000x24" python main.py bench find --length 65536 --json

A run whose text is English (`text_store`: a synthetic run, bench.synthetic, with its
tokens replaced by a passage repeated to the length, masks where the run had them), so
queries match as often as in real text. It measures, medians in milliseconds:

    search_ms           app.find re-searching a record not searched before (what a step
                        switch with an active query adds): the text index (a gather by
                        token id), the search, and the canvas's marks; per query, from a
                        rare word to a single letter
    step_switch_ms      App.update (the Python half of a frame) after moving to another
                        record, in the real window: {"no_query", "query"} with no search
                        and with "the" searched (tinted on the canvas, ticked on the overview)
    render_ms           render_dearpygui_frame of those frames (Mesa under Xvfb: the floor)

Prints numbers; asserts nothing. The window part needs a display (`--no-window` skips it).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

# Romeo and Juliet, the Prologue (public domain): every character is in the default model's vocabulary.
PASSAGE = (
    "Two households, both alike in dignity,\nIn fair Verona, where we lay our scene,\n"
    "From ancient grudge break to new mutiny,\nWhere civil blood makes civil hands unclean.\n"
    "From forth the fatal loins of these two foes\nA pair of star-cross'd lovers take their life;\n"
    "Whose misadventured piteous overthrows\nDo with their death bury their parents' strife.\n"
)
QUERIES = ("Verona", "the", "e", "xyzzy")  # rare, common, a letter (thousands of matches), none


def text_store(length: int, steps: int, text: str = PASSAGE, vocab: Vocabulary | None = None) -> StepStore:
    """A synthetic run of `steps` iterations over `length` tokens whose unmasked tokens read `text`
    (repeated to the length): position p holds text[p % len(text)] wherever it is not masked."""
    vocab = vocab or synthetic_vocab()
    store = synthetic_store(length, steps, vocab=vocab)
    ids = vocab.encode(text)
    want = np.resize(ids, length).astype(store.columns["tokens"].dtype)  # (length,) the text, repeated
    tokens = store.columns["tokens"][: len(store)]  # (R, length): rewritten in place, masks kept
    tokens[:] = np.where(tokens == vocab.mask_id, tokens, want[None, :])
    store.version += 1
    return store


def median_ms(samples_s: list[float]) -> float:
    return round(float(np.median(np.asarray(samples_s) * 1e3)), 3) if samples_s else float("nan")


def measure_search(store: StepStore, vocab: Vocabulary, rounds: int = 30, seed: int = 0) -> dict[str, dict]:
    """Per query: median ms of a re-search on a record not searched before, and its match count."""
    from dpgviz.app.workspace import Workspace

    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    with Workspace() as ws:
        ws.doc.show_store(store, vocab)
        n = ws.n_records()
        for query in QUERIES:
            ws.find.search(query)
            samples, counts = [], []
            records = rng.integers(n // 2, n - 1, size=rounds)  # mostly unmasked records
            records[1::2] = n - 1  # every other one the last: never the record before (Find keeps one record's text)
            for record in records.tolist():
                ws.view.select(record, n)
                t = time.perf_counter()
                matches = ws.find.matches()
                ws.find.marks()
                samples.append(time.perf_counter() - t)
                counts.append(len(matches))
            out[query] = {"median_ms": median_ms(samples), "matches": int(np.median(counts))}
        ws.find.close()
    return out


def measure_window(store: StepStore, vocab: Vocabulary, switches: int = 120, seed: int = 0) -> dict:
    """Step switches in the real window, without and with an active query (needs a display)."""
    import dearpygui.dearpygui as dpg

    from dpgviz.gui.app import App

    rng = np.random.default_rng(seed)
    app = App(autoload=False).build()
    result: dict = {}
    try:
        ws, view = app.workspace, app.view
        ws.doc.show_store(store, vocab)
        dpg.set_value(app.side_tabs, app.tabs["Overview"])
        n = ws.n_records()
        for _ in range(6):  # settle the layout, the fit, the fonts
            app.frame()
        order = rng.integers(0, n, size=switches).tolist()
        for label, query in (("no_query", ""), ("query", "the"), ("no_query_again", "")):
            if query:
                app.find_bar.open_find()
                dpg.set_value(app.find_bar.find_box, query)
                app.find_bar.search(query)
            else:
                app.find_bar.close()
            app.frame()
            python, render = [], []
            for record in order:
                view.select(record, n)
                t = time.perf_counter()
                app.update()
                t1 = time.perf_counter()
                dpg.render_dearpygui_frame()
                python.append(t1 - t)
                render.append(time.perf_counter() - t1)
            result[label] = {"python_ms": median_ms(python), "render_ms": median_ms(render)}
        result["searches"] = ws.find.searches
        result["canvas_cells"] = f"{app.canvas.cols} cols x {app.canvas.view_rows} rows"
    finally:
        app.close()
    return result


def main(length: int = 65536, steps: int = 20, as_json: bool = False, window: bool = True) -> dict:
    vocab = synthetic_vocab()
    t0 = time.perf_counter()
    store = text_store(length, steps, vocab=vocab)
    results: dict = {"tokens": length, "records": len(store), "build_s": round(time.perf_counter() - t0, 3)}
    results["search_ms"] = measure_search(store, vocab)
    if window:
        switch = measure_window(store, vocab)
        results["step_switch_ms"] = {k: switch[k]["python_ms"] for k in ("no_query", "query", "no_query_again")}
        results["render_ms"] = {k: switch[k]["render_ms"] for k in ("no_query", "query", "no_query_again")}
        results["canvas_cells"] = switch["canvas_cells"]
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        for key, value in results.items():
            sys.stdout.write(f"{key:16s} {value}\n")
    return results
