"""LLaDA and Dream from a local folder: `--model llada:FOLDER`, `--model dream:FOLDER`.

Both are masked-diffusion LMs that ship their own modelling code with their weights
(`modeling_llada.py`, `modeling_dream.py`, named by config.json's `auto_map`). Running that
code is the user's call: the `llada:` / `dream:` prefix is the consent, and only then does
dpgviz pass `trust_remote_code=True` (core.discovery lists such folders under that name,
and a scan never imports them). Nothing is downloaded (`local_files_only`).

What the adapter does, per family (FAMILIES):

    ids         dpgviz's id space (engine.hf.vocab_from_tokenizer): every tokenizer id but the
                mask, then the mask at V; the model's rows past the tokenizer are dropped
    mask        config.json's mask_token_id, else the tokenizer's mask token, else the
                family's (LLaDA's <|mdm_mask|> = 126336)
    block size  the config's window: LLaDA max_sequence_length, Dream max_position_embeddings
    never       every special and added token (<|eot_id|>, the header tokens, the reserved
                tokens, <|im_end|> ...) is never sampled, except the end of text
    EOS         the end of text stays samplable, as in LLaDA's own sampler (generate.py): the
                model writes its answer, then <|endoftext|> to the end; the vocabulary's
                eos_id lets the canvas dim it and everything after (core.prompt.padding_after_eos)
    shift       Dream began as an autoregressive model: position i's logits predict token
                i + 1, and its sampler shifts them right by one (logits[:, :1] + logits[:, :-1]);
                so does this adapter. Its forward takes attention_mask="full" for no padding.
    chat        the tokenizer's chat template around one user message, generation prompt
                included, as ids before and after it (chat_wrap; core.prompt's --chat)
    dtype       --dtype as for every model (auto: bfloat16 on a CUDA device that has it)

Imports transformers only inside `load_dllm`. The tests build stand-in models with the same
interface (an AutoModel returning `.logits`); no published modelling code lives in dpgviz.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from dpgviz.core.prompt import ChatWrap
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.hf import (
    HFError,
    _dtype_kwargs,
    _first_line,
    _import_transformers,
    check_folder,
    vocab_from_tokenizer,
)

log = logging.getLogger(__name__)

# A user message no chat template alters (letters only: templates trim and escape), split out
# of the rendered template to leave what comes before and after a message.
_SENTINEL = "dpgvizMessageSentinel"


@dataclass(frozen=True)
class Family:
    """How one family of diffusion LMs is driven."""

    name: str
    mask_token: str  # the mask's token string, when neither config nor tokenizer names its id
    window_keys: tuple[str, ...]  # config fields giving the longest sequence, first found wins
    shift: bool = False  # position i's logits predict token i + 1 (Dream)
    full_attention: bool = False  # forward(ids, attention_mask="full") (Dream's no-padding mask)


FAMILIES = {
    "llada": Family("llada", "<|mdm_mask|>", ("max_sequence_length", "max_position_embeddings")),
    "dream": Family("dream", "<|mask|>", ("max_position_embeddings", "max_sequence_length"), shift=True, full_attention=True),
}


class DiffusionLMAdapter:
    """A LLaDA- or Dream-style model behind the ModelAdapter interface (engine.adapter)."""

    def __init__(
        self,
        model: torch.nn.Module,
        vocab: Vocabulary,
        to_model_ids: torch.Tensor,
        block_size: int,
        family: Family,
        chat_wrap: ChatWrap | None = None,
        ends: tuple[int | None, int | None] = (None, None),
    ) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.block_size = int(block_size)
        self.family = family
        self.chat_wrap = chat_wrap  # read by the sampler and ModelInfo (core.prompt)
        self.to_model_ids = to_model_ids  # (n_ids,) internal id -> model id
        self._kept = to_model_ids[: vocab.size]  # (V,) model id of each real token
        self.model_mask_id = int(to_model_ids[vocab.mask_id])  # the model's own mask id (LLaDA 126336)
        self.eos_model_id, self.eot_model_id = ends  # end of text, end of turn: model ids (or None)
        self.tokenizer: Any = None  # the model's tokenizer (load_dllm sets it): prompts go through it

    def forward_model(self, model_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) model ids -> the model's own logits (B, T, V_model), every column, unshifted
        (the reference samplers, engine.dllm_sampling)."""
        extra = {"attention_mask": "full"} if self.family.full_attention else {}
        return self.model(model_ids, **extra).logits

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        assert ids.ndim == 2, ids.shape
        model_ids = self.to_model_ids[ids]  # (B, T)
        extra = {"attention_mask": "full"} if self.family.full_attention else {}
        out = self.model(model_ids, **extra).logits  # (B, T, V_model)
        if self.family.shift:  # token i from position i - 1; position 0 keeps its own (Dream's sampler)
            out = torch.cat([out[:, :1], out[:, :-1]], dim=1)  # (B, T, V_model)
        return out.index_select(-1, self._kept)  # (B, T, V): the mask's column dropped


