"""Where dpgviz keeps its own files: the log and the recovery journal, in the platform's cache folder.

    cache_dir()      $DPGVIZ_CACHE_DIR, else ~/.cache/dpgviz ($XDG_CACHE_HOME/dpgviz) on Linux,
                     ~/Library/Caches/dpgviz on macOS, %LOCALAPPDATA%\\dpgviz on Windows
    log_path()       cache_dir() / dpgviz.log
    recovery_path()  cache_dir() / recovery.dpgjournal

Made on demand. stdlib only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOG_NAME = "dpgviz.log"
RECOVERY_NAME = "recovery.dpgjournal"


def cache_dir(create: bool = True) -> Path:
    """The folder of dpgviz's log and recovery journal (made when `create`)."""
    override = os.environ.get("DPGVIZ_CACHE_DIR")
    if override:
        folder = Path(override).expanduser()
    elif sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        folder = (Path(local) if local else Path.home() / "AppData" / "Local") / "dpgviz"
    elif sys.platform == "darwin":
        folder = Path.home() / "Library" / "Caches" / "dpgviz"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says a relative value is invalid and must be ignored.
        folder = (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "dpgviz"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_path() -> Path:
    return cache_dir() / LOG_NAME


def recovery_path() -> Path:
    return cache_dir() / RECOVERY_NAME
