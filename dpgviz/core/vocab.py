"""Vocabulary: id <-> text for a char-level (or later subword) model, and safe `meta.pkl` loading.

`meta.pkl` comes from users' folders, so it is read through a restricted unpickler
that only rebuilds plain containers, strings and numbers: a pickle that names any
global (the way a malicious pickle runs code) is refused before anything runs.
numpy only; no torch.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

MASK_GLYPH = "\u2588"  # full block: how a masked position prints in text
NEWLINE_GLYPH = "\u21b5"  # downwards arrow with corner leftwards: a newline made visible
RESERVED_GLYPH = "\ufffd"  # replacement char for ids past the real vocabulary


class VocabError(ValueError):
    """A vocabulary file is missing, unsafe or not a vocabulary."""


class _RestrictedUnpickler(pickle.Unpickler):
    # Plain dict/list/tuple/str/int/float/bool/None need no globals at all; sets are the
    # only container a vocabulary might reasonably pickle that does.
    _ALLOWED: ClassVar[set[tuple[str, str]]] = {("builtins", "set"), ("builtins", "frozenset")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            import builtins

            return getattr(builtins, name)
        raise VocabError(f"refusing to load {module}.{name} from a vocabulary pickle")


def safe_load_meta(data: bytes) -> dict:
    """Unpickle `meta.pkl` bytes allowing only plain containers, strings and numbers."""
    try:
        meta = _RestrictedUnpickler(io.BytesIO(data)).load()
    except VocabError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise VocabError(f"not a readable vocabulary pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise VocabError(f"vocabulary pickle holds a {type(meta).__name__}, expected a dict")
    return meta


@dataclass(frozen=True)
class Vocabulary:
    """Token strings by id. The mask id is `size` (the seed's convention: meta vocab_size)."""

    itos: tuple[str, ...]
    model_vocab_size: int = 0  # the model's embedding rows (may exceed size + 1: reserved ids)
    never_sample: tuple[int, ...] = ()  # special ids ([CLS], [PAD], ...) the sampler never proposes
    _lookup: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.itos)

    @property
    def mask_id(self) -> int:
        return len(self.itos)

    @property
    def n_ids(self) -> int:
        """Ids a record can hold: real tokens, the mask, and any reserved ids."""
        return max(self.model_vocab_size, self.size + 1)

    @classmethod
    def from_meta(cls, meta: dict, model_vocab_size: int = 0) -> Vocabulary:
        try:
            size = int(meta["vocab_size"])
            itos_raw = meta["itos"]
        except (KeyError, TypeError, ValueError) as exc:
            raise VocabError(f"vocabulary lacks {exc}; expected keys vocab_size, itos, stoi") from None
        if isinstance(itos_raw, dict):
            try:
                itos = tuple(str(itos_raw[i]) for i in range(size))
            except KeyError as exc:
                raise VocabError(f"vocabulary itos has no entry for id {exc}") from None
        elif isinstance(itos_raw, (list, tuple)) and len(itos_raw) == size:
            itos = tuple(str(s) for s in itos_raw)
        else:
            raise VocabError("vocabulary itos must map every id below vocab_size to a string")
        if model_vocab_size and model_vocab_size < size + 1:
            raise VocabError(
                f"vocabulary has {size} tokens plus a mask, but the model only has {model_vocab_size} ids"
            )
        return cls(itos=itos, model_vocab_size=model_vocab_size)

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """Character vocabulary of a corpus, sorted as nanoGPT's prepare.py does."""
        return cls(itos=tuple(sorted(set(text))))

    @classmethod
    def load(cls, path: str | Path, model_vocab_size: int = 0) -> Vocabulary:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VocabError(f"cannot read vocabulary {path}: {exc.strerror}") from None
        return cls.from_meta(safe_load_meta(data), model_vocab_size)

    def to_meta(self) -> dict:
        """The seed's meta.pkl dict."""
        return {
            "vocab_size": self.size,
            "itos": {i: s for i, s in enumerate(self.itos)},
            "stoi": {s: i for i, s in enumerate(self.itos)},
        }

    # -- encoding and decoding -------------------------------------------------------
    def encode(self, text: str, mask_char: str = MASK_GLYPH) -> np.ndarray:
        """Char-level ids of `text`; `mask_char` becomes the mask id. Unknown chars raise."""
        stoi = {s: i for i, s in enumerate(self.itos)}
        ids = np.empty(len(text), dtype=np.int64)
        for i, ch in enumerate(text):  # user input, not the frame path
            if ch == mask_char:
                ids[i] = self.mask_id
            elif ch in stoi:
                ids[i] = stoi[ch]
            else:
                raise VocabError(f"character {ch!r} at position {i} is not in the model's vocabulary")
        return ids

    def strings(self, mask: str = MASK_GLYPH, newline: str | None = None) -> np.ndarray:
        """An object array id -> display string, covering every id a record can hold."""
        table = np.full(self.n_ids, RESERVED_GLYPH, dtype=object)
        table[: self.size] = self.itos
        table[self.mask_id] = mask
        if newline is not None:
            table[: self.size][np.asarray(self.itos, dtype=object) == "\n"] = newline
        return table

    def decode(self, ids: np.ndarray, mask: str = MASK_GLYPH) -> str:
        """Text of an id array; masks print as `mask`."""
        return "".join(self.strings(mask)[np.asarray(ids, dtype=np.int64)])

    def display_widths(self) -> np.ndarray:
        """Cells each id takes on the canvas (1 for chars; subword tokens are wider)."""
        table = self.strings(newline=NEWLINE_GLYPH)
        return np.fromiter((max(1, len(s)) for s in table), dtype=np.int32, count=len(table))
