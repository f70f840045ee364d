"""A Hugging Face tokenizer's vocabulary for the recorder, fast and cached per tokenizer.

    tokenizer_vocab(tok, mask_id) -> (Vocabulary, to_caller)

The same vocabulary engine.hf.vocab_from_tokenizer builds (every id but the mask, in order,
then the mask; display strings as the model's decoder writes each token after a plain anchor
token), without its batched `decode` of the whole vocabulary, which takes seconds for a
126k tokenizer: the token strings come from the tokenizer's own JSON (one Rust call) and each
display string from the backend decoder on [anchor, token] (one short Rust call per id).
End tokens (core.vocab.end_ids) are named `eos_ids` and stay candidates (a sampler such as
LLaDA's samples them); other special ids, and ids the tokenizer has no token for (drawn as
`<id>`), never are. A tokenizer without a Rust backend takes engine.hf's path.

Built once per (tokenizer object, mask id): a second Recorder over the same tokenizer reuses it.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

from dpgviz.core.vocab import Vocabulary, end_ids, reserved_string

_ANCHORS = ("a", "the", "x", "1", ".")
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_vocab(tok: Any, mask_id: int) -> tuple[Vocabulary, list[int]]:
    """(vocabulary, each internal id's tokenizer id) of `tok` with its mask at `mask_id` (module docstring)."""
    try:
        per_tok = _CACHE.setdefault(tok, {})
    except TypeError:  # not weakly referable: no cache
        per_tok = {}
    if mask_id not in per_tok:
        per_tok[mask_id] = _build(tok, int(mask_id))
    return per_tok[mask_id]


def _build(tok: Any, mask_id: int) -> tuple[Vocabulary, list[int]]:
    n = max(len(tok), mask_id + 1)
    backend = getattr(tok, "backend_tokenizer", None)
    specials = {int(i) for i in tok.all_special_ids}
    if backend is None or backend.decoder is None:
        from dpgviz.engine.hf import display_strings

        kept = [i for i in range(n) if i != mask_id]
        strings = display_strings(tok, kept)
        tokens = tok.convert_ids_to_tokens(kept)
        holes = {k for k, t in enumerate(tokens) if t is None}
    else:
        specials |= {int(i) for i, t in tok.added_tokens_decoder.items() if getattr(t, "special", False)}
        tokens_all, decoder_type = _token_strings(tok, backend, n)
        if decoder_type == "ByteLevel":
            strings_all = _byte_level_strings(tokens_all, specials)
        else:
            strings_all = _display_strings(tok, backend, tokens_all, specials)
        kept = [i for i in range(n) if i != mask_id]
        strings = [strings_all[i] for i in kept]
        holes = {k for k, i in enumerate(kept) if tokens_all[i] is None}
    internal = {model_id: k for k, model_id in enumerate(kept)}
    special = {internal[i] for i in specials if i in internal}
    eos = tok.eos_token_id if isinstance(tok.eos_token_id, int) else None
    ends = end_ids(strings, special, internal.get(eos) if eos is not None else None)
    never = (special | holes) - set(ends)
    eos_internal = internal.get(eos) if eos is not None else None
    vocab = Vocabulary(itos=tuple(strings), model_vocab_size=len(kept) + 1, never_sample=tuple(sorted(never)),
                       eos_id=eos_internal, eos_ids=ends)
    return vocab, [*kept, mask_id]


def _token_strings(tok: Any, backend: Any, n: int) -> tuple[list[str | None], str]:
    """Each id's token string (None: no token), from the tokenizer's JSON, and its decoder's type."""
    try:
        data = json.loads(backend.to_str())
        decoder_type = str((data.get("decoder") or {}).get("type", ""))
        vocab = data["model"]["vocab"]
        if isinstance(vocab, list):  # Unigram: [piece, score] in id order
            keys, ids = [p[0] for p in vocab], None
        else:  # BPE, WordPiece: token -> id, written in id order (checked)
            keys, ids = list(vocab), list(vocab.values())
        out: list[str | None]
        if ids is None or ids == list(range(len(ids))):
            out = [*keys[:n], *([None] * max(0, n - len(keys)))]
        else:
            out = [None] * n
            for t, i in zip(keys, ids, strict=True):  # once per vocabulary entry
                if 0 <= i < n:
                    out[i] = t
        for added in data.get("added_tokens", ()):
            if 0 <= int(added["id"]) < n:
                out[int(added["id"])] = added["content"]
        return out, decoder_type
    except (KeyError, TypeError, ValueError, AttributeError):
        tokens = tok.convert_ids_to_tokens(list(range(min(n, len(tok)))))
        return [*tokens, *([None] * max(0, n - len(tok)))], ""


def _byte_level_bytes() -> dict[int, str]:
    """GPT-2's byte-level alphabet: the character standing for each byte -> that byte as a latin-1 char."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = b
        else:
            chars[256 + extra] = b
            extra += 1
    return {code: chr(b) for code, b in chars.items()}


_SEP = "\uffff"  # not a byte-level character: joins the tokens for one translate
_ASCII_SEP = "\x00\x01\x02\x03"  # joins the tokens' bytes for one UTF-8 decode (ASCII ends any bad sequence)


def _byte_level_strings(tokens: list[str | None], specials: set[int]) -> list[str]:
    """The ByteLevel decoder's text of each token (its bytes as UTF-8, a partial sequence as U+FFFD),
    done with one str.translate and one decode over all tokens instead of a decode call per token.
    UTF-8 never uses an ASCII byte inside a character, so a bad sequence ends at the separator
    and each token decodes as it does alone."""
    table = _byte_level_bytes()
    latin = _SEP.join(t if t is not None else "" for t in tokens).translate(table)
    out = latin.replace(_SEP, _ASCII_SEP).encode("latin-1", "replace").decode("utf-8", "replace").split(_ASCII_SEP)
    if len(out) != len(tokens):  # a token holding the separator's bytes: one at a time
        out = [t.encode("latin-1", "replace").decode("utf-8", "replace") for t in latin.split(_SEP)]
    for i in specials:
        if 0 <= i < len(tokens) and tokens[i] is not None:
            out[i] = tokens[i]
    for i, token in enumerate(tokens):  # once per vocabulary entry: holes and empty texts
        if token is None:
            out[i] = reserved_string(i)
        elif not out[i]:
            out[i] = token
    return out


def _display_strings(tok: Any, backend: Any, tokens: list[str | None], specials: set[int]) -> list[str]:
    """engine.hf.display_strings' strings: the decoder's text of [anchor, token] past the anchor's."""
    decoder = backend.decoder
    anchor = None
    for text in _ANCHORS:
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in specials and tokens[ids[0]] is not None:
            anchor = tokens[ids[0]]
            break
    if anchor is None:
        from dpgviz.engine.hf import HFError

        raise HFError("the tokenizer encodes none of 'a', 'the', 'x', '1', '.' as one token")
    base = decoder.decode([anchor])
    strings = []
    for i, token in enumerate(tokens):  # once per vocabulary entry, at the first Recorder
        if token is None:
            strings.append(reserved_string(i))
            continue
        text = decoder.decode([anchor, token])
        shown = text[len(base):] if text.startswith(base) else ""
        strings.append(token if i in specials or not shown else shown)
    return strings


def model_width(tok: Any) -> int | None:
    """The model's ids (`vocab_size` of the config.json beside the tokenizer: its folder, or the
    Hugging Face cache for a hub name), read as plain JSON without running any code; None if not found."""
    name = str(getattr(tok, "name_or_path", "") or "")
    if not name:
        return None
    path = Path(name).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # not a hub name, no hub library: the width comes from the logits
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        width = json.loads(path.read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return None
    return int(width) if isinstance(width, int) and width > 0 else None
