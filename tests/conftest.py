"""Test-wide settings: dpgviz's own files (log, recovery journal) go to a temporary folder, never ~/.cache;
the `shots` fixture (where GUI tests save screenshots)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: object) -> None:
    os.environ.setdefault("DPGVIZ_CACHE_DIR", tempfile.mkdtemp(prefix="dpgviz-test-cache-"))
    # transformers copies a folder's own modelling code (the llada:/dream: stand-ins of
    # test_dllm.py) into HF_MODULES_CACHE; read when transformers is imported, so set here.
    os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="dpgviz-test-hf-modules-"))


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DPGVIZ_SHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
