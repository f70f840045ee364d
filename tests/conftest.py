"""Test-wide settings: dpgviz's own files (log, recovery journal) go to a temporary folder, never ~/.cache."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config: object) -> None:
    os.environ.setdefault("DPGVIZ_CACHE_DIR", tempfile.mkdtemp(prefix="dpgviz-test-cache-"))
