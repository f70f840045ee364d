"""Session files' format: the layout on disk, its constants, and the checks that a header and tree are whole.

One file, laid out so that opening it maps the arrays instead of reading them:

    offset  size  content
    0       8     magic b"\\x89DPGVIZ\\n" (a high-bit byte and a newline, as PNG's
                  signature has, catch 7-bit transfers and newline conversion)
    8       4     format version, uint32 little-endian (FORMAT_VERSION)
    12      4     CRC-32 of the header bytes, uint32 little-endian
    16      8     header length H in bytes, uint64 little-endian
    24      H     header: UTF-8 JSON (below)
    ...           zero padding to a multiple of 64
    c.offset      array c, raw C-order little-endian bytes, each starting on a
                  64-byte boundary; the last one ends at `data_end`, which is the
                  file size

The arrays are the step store's (store.step_store), in this order:

    row-indexed (count rows)   tokens, confidence, score, entropy, flags,
                               SCALAR_FIELDS..., branch_index,
                               cand_start (int64), cand_count (int32),
                               cand_bits (N/8 uint8: np.packbits of "has candidates")
    pool (pool_count entries)  cand_ids (M, K) ids, cand_probs (M, K) float16

so a record's candidates are pool[cand_start : cand_start + cand_count], one per set
bit of cand_bits, in position order; rows may share entries (a 'remask' record
repeating its prediction's candidates).

The header holds `format`, `format_version`, `app_version`, `created`, `layout`
(RecordLayout.to_dict), `count` (rows), `pool_count` (pool entries), `columns` (a table
of every array: name, dtype as numpy's `dtype.str`, shape, offset, nbytes and crc32 as
8 hex digits; pool arrays last), `data_end`, `settings`
(the generation settings the session was saved with), `model` (path, sha256 of the
checkpoint, free-form info), `vocab` (Vocabulary.to_dict: itos, model_vocab_size,
never_sample: absent in older files, read as none; eos_id for a model that pads after its
end of text), `mask_id` and `tree`
(StepStore.tree(): each branch's id, parent, fork_record, settings, label, edits, rows)
and `next_branch_id` (the id the next new branch gets; ids are never reused).
Optional keys, absent from files written before them: `runtime` (dpgviz, numpy and torch
versions, device, dtype, threads: store.provenance, for `verify`), `layers` (score layers,
store.layers: one entry per layer, whose arrays are the columns `layer<i>/<field>` with the
layer's own row counts) and a branch's `provenance` in the tree.
`fork_record` indexes the parent's history (StepStore.history); `edits` may be absent
(files written before branches could be edited) and then reads as none. Rows of deleted
branches may remain in the columns, named by no branch.

Format version 1 (READABLE_VERSIONS) had no pool: dense top_ids / top_probs (count, N, K)
columns and uint16 ids. Such a file opens into the same store: its dense columns stay
mapped (tokens cast to this layout's id dtype), its candidates are compacted into memory
one record at a time. Saving always writes version 2. Column checksums are verified on open when the data is small
(VERIFY_LIMIT_BYTES) and on request (`verify_session`) otherwise.

Written by store.session_save, opened by store.session_open; the journal's reader
(store.journal_reader) checks a replayed tree with `_checked_tree` too.

numpy and the standard library only: never imports torch, Pillow or dearpygui, nor the
session file's reader or writer.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from dpgviz.store.branch import Branch
from dpgviz.store.layers import layer_column_rows
from dpgviz.store.session import SessionError
from dpgviz.store.step_columns import POOL_FIELDS

MAGIC = b"\x89DPGVIZ\n"
FORMAT_NAME = "dpgviz-session"
FORMAT_VERSION = 2  # 2: candidates in a pool (cand_*), ids uint8 when they fit; 1: dense top_ids/top_probs
READABLE_VERSIONS = (1, 2)
SUFFIX = ".dpgviz"  # suggested file extension; any name opens
_PREFIX = struct.Struct("<8sIIQ")  # magic, format version, header crc32, header length
ALIGN = 64  # column alignment: cache lines, and any SIMD load of a column start
VERIFY_LIMIT_BYTES = 64 * 1024 * 1024  # verify column checksums on open below this (~50 ms of CRC)
_MAX_HEADER_BYTES = 1 << 30  # a corrupt length must not make us allocate terabytes


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _check_header(path: Path, header: dict, size: int, data_start: int, version: int = FORMAT_VERSION) -> None:
    """Refuse a header that does not describe a complete, consistent session file."""

    def bad(why: str) -> SessionError:
        return SessionError(f"{path} is corrupt ({why})")

    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise SessionError(f"{path} is not a dpgviz session (header names no {FORMAT_NAME!r} format)")
    for key, kind in (
        ("layout", dict),
        ("count", int),
        ("columns", list),
        ("data_end", int),
        ("vocab", dict),
        ("tree", list),
        ("mask_id", int),
    ):
        if not isinstance(header.get(key), kind):
            raise bad(f"header field {key!r} is missing or not a {kind.__name__}")
    if size < header["data_end"]:
        raise SessionError(f"{path} is cut short ({size} of {header['data_end']} bytes)")
    if size > header["data_end"]:
        raise bad(f"{size - header['data_end']} unexpected bytes after the data")
    count = header["count"]
    pool_count = header.get("pool_count", 0)
    if version >= 2 and not isinstance(pool_count, int):
        raise bad("header field 'pool_count' is missing or not a int")
    for entry in header["columns"]:
        try:
            name, dtype, shape = str(entry["name"]), np.dtype(entry["dtype"]), tuple(int(s) for s in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
            int(entry["crc32"], 16)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"column table entry {entry!r} is malformed ({exc})") from None
        rows = layer_column_rows(header, name)  # a score layer's own count (store.layers)
        if rows is None:
            rows = pool_count if version >= 2 and name in POOL_FIELDS else count
        if not shape or shape[0] != rows:
            raise bad(f"column {name} has shape {shape}, expected {rows} rows")
        if nbytes != int(np.prod(shape)) * dtype.itemsize:
            raise bad(f"column {name} says {nbytes} bytes for shape {shape} {dtype}")
        if offset < data_start or offset % ALIGN or offset + nbytes > header["data_end"]:
            raise bad(f"column {name} at {offset}+{nbytes} lies outside the data")


def _checked_tree(path: Path, tree: list, count: int) -> list[dict]:
    """The branch tree, refused unless ids are unique, parents precede children and rows exist."""
    seen: dict[str, int] = {}
    all_rows: list[int] = []
    for data in tree:
        try:
            branch = Branch.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SessionError(f"{path} is corrupt (branch entry {exc})") from None
        if branch.id in seen:
            raise SessionError(f"{path} is corrupt (branch {branch.id!r} appears twice)")
        if branch.parent is not None:
            if branch.parent not in seen:
                raise SessionError(f"{path} is corrupt (branch {branch.id!r} names unknown parent {branch.parent!r})")
            if branch.fork_record is not None and not 0 <= branch.fork_record < seen[branch.parent]:
                raise SessionError(
                    f"{path} is corrupt (branch {branch.id!r} forks from missing record {branch.fork_record})"
                )
        if any(not 0 <= r < count for r in branch.rows):
            raise SessionError(f"{path} is corrupt (branch {branch.id!r} names rows outside 0..{count - 1})")
        # History length: fork_record indexes the parent's history (StepStore.history).
        inherited = 0 if branch.parent is None or branch.fork_record is None else branch.fork_record + 1
        seen[branch.id] = inherited + len(branch.rows)
        all_rows.extend(branch.rows)
    if len(set(all_rows)) != len(all_rows):
        raise SessionError(f"{path} is corrupt (a row belongs to two branches)")
    return tree
