"""Opening a session file: `read_header`, `open_session` (memory-mapped) and `verify_session`.

Opening checks the magic, the version, the header checksum and JSON, that every column
lies inside the file (a file cut short is refused, not half-read) and that the branch
tree only names rows that exist; then one read-only mmap backs every array, so a
session larger than memory opens in milliseconds and pages in only what is looked at
(the offsets and bitmaps, 12 bytes per record plus N/8, are read once to check them).

An append-only file (a recorder's, a recovery journal: store.journal_format's magic)
is replayed by store.journal_reader instead. The format is store.session_format's docstring.

numpy and the standard library only: never imports torch (the GUI process opens
sessions), Pillow or dearpygui, nor the session file's writer (store.session_save).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import zlib
from pathlib import Path

import numpy as np

import dpgviz
from dpgviz.core.records import SCALAR_FIELDS, RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store import journal_format, journal_reader
from dpgviz.store.layers import is_layer_column, layers_from_columns
from dpgviz.store.session import Session, SessionError
from dpgviz.store.session_format import (
    _MAX_HEADER_BYTES,
    _PREFIX,
    FORMAT_VERSION,
    MAGIC,
    READABLE_VERSIONS,
    VERIFY_LIMIT_BYTES,
    _aligned,
    _check_header,
    _checked_tree,
)
from dpgviz.store.step_columns import POOL_FIELDS
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


def read_header(path: str | Path) -> dict:
    """The checked JSON header of a session file, without mapping its data."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_PREFIX.size)
            if len(head) < _PREFIX.size:
                probe = head[: len(MAGIC)]
                if probe and MAGIC.startswith(probe):
                    raise SessionError(f"{path} is cut short ({size} bytes; not even a header)")
                raise SessionError(f"{path} is not a dpgviz session ({size} bytes, too small)")
            magic, version, header_crc, header_len = _PREFIX.unpack(head)
            if magic != MAGIC:
                raise SessionError(f"{path} is not a dpgviz session{_guess_kind(head)}")
            if version not in READABLE_VERSIONS:
                newer = "newer than" if version > FORMAT_VERSION else "older than"
                raise SessionError(
                    f"{path} is a session of format version {version}, {newer} the version {FORMAT_VERSION} "
                    f"this dpgviz {dpgviz.__version__} reads"
                )
            if header_len > _MAX_HEADER_BYTES:
                raise SessionError(f"{path} is corrupt (header length {header_len} is impossible)")
            if _PREFIX.size + header_len > size:
                raise SessionError(
                    f"{path} is cut short ({size} bytes; the header alone needs {_PREFIX.size + header_len})"
                )
            blob = f.read(header_len)
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror or exc}") from None
    if zlib.crc32(blob) != header_crc:
        raise SessionError(f"{path} is corrupt (header checksum does not match)")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError(f"{path} is corrupt (header is not JSON: {exc})") from None
    _check_header(path, header, size, _aligned(_PREFIX.size + header_len), version)
    header["format_version"] = version  # the prefix's, which decides how the arrays read
    return header


