"""What the workspace tells the window: small frozen records the window drains once a frame.

The workspace and its parts never call the UI; they queue these on one `Notices` (each
part is handed it) and the App drains them (`Workspace.take_notices`) once a frame.
Plain data, no dearpygui.
"""

from __future__ import annotations

import logging
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


@dataclass(frozen=True)
class ModelsListed:
    """A remote worker's models (paths on its host), for Load's list in place of this machine's."""

    models: tuple  # core.discovery.ModelEntry, the worker's own choice first
    where: str  # HOST:PORT


Notice = Said | LoadProgress | ModelReady | StoreShown | SettingsRestored | ModelOffered | CompareShown | ModelsListed


log = logging.getLogger("dpgviz.app")


class Notices:
    """The queue every part of the workspace reports through; the window drains it once a frame."""

    def __init__(self) -> None:
        self._queue: list[Notice] = []

    def say(self, text: str, is_error: bool = False) -> None:
        """A status-bar message (logged too: warnings for errors)."""
        (log.warning if is_error else log.info)("%s", text)
        self._queue.append(Said(text, is_error))

    def post(self, notice: Notice) -> None:
        self._queue.append(notice)

    def take(self) -> list[Notice]:
        """What happened since the last call, oldest first."""
        notices, self._queue = self._queue, []
        return notices