@dataclass
class DLLMModel:
    """What load_dllm hands engine.checkpoint."""

    model: torch.nn.Module
    adapter: DiffusionLMAdapter
    vocab: Vocabulary
    tokenizer: str  # the tokenizer's class name
    config: Any


def chat_wrap(tok: Any, internal: dict[int, int]) -> ChatWrap | None:
    """The tokenizer's chat template around one user message (add_generation_prompt=True), as
    internal ids before and after the message; None when it has no template (or one this
    cannot split around a message)."""
    if not getattr(tok, "chat_template", None):
        return None
    try:
        text = tok.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}], add_generation_prompt=True, tokenize=False
        )
    except Exception as exc:  # the folder's own template: any error, logged, and no chat
        log.warning("the chat template does not render (%s); --chat is off for this model", _first_line(exc))
        return None
    if not isinstance(text, str) or text.count(_SENTINEL) != 1:
        log.warning("the chat template does not hold a message once; --chat is off for this model")
        return None
    parts = text.split(_SENTINEL)
    wrapped = [tok.encode(part, add_special_tokens=False) if part else [] for part in parts]
    if any(i not in internal for ids in wrapped for i in ids):
        log.warning("the chat template writes ids outside the vocabulary (the mask?); --chat is off")
        return None
    before, after = ([internal[i] for i in ids] for ids in wrapped)
    return tuple(before), tuple(after)


def _raw_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HFError(f"{folder}/config.json cannot be read ({exc})") from None
    return data if isinstance(data, dict) else {}


def _mask_id(family: Family, raw: dict, tok: Any) -> int:
    """config.json's mask_token_id, else the tokenizer's mask token, else the family's token string."""
    if isinstance(raw.get("mask_token_id"), int):
        return int(raw["mask_token_id"])
    if getattr(tok, "mask_token_id", None) is not None:
        return int(tok.mask_token_id)
    found = tok.convert_tokens_to_ids(family.mask_token)
    if isinstance(found, int) and found != getattr(tok, "unk_token_id", None):
        return found
    raise HFError(f"no mask id: config.json has no mask_token_id and the tokenizer no {family.mask_token}")


def _window(family: Family, config: Any, folder: Path) -> int:
    for key in family.window_keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise HFError(f"{folder}/config.json gives no window ({' or '.join(family.window_keys)})")


def _specials(tok: Any) -> set[int]:
    """Every special id: the named ones and every added token marked special (reserved ones too)."""
    ids = set(tok.all_special_ids)
    for i, added in getattr(tok, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(i))
    return ids


def _token_id(tok: Any, names: tuple[str, ...]) -> int | None:
    """The id of the first of `names` the tokenizer has as a token of its own, else None."""
    vocab = tok.get_vocab()
    for name in names:
        if name in vocab:
            return int(vocab[name])
    return None


def load_tokenizer(kind: str, folder: str | Path) -> Any:
    """Only the folder's tokenizer (cheap: no weights), or HFError in one line."""
    folder = Path(folder)
    transformers = _import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
    except Exception as exc:  # the folder's own code may run here: any error, in one line
        raise HFError(f"{kind}:{folder}: cannot read the tokenizer ({_first_line(exc)})") from None


