"""The Tiny Shakespeare character vocabulary for test models, without the corpus.

Tests must not depend on where ../shared lies on a machine: the packaged default
model's meta.pkl holds the same 65 characters that Vocabulary.from_text(corpus) builds.
"""

from __future__ import annotations

from dpgviz.core.discovery import default_model_entry
from dpgviz.core.vocab import Vocabulary


def shakespeare_vocab() -> Vocabulary:
    return Vocabulary.load(default_model_entry().meta)