def _guess_kind(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return " (it is a zip archive; a PyTorch checkpoint?)"
    if head.startswith(b"\x80"):
        return " (it looks like a pickle)"
    if head[:1] in (b"{", b"["):
        return " (it looks like JSON; exported statistics?)"
    return ""


def open_session(path: str | Path, *, verify: bool | None = None) -> Session:
    """Open a session file read-only and memory-mapped, without any model.

    `verify` checks every column's CRC-32 (reads all the data); None verifies only
    files whose data is under VERIFY_LIMIT_BYTES. Raises SessionError for a file that
    is not a session, of another format version, cut short or corrupt. An append-only
    file (a recorder's: store.journal_format's magic) is replayed into memory instead, up
    to its first torn entry.
    """
    path = Path(path)
    if _magic(path) == journal_format.MAGIC:
        session = journal_reader.recover(path)
        session.path = path
        return session
    header = read_header(path)
    try:
        layout = RecordLayout.from_dict(header["layout"])  # a block run after a prompt adds its prefix
        vocab = Vocabulary.from_dict(header["vocab"])  # never_sample absent before subword models
    except (KeyError, TypeError, ValueError) as exc:
        raise SessionError(f"{path} is corrupt (layout or vocabulary: {exc})") from None
    if vocab.mask_id != header["mask_id"] or vocab.n_ids > layout.n_ids:
        raise SessionError(
            f"{path} is corrupt (mask id {header['mask_id']} and {vocab.n_ids} ids do not fit a vocabulary of "
            f"{vocab.size} and records of {layout.n_ids} ids)"
        )
    count = header["count"]
    tree = _checked_tree(path, header["tree"], count)
    data_bytes = sum(int(e["nbytes"]) for e in header["columns"])
    if verify is None:
        verify = data_bytes <= VERIFY_LIMIT_BYTES
    try:
        with path.open("rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise SessionError(f"cannot map {path}: {exc}") from None
    try:
        if verify:
            _verify_columns(path, mm, header["columns"])
        columns = {
            e["name"]: np.frombuffer(
                mm, dtype=np.dtype(e["dtype"]), count=int(np.prod(e["shape"])), offset=int(e["offset"])
            ).reshape(e["shape"])
            for e in header["columns"]
        }
        for name, dtype in SCALAR_FIELDS.items():
            if name not in columns:  # a scalar added after the file was written (block offset...): 0 there
                columns[name] = np.zeros(count, dtype)
        pool = None
        if header["format_version"] >= 2:
            pool = {name: columns.pop(name) for name in POOL_FIELDS if name in columns}
        elif "tokens" in columns and columns["tokens"].dtype != layout.id_dtype:
            # Format 1 stored uint16 ids even where uint8 fits: a copy of this one column
            # (count x N bytes); the candidates are compacted by from_columns.
            columns["tokens"] = columns["tokens"][:count].astype(layout.id_dtype)
        try:
            layer_cols = {name: columns.pop(name) for name in list(columns) if is_layer_column(name)}
            store = StepStore.from_columns(layout, columns, count, tree, mask_id=vocab.mask_id, pool=pool)
            store.layers = layers_from_columns(header, layer_cols)
        except (ValueError, KeyError) as exc:  # KeyError: a listed score layer without its columns
            raise SessionError(f"{path} does not match its layout ({exc})") from None
    except BaseException:
        columns = pool = store = None  # release the views before closing the map
        with contextlib.suppress(BufferError):
            mm.close()
        raise
    next_id = header.get("next_branch_id")  # absent in files written before branches could be deleted
    if isinstance(next_id, int):
        store.next_branch_id = max(store.next_branch_id, next_id)
    model = header.get("model") or {}
    log.debug("opened session %s: %d records, %d branches (verified: %s)", path, count, len(tree), verify)
    return Session(
        store=store,
        vocab=vocab,
        settings=dict(header.get("settings") or {}),
        model_path=model.get("path"),
        model_sha256=model.get("sha256"),
        model_info=dict(model.get("info") or {}),
        runtime=dict(header.get("runtime") or {}),  # absent before issue 24
        app_version=str(header.get("app_version", "")),
        created=str(header.get("created", "")),
        path=path,
        _mmap=mm,
    )


def _magic(path: Path) -> bytes:
    """The first 8 bytes of a file (b"" when it cannot be read: read_header then says why)."""
    try:
        with path.open("rb") as f:
            return f.read(len(MAGIC))
    except OSError:
        return b""


def _verify_columns(path: Path, mm: mmap.mmap, table: list[dict]) -> None:
    with memoryview(mm) as view:
        for e in table:
            offset, nbytes = int(e["offset"]), int(e["nbytes"])
            if zlib.crc32(view[offset : offset + nbytes]) != int(e["crc32"], 16):
                raise SessionError(f"{path} is corrupt (column {e['name']} does not match its checksum)")


def verify_session(path: str | Path) -> None:
    """Read every byte of a session and check all checksums; SessionError if any is off."""
    open_session(path, verify=True).close()
