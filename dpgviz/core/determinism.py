"""What every process that runs a model sets before torch loads, so that CPU re-runs are bit-exact.

MKL, torch's CPU BLAS, picks its sgemm code path by the memory alignment of the operands
unless its Conditional Numerical Reproducibility mode is on, so two processes running the
same forward pass on the same input could differ in the last bits. Measured here: two
`branch` runs of the same edit, each in a fresh worker, gave 30 of 256 confidences one
float16 step apart; with MKL_CBWR=AUTO,STRICT every run and `verify` agreed bit for bit, at
no measurable cost (512 tokens x 24 steps: 4.45 s either way). STRICT holds for a fixed
thread count, which sessions record (store.provenance) and `verify` sets.

`set_reproducible_env` keeps a value the user set. Standard library only.
"""

from __future__ import annotations

import os

# MKL_DYNAMIC=FALSE: MKL uses exactly the threads torch sets (STRICT holds for a fixed count).
REPRODUCIBLE_ENV = {"MKL_CBWR": "AUTO,STRICT", "MKL_DYNAMIC": "FALSE"}


def set_reproducible_env() -> None:
    """Set REPRODUCIBLE_ENV where unset; must run before torch (MKL) is imported."""
    for name, value in REPRODUCIBLE_ENV.items():
        os.environ.setdefault(name, value)
