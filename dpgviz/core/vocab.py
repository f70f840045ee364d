"""Vocabulary: id <-> text for any model, char-level or subword, and safe `meta.pkl` loading.

The tokenizer interface both processes share, without any tokenizer library (the GUI
process has none): each id has a display string (`itos`), and

    decode   joins the display strings, so a display string must carry its own spacing:
             a WordPiece word start shows as " cat", "##ing" as "ing", byte-level "Ġcat"
             as " cat" (engine.hf computes them in the worker with the model's own decoder)
    encode   one id per character when every display string is one character (char
             models); otherwise greedy longest match over the display strings
    widths   `display_widths`: cells per id on the canvas and in exports (len of the string)
    ids      real tokens 0..size-1, the mask at `mask_id` = size, reserved ids up to n_ids;
             `never_sample` lists special ids ([CLS], [PAD], ...) the sampler never proposes
    ends     `eos_ids`: the end tokens (end of text, end of turn: `END_TOKENS` among a
             tokenizer's specials, `end_ids`); they draw as named glyphs (EOS_GLYPH, EOT_GLYPH)
    model    `model_ids(tokens)`: a record's ids in the model's own id space. A Hugging Face
             model's internal ids are its ids without the mask, then the mask
             (engine.hf.vocab_from_tokenizer); `model_mask_id` says where the mask was.
             An id no token names draws as `<id>` (`reserved_string`), in the model's ids.

`meta.pkl` comes from users' folders, so it is read through a restricted unpickler
that only rebuilds plain containers, strings and numbers: a pickle that names any
global (the way a malicious pickle runs code) is refused before anything runs.
numpy only; no torch.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

MASK_GLYPH = "\u2588"  # full block: how a masked position prints in text
NEWLINE_GLYPH = "\u21b5"  # downwards arrow with corner leftwards: a newline made visible
MAX_SLOT_WIDTH = 8  # widest grid slot in cells (canvas and PNG) for subword tokens; longer strings are cut
RESERVED_GLYPH = "\ufffd"  # replacement char: a token the decoder cannot show on its own
EOS_GLYPH = "\u27e8eos\u27e9"  # how an end of text draws: "<eos>" in mathematical angle brackets
EOT_GLYPH = "\u27e8eot\u27e9"  # an end of turn (<|eot_id|>, <|im_end|>, <end_of_turn>)
# The token strings of end tokens across tokenizer families (value: the glyph they draw as).
END_TOKENS = {
    "</s>": EOS_GLYPH, "<|endoftext|>": EOS_GLYPH, "<|end_of_text|>": EOS_GLYPH, "<eos>": EOS_GLYPH,
    "<|eot_id|>": EOT_GLYPH, "<|im_end|>": EOT_GLYPH, "<end_of_turn>": EOT_GLYPH, "<|end|>": EOT_GLYPH,
}


def reserved_string(model_id: int) -> str:
    """How an id that no token of the tokenizer names draws: `<id>` (the model's id)."""
    return f"<{int(model_id)}>"


def end_ids(itos: Sequence[str], candidates: Iterable[int], eos: int | None = None) -> tuple[int, ...]:
    """Ids among `candidates` (a tokenizer's special ids, in `itos`'s ids) whose string is an
    END_TOKENS entry, with `eos` (the tokenizer's own end of text) if given; sorted."""
    found = {int(i) for i in candidates if 0 <= int(i) < len(itos) and itos[int(i)] in END_TOKENS}
    if eos is not None and 0 <= eos < len(itos):
        found.add(int(eos))
    return tuple(sorted(found))


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
    # The end-of-text id of a model that writes one and pads after it (LLaDA, Dream): the
    # canvas dims everything from it on (core.prompt.padding_after_eos). None: no such id.
    eos_id: int | None = None
    # Every end token (eos_id among them): drawn as EOS_GLYPH / EOT_GLYPH, summed in "EOS mass".
    eos_ids: tuple[int, ...] = ()
    # The model's id of the mask where internal ids skip it (a Hugging Face model: engine.hf);
    # None: internal ids are the model's (the seed's char models, mask at size).
    model_mask_id: int | None = None
    _lookup: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ends = {int(i) for i in self.eos_ids} | ({int(self.eos_id)} if self.eos_id is not None else set())
        object.__setattr__(self, "eos_ids", tuple(sorted(ends)))

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

    def to_dict(self) -> dict:
        """Plain data for session headers and the recovery journal (`from_dict` reads it back)."""
        data = {"itos": list(self.itos), "model_vocab_size": self.model_vocab_size, "never_sample": list(self.never_sample)}
        if self.eos_id is not None:  # only models that pad after an end of text: other files read as before
            data["eos_id"] = self.eos_id
        if self.eos_ids:
            data["eos_ids"] = list(self.eos_ids)
        if self.model_mask_id is not None:
            data["model_mask_id"] = self.model_mask_id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of to_dict; never_sample, eos_id, eos_ids and model_mask_id may be absent (older files)."""
        eos, model_mask = data.get("eos_id"), data.get("model_mask_id")
        return cls(
            itos=tuple(str(s) for s in data["itos"]),
            model_vocab_size=int(data.get("model_vocab_size", 0)),
            never_sample=tuple(int(i) for i in data.get("never_sample", ())),
            eos_id=None if eos is None else int(eos),
            eos_ids=tuple(int(i) for i in data.get("eos_ids", ())),
            model_mask_id=None if model_mask is None else int(model_mask),
        )

    def model_ids(self, tokens: np.ndarray) -> np.ndarray:
        """`tokens` (dpgviz's ids, any shape) in the model's own id space (int64): the ids the
        model's tokenizer reads (`show --json --ids`, `generate --json --ids`)."""
        t = np.asarray(tokens, dtype=np.int64)
        if self.model_mask_id is None:
            return t.copy()
        out = t + ((t >= self.model_mask_id) & (t < self.mask_id))  # ids after the mask's place move up one
        out[t == self.mask_id] = self.model_mask_id
        return out

    def to_meta(self) -> dict:
        """The seed's meta.pkl dict."""
        return {
            "vocab_size": self.size,
            "itos": {i: s for i, s in enumerate(self.itos)},
            "stoi": {s: i for i, s in enumerate(self.itos)},
        }

    # -- encoding and decoding -------------------------------------------------------
    @property
    def is_char_level(self) -> bool:
        """True when every token is one character (the seed's models): encode goes char by char."""
        return all(len(s) == 1 for s in self.itos)

    def _encode_table(self) -> tuple[dict[str, int], int]:
        """(display string -> id, longest string) for greedy encoding; cached on the instance.

        Special ids are left out (typing "[CLS]" gives its characters, not the special token);
        where two ids share a display string (byte-level partial bytes all show U+FFFD) the
        lowest id wins.
        """
        if "stoi" not in self._lookup:
            never = set(self.never_sample)
            stoi: dict[str, int] = {}
            for i, s in enumerate(self.itos):  # once per vocabulary, not per call
                if s and i not in never:
                    stoi.setdefault(s, i)
            self._lookup["stoi"] = stoi
            self._lookup["longest"] = max((len(s) for s in stoi), default=1)
        return self._lookup["stoi"], self._lookup["longest"]

    def encode(self, text: str, mask_char: str = MASK_GLYPH) -> np.ndarray:
        """Ids of `text`; `mask_char` becomes the mask id. Text no token covers raises VocabError.

        Char-level vocabularies map each character; subword ones take, at each point, the
        longest token whose display string the text continues with (so " cat" is one token,
        "cats" may be "cat" + "s"). Whitespace no subword token starts with (WordPiece has
        no token for a bare space or newline: its tokenizer drops them) is skipped, as the
        model's own tokenizer would. User input, not the frame path.
        """
        stoi, longest = self._encode_table()
        ids: list[int] = []
        i, n = 0, len(text)
        while i < n:
            if text[i] == mask_char:
                ids.append(self.mask_id)
                i += 1
                continue
            for length in range(min(longest, n - i), 0, -1):
                piece = text[i : i + length]
                if mask_char not in piece and piece in stoi:
                    ids.append(stoi[piece])
                    i += length
                    break
            else:
                if longest > 1 and text[i].isspace():
                    i += 1  # a separator the vocabulary has no token for
                    continue
                if longest == 1:
                    raise VocabError(f"character {text[i]!r} at position {i} is not in the model's vocabulary")
                raise VocabError(f"no token of the model's vocabulary starts with {text[i]!r} (position {i} of the text)")
        return np.asarray(ids, dtype=np.int64)

    def unknown_chars(self, text: str, mask_char: str = MASK_GLYPH) -> list[str]:
        """Characters of `text` that appear in no token's display string, unique, in order."""
        if "chars" not in self._lookup:
            self._lookup["chars"] = set("".join(self._encode_table()[0]))
        known = self._lookup["chars"]
        return list(dict.fromkeys(ch for ch in text if ch != mask_char and ch not in known))

    def strings(self, mask: str = MASK_GLYPH, newline: str | None = None) -> np.ndarray:
        """An object array id -> display string, covering every id a record can hold.

        `newline` replaces every newline inside a display string (a subword token may hold
        several, or spaces around one), so a drawn token never breaks its row. End tokens
        show as their glyph (EOS_GLYPH, EOT_GLYPH), ids past the vocabulary as `<id>`. Built
        once per (mask, newline) and cached; each call returns a copy.
        """
        key = ("strings", mask, newline)
        if key not in self._lookup:
            table = np.empty(self.n_ids, dtype=object)
            if newline is not None:
                table[: self.size] = [s.replace("\n", newline) for s in self.itos]  # once per vocabulary
            else:
                table[: self.size] = self.itos
            past = np.arange(self.size + 1, self.n_ids)
            table[past] = [reserved_string(i) for i in self.model_ids(past)]
            for i in self.eos_ids:
                if 0 <= i < self.size:
                    table[i] = END_TOKENS.get(self.itos[i], EOS_GLYPH)
            table[self.mask_id] = mask
            self._lookup[key] = table
        return self._lookup[key].copy()

    def decode(self, ids: np.ndarray, mask: str = MASK_GLYPH) -> str:
        """Text of an id array (the display strings joined); masks print as `mask`."""
        return "".join(self.strings(mask)[np.asarray(ids, dtype=np.int64)])

    def display_widths(self) -> np.ndarray:
        """Cells each id takes on the canvas and in exports: its display string's length, at least 1."""
        table = self.strings(newline=NEWLINE_GLYPH)
        return np.fromiter((max(1, len(s)) for s in table), dtype=np.int32, count=len(table))
