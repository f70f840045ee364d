"""dpgviz: a desktop visualizer for masked-diffusion language models.

`dpgviz.Recorder` (dpgviz.record) logs a run of your own sampler; it is loaded on first
use, so `import dpgviz` (the window does) stays as light as this file.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Recorder":  # PEP 562: imported when first asked for, never by the window
        from dpgviz.record import Recorder

        return Recorder
    raise AttributeError(f"module 'dpgviz' has no attribute {name!r}")
