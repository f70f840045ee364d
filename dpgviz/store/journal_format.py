"""The recovery journal's file format: its framing, constants and encoders, one home for both writers.

The journal's writer (store.journal) and a recorder's file (record.file) frame entries
with these; the reader (store.journal_reader) parses them. The file:

    offset  size  content
    0       8     magic b"\\x89JOURNAL" (a high-bit byte first, as the session's magic)
    8       4     format version, uint32 little-endian (JOURNAL_VERSION)
    12      ...   entries, back to back, each
                    4  CRC-32 of the next 9 bytes and the payload, uint32 LE
                    8  payload length L, uint64 LE
                    1  type: b"H" header, b"B" batch, b"M" meta
                    L  payload

    H  UTF-8 JSON: format, app_version, created, layout (RecordLayout.to_dict), vocab
       (itos, model_vocab_size, never_sample), mask_id and meta (settings, model_path,
       model_sha256, model_info: what save_session records). Always the first entry.
    B  uint32 LE J, J bytes of JSON {start, count, pool_start, pool_count, columns:
       [[name, dtype.str, shape]...], tree?, next_branch_id}, then the raw little-endian
       bytes of each named array in that order: rows start..start+count of every
       row-indexed column of the store, then pool entries pool_start..+pool_count.
    M  UTF-8 JSON {meta?, vocab?, mask_id?}: replaces the header's (a later entry wins).
    E  UTF-8 JSON {records, pool_count}: the end of a closed recorder's file (record.file;
       its header says `end_entry: true`); nothing after it is read. Readers before it skip
       it as an unknown type, and files before it (no `end_entry`) read as they did.

numpy and the standard library only; never imports dearpygui, torch, engine/, gui/, app/,
or the writer and reader of this format.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from dpgviz.core.vocab import Vocabulary

MAGIC = b"\x89JOURNAL"
FORMAT_NAME = "dpgviz-journal"
JOURNAL_VERSION = 1
SUFFIX = ".dpgjournal"
ENTRY_HEADER, ENTRY_BATCH, ENTRY_META, ENTRY_END = b"H", b"B", b"M", b"E"
_PREFIX = struct.Struct("<8sI")  # magic, format version
_ENTRY = struct.Struct("<IQc")  # crc32, payload length, type
_CRC_PART = struct.Struct("<Qc")  # what the crc covers besides the payload: a torn length fails it too
_JSON_LEN = struct.Struct("<I")


# -- encoding ------------------------------------------------------------------------------
def _plain(value: object) -> object:
    """json.dumps fallback: numpy values become Python ones; anything else its str (the journal must not die on it)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _json(obj: object) -> bytes:
    # ASCII-only, as session headers: a vocabulary string with a lone surrogate round-trips.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=_plain).encode("ascii")


def _vocab_dict(vocab: Vocabulary) -> dict:
    return vocab.to_dict()  # as session headers write it (eos_id too, for LLaDA and Dream)


def _vocab_from(data: dict) -> Vocabulary:
    return Vocabulary.from_dict(data)


def _bytes_of(arr: np.ndarray) -> memoryview:
    """The raw little-endian bytes of an array, flat (a view when it already is)."""
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return memoryview(arr.reshape(-1).view(np.uint8))


def _entry(kind: bytes, parts: list) -> list:
    """The byte strings of one framed entry: its 13-byte frame, then `parts` as they are."""
    length = sum(memoryview(p).nbytes for p in parts)
    head = _CRC_PART.pack(length, kind)
    crc = zlib.crc32(head)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [struct.pack("<I", crc) + head, *parts]
