"""Prompts, infilling templates and chat templates: runs that start from text, not only masks.

A run conditioned on text (`GenerationSettings.prompt`) starts from a sequence whose fixed
positions hold the text's tokens and whose other positions are masked:

    prompt     [prompt][mask x length]                  the prompt's positions fixed
    chat       [before][prompt][after][mask x length]   before / after: the model's own chat
               template around one user message, generation prompt included (ChatWrap)
    template   the text, each \u2588 (U+2588) one masked position, everything else fixed;
               for a subword model a run of k \u2588 is k masked tokens, the text around
               them split into tokens on its own

Fixed positions are protected (the sampler never masks or samples them) and flagged
FLAG_PROMPT; the schedule and the strategies count only the generated positions. In a
block run the blocks cover the generated part only: the fixed positions before the first
generated one (`EncodedPrompt.prefix_len`) and what earlier blocks wrote are each block's
context, and `RecordLayout.prefix` carries them, since no block record holds them.

`encode_prompt` is the one encoding. The CLI and the window call it to lay a run out, the
sampler (in the worker) to start it, with the same vocabulary and chat wrap, so both sides
agree on every position. The text is split into tokens as all typed text in dpgviz
(`Vocabulary.encode`: one per character for a char model, longest match for a subword
one); only the chat template's own text is tokenized by the model's tokenizer, in the
worker at load (engine.hf.chat_wrap). A llada:/dream: folder's prompt is split by the
model's own tokenizer instead (`tokenizer(text).input_ids`, `apply_chat_template`; engine.dllm
`tokenize_prompt`), and its ids travel in `settings.prompt_ids`, which this encoding then
takes as they are. numpy only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dpgviz.core.records import FLAG_PROMPT, RecordLayout
from dpgviz.core.settings import DEFAULT_BLOCK_LENGTH, MAX_LENGTH, GenerationSettings
from dpgviz.core.vocab import MASK_GLYPH, VocabError, Vocabulary

# The model's chat template around one user message: (ids before it, ids after it), the
# generation prompt ("<|start_header_id|>assistant<|end_header_id|>\n\n") at the end of `after`.
ChatWrap = tuple[tuple[int, ...], tuple[int, ...]]


class PromptError(ValueError):
    """A prompt or template cannot start a run; the message says why in one line."""


@dataclass(frozen=True)
class EncodedPrompt:
    """The start of a run conditioned on text: every position's id and which are fixed."""

    tokens: np.ndarray  # (N,) int64 ids, mask_id at the generated positions
    fixed: np.ndarray  # (N,) bool: positions the prompt or template fixed

    @property
    def n(self) -> int:
        """Positions of the whole sequence."""
        return len(self.tokens)

    @property
    def prefix_len(self) -> int:
        """Fixed positions before the first generated one (a prompt's length)."""
        free = np.flatnonzero(~self.fixed)
        return int(free[0]) if len(free) else self.n

    @property
    def n_generated(self) -> int:
        return int(np.count_nonzero(~self.fixed))

    def text(self, vocab: Vocabulary) -> str:
        """The fixed text as the model reads it (generated positions as \u2588)."""
        return vocab.decode(self.tokens)


def _char_name(ch: str) -> str:
    return f"{ch!r} (U+{ord(ch):04X})"


def check_prompt(settings: GenerationSettings) -> None:
    """Refusals that need no vocabulary: PromptError in one line, else None."""
    if settings.template:
        if not settings.prompt:
            raise PromptError("the infilling template is empty: write the text with a \u2588 (U+2588) at each position to fill")
        if MASK_GLYPH not in settings.prompt:
            raise PromptError(
                "the template has no \u2588 (U+2588): mark each position to fill with one (a run of k \u2588 is k tokens)"
            )
        if settings.chat:
            raise PromptError("a chat template wraps a prompt, not an infilling template: use --prompt with --chat")
        if settings.block_length > 0:
            raise PromptError("an infilling template runs in one block: blocks (--block-length) follow a prompt only")
    elif MASK_GLYPH in settings.prompt:
        raise PromptError(
            "the prompt holds \u2588 (U+2588), which marks a position to fill: pass it as a template (--init; "
            "in the window, tick 'template')"
        )


