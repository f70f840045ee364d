"""Reference samplers' defaults, what departs from them, and dpgviz ids -> the model's own ids.

A `llada:` or `dream:` folder runs its reference's sampler (engine.dllm_sampling) with the
reference's defaults (`reference_defaults`):

    llada   LLaDA's generate() (github ML-GSAI/LLaDA, generate.py): temperature 0,
            remasking low_confidence (strategy "llada"), cfg_scale 0, gen_length 128 with
            steps = gen_length (its defaults: steps 128, gen_length 128) and block_length =
            gen_length (one block, its default 128 for 128 tokens)
    dream   Dream's diffusion_generate (DreamGenerationConfig): temperature 0, top_p / top_k
            None, alg origin, alg_temp None, eps 1e-3; 128 new tokens, steps = the length
            (its demos pass steps = max_new_tokens)

`core.settings.departures(settings)` (there, since a run's recorded settings carry it) names each dpgviz option set to something the reference does not do
(the settings panel shows them in one line; a run's recorded settings carry them as
"departures", so `show` prints them). `to_model_ids` maps dpgviz's ids (the mask at V) back
to the model's own (LLaDA's mask is 126336): cli `generate --ids` and `show --ids` share it.
numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpgviz.core.settings import REFERENCE_ALGS, GenerationSettings, departures
from dpgviz.core.settings import REFERENCE_NAMES as NAMES

DEFAULT_LENGTH = 128  # gen_length of LLaDA's generate(); Dream's demos use 128-512 new tokens


def reference_defaults(family: str, length: int | None = None, steps: int | None = None) -> dict:
    """The GenerationSettings fields a `family` folder starts with (module docstring)."""
    n = DEFAULT_LENGTH if length is None else int(length)
    common = {"sampler": family, "temperature": 0.0, "length": n, "steps": n if steps is None else int(steps), "block_length": 0}
    if family == "llada":
        return {**common, "strategy": "llada", "cfg_scale": 0.0}
    return {**common, "strategy": "origin", "top_p": 1.0, "sample_top_k": 0, "alg_temp": 0.0, "eps": 1e-3}


def loop_departures(family: str, settings: GenerationSettings) -> list[str]:
    """What dpgviz's own loop (settings.sampler "") does that the folder's reference does not."""
    if settings.sampler or family not in NAMES:
        return departures(settings)
    return [
        f"dpgviz's own loop (strategy {settings.strategy}), not {NAMES[family]}",
        "special tokens and ids past the tokenizer never sampled",
        f"temperature {settings.temperature:g} as softmax(logits / T)",
    ]


def alg_name(settings: GenerationSettings) -> str:
    """The reference's own name for the run's strategy (LLaDA's remasking, Dream's alg)."""
    return REFERENCE_ALGS.get(settings.sampler, {}).get(settings.strategy, settings.strategy)


def with_reference_defaults(settings: GenerationSettings, family: str, given: set[str]) -> GenerationSettings:
    """`settings` with the reference's defaults for every field not in `given` (fields the user set)."""
    length = settings.length if "length" in given else None
    steps = settings.steps if "steps" in given else None
    defaults = reference_defaults(family, length, steps)
    if "steps" not in given and "block_length" in given and settings.block_length and family == "llada":
        defaults["steps"] = defaults["length"]  # LLaDA: the total, split over the blocks
    return dataclasses.replace(settings, **{k: v for k, v in defaults.items() if k not in given})


def to_model_ids(ids: np.ndarray, mask_id: int, model_mask_id: int | None) -> np.ndarray:
    """dpgviz ids -> the model's own ids. dpgviz keeps every model id but the mask in order
    (engine.hf.vocab_from_tokenizer) and puts the mask at `mask_id` (= V): ids at or past the
    model's mask id move up by one, the mask becomes `model_mask_id`. None: the ids are the
    model's (the built-in GPT, a char model)."""
    ids = np.asarray(ids, dtype=np.int64)
    if model_mask_id is None:
        return ids.copy()
    out = np.where((ids >= model_mask_id) & (ids < mask_id), ids + 1, ids)
    return np.where(ids == mask_id, model_mask_id, out)
