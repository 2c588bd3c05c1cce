"""Writers for vidtag's outputs: CSV, JSONL and Parquet tables and per-video JSON sidecars.

Every whole-file write goes through :func:`tagger.fsutil.atomic_open`, so a reader never sees a half-written
file; the daemon's row-by-row output goes through :class:`Appender`, one whole line per write.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tagger import __version__
from tagger.fsutil import atomic_open, cannot_write
from tagger.names import display, is_utf8, json_text
from tagger.records import FIELDS, OutputError, StorageError, VideoResult

TABLE_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
SIDECAR_SUFFIX = ".vidtag.json"

_SUFFIXES = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_GENERATOR = "vidtag"

log = logging.getLogger(__name__)
# A sidecar is a few hundred bytes; anything far larger at that path is not one of ours,
# and reading it whole just to refuse it would be wasteful.
_SIDECAR_MAX_BYTES = 4 * 1024 * 1024

_STRING_COLUMNS = ("path", "label", "labels", "scores", "model", "status", "error")
_PARQUET_DTYPES: dict[str, str] = {
    **dict.fromkeys(_STRING_COLUMNS, "string"),
    "score": "float64",
    "duration_s": "float64",
    "clips": "int64",
}
#: Parquet only: the raw bytes of a name that is not UTF-8 (``path`` then holds \xNN escapes).
PATH_BYTES = "path_bytes"


def table_format(path: str) -> str:
    """The table format for an output path: ``-`` is CSV on stdout, else from the suffix."""
    if path == "-":
        return "csv"
    fmt = _SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise OutputError(
            f"cannot tell the output format of {path!r}: use a .csv, .jsonl (or .ndjson) "
            "or .parquet suffix, or '-' for CSV on stdout"
        )
    return fmt


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in FIELDS}


def _write_csv(f: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    writer = csv.writer(f)
    writer.writerow(FIELDS)
    n = 0
    for row in rows:
        # csv writes None as an empty cell.
        writer.writerow([row[name] for name in FIELDS])
        n += 1
    return n


def _write_jsonl(f: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    for row in rows:
        f.write(json_text(_ordered(row)))
        f.write("\n")
        n += 1
    return n


def _parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet strings must be UTF-8: names that are not get escapes, and their raw bytes."""
    out = _ordered(row)
    for name in _STRING_COLUMNS:
        if isinstance(out[name], str):
            out[name] = display(out[name])
    out[PATH_BYTES] = None if is_utf8(row["path"]) else os.fsencode(row["path"])
    return out


def _write_parquet(path: str, rows: Iterable[dict[str, Any]]) -> int:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet is written in one piece, so the rows are collected here (and only here).
    frame = pd.DataFrame([_parquet_row(row) for row in rows], columns=[*FIELDS, PATH_BYTES])
    # Explicit dtypes: without them an all-error table (score all None) has object columns
    # that pyarrow cannot type.
    frame = frame.astype(_PARQUET_DTYPES)
    schema = pa.Schema.from_pandas(frame.drop(columns=[PATH_BYTES]), preserve_index=False)
    table = pa.Table.from_pandas(
        frame, schema=schema.append(pa.field(PATH_BYTES, pa.binary())), preserve_index=False
    )
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    return len(frame)


def write_table(path: str, rows: Iterable[dict[str, Any]], stdout: IO[str] | None = None) -> int:
    """Write rows in ``FIELDS`` order to ``path`` (``-``: CSV on stdout); return the count."""
    fmt = table_format(path)
    if path == "-":
        out = sys.stdout if stdout is None else stdout
        if isinstance(out, io.TextIOWrapper):
            # A name that is not UTF-8 goes out as its own bytes, as in a CSV file.
            out.reconfigure(errors="surrogateescape")
        n = _write_csv(out, rows)
        out.flush()
        return n
    if fmt == "parquet":
        return _write_parquet(path, rows)
    if fmt == "csv":
        # surrogateescape: a name that is not UTF-8 is written as its own bytes (tagger.names).
        with atomic_open(path, "w", newline="", errors="surrogateescape") as f:
            return _write_csv(f, rows)
    with atomic_open(path, "w") as f:
        return _write_jsonl(f, rows)


