"""The settings panel: model choice and loading, generation settings, Start/Stop/Continue.

Widgets hold the user's choices; `read()` turns them into a validated GenerationSettings
or raises SettingsError with a message to show. The Prompt box holds text the next Start
begins from (core.prompt): a prompt the run continues, or with "template" an infilling
template (each █ a position to fill), with "chat" wrapped in the model's chat template. Buttons call the workspace's operations
(load, start, stop, continue); messages come back through the workspace's notices, which
the app shows here and in the status bar. Nothing here talks to the worker.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import ModelEntry, find_checkpoints, model_file, split_prefixed
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.prompt import PromptError, check_prompt
from dpgviz.core.settings import (
    DEFAULT_BLOCK_LENGTH,
    DEVICES,
    DTYPES,
    MAX_LENGTH,
    PROPOSALS,
    SCHEDULES,
    STRATEGIES,
    STRATEGY_INFO,
    GenerationSettings,
    SettingsError,
)
from dpgviz.core.vocab import MASK_GLYPH
from dpgviz.gui.keys import is_one_newline_more
from dpgviz.gui.status import ERROR_COLOR, INFO_COLOR, Cached, fit_text
from dpgviz.gui.strategy_picker import StrategyPicker

log = logging.getLogger(__name__)

PANEL_WIDTH = 300
LENGTH_RANGE = (50, MAX_LENGTH)  # above the model's block size a run goes in blocks (semi-autoregressive)
STEPS_RANGE = (1, 200)  # the slider's range; typing (Ctrl+click) allows more
TEMPERATURE_RANGE = (0.1, 2.0)
NO_MODEL = ("no model loaded", "pick one above and press Load", " ")  # three lines, as a model's info
# Knobs only some strategies read: shown with those strategies, hidden otherwise.
STRATEGY_KNOBS = {"randomness": ("seed",), "threshold": ("threshold",), "eta": ("remdm",)}


class SettingsPanel:
    def __init__(self, workspace: Workspace, models_dir: str | None = None, given: ModelEntry | None = None) -> None:
        self.workspace = workspace
        self.models_dirs: list[str] = [d for d in ("out", models_dir) if d]
        self.given = given  # a model named with --model (an adapter file is never found by a scan)
        self.remote: str | None = None  # HOST:PORT whose models the list shows (a remote worker), else this machine's
        self.remote_entries: list[ModelEntry] = []
        self.entries: list[ModelEntry] = []
        self.block_size: int | None = None
        self._cache = Cached()
        self.model_combo = self.load_button = self.load_progress = self.model_info = self.model_tip = 0
        self.steps_hint = 0
        self._is_hint_shown = False
        self.temperature = self.steps = self.length = self.length_slider = self.block_length = 0
        self.start_ratio = self.end_ratio = 0
        self.randomness = self.strategy = self.seed = self.strategy_about = 0
        self.schedule = self.proposal = self.sample_top_k = self.top_p = self.threshold = self.eta = 0
        self.device = self.dtype = 0
        self.prompt = self.template = self.chat = self.prompt_hint = 0
        self._prompt_seen = self._prompt_before = ""  # the box's text as its callbacks last told, and before that
        self.prefix_cache = 0
        self.cache_refresh = 0  # no widget: the last written run's --cache-refresh, kept for restarts
        self.start_button = self.stop_button = self.continue_button = self.message = 0
        self.folder_dialog = self.folder_button = self.compare_button = 0
        self.picker = StrategyPicker(workspace, self._read_or_say)  # the Compare strategies window

    # -- building ------------------------------------------------------------------
    def build(self, parent: int | str) -> None:
        d = GenerationSettings()
        label_w = -110  # leave room for labels on the right
        with dpg.group(parent=parent):
            dpg.add_text("Model", color=(140, 180, 255))
            self.model_combo = dpg.add_combo([], width=-1)
            with dpg.group(horizontal=True):
                self.load_button = dpg.add_button(label="Load", width=80, callback=self._on_load)
                self.folder_button = dpg.add_button(
                    label="Folder...", width=80, callback=lambda: dpg.show_item(self.folder_dialog)
                )
                dpg.add_button(label="Rescan", width=70, callback=lambda: self.rescan())
            with dpg.group(horizontal=True):
                self.device = dpg.add_combo(
                    list(DEVICES), default_value=self.workspace.runs.device, width=80, label="device"
                )
                self.dtype = dpg.add_combo(list(DTYPES), default_value=self.workspace.runs.dtype, width=80, label="dtype")
            with dpg.tooltip(self.dtype):
                dpg.add_text("Weights' dtype for the next Load (auto: float32).\n"
                             "bfloat16 / float16 halve the memory; float16 needs a GPU.")
            self.load_progress = dpg.add_progress_bar(default_value=0.0, width=-1, overlay="not loaded")
            # Always three lines, as NO_MODEL (each cut with '...' to the panel, whole on hover): the
            # knobs below stay where they are when a model loads or goes.
            self.model_info = dpg.add_text("\n".join(NO_MODEL), color=INFO_COLOR)
            with dpg.tooltip(self.model_info):
                self.model_tip = dpg.add_text("\n".join(NO_MODEL[:2]), wrap=480)
            dpg.add_separator()
            dpg.add_text("Generation", color=(140, 180, 255))
            self.temperature = dpg.add_slider_float(
                label="temperature", default_value=d.temperature, min_value=TEMPERATURE_RANGE[0],
                max_value=TEMPERATURE_RANGE[1], format="%.2f", width=label_w,
            )
            self.steps = dpg.add_slider_int(
                label="steps", default_value=d.steps, min_value=STEPS_RANGE[0], max_value=STEPS_RANGE[1], width=label_w,
            )
            # Its hint goes beside the slider (refresh), not in a tooltip: one under the mouse covered the length row.
            # Length spans 50..65,536: a slider over log2(length) (even steps from 64 to 64K),
            # and the exact number beside it to read or type.
            with dpg.group(horizontal=True):
                self.length_slider = dpg.add_slider_float(
                    default_value=math.log2(d.length), min_value=math.log2(LENGTH_RANGE[0]),
                    max_value=math.log2(LENGTH_RANGE[1]), format="", width=110, callback=self._on_length_slider,
                )
                self.length = dpg.add_input_int(
                    label="length", default_value=d.length, step=0, width=label_w,
                    min_value=LENGTH_RANGE[0], max_value=LENGTH_RANGE[1], min_clamped=True, max_clamped=True,
                    callback=self._on_length_typed,
                )
            with dpg.tooltip(self.length_slider):
                dpg.add_text("Tokens to generate (log scale). Above the model's block size the run goes\n"
                             "in blocks, each conditioned on the text before it (block length below).")
            with dpg.group(horizontal=True):  # one row with the prefix cache, so Start stays in view
                self.block_length = dpg.add_input_int(
                    label="block", default_value=d.block_length, step=64, width=100, min_value=0,
                    min_clamped=True,
                )
                self.prefix_cache = dpg.add_checkbox(label="prefix cache", default_value=d.cache == "prefix")
            with dpg.tooltip(self.block_length):
                dpg.add_text(f"0: one block when the length fits the model, else blocks of {DEFAULT_BLOCK_LENGTH}.\n"
                             "Each block is denoised in full, conditioned on the text before it.")
            with dpg.tooltip(self.prefix_cache):
                dpg.add_text("Fast-dLLM's prefix KV cache: the text before each block is run once per block\n"
                             "and only the block's positions after that. Several times faster in blocks, an\n"
                             "approximation (the model attends both ways). The built-in GPT models only.\n"
                             "A run's refresh interval (--cache-refresh) is kept when you restart from it.")
            self.start_ratio = dpg.add_slider_float(
                label="start mask", default_value=d.start_ratio, min_value=0.0, max_value=1.0, format="%.2f", width=label_w,
            )
            self.end_ratio = dpg.add_slider_float(
                label="end mask", default_value=d.end_ratio, min_value=0.0, max_value=1.0, format="%.2f", width=label_w,
            )
            dpg.add_separator()
            dpg.add_text("Strategy", color=(140, 180, 255))
            self.strategy = dpg.add_combo(
                list(STRATEGIES), label="strategy", default_value=d.strategy, width=label_w,
                callback=lambda: self._show_strategy_knobs(),
            )
            with dpg.tooltip(self.strategy):
                for name, about in STRATEGY_INFO.items():
                    dpg.add_text(f"{name}: {about}", wrap=520)
            self.strategy_about = dpg.add_text("", wrap=PANEL_WIDTH - 24, color=INFO_COLOR)
            self.randomness = dpg.add_slider_float(
                label="randomness", default_value=d.randomness, min_value=0.0, max_value=1.0, format="%.2f", width=label_w,
            )
            self.threshold = dpg.add_slider_float(
                label="threshold", default_value=d.threshold, min_value=0.05, max_value=1.0, format="%.2f", width=label_w,
            )
            self.eta = dpg.add_slider_float(
                label="eta", default_value=d.eta, min_value=0.0, max_value=1.0, format="%.2f", width=label_w,
            )
            self.schedule = dpg.add_combo(list(SCHEDULES), label="schedule", default_value=d.schedule, width=label_w)
            with dpg.tooltip(self.schedule):
                dpg.add_text("How the mask ratio falls from start to end:\n"
                             "linear (the seed's), or cosine (slow at first, fast at the end)")
            self.proposal = dpg.add_combo(list(PROPOSALS), label="proposal", default_value=d.proposal, width=label_w)
            with dpg.tooltip(self.proposal):
                dpg.add_text("sample: draw each masked token from the model (top-k / top-p below)\n"
                             "greedy: take the most likely token")
            with dpg.group(horizontal=True):
                self.sample_top_k = dpg.add_input_int(
                    label="top-k", default_value=d.sample_top_k, step=0, width=60, min_value=0, min_clamped=True,
                )
                self.top_p = dpg.add_input_float(
                    label="top-p", default_value=d.top_p, step=0, width=60, format="%.2f",
                    min_value=0.01, max_value=1.0, min_clamped=True, max_clamped=True,
                )
            with dpg.tooltip(self.sample_top_k):
                dpg.add_text("Sample only among the k most likely tokens (0 = all)")
            with dpg.tooltip(self.top_p):
                dpg.add_text("Sample only within the smallest set of tokens whose probability reaches p (1 = all)")
            self.seed = dpg.add_input_int(label="seed", default_value=d.seed, width=label_w, min_value=0, min_clamped=True)
            dpg.add_separator()
            self._build_prompt()  # beside Start, which it begins from (and below the knobs: their places stay)
            dpg.add_spacer(height=4)
            with dpg.group(horizontal=True):
                self.start_button = dpg.add_button(label="Start", width=90, callback=lambda: self.start())
                self.stop_button = dpg.add_button(label="Stop", width=90, callback=lambda: self.workspace.runs.stop())
            self.continue_button = dpg.add_button(
                label="Restart from here (Ctrl+R)", width=-1, callback=lambda: self.restart()
            )
            self.compare_button = dpg.add_button(
                label="Compare strategies...", width=-1, callback=lambda: self.picker.show()
            )
            with dpg.tooltip(self.continue_button):
                dpg.add_text(
                    "Run again from the step shown on the canvas, with the settings above:\n"
                    "an edit runs in its own branch, any other step starts a new branch."
                )
            self.message = dpg.add_text("", wrap=PANEL_WIDTH - 24, color=INFO_COLOR)
        with dpg.window(show=False, no_title_bar=True, no_resize=True, no_move=True, autosize=True,
                        no_focus_on_appearing=True, no_saved_settings=True, min_size=(20, 10)) as self.steps_hint:
            dpg.add_text(f"Ctrl+click to type a value above {STEPS_RANGE[1]}", color=INFO_COLOR)
        self.picker.build()
        self.folder_dialog = dpg.add_file_dialog(
            directory_selector=True, show=False, callback=self._on_folder, width=640, height=420, modal=True
        )
        self.rescan()
        self._show_strategy_knobs()

    def _build_prompt(self) -> None:
        # One row of title and toggles and a three-line box: the panel grows little, so Start
        # stays in view in the window's default 900 pixels.
        with dpg.group(horizontal=True):
            dpg.add_text("Prompt", color=(140, 180, 255))
            self.template = dpg.add_checkbox(label="template", callback=lambda: self._show_prompt_hint())
            self.chat = dpg.add_checkbox(label="chat", callback=lambda: self._show_prompt_hint())
            hole = dpg.add_button(label=f"+{MASK_GLYPH}", callback=lambda: self._append_hole())  # as wide as its label
        self.prompt = dpg.add_input_text(
            multiline=True, width=-1, height=52, tab_input=False, hint="text the run starts from (optional)",
            callback=lambda: self._on_prompt(),
        )
        with dpg.tooltip(self.prompt):
            # What Start will do with the box (in the tooltip, so a line under the box never
            # pushes Start out of a 900-pixel window)
            self.prompt_hint = dpg.add_text("", color=INFO_COLOR, show=False)
            dpg.add_text(
                "A prompt: its tokens come first and stay fixed; 'length' positions are generated after it.\n"
                f"A template (tick 'template'): each {MASK_GLYPH} is one position to fill, the rest stays fixed.\n"
                "Empty: every position is generated, as before. Restart keeps a run's own prompt."
            )
        with dpg.tooltip(self.template):
            dpg.add_text(f"Infilling: each {MASK_GLYPH} (U+2588) in the box is a position to fill.")
        with dpg.tooltip(self.chat):
            dpg.add_text("Wrap the prompt in the model's own chat template (models that bring one: LLaDA, Dream).")
        with dpg.tooltip(hole):
            dpg.add_text(f"Add a {MASK_GLYPH} (a position to fill) at the end, and tick 'template'")

    def _on_prompt(self) -> None:
        self._prompt_before, self._prompt_seen = self._prompt_seen, str(dpg.get_value(self.prompt))
        self._show_prompt_hint()

    def prompt_key(self, pressed: str) -> bool:
        """Ctrl+Enter while the Prompt box has the keyboard starts the run (gui.input's `box_keys`).

        The box is multiline: Enter is a newline there, and Ctrl+Enter ends the edit. A fast chord
        (xdotool, a quick typist, a loaded machine) lets go of Ctrl before the box reads the Enter,
        so it types a newline; that one newline is taken back before the run reads the box."""
        if pressed != "ctrl+enter" or not (dpg.is_item_active(self.prompt) or dpg.is_item_deactivated(self.prompt)):
            return False
        text = str(dpg.get_value(self.prompt))
        for before in (self._prompt_seen, self._prompt_before):
            if is_one_newline_more(text, before):
                dpg.set_value(self.prompt, before)
                break
        self.start()
        return True

    def _append_hole(self) -> None:
        dpg.set_value(self.prompt, str(dpg.get_value(self.prompt)) + MASK_GLYPH)
        dpg.set_value(self.template, True)
        self._show_prompt_hint()

    def _show_prompt_hint(self) -> None:
        """One line under the box: what Start will do with it (or why it cannot)."""
        text, template = str(dpg.get_value(self.prompt)), bool(dpg.get_value(self.template))
        if not text and not template:
            hint = ""
        elif template:
            hint = f"{text.count(MASK_GLYPH)} positions to fill, the rest fixed"
        else:
            hint = f"{len(text)} characters fixed, then 'length' generated"
        self._cache.set(self.prompt_hint, hint)
        self._cache.configure(self.prompt_hint, show=bool(hint))

    def _show_strategy_knobs(self) -> None:
        """Describe the chosen strategy; show only the knobs it reads."""
        name = str(dpg.get_value(self.strategy))
        dpg.set_value(self.strategy_about, STRATEGY_INFO.get(name, ""))
        for knob, users in STRATEGY_KNOBS.items():
            dpg.configure_item(getattr(self, knob), show=name in users)

    # -- models ----------------------------------------------------------------------
    def rescan(self) -> None:
        """Embedded default first, then checkpoints under ./out and the chosen folders
        (a remote worker's list as it sent it, its own choice first)."""
        given = None if self.remote is not None else self.given
        self.entries = list(self.remote_entries) if self.remote is not None else find_checkpoints(*self.models_dirs)
        if given is not None and all(e.path.resolve() != given.path.resolve() for e in self.entries):
            self.entries.insert(1, given)
        labels = self._labels()
        current = dpg.get_value(self.model_combo)
        dpg.configure_item(self.model_combo, items=labels)
        if current not in labels and labels:
            pick = next((k for k, e in enumerate(self.entries) if given is not None and e.path == given.path), 0)
            dpg.set_value(self.model_combo, labels[pick])

    def _labels(self) -> list[str]:
        # label() adds the trainer's iteration and best loss, so runs of one folder can be told apart
        if self.remote is not None:  # paths on the worker's host: nothing to check here
            return [e.label() for e in self.entries]
        return [e.label() + ("" if model_file(e.path) is not None else " (missing)") for e in self.entries]

    def use_models(self, entries: list[ModelEntry], where: str) -> None:
        """Show the models a remote worker offers (paths on its host) in place of this machine's."""
        self.remote, self.remote_entries = where, list(entries)
        dpg.set_value(self.model_combo, "")
        self.rescan()
        dpg.configure_item(self.folder_button, enabled=False)  # a folder here means nothing to that worker

    def selected_entry(self) -> ModelEntry | None:
        labels = self._labels()
        value = dpg.get_value(self.model_combo)
        return self.entries[labels.index(value)] if value in labels else None

    def select_path(self, path: str | Path) -> bool:
        """Pick the entry with this checkpoint path (tests and the CLI use it)."""
        for entry, label in zip(self.entries, self._labels(), strict=True):
            if Path(entry.path).resolve() == Path(path).resolve():
                dpg.set_value(self.model_combo, label)
                return True
        return False

    def _on_folder(self, sender: int, app_data: dict) -> None:
        folder = app_data.get("file_path_name") if isinstance(app_data, dict) else None
        if folder:
            self.models_dirs.append(folder)
            self.rescan()
            for entry, label in zip(self.entries, self._labels(), strict=True):
                if str(entry.path).startswith(str(folder)):
                    dpg.set_value(self.model_combo, label)
                    break

    def _on_load(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.workspace.say("Pick a model first.", is_error=True)
            return
        self.workspace.runs.load_model(
            entry, dtype=str(dpg.get_value(self.dtype)), device=str(dpg.get_value(self.device))
        )

    def offer(self, path: str | Path) -> None:
        """Pick the checkpoint at `path`, adding its folder to the list when it is not there."""
        if not self.select_path(path):
            prefixed = split_prefixed(path)  # llada:FOLDER: the folder's parent holds it
            self.models_dirs.append(str((prefixed[1] if prefixed else Path(path)).parent))
            self.rescan()
            self.select_path(path)

    # -- commands ----------------------------------------------------------------------
    def _read_or_say(self) -> GenerationSettings | None:
        if not self.workspace.runs.can_run:
            self.workspace.say("Load a model first.", is_error=True)
            return None
        try:
            return self.read()
        except SettingsError as exc:
            self.workspace.say(str(exc), is_error=True)
            return None

    def start(self) -> None:
        """Start: a fresh run with the settings shown."""
        settings = self._read_or_say()
        if settings is not None:
            self.workspace.runs.start(settings)

    def restart(self) -> None:
        """Restart from here: run from the step shown (an unrun edit in place) with the settings shown."""
        if not self.workspace.runs.can_run:
            self.workspace.edits.restart(GenerationSettings())  # says what model is needed, and offers it
            return
        settings = self._read_or_say()
        if settings is not None:
            self.workspace.edits.restart(settings)

    # -- state shown -----------------------------------------------------------------
    def show_loading(self, fraction: float, message: str) -> None:
        self._cache.set(self.load_progress, min(1.0, max(0.0, fraction)))
        self._cache.configure(self.load_progress, overlay=message[:40])

    def show_model(self, info: ModelInfo | None) -> None:
        """The loaded model's name and numbers; None: there is none now (the worker died, a link dropped)."""
        if info is None:
            self.block_size = None
            self._show_info(NO_MODEL)
            return
        self.block_size = info.block_size
        self._show_info((
            info.name,
            (f"{info.params / 1e6:.2f}M params, " if info.params else "") + f"vocabulary {info.vocab_size}, block {info.block_size}",
            f"on {info.device} ({info.dtype})",
        ))
        self._cache.set(self.load_progress, 1.0)
        self._cache.configure(self.load_progress, overlay="loaded")
        dpg.configure_item(self.block_length, max_value=self.block_size, max_clamped=True)

    def _show_info(self, lines: tuple[str, ...]) -> None:
        width = dpg.get_item_rect_size(self.model_combo)[0] or PANEL_WIDTH - 24  # the panel's content width
        self._cache.set(self.model_info, "\n".join(fit_text(line, width) if line.strip() else line for line in lines))
        self._cache.set(self.model_tip, "\n".join(line for line in lines if line.strip()))

    def refresh(self) -> None:
        """Once a frame: the steps hint beside the slider while the mouse is over it."""
        is_hovered = bool(dpg.is_item_hovered(self.steps))
        if is_hovered:
            right = dpg.get_item_rect_max(self.model_combo)[0] + 24  # the combo spans the panel; then its margin
            self._cache.configure(self.steps_hint, pos=(int(right), int(dpg.get_item_rect_min(self.steps)[1] - 6)))
        if is_hovered != self._is_hint_shown:
            self._is_hint_shown = is_hovered
            dpg.configure_item(self.steps_hint, show=is_hovered)

    def set_running(self, is_running: bool, has_model: bool) -> None:
        self._cache.configure(self.start_button, enabled=has_model and not is_running)
        self._cache.configure(self.continue_button, enabled=has_model and not is_running)
        self._cache.configure(self.compare_button, enabled=has_model and not is_running)
        self._cache.configure(self.stop_button, enabled=is_running)
        self._cache.configure(self.load_button, enabled=not is_running)

    def say(self, text: str, is_error: bool = False) -> None:
        self._cache.set(self.message, text)
        self._cache.configure(self.message, color=ERROR_COLOR if is_error else INFO_COLOR)

    # -- reading -----------------------------------------------------------------------
    def read(self) -> GenerationSettings:
        """The settings in the widgets, validated; SettingsError says what is wrong."""
        temperature = float(dpg.get_value(self.temperature))
        if not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1] + 1e-9:
            raise SettingsError(f"temperature must be between {TEMPERATURE_RANGE[0]} and {TEMPERATURE_RANGE[1]}, got {temperature:g}")
        length = int(dpg.get_value(self.length))
        if length < LENGTH_RANGE[0]:
            raise SettingsError(f"length must be at least {LENGTH_RANGE[0]}, got {length}")
        settings = GenerationSettings(
            block_length=int(dpg.get_value(self.block_length)),
            temperature=temperature,
            steps=int(dpg.get_value(self.steps)),
            length=length,
            start_ratio=round(float(dpg.get_value(self.start_ratio)), 4),
            end_ratio=round(float(dpg.get_value(self.end_ratio)), 4),
            randomness=round(float(dpg.get_value(self.randomness)), 4),
            strategy=str(dpg.get_value(self.strategy)),
            schedule=str(dpg.get_value(self.schedule)),
            proposal=str(dpg.get_value(self.proposal)),
            sample_top_k=int(dpg.get_value(self.sample_top_k)),
            top_p=round(float(dpg.get_value(self.top_p)), 4),
            threshold=round(float(dpg.get_value(self.threshold)), 4),
            eta=round(float(dpg.get_value(self.eta)), 4),
            seed=int(dpg.get_value(self.seed)),
            cache="prefix" if dpg.get_value(self.prefix_cache) else "none",
            cache_refresh=self.cache_refresh if dpg.get_value(self.prefix_cache) else 0,
        )
        settings = self._with_prompt(settings)
        if self.block_size is not None:  # past the block size: blocks, as the CLI does
            settings = settings.with_default_blocks(self.block_size)
        return settings.validate(self.block_size)

    def _with_prompt(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` with the Prompt box's text and toggles; SettingsError for what needs no model
        to refuse (an empty template, one without █); the model checks the rest at Start."""
        text, template, chat = str(dpg.get_value(self.prompt)), bool(dpg.get_value(self.template)), bool(dpg.get_value(self.chat))
        if not text and not template:
            return settings
        settings = dataclasses.replace(settings, prompt=text, template=template, chat=chat and not template)
        try:
            check_prompt(settings)
        except PromptError as exc:
            raise SettingsError(str(exc)) from None
        return settings

    def write(self, settings: GenerationSettings) -> None:
        """Show `settings` in the widgets (a run's settings, or a test's)."""
        for item, value in (
            (self.temperature, settings.temperature),
            (self.steps, settings.steps),
            (self.length, settings.length),
            (self.start_ratio, settings.start_ratio),
            (self.end_ratio, settings.end_ratio),
            (self.randomness, settings.randomness),
            (self.strategy, settings.strategy),
            (self.schedule, settings.schedule),
            (self.proposal, settings.proposal),
            (self.sample_top_k, settings.sample_top_k),
            (self.top_p, settings.top_p),
            (self.threshold, settings.threshold),
            (self.eta, settings.eta),
            (self.seed, settings.seed),
            (self.block_length, settings.block_length),
            (self.length_slider, math.log2(max(1, settings.length))),
            (self.prompt, settings.prompt),
            (self.template, settings.template),
            (self.chat, settings.chat),
            (self.prefix_cache, settings.cache == "prefix"),
        ):
            dpg.set_value(item, value)
        self.cache_refresh = settings.cache_refresh
        self._show_strategy_knobs()
        self._show_prompt_hint()

    def _on_length_slider(self, sender: int | str, value: float) -> None:
        dpg.set_value(self.length, round(2 ** float(value)))

    def _on_length_typed(self, sender: int | str, value: int) -> None:
        dpg.set_value(self.length_slider, math.log2(max(1, int(value))))

    def input_items(self) -> list[int | str]:
        """Items that take typing: keyboard shortcuts stay off while one is active."""
        return [
            self.prompt, self.temperature, self.steps, self.length, self.block_length, self.start_ratio, self.end_ratio,
            self.randomness, self.seed, self.model_combo, self.strategy, self.schedule, self.proposal,
            self.sample_top_k, self.top_p, self.threshold, self.eta, self.device, self.dtype,
        ]