def tokenize_prompt(tok: Any, text: str, chat: bool, mask_id: int) -> list[int]:
    """The model's own ids of a prompt: `tok(text).input_ids`, or with `chat` the chat template
    around one user message (add_generation_prompt) encoded without added specials, as LLaDA's
    and Dream's demos do. PromptError naming every character the tokenizer cannot encode (one
    that comes out as the unknown token) with its code point."""
    from dpgviz.core.prompt import PromptError

    unk = getattr(tok, "unk_token_id", None)
    if unk is not None:
        bad = sorted({ch for ch in text if unk in tok(ch, add_special_tokens=False).input_ids})
        if bad:
            names = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in bad)
            raise PromptError(f"the model's tokenizer cannot encode {len(bad)} character(s) of the prompt: {names}")
    if chat:
        if not getattr(tok, "chat_template", None):
            raise PromptError("the model has no chat template; --chat needs a tokenizer that brings one")
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        ids = tok(rendered, add_special_tokens=False).input_ids
    else:
        ids = tok(text).input_ids
    if mask_id in ids:
        raise PromptError("the prompt encodes to the mask token; write it without the mask's text")
    return [int(i) for i in ids]


def load_dllm(kind: str, folder: str | Path, device: torch.device, dtype: torch.dtype) -> DLLMModel:
    """Load a LLaDA (`kind` "llada") or Dream ("dream") folder, running its own modelling code, on
    `device` in `dtype`; HFError in one line."""
    family = FAMILIES[kind]
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HFError(f"{kind}:{folder}: no config.json there (a folder as save_pretrained writes it)")
    check_folder(folder)
    raw = _raw_config(folder)
    transformers = _import_transformers()
    t0 = time.monotonic()
    where = f"{kind}:{folder}"
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
        tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
    except Exception as exc:  # the folder's own code runs here: any error, in one line
        raise HFError(f"{where}: cannot read the config or tokenizer ({_first_line(exc)})") from None
    mask_id = _mask_id(family, raw, tok)
    n_model = int(getattr(config, "vocab_size", 0) or len(tok))  # the logits' width
    try:  # every column gets an id: the reference samplers sample them all
        vocab, to_model = vocab_from_tokenizer(tok, n_model, mask_id=mask_id, cover_model=True)
    except HFError as exc:
        raise HFError(f"{where}: {exc}") from None
    internal = {model_id: i for i, model_id in enumerate(to_model)}
    eos_model = tok.eos_token_id if tok.eos_token_id is not None else raw.get("eos_token_id")
    eos = internal.get(eos_model) if isinstance(eos_model, int) and eos_model != mask_id else None
    never = {internal[i] for i in _specials(tok) if i in internal and i != mask_id} | set(vocab.never_sample)
    never.discard(eos)  # the end of text is how the model ends its answer (LLaDA's sampler samples it)
    vocab = replace(vocab, never_sample=tuple(sorted(never)), eos_id=eos)
    block_size = _window(family, config, folder)
    try:
        model = transformers.AutoModel.from_pretrained(
            folder, local_files_only=True, trust_remote_code=True, **_dtype_kwargs(transformers, dtype)
        )
    except Exception as exc:
        raise HFError(f"{where}: cannot load the model ({_first_line(exc)})") from None
    model = model.to(device=device, dtype=dtype).eval()
    to_model_ids = torch.as_tensor(to_model, dtype=torch.long, device=device)  # (n_ids,)
    eot = _token_id(tok, ("<|eot_id|>", "<|im_end|>"))
    ends = (eos_model if isinstance(eos_model, int) else None, eot)
    adapter = DiffusionLMAdapter(model, vocab, to_model_ids, block_size, family, chat_wrap(tok, internal), ends)
    adapter.tokenizer = tok
    log.info(
        "loaded %s (%d tokens, mask %d, end of text %s, block %d, chat %s) on %s in %s in %.2f s",
        where, vocab.size, mask_id, eos_model, block_size, "yes" if adapter.chat_wrap else "no", device,
        str(dtype).removeprefix("torch."), time.monotonic() - t0,
    )
    return DLLMModel(model, adapter, vocab, type(tok).__name__, config)
