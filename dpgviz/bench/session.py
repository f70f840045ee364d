"""`dpgviz bench session`: how long a large session takes to save, open and first touch.

    python main.py bench session [--tokens 16384] [--records 1000] [--dir /tmp] [--keep] [--json]

Builds a synthetic run (bench.synthetic: a root branch and one child continued from its
middle, about --records records in all), saves it, evicts the file from the page cache
(posix_fadvise DONTNEED, where the OS has it) so the open is measured cold, then times
`open_session`, reading one record, decoding its text, the per-step statistics of the
root, and a full checksum pass. Prints the numbers; the file is deleted afterwards
unless --keep. Timings are printed, never asserted.

numpy and the standard library only: no torch, no dearpygui.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.store.session_open import open_session, verify_session
from dpgviz.store.session_save import save_session

log = logging.getLogger(__name__)


def steps_for_records(n_records: int) -> int:
    """Iterations whose synthetic run with one fork has about `n_records` records (3 * steps + 2)."""
    return max(1, round((n_records - 2) / 3))


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
    """Save, cold-open, first-touch and verify a synthetic session; return the numbers."""
    from dpgviz.export.tables import step_stats  # numpy-only

    t0 = time.perf_counter()
    vocab = synthetic_vocab()
    store = synthetic_store(seq_len, steps_for_records(n_records), vocab=vocab, forks=1)
    n_records = len(store)
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
            log.info("kept %s", path)
        else:
            path.unlink(missing_ok=True)


def main(seq_len: int, n_records: int, folder: str, keep: bool, as_json: bool) -> dict:
    """Run the benchmark and print its numbers (one JSON line with `as_json`)."""
    result = bench(seq_len, n_records, folder, keep)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key:26s} {value}\n")
    return result
