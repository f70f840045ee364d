"""Fonts and the dark theme. dearpygui only; call inside a created context, before show.

The canvas needs a monospace font whose glyphs cover the mask block and the newline
arrow; DejaVu Sans Mono (or Noto Sans Mono) is looked up in the usual system folders.
Without one, Dear PyGui's built-in font is used and newlines show as a pilcrow, which
that font has. Dear PyGui 2.3 rasterises glyphs on demand, so no ranges are declared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import dearpygui.dearpygui as dpg

from dpgviz.core.palette import PAGE_RGB
from dpgviz.core.vocab import NEWLINE_GLYPH

log = logging.getLogger(__name__)

# The canvas page colour (core.palette) doubles as the panels' and plots' background, so
# the token canvas and the exports sit on the same grey as the rest of the window.
_PAGE = tuple(int(c) for c in PAGE_RGB)

UI_FONT_PX = 15
MONO_FONT_PX = 16

_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "~/Library/Fonts",
    "C:/Windows/Fonts",
)
_MONO_FILES = ("DejaVuSansMono.ttf", "NotoSansMono-Regular.ttf", "consola.ttf", "Menlo.ttc")
_UI_FILES = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "segoeui.ttf")


def find_font(names: tuple[str, ...], dirs: tuple[str, ...] = _FONT_DIRS) -> Path | None:
    """First file called one of `names` under the font folders (searched in order)."""
    for name in names:
        for folder in dirs:
            root = Path(folder).expanduser()
            if not root.is_dir():
                continue
            direct = root / name
            if direct.is_file():
                return direct
            found = next(root.rglob(name), None)
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class Fonts:
    ui: int | str | None  # None: Dear PyGui's default font
    mono: int | str | None
    newline_glyph: str  # how a newline token is drawn with the mono font


def load_fonts() -> Fonts:
    mono_path, ui_path = find_font(_MONO_FILES), find_font(_UI_FILES)
    with dpg.font_registry():
        mono = dpg.add_font(str(mono_path), MONO_FONT_PX) if mono_path else None
        ui = dpg.add_font(str(ui_path), UI_FONT_PX) if ui_path else None
    if ui is not None:
        dpg.bind_font(ui)
    if mono is None:
        log.warning("no monospace font with box and arrow glyphs found; using the built-in font")
    return Fonts(ui=ui, mono=mono, newline_glyph=NEWLINE_GLYPH if mono is not None else "\u00b6")


def dark_theme() -> int | str:
    """Global theme: Dear ImGui's dark colours with softer frames and more spacing."""
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_color(dpg.mvThemeCol_WindowBg, (24, 26, 31))
            dpg.add_theme_color(dpg.mvThemeCol_ChildBg, _PAGE)
            dpg.add_theme_color(dpg.mvThemeCol_FrameBg, (44, 48, 56))
            dpg.add_theme_color(dpg.mvThemeCol_Button, (52, 72, 104))
            dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, (66, 94, 138))
            dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, (80, 112, 166))
            dpg.add_theme_color(dpg.mvThemeCol_Border, (58, 62, 72))
            dpg.add_theme_style(dpg.mvStyleVar_FrameRounding, 3)
            dpg.add_theme_style(dpg.mvStyleVar_GrabRounding, 3)
            dpg.add_theme_style(dpg.mvStyleVar_ChildRounding, 4)
            dpg.add_theme_style(dpg.mvStyleVar_WindowPadding, 8, 8)
            dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 8, 6)
            dpg.add_theme_style(dpg.mvStyleVar_FramePadding, 6, 4)
            dpg.add_theme_color(dpg.mvPlotCol_PlotBg, _PAGE, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_FrameBg, _PAGE, category=dpg.mvThemeCat_Plots)
        for kind in (dpg.mvButton, dpg.mvSliderInt, dpg.mvCombo):  # disabled items look disabled
            with dpg.theme_component(kind, enabled_state=False):
                dpg.add_theme_color(dpg.mvThemeCol_Text, (110, 114, 124))
                dpg.add_theme_color(dpg.mvThemeCol_Button, (40, 44, 52))
                dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, (40, 44, 52))
                dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, (40, 44, 52))
                dpg.add_theme_color(dpg.mvThemeCol_FrameBg, (36, 39, 46))
                dpg.add_theme_color(dpg.mvThemeCol_SliderGrab, (70, 74, 84))
    return theme


def canvas_plot_theme() -> int | str:
    """No padding or border around the canvas plot, so its pixel size is the cell grid's."""
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_style(dpg.mvPlotStyleVar_PlotPadding, 0, 0, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_PlotBorderSize, 0, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LabelPadding, 0, 0, category=dpg.mvThemeCat_Plots)
    return theme


def colored_text_theme(rgb: tuple[int, int, int]) -> int | str:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_color(dpg.mvThemeCol_Text, rgb)
    return theme


def series_theme(rgb: tuple[int, int, int], *, scatter: bool = False, marker: int | None = None) -> int | str:
    """A plot series in its own colour (line, or scatter markers); plots otherwise cycle greys here."""
    kind = dpg.mvScatterSeries if scatter else dpg.mvLineSeries
    with dpg.theme() as theme, dpg.theme_component(kind):
        dpg.add_theme_color(dpg.mvPlotCol_Line, (*rgb, 255), category=dpg.mvThemeCat_Plots)
        if scatter:
            dpg.add_theme_color(dpg.mvPlotCol_MarkerFill, (*rgb, 255), category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_MarkerOutline, (*rgb, 255), category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_MarkerSize, 4, category=dpg.mvThemeCat_Plots)
            if marker is not None:
                dpg.add_theme_style(dpg.mvPlotStyleVar_Marker, marker, category=dpg.mvThemeCat_Plots)
        else:
            dpg.add_theme_style(dpg.mvPlotStyleVar_LineWeight, 1.5, category=dpg.mvThemeCat_Plots)
    return theme
