"""The smallest use of dpgviz.Recorder: a toy sampler (random logits over 28 characters) logged step by step.

    python examples/record_my_sampler.py           # writes run.dpgviz; look: python main.py open run.dpgviz
    python examples/record_my_sampler.py --spawn   # and watch it live in a window that it starts
"""

import sys

import numpy as np

import dpgviz

vocab, length, steps = list("abcdefghijklmnopqrstuvwxyz ."), 256, 32
mask_id = len(vocab)  # the id that means "masked" in your sampler
rng = np.random.default_rng(0)
x = np.full(length, mask_id)
with dpgviz.Recorder(vocab, mask_id, length, path="run.dpgviz", model="random", spawn="--spawn" in sys.argv) as rec:
    rec.log(x)  # 'initial'
    for step in range(steps):
        logits = 3 * rng.normal(size=(length, len(vocab)))  # your model's forward pass goes here
        masked = np.flatnonzero(x == mask_id)
        fill = rng.choice(masked, size=len(masked) // (steps - step), replace=False)
        x[fill] = logits[fill].argmax(-1)
        rec.log(x, logits=logits)  # kind inferred: 'prediction', then 'final' once nothing is masked
