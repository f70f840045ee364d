"""Hugging Face masked language models (BERT, RoBERTa, ModernBERT, ...) as masked-diffusion models.

A masked LM predicts every masked position at once, so iterative unmasking (the sampler's
loop) runs on it unchanged. `load_hf` reads a local folder as `save_pretrained` writes it
(config.json, model.safetensors or pytorch_model.bin, tokenizer files) with
`local_files_only=True`: nothing is downloaded, and no code from the folder runs
(`trust_remote_code=False`; LLaDA and Dream run their own code, named llada:/dream:, engine.dllm).
Weights load through safetensors when the folder has them, else through transformers'
torch.load with weights_only=True.

Ids. dpgviz's id space is the vocabulary's: real tokens 0..V-1, the mask at V. The model's
own ids put the mask anywhere (BERT's [MASK] is 103), so the adapter maps:

    internal id i < V   ->  model id kept[i]      (every tokenizer id but the mask, in order)
    internal id V       ->  model id mask_token_id
    logits (B, T, V)    =   model logits (B, T, V_model)[..., kept]   (the mask column dropped)

and wraps each window in the special tokens the model was trained with ([CLS] ... [SEP],
<s> ... </s>), dropping their positions from the logits. Special ids ([CLS], [PAD],
[UNK], ...) go to `Vocabulary.never_sample`.

Display strings (what the GUI shows and `Vocabulary.decode` joins) come from the model's
own decoder, once at load: display(i) = decode([anchor, i]) minus decode([anchor]), with a
plain anchor token, so a WordPiece word start reads " cat" and "##ing" reads "ing", a
byte-level "Ġcat" reads " cat" and a lone partial byte U+FFFD.

Imports transformers only inside `load_hf`: this module imports without the `hf` extra.
"""

from __future__ import annotations

import logging
import shutil
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dpgviz.core.discovery import HF_TOKENIZER_FILES, HF_WEIGHT_FILES, hf_has_tokenizer, hf_weights
from dpgviz.core.vocab import RESERVED_GLYPH, Vocabulary

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[hf]'"
_ANCHORS = ("a", "the", "x", "1", ".")  # a plain token to decode each id after (see the module docstring)


class HFError(ValueError):
    """A Hugging Face folder cannot be used; engine.checkpoint re-raises it as CheckpointError."""


class HFMaskedLMAdapter:
    """A Hugging Face masked LM behind the ModelAdapter interface (ids mapped, specials wrapped)."""

    def __init__(
        self,
        model: torch.nn.Module,
        vocab: Vocabulary,
        to_model_ids: torch.Tensor,
        prefix: list[int],
        suffix: list[int],
        block_size: int,
    ) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.block_size = int(block_size)
        self.to_model_ids = to_model_ids  # (n_ids,) internal id -> model id
        kept = to_model_ids[: vocab.size]  # (V,) model id of each real token
        # When the mask is the model's last real id (RoBERTa's <mask>), kept is 0..V-1 and the
        # logits need no gather: the sampler reads columns [:V] and ignores the rest.
        self._kept = None if torch.equal(kept.cpu(), torch.arange(vocab.size)) else kept
        dev = to_model_ids.device
        self._prefix = torch.as_tensor(prefix, dtype=torch.long, device=dev)  # (P,)
        self._suffix = torch.as_tensor(suffix, dtype=torch.long, device=dev)  # (S,)

    def model_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) internal ids -> (B, P + T + S) model ids, wrapped in the model's special tokens."""
        B = ids.shape[0]
        return torch.cat(
            [self._prefix.expand(B, -1), self.to_model_ids[ids], self._suffix.expand(B, -1)], dim=1
        )  # (B, P + T + S)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        assert ids.ndim == 2, ids.shape
        T, P = ids.shape[1], len(self._prefix)
        out = self.model(input_ids=self.model_ids(ids)).logits[:, P : P + T]  # (B, T, V_model)
        return out if self._kept is None else out.index_select(-1, self._kept)  # (B, T, V)


@dataclass
class HFModel:
    """What load_hf hands engine.checkpoint: the module, its adapter and how it was read."""

    model: torch.nn.Module
    adapter: HFMaskedLMAdapter
    vocab: Vocabulary
    tokenizer: str  # the tokenizer's class name
    weights: Path  # the weight file read (the first shard's index for a sharded folder)
    config: Any  # transformers' PretrainedConfig


