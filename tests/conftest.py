"""Test-wide settings: dpgviz's own files (log, recovery journal) go to a temporary folder, never ~/.cache."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config: object) -> None:
    os.environ.setdefault("DPGVIZ_CACHE_DIR", tempfile.mkdtemp(prefix="dpgviz-test-cache-"))
    # transformers copies a folder's own modelling code (the llada:/dream: stand-ins of
    # test_dllm.py) into HF_MODULES_CACHE; read when transformers is imported, so set here.
    os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="dpgviz-test-hf-modules-"))