def sidecar_path(video_path: str) -> str:
    """Where the sidecar of ``video_path`` goes: ``<video>.<ext>.vidtag.json``."""
    return video_path + SIDECAR_SUFFIX


def _foreign_reason(path: str) -> str | None:
    """Why the file at ``path`` is not a vidtag sidecar, or None if it is one (or is absent)."""
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(_SIDECAR_MAX_BYTES + 1)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if len(data) > _SIDECAR_MAX_BYTES:
        return "it is too large to be a vidtag sidecar"
    try:
        doc = json.loads(data)
    except ValueError:
        return "it is not JSON"
    if not isinstance(doc, dict) or doc.get("generator") != _GENERATOR:
        return f'it has no "generator": "{_GENERATOR}"'
    return None


def write_sidecar(result: VideoResult, extra: dict[str, Any] | None = None) -> str:
    """Write the JSON sidecar beside ``result.path`` and return its path.

    Refuses (``OutputError``) to replace a file at that path that vidtag did not write.
    """
    path = sidecar_path(result.path)
    reason = _foreign_reason(path)
    if reason is not None:
        raise OutputError(
            f"{display(path)} already exists and {reason}; vidtag will not overwrite a file it did not write"
        )
    doc: dict[str, Any] = {"generator": _GENERATOR, **result.row()}
    doc["tags"] = [{"label": t.label, "score": round(t.score, 6)} for t in result.tags]
    for key, value in (extra or {}).items():
        if key in doc:
            raise ValueError(f"sidecar extra key {key!r} clashes with a result field")
        doc[key] = value
    with atomic_open(path, "w") as f:
        f.write(json_text(doc, indent=2))
        f.write("\n")
    return path


def emit_sidecar(result: VideoResult) -> str | None:
    """Write the sidecar of ``result`` (with vidtag's version); None, or why this file has none.

    A reason of this one file (a foreign file in the way, a name too long) is returned, and the
    run goes on; a fault of the disk (``StorageError``) is raised, as every later sidecar would
    fail the same way.
    """
    try:
        write_sidecar(result, {"version": __version__})
    except StorageError:
        raise
    except OutputError as exc:
        return str(exc)
    return None


def remove_sidecar(video_path: str) -> bool:
    """Delete the sidecar of ``video_path`` if vidtag wrote it; True when one was removed."""
    path = sidecar_path(video_path)
    if not os.path.lexists(path) or _foreign_reason(path) is not None:
        return False
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warning("cannot remove %s: %s", display(path), e.strerror or e)
        return False
    return True


# --- appending (vidtag watch) --------------------------------------------------------------

_CSV_HEADER = ",".join(FIELDS).encode("ascii")
# Every JSONL row vidtag writes starts so (``_ordered`` puts path first, json.dumps' separators).
_JSONL_START = b'{"path": '
# One row is at most a few KiB; a longer unfinished tail is not a row torn by a kill, and
# cutting it off could throw away data, so the file is refused instead.
_MAX_TORN_BYTES = 1024 * 1024
_SCAN_CHUNK = 1024 * 1024


def _complete_end_jsonl(fd: int, size: int) -> int:
    """Offset just past the last newline (JSON escapes newlines, so each one ends a row)."""
    start = max(0, size - _MAX_TORN_BYTES - 1)
    tail = os.pread(fd, size - start, start)
    return start + tail.rfind(b"\n") + 1


def _complete_end_csv(fd: int, size: int) -> int:
    """Offset just past the last newline outside a quoted field.

    A quoted CSV field may hold newlines, so a kill can leave a file ending in ``\\n`` inside
    an unclosed quote, which would swallow every later row. ``csv`` quotes any field holding a
    quote and doubles quotes inside, so a newline ends a row exactly when an even number of
    quotes precede it: one sequential pass tracks that parity.
    """
    in_quotes = False
    end = 0
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_SCAN_CHUNK, size - offset), offset)
        if not chunk:
            break
        pos = offset
        parts = chunk.split(b'"')
        for i, part in enumerate(parts):
            if not in_quotes:
                newline = part.rfind(b"\n")
                if newline >= 0:
                    end = pos + newline + 1
            pos += len(part) + 1
            if i < len(parts) - 1:
                in_quotes = not in_quotes
        offset += len(chunk)
    return end


