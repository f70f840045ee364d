"""What the GUI and the CLI know about a loaded model: one typed record, made in the worker.

The worker builds it from the loaded checkpoint (`engine.checkpoint.LoadedModel.info`)
and sends it across the process boundary in `ipc.messages.ModelLoaded`; the GUI, the
CLI and session files read it. Plain data only (it is pickled between processes and
written into session headers), so numpy-free and torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dpgviz.core.vocab import Vocabulary


def _text(value: object) -> str:
    """`value` as an exact str (str() of a str subclass may return the subclass itself)."""
    text = str(value)
    return text if type(text) is str else str.__str__(text)


def _ints(values: object) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _maybe(kind: type, value: object) -> object:
    return None if value is None else kind(value)


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: where it came from, its size and its vocabulary."""

    name: str  # what the model list and the status bar show
    path: str | None  # the checkpoint file
    block_size: int  # longest sequence the model takes
    params: int
    itos: tuple[str, ...]  # token strings by id (the vocabulary)
    n_ids: int  # ids a record can hold: tokens, the mask and reserved ids
    device: str = "cpu"  # where the worker runs it: cpu, cuda
    meta: str | None = None  # the vocabulary file, when it came from one
    threads: int = 0  # torch threads the worker uses (0 = not reported)
    iter_num: int | None = None  # the trainer's iteration count, when the checkpoint has one
    best_val_loss: float | None = None  # the trainer's best validation loss, when recorded
    stand_ins: tuple[str, ...] = field(default_factory=tuple)  # classes kept as data, not loaded
    never_sample: tuple[int, ...] = field(default_factory=tuple)  # special ids the sampler never proposes
    dtype: str = "float32"  # the weights' dtype in the worker: float32, bfloat16, float16
    tokenizer: str = "char"  # "char" (the seed's meta.pkl) or the Hugging Face tokenizer's class name
    # The tokenizer's chat template around one user message, with the generation prompt, as
    # ids before and after the message (core.prompt.ChatWrap); None: the model has none.
    chat_wrap: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    eos_id: int | None = None  # end of text, after which a model pads (Vocabulary.eos_id)
    torch_version: str = ""  # torch in the process that runs it (sessions record it for verify)
    # The model's own id of the mask when dpgviz renumbers (core.reference.to_model_ids: LLaDA's
    # 126336, BERT's 103); None: dpgviz's ids are the model's.
    model_mask_id: int | None = None

    def __post_init__(self) -> None:
        """Every field as a plain builtin (str, int, float, tuple, None). The worker hands in
        what torch and numpy give it, and an object of theirs here would make unpickling the
        `ModelLoaded` message in the window import torch (torch.__version__ is a str subclass
        of torch.torch_version; a 0-d tensor or a numpy int would do the same)."""
        chat = None if self.chat_wrap is None else (_ints(self.chat_wrap[0]), _ints(self.chat_wrap[1]))
        plain = dict(
            name=_text(self.name), path=_maybe(_text, self.path), block_size=int(self.block_size), params=int(self.params),
            itos=tuple(_text(s) for s in self.itos), n_ids=int(self.n_ids), device=_text(self.device),
            meta=_maybe(_text, self.meta), threads=int(self.threads), iter_num=_maybe(int, self.iter_num),
            best_val_loss=_maybe(float, self.best_val_loss), stand_ins=tuple(_text(s) for s in self.stand_ins),
            never_sample=_ints(self.never_sample), dtype=_text(self.dtype), tokenizer=_text(self.tokenizer),
            chat_wrap=chat, eos_id=_maybe(int, self.eos_id), torch_version=_text(self.torch_version),
            model_mask_id=_maybe(int, self.model_mask_id),
        )
        for name, value in plain.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def mask_id(self) -> int:
        return len(self.itos)

    def vocab(self) -> Vocabulary:
        """The vocabulary as the GUI and session files use it."""
        return Vocabulary(
            itos=tuple(self.itos), model_vocab_size=self.n_ids, never_sample=tuple(self.never_sample), eos_id=self.eos_id
        )

    def to_dict(self, with_itos: bool = True) -> dict:
        """Plain JSON-able data (`models --json`, session headers keep it without itos)."""
        data = dataclasses.asdict(self)
        data["itos"] = list(self.itos)
        data["stand_ins"] = list(self.stand_ins)
        data["never_sample"] = list(self.never_sample)
        data.update(vocab_size=self.vocab_size, mask_id=self.mask_id)
        if not with_itos:
            del data["itos"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        """From `to_dict` output (unknown keys, such as vocab_size, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        kept["itos"] = tuple(str(s) for s in kept.get("itos", ()))
        kept["stand_ins"] = tuple(kept.get("stand_ins", ()))
        kept["never_sample"] = tuple(int(i) for i in kept.get("never_sample", ()))
        if kept.get("chat_wrap") is not None:
            before, after = kept["chat_wrap"]
            kept["chat_wrap"] = (tuple(int(i) for i in before), tuple(int(i) for i in after))
        return cls(**kept)
