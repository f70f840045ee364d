"""Generation settings: one frozen dataclass, validated with messages a user can act on.

Defaults are the seed app's (the PyQt6 tool dpgviz replaces) so the same knobs give
the same runs. numpy-free and torch-free: both processes and the CLI import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Each strategy in one line (the settings tooltip, `--help` and the README show these);
# engine.strategies implements them under the same names.
STRATEGY_INFO = {
    "seed": "the seed app's 'intelligent' remasking: a second pass scores every visible token by "
    "r*noise + (1-r)*(1-p) and the worst go back to mask",
    "random": "remask uniformly at random among all visible tokens",
    "llada": "LLaDA low-confidence: keep this step's most confident predictions, never revisit committed tokens",
    "margin": "commit where p(first) - p(second) is largest",
    "entropy": "commit where the predictive entropy is lowest",
    "threshold": "Fast-dLLM: commit every prediction with confidence >= tau, at least one per step, "
    "until nothing is masked (steps is not used: the model's confidence sets how many it takes)",
    "remdm": "ReMDM: commit by confidence, and send committed tokens back to mask with a probability "
    "that grows as their confidence falls (eta caps it), so the model can revise itself",
    "origin": "Dream 'origin': each masked position is revealed independently with probability 1 - s/t",
}
STRATEGIES = tuple(STRATEGY_INFO)
# Strategies that run until nothing is masked rather than for `steps` iterations.
OPEN_ENDED = ("threshold",)
DEVICES = ("auto", "cpu", "cuda")  # where the worker runs a model (auto: CUDA when available)
DTYPES = ("auto", "float32", "bfloat16", "float16")  # its weights (auto: float32 on CPU, bfloat16 on CUDA)
SCHEDULES = ("linear", "cosine")  # mask ratio from start to end: a straight line, or a quarter cosine
PROPOSALS = ("sample", "greedy")  # how a masked position's token is proposed: drawn from p, or argmax
MAX_LENGTH = 65_536  # longest run: with blocks, `length` may exceed the model's block size up to here
DEFAULT_BLOCK_LENGTH = 256  # block length the CLI picks when --length exceeds the block size
PROMPT_FIELDS = ("prompt", "template", "chat")  # GenerationSettings fields of the prompt (core.prompt)
# How a block run reaches the model (engine.model's prefix KV cache, Fast-dLLM): "none" runs the
# whole window every iteration; "prefix" computes the context's keys and values once per block
# (or every cache_refresh iterations) and runs only the block's positions against them.
CACHES = ("none", "prefix")
# Reference samplers (engine.dllm_sampling): "" runs dpgviz's own loop; "llada" runs LLaDA's
# generate() step for step, "dream" Dream's diffusion_generate. The reference's remasking / alg
# is chosen with `strategy` (REFERENCE_ALGS maps dpgviz's name to the reference's).
SAMPLERS = ("", "llada", "dream")
REFERENCE_ALGS = {
    "llada": {"llada": "low_confidence", "random": "random"},
    "dream": {"origin": "origin", "llada": "maskgit_plus", "margin": "topk_margin", "entropy": "entropy"},
}
# Fields only a reference sampler reads; recorded only for its runs.
REFERENCE_FIELDS = ("sampler", "cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf", "alg_temp", "eps")


def planned_steps(settings: dict) -> int | None:
    """Iterations a run of these settings (a branch's settings dict) is planned for; None when
    its strategy decides (OPEN_ENDED) or the settings do not say."""
    steps = settings.get("steps")
    if settings.get("strategy") in OPEN_ENDED or not isinstance(steps, int):
        return None
    return steps


def describe_plan(settings: GenerationSettings) -> str:
    """'in 20 steps', or how an open-ended strategy ends."""
    if settings.strategy in OPEN_ENDED:
        return f"until nothing is masked ({settings.strategy} {settings.threshold:g})"
    return f"in {settings.steps} steps"


class SettingsError(ValueError):
    """A setting is out of range; the message says which and why."""


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 1.0  # softmax(logits / T); 1.0 samples the model as trained
    steps: int = 20  # denoising iterations S
    length: int = 1024  # tokens N; capped at the model's block size by `capped` (unless in blocks)
    start_ratio: float = 0.99  # mask ratio the schedule starts from
    end_ratio: float = 0.15  # mask ratio after the second-to-last iteration
    randomness: float = 0.8  # r: weight of U(0,1) against 1 - p in the remask score
    strategy: str = "seed"  # one of STRATEGIES
    schedule: str = "linear"  # one of SCHEDULES: how the mask ratio falls from start to end
    proposal: str = "sample"  # one of PROPOSALS
    sample_top_k: int = 0  # sample only among the k most likely tokens (0 = all)
    top_p: float = 1.0  # sample only within the smallest set of tokens whose probability reaches p
    threshold: float = 0.9  # tau of the 'threshold' strategy
    eta: float = 0.5  # 'remdm': the largest probability of remasking a committed token per step
    seed: int = 0  # torch generator seed: same seed + settings = same records on CPU
    top_k: int = 8  # candidates recorded per masked position
    # Semi-autoregressive generation: blocks of this many tokens, one after another, each
    # conditioned on the text before it. 0 = off: one block of the whole length.
    block_length: int = 0
    # What the run is conditioned on (core.prompt): "" = nothing, every position generated.
    # A prompt's tokens come first and stay fixed, `length` generated positions follow; with
    # `template` the text is an infilling template instead (each \u2588 one generated position,
    # the rest fixed; `length` is its count of \u2588); `chat` wraps the prompt in the model's
    # own chat template first. Recorded with every branch, so restarts keep the same positions.
    prompt: str = ""
    template: bool = False
    chat: bool = False
    # Prefix KV cache (CACHES): an approximation the bidirectional model was not trained with,
    # so off by default; cache_refresh K > 0 recomputes the context's K/V every K iterations
    # (0 = once per block). Recorded only when set, so runs without it record what they did before.
    cache: str = "none"
    cache_refresh: int = 0
    # A reference sampler (SAMPLERS) and its own options (LLaDA: cfg_scale, logits_eos_inf,
    # confidence_eos_eot_inf; Dream: alg_temp (0 = None), eps). Temperature 0 is greedy there.
    sampler: str = ""
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    alg_temp: float = 0.0
    eps: float = 1e-3
    # The prompt's ids as the model's own tokenizer wrote them (in dpgviz's id space), chat
    # template included; () = split the text with the vocabulary (core.prompt). Set where the
    # tokenizer is (cli.runs for llada:/dream: folders), recorded only when set.
    prompt_ids: tuple[int, ...] = ()

    def validate(self, block_size: int | None = None) -> GenerationSettings:
        """Return self, or raise SettingsError naming the first bad setting."""
        if self.sampler not in SAMPLERS:
            raise SettingsError(f"sampler must be one of {', '.join(s or 'dpgviz' for s in SAMPLERS)}, got {self.sampler!r}")
        if not (self.temperature > 0 or (self.sampler and self.temperature == 0)):
            raise SettingsError(f"temperature must be > 0 (0 only with a reference sampler), got {self.temperature}")
        if self.sampler:
            self._validate_reference()
        if self.steps < 1:
            raise SettingsError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.end_ratio <= self.start_ratio <= 1.0:
            raise SettingsError(
                "mask ratios must satisfy 0 <= end <= start <= 1, "
                f"got start={self.start_ratio}, end={self.end_ratio}"
            )
        if not 0.0 <= self.randomness <= 1.0:
            raise SettingsError(f"randomness must be in [0, 1], got {self.randomness}")
        if self.strategy not in STRATEGIES:
            raise SettingsError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.schedule not in SCHEDULES:
            raise SettingsError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.proposal not in PROPOSALS:
            raise SettingsError(f"proposal must be one of {', '.join(PROPOSALS)}, got {self.proposal!r}")
        if self.sample_top_k < 0:
            raise SettingsError(f"sample top-k must be 0 (off) or >= 1, got {self.sample_top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise SettingsError(f"top-p must be in (0, 1], got {self.top_p}")
        if not 0.0 < self.threshold <= 1.0:
            raise SettingsError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.eta <= 1.0:
            raise SettingsError(f"eta must be in [0, 1], got {self.eta}")
        if self.length < 1:
            raise SettingsError(f"length must be >= 1, got {self.length}")
        if self.length > MAX_LENGTH:
            raise SettingsError(f"length must be <= {MAX_LENGTH}, got {self.length}")
        if self.block_length < 0:
            raise SettingsError(f"block length must be 0 (off) or >= 1, got {self.block_length}")
        if block_size is not None and self.block_length > block_size:
            raise SettingsError(f"block length {self.block_length} exceeds the model's block size {block_size}")
        if block_size is not None and self.block_length == 0 and self.length > block_size:
            raise SettingsError(
                f"length {self.length} exceeds the model's block size {block_size}; "
                f"generate it in blocks with --block-length (e.g. {min(DEFAULT_BLOCK_LENGTH, block_size)})"
            )
        if self.cache not in CACHES:
            raise SettingsError(f"cache must be one of {', '.join(CACHES)}, got {self.cache!r}")
        if not isinstance(self.cache_refresh, int) or self.cache_refresh < 0:
            raise SettingsError(f"cache refresh must be 0 (once per block) or >= 1 iterations, got {self.cache_refresh!r}")
        if self.cache_refresh and self.cache == "none":
            raise SettingsError("cache refresh needs the prefix cache (--cache prefix)")
        if self.top_k < 1:
            raise SettingsError(f"top_k must be >= 1, got {self.top_k}")
        return self

    def _validate_reference(self) -> None:
        """What the reference itself asserts or cannot do (LLaDA's generate(), Dream's _sample)."""
        algs = REFERENCE_ALGS[self.sampler]
        if self.strategy not in algs:
            names = ", ".join(f"{k} ({v})" for k, v in algs.items())
            raise SettingsError(f"the {self.sampler} sampler takes strategy {names}, got {self.strategy!r}")
        if self.sampler == "llada" and self.block_length:
            if self.length % self.block_length:
                raise SettingsError(f"LLaDA needs length {self.length} to be a multiple of the block length {self.block_length}")
            if self.steps % (self.length // self.block_length):
                raise SettingsError(
                    f"LLaDA splits the steps evenly over the {self.length // self.block_length} blocks: "
                    f"steps {self.steps} is not a multiple of it"
                )
        if self.sampler == "dream" and self.block_length:
            raise SettingsError("Dream's sampler runs in one block: set the block length to 0")
        if not 0.0 < self.eps < 1.0:
            raise SettingsError(f"eps must be in (0, 1), got {self.eps}")
        if self.alg_temp < 0 or self.cfg_scale < 0:
            raise SettingsError("alg_temp and cfg_scale must be >= 0")
        if self.cache != "none":
            raise SettingsError("a reference sampler runs the whole sequence each step: turn the prefix cache off")

    def capped(self, block_size: int) -> GenerationSettings:
        """The same settings with length capped at the model's block size."""
        return dataclasses.replace(self, length=min(self.length, block_size))

    def with_default_blocks(self, block_size: int, default: int = DEFAULT_BLOCK_LENGTH) -> GenerationSettings:
        """These settings, in blocks of min(default, block_size) when `length` exceeds the
        block size and no block length is set; otherwise unchanged."""
        if self.block_length or self.length <= block_size:
            return self
        return dataclasses.replace(self, block_length=min(default, block_size))

    @property
    def block_tokens(self) -> int:
        """Tokens per block record: the block length (at most `length`), or `length` when off."""
        return min(self.block_length, self.length) if self.block_length > 0 else self.length

    @property
    def n_blocks(self) -> int:
        """Blocks of a run: ceil(length / block_tokens); 1 when blocks are off."""
        return -(-self.length // self.block_tokens)

    @property
    def has_prompt(self) -> bool:
        """The run is conditioned on a prompt or a template (core.prompt encodes it)."""
        return bool(self.prompt) or self.template or self.chat

    def to_dict(self) -> dict:
        """Plain data; the prompt's keys only when there is one and the cache's only when it is
        on, so a run without them records exactly what it did before they existed."""
        data = dataclasses.asdict(self)
        if not self.has_prompt:
            for name in PROMPT_FIELDS:
                del data[name]
        if self.cache == "none" and not self.cache_refresh:
            del data["cache"], data["cache_refresh"]
        if not self.sampler:
            for name in REFERENCE_FIELDS:
                del data[name]
        else:
            data["departures"] = departures(self)
        if self.prompt_ids:
            data["prompt_ids"] = [int(i) for i in self.prompt_ids]
        else:
            del data["prompt_ids"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GenerationSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        if "prompt_ids" in kept:
            kept["prompt_ids"] = tuple(int(i) for i in kept["prompt_ids"])
        return cls(**kept)


REFERENCE_NAMES = {"llada": "LLaDA's generate()", "dream": "Dream's diffusion_generate"}
_REFERENCE_UNUSED = {  # dpgviz options each reference has no counterpart for: name -> how it reads
    "llada": ("proposal", "schedule", "start_ratio", "end_ratio", "randomness", "threshold", "eta",
              "sample_top_k", "top_p", "alg_temp", "eps"),
    "dream": ("proposal", "schedule", "start_ratio", "end_ratio", "randomness", "threshold", "eta",
              "cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf"),
}


def departures(settings: GenerationSettings) -> list[str]:
    """Each setting of a reference run that the reference does not have, one short phrase each
    ([] when the run is the reference's algorithm as written). For dpgviz's own loop on such a
    folder, `loop_departures` says what differs."""
    if not settings.sampler:
        return []
    base = GenerationSettings()
    out = []
    for name in _REFERENCE_UNUSED[settings.sampler]:
        value = getattr(settings, name)
        if value != getattr(base, name):
            out.append(f"{name}={value} (not in {REFERENCE_NAMES[settings.sampler]}; not applied)")
    if settings.prompt and not settings.prompt_ids:
        out.append("prompt split by dpgviz's vocabulary, not the model's tokenizer")
    return out
