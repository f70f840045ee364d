"""What the workspace tells the window: small frozen records the window drains once a frame.

The workspace and its parts never call the UI; they queue these on one `Notices` (each
part is handed it) and the App drains them (`Workspace.take_notices`) once a frame.
Every message said is also kept, whole and with its time, in `Notices.messages` (View >
Messages lists them: the status bar has room for one line). Plain data, no dearpygui.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import Vocabulary


@dataclass(frozen=True)
class Said:
    """A message for the status bar (red when `is_error`)."""

    text: str
    is_error: bool = False


@dataclass(frozen=True)
class Message:
    """A message as it was said: its whole text and when (time.time(), seconds)."""

    text: str
    is_error: bool = False
    at_s: float = field(default_factory=time.time)

    def clock(self) -> str:
        """HH:MM:SS, local time."""
        return time.strftime("%H:%M:%S", time.localtime(self.at_s))


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
MAX_MESSAGES = 10_000  # kept since start; past this the oldest go (a day of a busy window says far fewer)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 branch', '2 branches', '0 records'."""
    return f"{n} {noun if n == 1 else plural or noun + ('es' if noun.endswith(('s', 'sh', 'ch', 'x')) else 's')}"


class Notices:
    """The queue every part of the workspace reports through; the window drains it once a frame."""

    def __init__(self) -> None:
        self._queue: list[Notice] = []
        self.messages: list[Message] = []  # every message said since start, oldest first (View > Messages)
        self.n_said = 0  # messages said since start, dropped ones included (a reader's cursor into `messages`)

    def say(self, text: str, is_error: bool = False) -> None:
        """A status-bar message (logged too: warnings for errors), kept whole in `messages`."""
        (log.warning if is_error else log.info)("%s", text)
        self._queue.append(Said(text, is_error))
        self.messages.append(Message(text, is_error))
        self.n_said += 1
        if len(self.messages) > MAX_MESSAGES:
            del self.messages[: len(self.messages) - MAX_MESSAGES]

    def since(self, n_seen: int) -> list[Message]:
        """The kept messages said after the first `n_seen` (n_said counts them)."""
        new = self.n_said - n_seen
        return self.messages[-new:] if new > 0 else []

    def post(self, notice: Notice) -> None:
        self._queue.append(notice)

    def take(self) -> list[Notice]:
        """What happened since the last call, oldest first."""
        notices, self._queue = self._queue, []
        return notices
