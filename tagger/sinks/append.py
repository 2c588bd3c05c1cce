"""The daemon's table: rows appended to a CSV or JSONL file, one whole line per write.

A kill at any moment leaves whole rows, and the next ``Appender`` on the file cuts off a row
torn by a crash or a power cut.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from tagger.fsutil import cannot_write
from tagger.records import FIELDS, FIELDS_BEFORE_SEGMENTS, OutputError, VideoResult
from tagger.sinks.tables import csv_line, jsonl_line, table_format

log = logging.getLogger("tagger.sinks")

_CSV_HEADER = ",".join(FIELDS).encode("ascii")
# The header of tables written before the video rows had ``segment_labels``.
_OLD_CSV_HEADER = ",".join(FIELDS_BEFORE_SEGMENTS).encode("ascii")
# Every JSONL row vidtag writes starts so (``ordered`` puts path first, json.dumps' separators).
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

    name: ClassVar[str] = "append"
    #: A failed append is a failed output: the daemon stops (see ``Outputs``).
    per_file: ClassVar[bool] = False

    def __init__(self, path: str) -> None:
        fmt = table_format(path)
        if path == "-" or fmt == "parquet":
            raise OutputError(
                f"cannot append rows to {path!r}: the daemon appends one row per video, "
                "so use a .csv or .jsonl (or .ndjson) file"
            )
        self.path = path
        self.format = fmt
        #: The CSV columns this file has (older files lack ``segment_labels``).
        self.fields: tuple[str, ...] = FIELDS
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
            old = os.pread(fd, len(_OLD_CSV_HEADER) + 2, 0)
            if old == _OLD_CSV_HEADER + b"\r\n" or old[: len(_OLD_CSV_HEADER) + 1] == _OLD_CSV_HEADER + b"\n":
                # Rows keep the columns the file has; a new file gets segment_labels.
                self.fields = FIELDS_BEFORE_SEGMENTS
                log.info("%s has the older columns (no segment_labels): rows keep them", self.path)
                return
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
            # A name that is not UTF-8 is written as its own bytes, as a CSV table does.
            return csv_line(row, self.fields).encode("utf-8", errors="surrogateescape")
        return jsonl_line(row).encode("utf-8")

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        # A regular file takes the whole buffer in one write() unless the disk is full or the
        # process is dying; finish a short write so the row at least ends whole if we live.
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)

    def write(self, result: VideoResult) -> None:
        self.write_row(result.row())

    def done(self, result: VideoResult) -> bool:
        return False

    def remove(self, video_path: str) -> None:
        pass

    def write_row(self, row: dict[str, Any]) -> None:
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
