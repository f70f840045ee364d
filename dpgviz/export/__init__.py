"""Exports of a session: text, PNG, GIF, HTML player, CSV and JSON statistics, overview and plots.

`export_session` is the one entry point the CLI and the GUI call; each format lives in
its own module (`tables` for text/CSV/JSON, `images` for PNG/GIF with Pillow, `html` for
the player, `plots` for the whole-run overview and plots PNGs) and is imported only when
used. Every writer goes through `store.session_save.atomic_writer`, so a failed export never leaves a half-written file,
and long ones report `progress(done, total)` for a tqdm bar or a GUI progress widget.

Imports numpy and the standard library here; Pillow only inside the PNG/GIF path.
"""

from __future__ import annotations

from pathlib import Path

from dpgviz.core import color_modes
from dpgviz.store.session import Progress, Session, SessionError

FORMATS = ("text", "png", "gif", "html", "csv", "json", "overview", "plots")
DEFAULT_FRAME_MS = 120


def export_session(
    session: Session,
    fmt: str,
    out: str | Path,
    *,
    branch: str | None = None,
    record: int | None = None,
    frame_ms: int = DEFAULT_FRAME_MS,
    mode: str = "state",
    columns: int = 64,
    progress: Progress | None = None,
) -> Path:
    """Write one export of `session` to `out`; returns the path.

    text   the text of record `record` of the branch (default: its last)
    png    the canvas at record `record` (default: the last), coloured by `mode` (a core.color_modes
           name, or an alias: 'mask-state' is 'state')
    gif    the branch's denoising, one frame per record, `frame_ms` apart
    html   a self-contained player of the branch (play/pause, scrub, speed)
    csv    per-step statistics of the branch (export.tables.STAT_COLUMNS)
    json   the same statistics, with the branch and its settings
    overview  a PNG of the whole branch, one row per record and one column per position,
           coloured by `mode` (see store.overview.overview_image)
    plots  a PNG of masked fraction, mean confidence and mean entropy per record

    `branch` None is the root. Records are those of the branch's history (Session.rows:
    for a child, the parent's records up to the fork, then its own), and `record`
    indexes that history. Raises SessionError for a bad format, branch, record,
    mode or output path.
    """
    if fmt not in FORMATS:
        raise SessionError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        spec = color_modes.get(mode)
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    if not spec.overview:  # its data lives only in the window (a second model's layer, ...)
        drawable = ", ".join(m.name for m in color_modes.modes() if m.overview)
        raise SessionError(f"colour mode {mode!r} is not drawn in exports; choose one of {drawable}")
    mode = spec.name
    if columns < 1:
        raise SessionError(f"columns must be >= 1, got {columns}")
    if frame_ms < 1:
        raise SessionError(f"frame time must be >= 1 ms, got {frame_ms}")
    session.branch(branch)  # a bad branch is refused before any work
    if record is not None:
        session.record_index(branch, record)
    out = Path(out)
    if not out.parent.is_dir():
        raise SessionError(f"cannot write {out}: folder {out.parent} does not exist")
    if fmt in ("text", "csv", "json"):
        from dpgviz.export import tables

        if fmt == "text":
            return tables.write_text(session, out, branch, record)
        writer = tables.write_csv if fmt == "csv" else tables.write_json
        return writer(session, out, branch, progress)
    if fmt in ("overview", "plots"):
        from dpgviz.export import plots

        if fmt == "overview":
            return plots.write_overview(session, out, branch, mode)
        return plots.write_plots(session, out, branch)
    if fmt == "html":
        from dpgviz.export.html import write_html

        return write_html(session, out, branch, frame_ms, progress)
    from dpgviz.export import images

    if fmt == "png":
        return images.write_png(session, out, branch, record, mode, columns)
    return images.write_gif(session, out, branch, frame_ms, mode, columns, progress)
