"""Record any sampler: `dpgviz.Recorder` logs a run from your own code to a session file and, live, into a window.

    record.recorder   Recorder: ids mapped to dpgviz's, kinds inferred, records built
    record.stats      p(token), entropy and top-K from logits or probabilities (numpy or torch, on device)
    record.file       the append-only file (the recovery journal's format; open_session reads it)
    record.stream     the live link to a window (`connect=`, `spawn=`; protocol in ipc.listen)

Imports numpy only: torch, transformers and zmq come in when a recorder needs them, so
`import dpgviz` stays light (dpgviz.Recorder is a lazy attribute there).
"""

from __future__ import annotations

from dpgviz.record.recorder import IdMap, Recorder

__all__ = ["IdMap", "Recorder"]
