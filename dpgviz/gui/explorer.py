"""The model explorer window: corrupt real text, see what each model repairs, score many samples.

    left     source (a file, the model's own corpus, or typed text), window, corruption
             strategy and its settings, models to compare, Run sample / Generate from here,
             batch settings, Run batch / Stop / progress, Export CSV
    right    the sample: per model its metrics, then the aligned views in chunks of COLS
             positions: original, corrupted, one predicted line per model; hover a position
             for its top-k candidates (the generation canvas's candidate bars)
             the batch: a table (mean ± std over samples) and accuracy against mask ratio

Drawn as text: each ink (a colour) is ONE multi-line `draw_text` in the monospace font,
built with numpy from the (lines, cols) character grid (gui.explorer_views), as the canvas draws rows; the
views are rebuilt only when the explorer's state changes (`ExploreState.version`).
Takes the workspace, never the App; the App builds it, shows it from the Explore menu
and calls `refresh()` once a frame.

dearpygui and numpy only; never imports torch or the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.explore import explore_key, find_corpus
from dpgviz.app.workspace import Workspace
from dpgviz.core.corruption import CORRUPTION_INFO, CORRUPTIONS, CorruptionSettings
from dpgviz.core.discovery import ModelEntry, find_checkpoints, given_model_entry
from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import MASK_GLYPH, MAX_SLOT_WIDTH, NEWLINE_GLYPH
from dpgviz.gui.explorer_views import COLS, INK_NAMES, INKS, LABEL_W, ink_texts, view_lines
from dpgviz.gui.inspector import CandidateBars
from dpgviz.gui.layout import char_table
from dpgviz.gui.theme import MONO_FONT_PX, Fonts

log = logging.getLogger(__name__)

PANEL_PX = 340
MODEL_COLORS = ((86, 180, 233), (230, 159, 0), (0, 158, 115), (204, 121, 167), (240, 228, 66), (213, 94, 0))


class ExplorerWindow:
    """The explorer's window (see the module docstring)."""

    def __init__(
        self, workspace: Workspace, fonts: Fonts | None, models_dirs: tuple[str | None, ...] = (),
        generation_settings: Callable[[], GenerationSettings] = GenerationSettings,
    ) -> None:
        self.workspace = workspace
        self.generation_settings = generation_settings  # what Generate from here runs with
        self.fonts = fonts
        self.models_dirs = ("out", *models_dirs)
        self.window: int | str = 0
        self.entries: list[ModelEntry] = []
        self.model_boxes: list[int | str] = []
        self.w: dict[str, int | str] = {}  # widgets by name (tests drive them)
        self.inks: list[int | str] = []
        self.bars = CandidateBars()
        self._version = -1
        self._themes: list[int | str] = []
        self._grid: tuple[int, int, int, int] = (0, 0, COLS, 1)  # lines per chunk, chunks, positions a line, slot
        self._char_cache: tuple[object, np.ndarray] | None = None  # (model info, id -> cells)
        self._advance = 0.0
        self._hover: tuple | None = None
        self.hover_pos: tuple[int, int] | None = None  # (position, model index) under the mouse

    # -- building -------------------------------------------------------------------------
    def build(self) -> None:
        w = self.w
        with dpg.window(label="Model explorer: corrupt text, see what models repair", show=False, width=1360,
                        height=840, pos=(20, 30), on_close=lambda: None) as self.window:
            with dpg.group(horizontal=True):
                with dpg.child_window(width=PANEL_PX, height=-1) as left:
                    self._build_controls(left)
                with dpg.child_window(width=-1, height=-1, border=False):
                    w["metrics"] = dpg.add_text("Pick a text and models, then Run sample.", color=INKS["label"])
                    with dpg.child_window(height=-300, horizontal_scrollbar=True) as w["views_box"]:
                        with dpg.group() as w["views_group"]:
                            w["views"] = dpg.add_drawlist(width=(LABEL_W + COLS) * 10 + 20, height=40)
                            for name in INK_NAMES:
                                item = dpg.draw_text((4, 4), "", size=MONO_FONT_PX, color=INKS[name], parent=w["views"])
                                if self.fonts is not None and self.fonts.mono:
                                    dpg.bind_item_font(item, self.fonts.mono)
                                self.inks.append(item)
                        with dpg.tooltip(w["views_group"]) as w["tip"]:
                            w["tip_title"] = dpg.add_text("")
                            w["tip_values"] = dpg.add_text("")
                            self.bars.build(w["tip"])
                    with dpg.group(horizontal=True):
                        with dpg.child_window(width=620, height=-1):
                            w["batch_status"] = dpg.add_text("No batch yet.", color=INKS["label"])
                            w["table"] = dpg.add_table(header_row=True, borders_innerH=True, borders_outerH=True,
                                                       borders_innerV=True, row_background=True, policy=dpg.mvTable_SizingFixedFit)
                            for label in ("model", "ratio", "accuracy", "p(true)", "CE nats", "n"):
                                dpg.add_table_column(label=label, parent=w["table"])
                        with dpg.plot(label="accuracy vs mask ratio", height=-1, width=-1) as w["plot"]:
                            dpg.add_plot_legend()
                            w["x"] = dpg.add_plot_axis(dpg.mvXAxis, label="mask ratio")
                            w["y"] = dpg.add_plot_axis(dpg.mvYAxis, label="accuracy")
                            dpg.set_axis_limits(w["x"], 0.0, 1.0)
                            dpg.set_axis_limits(w["y"], 0.0, 1.0)

    def _build_controls(self, parent: int | str) -> None:
        w = self.w
        dpg.add_text("Text", parent=parent, color=INKS["label"])
        w["source"] = dpg.add_text("none", parent=parent, wrap=PANEL_PX - 20)
        w["path"] = dpg.add_input_text(hint="path/to/input.txt", width=-70, parent=parent)
        with dpg.group(horizontal=True, parent=parent):
            w["browse"] = dpg.add_button(label="Browse...", callback=lambda: dpg.show_item(w["source_dialog"]))
            w["load_file"] = dpg.add_button(label="Open file", callback=self._on_load_file)
            w["corpus"] = dpg.add_button(label="Model's corpus", callback=self.use_model_corpus)
            with dpg.tooltip(w["corpus"]):
                dpg.add_text("data/<name>/input.txt beside the model's meta.pkl (nanoGPT's layout)")
        w["typed"] = dpg.add_input_text(multiline=True, height=36, width=-1, hint="or type text here", parent=parent)
        w["use_typed"] = dpg.add_button(label="Use typed text", parent=parent,
                                        callback=lambda: self.workspace.explore.set_source(dpg.get_value(w["typed"])))
        dpg.add_separator(parent=parent)
        w["length"] = dpg.add_input_int(label="window length", default_value=256, min_value=8, min_clamped=True,
                                        width=110, parent=parent)
        with dpg.group(horizontal=True, parent=parent):
            w["random_offset"] = dpg.add_checkbox(label="random offset", default_value=True)
            w["offset"] = dpg.add_input_int(label="offset", default_value=0, min_value=0, min_clamped=True, width=100)
        w["strategy"] = dpg.add_combo(CORRUPTIONS, default_value="random", label="strategy", width=140, parent=parent)
        with dpg.tooltip(w["strategy"]):
            for name, text in CORRUPTION_INFO.items():
                dpg.add_text(f"{name}: {text}", wrap=520)
        w["ratio"] = dpg.add_slider_float(label="ratio", default_value=0.3, min_value=0.1, max_value=0.9,
                                          format="%.2f", width=160, parent=parent)
        w["seed"] = dpg.add_input_int(label="seed", default_value=0, width=110, parent=parent)
        d = CorruptionSettings()
        w["span_start"] = dpg.add_slider_float(label="span p(start)", default_value=d.span_start, min_value=0.001,
                                               max_value=0.5, format="%.3f", width=140, parent=parent)
        w["span_grow"] = dpg.add_slider_float(label="span p(grow)", default_value=d.span_grow, min_value=0.0,
                                              max_value=1.0, format="%.2f", width=140, parent=parent)
        w["mix"] = dpg.add_input_floatx(label="mix shares", size=4, default_value=list(d.mix_shares), width=200,
                                        format="%.2f", parent=parent)
        with dpg.tooltip(w["mix"]):
            dpg.add_text("shares of the count: span masks, random masks, replacement, fragments")
        dpg.add_separator(parent=parent)
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("Models", color=INKS["label"])
            dpg.add_button(label="Refresh", callback=self.refresh_models)
        w["models"] = dpg.add_group(parent=parent)
        with dpg.group(horizontal=True, parent=parent):
            w["run_sample"] = dpg.add_button(label="Run sample", callback=self.run_sample)
            w["generate"] = dpg.add_button(label="Generate from here", callback=self.generate_from_here)
            with dpg.tooltip(w["generate"]):
                dpg.add_text("Start a generation run (a new branch) from the corrupted sample with the main\n"
                             "window's settings: masked positions are its masks, replaced text stays.")
        dpg.add_separator(parent=parent)
        dpg.add_text("Batch", parent=parent, color=INKS["label"])
        w["samples"] = dpg.add_input_int(label="samples", default_value=16, min_value=1, min_clamped=True, width=110,
                                         parent=parent)
        w["ratios"] = dpg.add_input_text(label="ratios", default_value="0.1,0.3,0.5,0.7,0.9", width=200, parent=parent)
        w["held_out"] = dpg.add_checkbox(label="held-out 10% of the text", default_value=True, parent=parent)
        with dpg.group(horizontal=True, parent=parent):
            w["run_batch"] = dpg.add_button(label="Run batch", callback=self.run_batch)
            w["stop"] = dpg.add_button(label="Stop", callback=self.workspace.explore.stop_batch)
        w["progress"] = dpg.add_progress_bar(default_value=0.0, width=-1, overlay="", parent=parent)
        with dpg.group(horizontal=True, parent=parent):
            w["csv_path"] = dpg.add_input_text(default_value="explore.csv", width=-120)
            w["csv_browse"] = dpg.add_button(label="...", width=24, callback=lambda: dpg.show_item(w["csv_dialog"]))
            dpg.add_button(label="Export CSV",
                           callback=lambda: self.workspace.explore.export_batch_csv(dpg.get_value(w["csv_path"])))
        w["source_dialog"] = self._file_dialog("Text to corrupt", self._on_source_picked, [".txt", ".*"])
        w["csv_dialog"] = self._file_dialog("Export the batch table as CSV", self._on_csv_picked, [".csv", ".*"],
                                            "explore.csv")
        self.refresh_models()

    @staticmethod
    def _file_dialog(label: str, callback: Callable, suffixes: list[str], filename: str = "") -> int | str:
        with dpg.file_dialog(label=label, show=False, modal=True, callback=callback, width=720, height=460,
                             default_path=str(Path.cwd()), default_filename=filename or ".") as dialog:
            for suffix in suffixes:
                dpg.add_file_extension(suffix)
        return dialog

    def _on_source_picked(self, sender: int | str, app_data: dict) -> None:
        path = app_data.get("file_path_name") if isinstance(app_data, dict) else None
        if path:
            dpg.set_value(self.w["path"], path)
            self.workspace.explore.load_source(path)

    def _on_csv_picked(self, sender: int | str, app_data: dict) -> None:
        path = app_data.get("file_path_name") if isinstance(app_data, dict) else None
        if path:
            dpg.set_value(self.w["csv_path"], path)
            self.workspace.explore.export_batch_csv(path)

    # -- showing -----------------------------------------------------------------------------
    def show(self) -> None:
        dpg.configure_item(self.window, show=True)
        dpg.focus_item(self.window)
        self.refresh_models()  # the model loaded since is the one ticked
        if not self.workspace.explore.source_text:
            self.use_model_corpus(quiet=True)

    @property
    def is_shown(self) -> bool:
        return bool(self.window) and dpg.is_item_shown(self.window)

    def refresh_models(self) -> None:
        """Rebuild the model checkboxes from the models found; the loaded one is ticked."""
        self.entries = find_checkpoints(*self.models_dirs)
        dpg.delete_item(self.w["models"], children_only=True)
        loaded = self.workspace.model_info.path if self.workspace.model_info else None
        if loaded is not None and all(Path(loaded) != e.path for e in self.entries):
            self.entries.insert(1, given_model_entry(loaded))  # loaded from elsewhere (--model, Folder...)
        self.model_boxes = [
            dpg.add_checkbox(label=e.label(), parent=self.w["models"],
                             default_value=loaded is not None and Path(loaded) == e.path)
            for e in self.entries
        ]
        if loaded is None and self.model_boxes:
            dpg.set_value(self.model_boxes[0], True)

    def chosen_models(self) -> list[tuple[str | None, str | None]]:
        return [explore_key(e) for e, box in zip(self.entries, self.model_boxes, strict=True) if dpg.get_value(box)]

    def settings(self) -> CorruptionSettings:
        w = self.w
        return CorruptionSettings(
            strategy=dpg.get_value(w["strategy"]), ratio=round(float(dpg.get_value(w["ratio"])), 4),
            seed=int(dpg.get_value(w["seed"])), span_start=float(dpg.get_value(w["span_start"])),
            span_grow=float(dpg.get_value(w["span_grow"])),
            mix_shares=tuple(float(x) for x in dpg.get_value(w["mix"])[:4]),
        )

    # -- actions (callbacks: read widgets, call the workspace, return) ---------------------
    def use_model_corpus(self, *_: object, quiet: bool = False) -> bool:
        info = self.workspace.model_info
        found = find_corpus(info.meta, info.path) if info is not None else None
        if found is None:
            if not quiet:
                self.workspace.say("No data/<name>/input.txt beside the model's meta.pkl: open a file.", is_error=True)
            return False
        dpg.set_value(self.w["path"], str(found))
        return self.workspace.explore.load_source(found)

    def _on_load_file(self) -> None:
        self.workspace.explore.load_source(dpg.get_value(self.w["path"]).strip())

    def run_sample(self) -> bool:
        w = self.w
        offset = None if dpg.get_value(w["random_offset"]) else int(dpg.get_value(w["offset"]))
        try:
            settings = self.settings().validate()
        except ValueError as exc:
            self.workspace.say(str(exc), is_error=True)
            return False
        return self.workspace.explore.run_sample(settings, self.chosen_models(), int(dpg.get_value(w["length"])), offset)

    def run_batch(self) -> bool:
        w = self.w
        try:
            ratios = [float(x) for x in dpg.get_value(w["ratios"]).split(",") if x.strip()]
            settings = self.settings().validate()
        except ValueError as exc:
            self.workspace.say(f"Ratios: {exc}", is_error=True)
            return False
        return self.workspace.explore.run_batch(
            settings, self.chosen_models(), ratios, int(dpg.get_value(w["samples"])), int(dpg.get_value(w["length"])),
            int(dpg.get_value(w["seed"])), bool(dpg.get_value(w["held_out"])),
        )

    def generate_from_here(self) -> bool:
        """Run the generation settings (the main window's) from the corrupted sample; on success the
        explorer steps aside so the canvas shows the repair."""
        try:
            settings = self.generation_settings()
        except ValueError as exc:
            self.workspace.say(str(exc), is_error=True)
            return False
        if not self.workspace.explore.generate_from_sample(settings):
            return False
        dpg.configure_item(self.window, show=False)
        return True

    # -- once a frame ---------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.is_shown:
            return
        state = self.workspace.explore
        if state.version != self._version:
            self._version = state.version
            self._show_state()
        self._follow_mouse()

    def _show_state(self) -> None:
        ws, w = self.workspace, self.w
        state = ws.explore
        name = state.source_name or "none"
        dpg.set_value(w["source"], f"{name} ({len(state.source_text):,} characters)" if state.source_text else name)
        sample = state.sample
        if sample is not None and sample.is_done:
            self._draw_sample()
        elif sample is not None:
            dpg.set_value(w["metrics"], "Waiting for the models...")
        batch = state.batch
        if batch is not None:
            dpg.set_value(w["progress"], ws.explore.batch_fraction())
            dpg.configure_item(w["progress"], overlay=batch.message)
            dpg.set_value(w["batch_status"], f"Batch {batch.job_id}: {batch.message}")
            dpg.configure_item(w["run_batch"], enabled=not batch.is_running)
            dpg.configure_item(w["stop"], enabled=batch.is_running)
            self._fill_table(batch.rows)
            self._fill_plot(batch.rows)

    def _chars(self) -> np.ndarray:
        """(n_ids, slot) cells of each id: one for a char model, a subword token its width (at most
        MAX_SLOT_WIDTH), built once per vocabulary."""
        info = self.workspace.model_info
        if self._char_cache is None or self._char_cache[0] is not info:
            vocab = info.vocab()
            strings = vocab.strings(mask=MASK_GLYPH, newline=NEWLINE_GLYPH)
            slot = int(min(MAX_SLOT_WIDTH, vocab.display_widths().max()))
            self._char_cache = (info, char_table(strings, slot))
        return self._char_cache[1]

    def _token(self, token_id: int) -> str:
        """One id's display string, as its cells show it."""
        return "".join(self._chars()[int(token_id)]).rstrip() or " "

    def _draw_sample(self) -> None:
        sample, w = self.workspace.explore.sample, self.w
        c = sample.corruption
        lines = [
            f"M{i + 1} {name}: accuracy {m.accuracy:.3f}   p(true) {m.true_prob:.3f}   CE {m.ce:.3f} nats"
            f"   on {m.n} corrupted"
            for i, (name, m) in enumerate(zip(sample.names, sample.metrics, strict=True))
        ]
        s = sample.settings
        head = (f"{s.strategy} {s.ratio:.0%} (seed {s.seed}) at offset {sample.offset}: {int(c.is_masked.sum())} masked, "
                f"{int(c.is_replaced.sum())} replaced of {len(sample.target)}")
        dpg.set_value(w["metrics"], "\n".join([head, *lines]))
        labels = [f"M{i + 1}" for i in range(len(sample.names))]
        chars = self._chars()
        cols = max(8, COLS // chars.shape[1])  # positions per line: fewer when tokens are wide
        text, ink = view_lines(chars, sample.target, c.ids, c.is_corrupted, c.is_masked,
                               [p["predicted"] for p in sample.predictions], labels, cols)
        for item, layer in zip(self.inks, ink_texts(text, ink), strict=True):
            dpg.configure_item(item, text=layer)
        per = 3 + len(sample.names)
        self._grid = (per, text.shape[0] // per, cols, chars.shape[1])
        adv = self._char_advance()
        dpg.configure_item(w["views"], width=int(text.shape[1] * adv) + 12, height=int(text.shape[0] * MONO_FONT_PX) + 12)

    def _char_advance(self) -> float:
        if not self._advance:
            probe = "M" * 20
            font = self.fonts.mono if self.fonts is not None and self.fonts.mono else None
            size = dpg.get_text_size(probe, font=font) if font else dpg.get_text_size(probe)
            if size and size[0] > 0:
                self._advance = size[0] / len(probe)
        return self._advance or MONO_FONT_PX * 0.6

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(position, model index) at viewport pixel (x, y); model -1 on the original/corrupted lines."""
        sample = self.workspace.explore.sample
        if sample is None or not sample.is_done:
            return None
        x0, y0 = dpg.get_item_rect_min(self.w["views"])
        cell = int((x - x0 - 4) // self._char_advance()) - LABEL_W
        line = int((y - y0 - 4) // MONO_FONT_PX)
        per, chunks, cols, slot = self._grid
        if cell < 0 or cell >= cols * slot or line < 0 or line >= per * chunks:
            return None
        chunk, within = divmod(line, per)
        pos = chunk * cols + cell // slot
        if pos >= len(sample.target) or within == per - 1:
            return None
        return pos, within - 2

    def _follow_mouse(self) -> None:
        inside = dpg.is_item_hovered(self.w["views"])
        cell = self.cell_at(*dpg.get_mouse_pos(local=False)) if inside else None
        key = (cell, self._version)
        if key == self._hover:
            return
        self._hover, self.hover_pos = key, cell
        self.show_tip(cell)

    def show_tip(self, cell: tuple[int, int] | None) -> None:
        """The tooltip of (position, model): true, corrupted and predicted tokens, top-k candidates."""
        w, sample = self.w, self.workspace.explore.sample
        dpg.configure_item(w["tip"], show=cell is not None)
        if cell is None or sample is None:
            return
        pos, m = cell
        m = max(0, m)
        tok, c = self._token, sample.corruption
        pred = sample.predictions[m]
        how = "masked" if c.is_masked[pos] else ("replaced" if c.is_corrupted[pos] else "kept")
        dpg.set_value(w["tip_title"], f"position {pos}   {sample.names[m]}")
        dpg.set_value(
            w["tip_values"],
            f"true {tok(sample.target[pos])!r}   seen {tok(c.ids[pos])!r} ({how})   "
            f"predicted {tok(pred['predicted'][pos])!r}\n"
            f"p(true) {float(np.exp(pred['log_p_true'][pos])):.3f}   entropy {float(pred['entropy'][pos]):.3f} nats",
        )
        vocab = self.workspace.model_info.vocab()
        cands = tuple(
            (int(i), vocab.itos[int(i)], float(p)) for i, p in zip(pred["top_ids"][pos], pred["top_probs"][pos], strict=True)
        )
        self.bars.show(cands)

    def _fill_table(self, rows: list[dict]) -> None:
        table = self.w["table"]
        for child in dpg.get_item_children(table, 1) or []:
            dpg.delete_item(child)
        for r in rows:
            with dpg.table_row(parent=table):
                dpg.add_text(r["model"][:28])
                dpg.add_text(f"{r['ratio']:.2f}")
                dpg.add_text(f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}")
                dpg.add_text(f"{r['true_prob']:.3f} ± {r['true_prob_std']:.3f}")
                dpg.add_text(f"{r['ce']:.3f} ± {r['ce_std']:.3f}")
                dpg.add_text(str(r["n"]))

    def _fill_plot(self, rows: list[dict]) -> None:
        axis = self.w["y"]
        dpg.delete_item(axis, children_only=True)
        models = list(dict.fromkeys(r["model"] for r in rows))
        for i, name in enumerate(models):
            mine = [r for r in rows if r["model"] == name]
            x = [r["ratio"] for r in mine]
            y = [r["accuracy"] for r in mine]
            series = dpg.add_line_series(x, y, label=name[:28], parent=axis)
            dpg.bind_item_theme(series, self._series_theme(i % len(MODEL_COLORS)))

    def _series_theme(self, i: int) -> int | str:
        """The line theme of the i-th model's colour, made once."""
        while len(self._themes) <= i:
            color = MODEL_COLORS[len(self._themes)]
            with dpg.theme() as theme, dpg.theme_component(dpg.mvLineSeries):
                dpg.add_theme_color(dpg.mvPlotCol_Line, color, category=dpg.mvThemeCat_Plots)
                dpg.add_theme_style(dpg.mvPlotStyleVar_Marker, dpg.mvPlotMarker_Circle, category=dpg.mvThemeCat_Plots)
            self._themes.append(theme)
        return self._themes[i]
