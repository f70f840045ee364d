"""Benchmark: how long a large session takes to save, open and first touch.

    python -m dpgviz.store.bench_session [--tokens 16384] [--records 1000] [--dir /tmp] [--json]

Builds a store of random records (a root branch and one child), saves it, evicts the
file from the page cache (posix_fadvise DONTNEED, where the OS has it) so the open is
measured cold, then times `open_session`, reading one record, decoding its text, the
per-step statistics of the root, and a full checksum pass. Prints the numbers; the file
is deleted afterwards unless --keep. Timings are printed, never asserted.

numpy and the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dpgviz.core.records import KIND_CODE, SCALAR_FIELDS, RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.session import open_session, save_session, verify_session
from dpgviz.store.step_store import StepStore

_ROWS_PER_CHUNK = 50  # random data is generated in blocks to bound the builder's memory spikes


def synthetic_store(seq_len: int, n_records: int, seed: int = 0) -> tuple[StepStore, Vocabulary]:
    """A store of random records in every column: a root branch and a child forked from its middle."""
    rng = np.random.default_rng(seed)
    vocab = Vocabulary(itos=tuple(chr(c) for c in range(32, 97)))  # 65 symbols + mask, like tiny Shakespeare
    layout = RecordLayout(seq_len=seq_len, top_k=8, n_ids=vocab.n_ids)
    columns: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in layout.token_fields().items():
        col = np.empty((n_records, *shape), dtype)
        for start in range(0, n_records, _ROWS_PER_CHUNK):
            block = col[start : start + _ROWS_PER_CHUNK]
            if dtype.kind == "f":
                block[:] = rng.random(block.shape, dtype=np.float32)
            else:
                block[:] = rng.integers(0, vocab.n_ids if name != "flags" else 32, block.shape, dtype=np.int64)
        columns[name] = col
    for name, dtype in SCALAR_FIELDS.items():
        columns[name] = (
            np.arange(n_records, dtype=dtype) if name != "kind" else np.full(n_records, KIND_CODE["prediction"], dtype)
        )
    root_n = max(1, n_records * 3 // 5)
    columns["branch_index"] = np.where(np.arange(n_records) < root_n, 0, 1).astype(np.int32)
    tree = [
        {"id": "0", "parent": None, "fork_record": None, "settings": {}, "label": "", "rows": list(range(root_n))},
        {
            "id": "1",
            "parent": "0",
            "fork_record": root_n // 2,
            "settings": {},
            "label": "",
            "rows": list(range(root_n, n_records)),
        },
    ]
    return StepStore.from_columns(layout, columns, n_records, tree), vocab


def _evict(path: Path) -> bool:
    """Drop the file's pages from the page cache, so the next read is cold; False if unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def bench(seq_len: int, n_records: int, folder: str, keep: bool = False) -> dict:
    from dpgviz.export.tables import step_stats  # numpy-only; imported here to keep store/ free of export/

    t0 = time.perf_counter()
    store, vocab = synthetic_store(seq_len, n_records)
    build_s = time.perf_counter() - t0
    fd, name = tempfile.mkstemp(suffix=".dpgviz", dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        t0 = time.perf_counter()
        save_session(path, store, vocab, settings={"length": seq_len})
        save_s = time.perf_counter() - t0
        del store
        cold = _evict(path)
        rss_before = _rss_mib()
        t0 = time.perf_counter()
        session = open_session(path)
        open_s = time.perf_counter() - t0
        rss_after_open = _rss_mib()
        t0 = time.perf_counter()
        row = session.record_row("0", None)
        record = session.store.record(row)
        text = session.vocab.decode(record.tokens)
        first_access_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = step_stats(session, "0")
        stats_s = time.perf_counter() - t0
        session.close()
        _evict(path)
        t0 = time.perf_counter()
        verify_session(path)
        verify_s = time.perf_counter() - t0
        return {
            "tokens": seq_len,
            "records": n_records,
            "file_bytes": path.stat().st_size,
            "cold_open": cold,
            "build_s": round(build_s, 3),
            "save_s": round(save_s, 3),
            "open_s": round(open_s, 4),
            "open_rss_growth_mib": round(rss_after_open - rss_before, 1),
            "first_record_s": round(first_access_s, 4),
            "first_record_text_chars": len(text),
            "root_stats_s": round(stats_s, 3),
            "root_stats_rows": len(stats),
            "verify_all_s": round(verify_s, 3),
        }
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--keep", action="store_true", help="keep the session file")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = bench(args.tokens, args.records, args.dir, args.keep)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:26s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