def _encode(text: str, vocab: Vocabulary, what: str) -> np.ndarray:
    """Ids of `text` (\u2588 as the mask), or PromptError naming every character the vocabulary lacks."""
    if vocab.is_char_level:
        unknown = vocab.unknown_chars(text)
        if unknown:
            names = ", ".join(_char_name(ch) for ch in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            which = f"{len(unknown)} characters" if len(unknown) > 1 else "a character"
            raise PromptError(f"the {what} has {which} the model's vocabulary lacks: {names}")
    try:
        return vocab.encode(text)
    except VocabError as exc:
        raise PromptError(f"the {what}: {exc}") from None


def encode_prompt(
    settings: GenerationSettings, vocab: Vocabulary, chat_wrap: ChatWrap | None = None, model_name: str = "the model"
) -> EncodedPrompt | None:
    """The start of a run of `settings` (None without a prompt); PromptError in one line."""
    if not settings.has_prompt:
        return None
    check_prompt(settings)
    mask_id = vocab.mask_id
    if settings.template:
        tokens = _encode(settings.prompt, vocab, "template")
        fixed = tokens != mask_id
    elif settings.prompt_ids:  # the model's own tokenizer wrote them, chat template included
        ids = np.asarray(settings.prompt_ids, dtype=np.int64)
        if ((ids < 0) | (ids >= vocab.size)).any():
            raise PromptError(f"the prompt's ids are not all ids of {model_name}'s vocabulary (0..{vocab.size - 1})")
        tokens = np.concatenate([ids, np.full(settings.length, mask_id, dtype=np.int64)])
        fixed = np.arange(len(tokens)) < len(ids)
    else:
        ids = _encode(settings.prompt, vocab, "prompt")
        if settings.chat:
            if chat_wrap is None:
                raise PromptError(f"{model_name} has no chat template; --chat needs a tokenizer that brings one")
            before, after = chat_wrap
            ids = np.concatenate([np.asarray(before, np.int64), ids, np.asarray(after, np.int64)])
        tokens = np.concatenate([ids, np.full(settings.length, mask_id, dtype=np.int64)])
        fixed = np.arange(len(tokens)) < len(ids)
    if len(tokens) > MAX_LENGTH:
        n_fixed = int(fixed.sum())
        what = "the template" if settings.template else (
            f"the prompt ({n_fixed} token{'s' if n_fixed != 1 else ''}) plus length {settings.length}"
        )
        raise PromptError(f"{what} makes {len(tokens)} tokens, beyond the {MAX_LENGTH:,} a run holds")
    return EncodedPrompt(tokens.astype(np.int64), np.asarray(fixed, dtype=bool))


def sequence_length(settings: GenerationSettings, encoded: EncodedPrompt | None) -> int:
    """Positions of the whole sequence: the prompt's (or the template's) and the generated ones."""
    return settings.length if encoded is None else encoded.n


def check_fits(settings: GenerationSettings, encoded: EncodedPrompt | None, block_size: int) -> None:
    """PromptError when a run in one block is longer than the model's window."""
    n = sequence_length(settings, encoded)
    if encoded is None or settings.block_length > 0 or n <= block_size:
        return
    if settings.template:
        raise PromptError(f"the template has {n} tokens, more than the model's block size {block_size}")
    raise PromptError(
        f"the prompt ({encoded.prefix_len} tokens) and length {settings.length} make {n} tokens, more than the "
        f"model's block size {block_size}; generate in blocks with --block-length (e.g. "
        f"{min(DEFAULT_BLOCK_LENGTH, block_size)})"
    )


def context_note(settings: GenerationSettings, encoded: EncodedPrompt | None, block_size: int) -> str | None:
    """What a block run after a long prompt leaves out, said once: each block sees only the last
    (block size - block length) tokens before it, so a longer prompt keeps its last part."""
    if encoded is None or settings.block_length <= 0:
        return None
    window = block_size - settings.block_tokens
    if encoded.prefix_len <= window:
        return None
    return (
        f"the prompt has {encoded.prefix_len} tokens; each block sees the {window} tokens before it "
        f"(block size {block_size} less the block of {settings.block_tokens}), so the first block reads "
        f"the prompt's last {window} only"
    )


def layout_for(settings: GenerationSettings, n_ids: int, encoded: EncodedPrompt | None) -> RecordLayout:
    """The layout of a run of `settings` (core.records): one record of the whole sequence, or,
    in blocks, records of one block of the generated part after the prompt's prefix."""
    total = sequence_length(settings, encoded)
    if settings.block_length <= 0:
        return RecordLayout(seq_len=total, top_k=settings.top_k, n_ids=n_ids, total_len=total)
    prefix = () if encoded is None else tuple(int(i) for i in encoded.tokens[: encoded.prefix_len])
    return RecordLayout(seq_len=settings.block_tokens, top_k=settings.top_k, n_ids=n_ids, total_len=total, prefix=prefix)


def normalised(settings: GenerationSettings) -> GenerationSettings:
    """`settings` with a template's length set to its count of \u2588 (what it generates), so a
    branch's recorded length says how many positions were filled."""
    if not settings.template:
        return settings
    return dataclasses.replace(settings, length=max(1, settings.prompt.count(MASK_GLYPH)))


def fit_to_model(
    settings: GenerationSettings,
    vocab: Vocabulary,
    chat_wrap: ChatWrap | None,
    block_size: int,
    *,
    cap_length: bool = False,
    auto_blocks: bool = False,
    model_name: str = "the model",
) -> tuple[GenerationSettings, EncodedPrompt | None]:
    """The settings that run on a model of `block_size`, and their prompt encoded; PromptError
    when they cannot. `cap_length`: a length the user did not choose shrinks so the prompt and
    it fit one window; `auto_blocks`: a sequence longer than the window runs in blocks of
    min(DEFAULT_BLOCK_LENGTH, block size) unless a block length is set. A template is run
    as written (its length is its count of █)."""
    settings = normalised(settings)
    encoded = encode_prompt(settings, vocab, chat_wrap, model_name)
    fixed = 0 if encoded is None else encoded.prefix_len
    if cap_length and not settings.template:
        settings = dataclasses.replace(settings, length=min(settings.length, max(1, block_size - fixed)))
    if auto_blocks and not settings.template and not settings.block_length and fixed + settings.length > block_size:
        settings = dataclasses.replace(settings, block_length=min(DEFAULT_BLOCK_LENGTH, block_size))
    if encoded is not None and not settings.template and fixed + settings.length != encoded.n:
        encoded = encode_prompt(settings, vocab, chat_wrap, model_name)  # the length changed
    check_fits(settings, encoded, block_size)
    return settings, encoded


def continued(settings: GenerationSettings, recorded: dict) -> GenerationSettings:
    """`settings` (the window's, or a command's overrides) for a run that goes on from a branch
    recorded with the settings dict `recorded`: the branch's prompt, template and chat stay,
    and with them its length, so the fixed positions are the ones it had (a prompt typed since
    applies to the next Start, not to a restart)."""
    kept = {name: recorded.get(name, default) for name, default in (("prompt", ""), ("template", False), ("chat", False))}
    if kept["prompt"] or kept["template"] or kept["chat"]:
        kept["length"] = int(recorded.get("length", settings.length))
    return dataclasses.replace(settings, **kept)


def padding_after_eos(tokens: np.ndarray, flags: np.ndarray, eos_id: int | None) -> np.ndarray | None:
    """(N,) bool: the first end of text the run wrote (not one the prompt fixed) and every generated
    position after it, which a model that pads (LLaDA, Dream) fills with more of the same (a
    template's fixed text after it stays as it is); None when the vocabulary has no end of
    text. The canvas draws these dimmed."""
    if eos_id is None:
        return None
    is_generated = (np.asarray(flags) & FLAG_PROMPT) == 0
    is_end = (np.asarray(tokens) == eos_id) & is_generated
    return np.logical_or.accumulate(is_end) & is_generated if len(is_end) else is_end


def fixed_ranges(fixed: np.ndarray) -> list[list[int]]:
    """[[start, stop], ...] (stop exclusive) of the runs of True in `fixed`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(fixed, dtype=np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def prompt_json(settings: dict | GenerationSettings, fixed: np.ndarray | None = None) -> dict | None:
    """What `generate --json` and `show --json` print as "prompt": the text, how it was used and
    the positions it fixed (`fixed`: bool per position, e.g. FLAG_PROMPT of a record composed
    whole); None for a run without one."""
    if isinstance(settings, GenerationSettings):
        settings = settings.to_dict()
    if not (settings.get("prompt") or settings.get("template") or settings.get("chat")):
        return None
    out = {"text": settings.get("prompt", ""), "template": bool(settings.get("template")), "chat": bool(settings.get("chat"))}
    if fixed is not None:
        out["fixed"] = fixed_ranges(fixed)
    return out
