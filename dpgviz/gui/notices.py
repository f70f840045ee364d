"""What the workspace tells the window: small frozen records the window drains once a frame.

The workspace never calls the UI; it queues these (`Workspace.take_notices`) and the
App shows them. Plain data, no dearpygui.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import Vocabulary


@dataclass(frozen=True)
class Said:
    """A message for the status bar (red when `is_error`)."""

    text: str
    is_error: bool = False


@dataclass(frozen=True)
class LoadProgress:
    fraction: float
    message: str


@dataclass(frozen=True)
class ModelReady:
    """A model finished loading (info), or the one there was is gone (None: the worker died)."""

    info: ModelInfo | None


@dataclass(frozen=True)
class StoreShown:
    """A different store (or run) is shown: set the canvas vocabulary and fit it to `seq_len`."""

    vocab: Vocabulary
    seq_len: int


@dataclass(frozen=True)
class SettingsRestored:
    """An opened session's generation settings, for the settings panel."""

    settings: GenerationSettings


@dataclass(frozen=True)
class ModelOffered:
    """An opened session's recorded checkpoint is there unchanged: pick it in the model list."""

    path: str


@dataclass(frozen=True)
class CompareShown:
    """Two branches are now compared side by side (`Workspace.compare`): show the compare view."""


Notice = Said | LoadProgress | ModelReady | StoreShown | SettingsRestored | ModelOffered | CompareShown