class Appender:
    """Append rows to a CSV or JSONL file, each line whole and flushed (+ os.fsync).

    Made for ``vidtag watch``: a kill at any moment leaves whole rows, and the next
    ``Appender`` on the file cuts off a row torn by a crash or power cut. Readers take the
    last row per path.
    """

    def __init__(self, path: str) -> None:
        fmt = table_format(path)
        if path == "-" or fmt == "parquet":
            raise OutputError(
                f"cannot append rows to {path!r}: the daemon appends one row per video, "
                "so use a .csv or .jsonl (or .ndjson) file"
            )
        self.path = path
        self.format = fmt
        self._lock = threading.Lock()
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise cannot_write(Path(path), e) from e
        try:
            self._prepare(fd)
        except OSError as e:
            os.close(fd)
            raise cannot_write(Path(path), e) from e
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def _prepare(self, fd: int) -> None:
        """Refuse a foreign file, cut off a torn last row, write the CSV header if empty."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            # Truncating and fsync need a regular file (not a FIFO, not a device).
            raise OutputError(f"cannot append rows to {self.path!r}: it is not a regular file")
        size = st.st_size
        if size:
            self._check_ours(fd, size)
            end = _complete_end_csv(fd, size) if self.format == "csv" else _complete_end_jsonl(fd, size)
            if size - end > _MAX_TORN_BYTES:
                raise OutputError(
                    f"{self.path!r} does not end with a whole row and its last {size - end} bytes "
                    "are too many to be one torn row; vidtag will not cut them off, so check the file"
                )
            if end < size:
                os.ftruncate(fd, end)
                os.fsync(fd)
                log.warning(
                    "%s: dropped %d bytes of a partial last row (the writer was killed mid-write)",
                    self.path,
                    size - end,
                )
                size = end
        if size == 0 and self.format == "csv":
            self._write_all(fd, _CSV_HEADER + b"\r\n")

    def _check_ours(self, fd: int, size: int) -> None:
        """Raise unless the file starts like one vidtag writes (never append to a foreign table)."""
        if self.format == "csv":
            head = os.pread(fd, len(_CSV_HEADER) + 2, 0)
            whole = head == _CSV_HEADER + b"\r\n" or head[: len(_CSV_HEADER) + 1] == _CSV_HEADER + b"\n"
            expected, what = _CSV_HEADER + b"\r\n", f"its first line is not the vidtag header {FIELDS}"
        else:
            head = os.pread(fd, len(_JSONL_START), 0)
            whole = head == _JSONL_START
            expected, what = _JSONL_START, 'its first line is not a vidtag row ({"path": ...})'
        # A file shorter than the signature and a prefix of it is our own first write, torn.
        torn = size == len(head) and expected.startswith(head)
        if not (whole or torn):
            raise OutputError(
                f"cannot append rows to {self.path!r}: {what}; vidtag will not append to a table "
                "it did not write"
            )

    def _encode(self, row: dict[str, Any]) -> bytes:
        if self.format == "csv":
            buf = io.StringIO()
            # csv writes None as an empty cell and ends the row with \r\n, as write_table does.
            csv.writer(buf).writerow([row[name] for name in FIELDS])
            # A name that is not UTF-8 is written as its own bytes, as write_table does.
            return buf.getvalue().encode("utf-8", errors="surrogateescape")
        return (json_text(_ordered(row)) + "\n").encode("utf-8")

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        # A regular file takes the whole buffer in one write() unless the disk is full or the
        # process is dying; finish a short write so the row at least ends whole if we live.
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (``FIELDS`` keys) as one line; on disk when this returns."""
        data = self._encode(row)
        with self._lock:
            fd = self._fd
            if fd is None:
                raise ValueError(f"write to a closed Appender ({self.path!r})")
            try:
                before = os.fstat(fd).st_size
            except OSError as e:
                raise cannot_write(Path(self.path), e) from e
            try:
                self._write_all(fd, data)
            except OSError as e:
                # Take a partial row back so later rows do not land after half a line.
                with suppress(OSError):
                    os.ftruncate(fd, before)
                raise cannot_write(Path(self.path), e) from e

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