def check_folder(path: Path) -> list[Path]:
    """The folder's weight files, or HFError saying what is missing (before importing transformers)."""
    weights = hf_weights(path)
    if not weights:
        raise HFError(f"{path} has config.json but no weights ({' or '.join(HF_WEIGHT_FILES[::2])})")
    if not hf_has_tokenizer(path):
        raise HFError(f"{path} has no tokenizer files (one of {', '.join(HF_TOKENIZER_FILES)})")
    return weights


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise HFError(f"loading a Hugging Face model needs transformers and tokenizers: {INSTALL_HINT}") from None
    transformers.utils.logging.set_verbosity_error()  # we check loading info ourselves, in one line
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _dtype_kwargs(transformers: Any, dtype: torch.dtype) -> dict:
    """from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before."""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _anchor(tok: Any) -> tuple[int, str, list[int]]:
    """(anchor id, its decoded text, the ids of that text with special tokens added)."""
    for text in _ANCHORS:
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in tok.all_special_ids:
            full = tok.encode(text, add_special_tokens=True)
            return ids[0], tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), full
    raise HFError("the tokenizer encodes none of 'a', 'the', 'x', '1', '.' as one token")


def _wrapping(anchor: int, full: list[int]) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a text (e.g. [CLS] ... [SEP])."""
    k = full.index(anchor) if anchor in full else len(full)
    return full[:k], full[k + 1 :]


def display_strings(tok: Any, ids: list[int]) -> list[str]:
    """Each id's text as the model's decoder writes it after a plain anchor token (module docstring).

    One batched decode over the vocabulary; special tokens and ids the decoder drops show their
    token string ("[CLS]"), ids without a token RESERVED_GLYPH.
    """
    anchor, base, _ = _anchor(tok)
    decoded = tok.batch_decode([[anchor, i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    tokens = tok.convert_ids_to_tokens(ids)
    special = set(tok.all_special_ids)
    strings = []
    for i, text, token in zip(ids, decoded, tokens, strict=True):  # once per vocabulary entry, at load
        shown = text[len(base) :] if text.startswith(base) else ""
        if i in special or not shown:
            shown = token if token else RESERVED_GLYPH
        strings.append(shown)
    return strings


def vocab_from_tokenizer(
    tok: Any, n_model: int, mask_id: int | None = None, cover_model: bool = False
) -> tuple[Vocabulary, list[int]]:
    """dpgviz's vocabulary for a Hugging Face tokenizer, and each internal id's model id.

    Internal ids are every tokenizer id below `n_model` (the model's logit rows; rows past
    the tokenizer are padding without a token) but the mask, in order, then the mask
    (`mask_id`, default the tokenizer's mask token) at V. Special ids and ids without a
    token go to never_sample. engine.dllm (LLaDA, Dream) and your own adapters use it too (README).

    `cover_model`: every one of the model's `n_model` logit columns gets an id, those past the
    tokenizer too, named "<id>" (their model id; never_sample for dpgviz's loop), so a sampler
    that samples every column, as LLaDA's and Dream's do, can write any of them.
    """
    mask_id = tok.mask_token_id if mask_id is None else mask_id
    n_tok = min(len(tok), int(n_model))
    n_model = int(n_model) if cover_model else n_tok
    if mask_id is None or not 0 <= mask_id < n_model:
        raise HFError(f"the mask id {mask_id} is not one of the model's {n_model} token ids")
    kept = [i for i in range(n_model) if i != mask_id]
    known = [i for i in kept if i < n_tok]
    strings = display_strings(tok, known) + [f"<{i}>" for i in kept[len(known) :]]
    internal = {model_id: i for i, model_id in enumerate(kept)}
    special = {i for i in tok.all_special_ids if i != mask_id}
    never = {internal[i] for i in special if i in internal} | {i for i, s in enumerate(strings) if s == RESERVED_GLYPH}
    never |= set(range(len(known), len(kept)))  # past the tokenizer
    vocab = Vocabulary(itos=tuple(strings), model_vocab_size=len(kept) + 1, never_sample=tuple(sorted(never)))
    return vocab, [*kept, mask_id]


def _position_limit(model: torch.nn.Module, config: Any) -> int:
    """Positions the model takes. RoBERTa-style embeddings number positions from padding_idx + 1
    (max_position_embeddings 514 holds 512 tokens), which their embeddings module records."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if limit <= 0:
        raise HFError(f"{config.name_or_path}/config.json has no max_position_embeddings")
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if isinstance(padding_idx, int) and getattr(embeddings, "position_embeddings", None) is not None:
        limit -= padding_idx + 1
    return limit


def _main_device(device_map: dict) -> torch.device:
    """Where inputs go under a device map: the first GPU it uses, else the CPU (as accelerate's
    dispatch_model picks its main device; its hooks move each layer's inputs on from there and
    bring the output back to the inputs' device)."""
    gpus = [d for d in device_map.values() if d not in ("cpu", "disk")]
    if not gpus:
        return torch.device("cpu")
    first = gpus[0]
    return torch.device(f"cuda:{first}" if isinstance(first, int) else str(first))


def _placement(device_map: str | None, max_memory: dict | None) -> dict:
    """from_pretrained's placement arguments: none (the whole model, moved to the device after),
    or accelerate's device map with max_memory and a private offload folder for what lands on disk."""
    if device_map is None:
        return {}
    if device_map != "auto":
        raise HFError(f"device map {device_map!r}: only 'auto' is supported")
    try:
        import accelerate  # noqa: F401 (transformers needs it for device_map; say so in one line)
    except ImportError:
        raise HFError("--device-map auto needs accelerate: pip install -e '.[remote]'") from None
    import tempfile

    memory = {int(k) if str(k).isdigit() else str(k): v for k, v in (max_memory or {}).items()} or None
    offload = tempfile.mkdtemp(prefix="dpgviz-offload-")  # removed with the model (load_hf)
    return {"device_map": "auto", "max_memory": memory, "offload_folder": offload}


def load_hf(
    path: str | Path, device: torch.device, dtype: torch.dtype, *, device_map: str | None = None,
    max_memory: dict | None = None,
) -> HFModel:
    """Load a local Hugging Face masked-LM folder on `device` in `dtype`, or raise HFError in one line.

    `device_map="auto"`: accelerate places the layers on the GPUs, then the CPU, then disk, each
    within `max_memory` ({0: "20GiB", "cpu": "64GiB"}; None: what each has); `device` is then
    not used, inputs go where the first layers run (_main_device). The logits equal the whole
    model's (tests/test_remote_device_map.py): the same weights run the same ops, moved in.
    """
    path = Path(path)
    weights = check_folder(path)
    transformers = _import_transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    t0 = time.monotonic()
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ValueError, KeyError, OSError) as exc:  # an unknown model_type asks for remote code
        raise HFError(
            f"{path}/config.json is not a model transformers knows ({_first_line(exc)}); models with their own "
            "code load by name: --model llada:FOLDER or dream:FOLDER (README 'Hugging Face models and your own models')"
        ) from None
    model_type = getattr(config, "model_type", "?")
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False):
        archs = ", ".join(getattr(config, "architectures", None) or []) or model_type
        raise HFError(
            f"{path}: {archs} (model_type {model_type!r}) is not an encoder masked language model; dpgviz loads "
            "BERT, RoBERTa, ModernBERT and the like, other models through an adapter (README)"
        )
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise HFError(f"{path}: cannot read the tokenizer ({_first_line(exc)})") from None
    if tok.mask_token_id is None:
        raise HFError(f"{path}: the tokenizer has no mask token; iterative unmasking needs one")
    try:
        vocab, to_model = vocab_from_tokenizer(tok, int(config.vocab_size))  # before the weights: fails fast
    except HFError as exc:
        raise HFError(f"{path}: {exc}") from None

    placement = _placement(device_map, max_memory)
    try:
        model, info = transformers.AutoModelForMaskedLM.from_pretrained(
            path,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=weights[0].name.startswith("model.safetensors"),
            output_loading_info=True,
            **_dtype_kwargs(transformers, dtype),
            **placement,
        )
    except (OSError, ValueError, RuntimeError, KeyError, IndexError) as exc:  # IndexError: transformers'
        # infer_auto_device_map fails so on some splits of tied weights (5.25, a tiny BERT at 25 KB of CPU)
        if "offload_folder" in placement:
            shutil.rmtree(placement["offload_folder"], ignore_errors=True)
        raise HFError(f"{path}: cannot load the weights ({_first_line(exc)})") from None
    if "offload_folder" in placement:  # what accelerate wrote there goes when the model goes (or at exit)
        weakref.finalize(model, shutil.rmtree, placement["offload_folder"], True)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise HFError(
            f"{path}: the weights lack {len(missing)} tensors of the masked-LM model (e.g. {missing[0]}); "
            "is it a base model without its masked-LM head?"
        )
    if device_map is None:
        model = model.to(device=device, dtype=dtype).eval()
    else:  # placed by accelerate (a model that fits one device has no hf_device_map: it is there whole)
        placed = getattr(model, "hf_device_map", None) or {"": str(next(model.parameters()).device)}
        device = _main_device(placed)
        log.info("%s placed by device map: %s", path, placed)
        model = model.eval()

    to_model_ids = torch.as_tensor(to_model, dtype=torch.long, device=device)  # (n_ids,)

    anchor, _, full = _anchor(tok)
    prefix, suffix = _wrapping(anchor, full)
    block_size = _position_limit(model, config) - len(prefix) - len(suffix)
    adapter = HFMaskedLMAdapter(model, vocab, to_model_ids, prefix, suffix, block_size)
    log.info(
        "loaded %s (%s, %d tokens, block %d) on %s in %s in %.2f s",
        path, model_type, vocab.size, block_size, device, str(dtype).removeprefix("torch."), time.monotonic() - t0,
    )
    return HFModel(model, adapter, vocab, type(tok).__name__, weights[0], config)
