"""Whole tables: CSV, JSONL and Parquet, each replaced atomically when it is closed.

A reader never sees a half-written table: rows go to a temporary file beside the target,
which takes the target's name only once every row is there.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

from tagger.fsutil import atomic_open
from tagger.names import display, is_utf8, json_text
from tagger.records import FIELDS, SEGMENT_FIELDS, OutputError, VideoResult

# Parquet types of the numeric columns (video rows and segment rows); the others are strings.
_NUMERIC: dict[str, str] = {
    "score": "float64",
    "duration_s": "float64",
    "clips": "int64",
    "start_s": "float64",
    "end_s": "float64",
    "peak_score": "float64",
}
#: Parquet only: the raw bytes of a name that is not UTF-8 (``path`` then holds \xNN escapes).
PATH_BYTES = "path_bytes"


def ordered(row: dict[str, Any], fields: Sequence[str] = FIELDS) -> dict[str, Any]:
    """``row`` with the ``fields`` keys in that order (path first)."""
    return {name: row[name] for name in fields}


def csv_line(row: dict[str, Any], fields: Sequence[str] = FIELDS) -> str:
    """One CSV row as ``csv`` writes it (None as an empty cell, ``\\r\\n`` at the end)."""
    buf = io.StringIO()
    csv.writer(buf).writerow([row[name] for name in fields])
    return buf.getvalue()


def jsonl_line(row: dict[str, Any], fields: Sequence[str] = FIELDS) -> str:
    return json_text(ordered(row, fields)) + "\n"


class Table:
    """A table output with open (the constructor) / write / close; a ``with`` block that ends
    in an exception leaves the old file as it was."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    #: The file is only replaced as a whole: a failed write stops the run (see ``Outputs``).
    per_file: ClassVar[bool] = False

    def __init__(self, path: str, fields: Sequence[str] = FIELDS) -> None:
        self.path = path
        #: The columns, in order: ``FIELDS`` (video rows) or ``SEGMENT_FIELDS``.
        self.fields = tuple(fields)
        self.count = 0
        self._stack = ExitStack()

    def write(self, result: VideoResult) -> None:
        self.write_row(result.row())

    def write_row(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def done(self, result: VideoResult) -> bool:
        return False

    def remove(self, video_path: str) -> None:
        pass

    def close(self) -> None:
        """Finish the table: it replaces the old file now."""
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)


class CsvTable(Table):
    name, suffixes = "csv", (".csv",)

    def __init__(self, path: str, fields: Sequence[str] = FIELDS, stream: IO[str] | None = None) -> None:
        super().__init__(path, fields)
        if stream is None:
            # surrogateescape: a name that is not UTF-8 is written as its own bytes (tagger.names).
            stream = self._stack.enter_context(atomic_open(path, "w", newline="", errors="surrogateescape"))
        else:
            if isinstance(stream, io.TextIOWrapper):
                # A name that is not UTF-8 goes out as its own bytes, as in a CSV file.
                stream.reconfigure(errors="surrogateescape")
            self._stack.callback(stream.flush)
        self._f = stream
        self._f.write(csv_line(dict(zip(self.fields, self.fields, strict=True)), self.fields))

    def write_row(self, row: dict[str, Any]) -> None:
        self._f.write(csv_line(row, self.fields))
        self.count += 1


class JsonlTable(Table):
    name, suffixes = "jsonl", (".jsonl", ".ndjson")

    def __init__(self, path: str, fields: Sequence[str] = FIELDS) -> None:
        super().__init__(path, fields)
        self._f = self._stack.enter_context(atomic_open(path, "w"))

    def write_row(self, row: dict[str, Any]) -> None:
        self._f.write(jsonl_line(row, self.fields))
        self.count += 1


class ParquetTable(Table):
    """Parquet is written in one piece, so its rows are collected (here, and only here)."""

    name, suffixes = "parquet", (".parquet",)

    def __init__(self, path: str, fields: Sequence[str] = FIELDS) -> None:
        super().__init__(path, fields)
        self._rows: list[dict[str, Any]] = []
        self._stack.callback(self._flush)

    def write_row(self, row: dict[str, Any]) -> None:
        # Parquet strings must be UTF-8: names that are not get escapes, and their raw bytes.
        out = ordered(row, self.fields)
        for name in self.fields:
            if name not in _NUMERIC and isinstance(out[name], str):
                out[name] = display(out[name])
        out[PATH_BYTES] = None if is_utf8(row["path"]) else os.fsencode(row["path"])
        self._rows.append(out)
        self.count += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._stack.pop_all()  # nothing is written for a run that failed
        super().__exit__(exc_type, exc, tb)

    def _flush(self) -> None:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = pd.DataFrame(self._rows, columns=[*self.fields, PATH_BYTES])
        # Explicit dtypes: without them an all-error table (score all None) has object columns
        # that pyarrow cannot type.
        frame = frame.astype({name: _NUMERIC.get(name, "string") for name in self.fields})
        schema = pa.Schema.from_pandas(frame.drop(columns=[PATH_BYTES]), preserve_index=False)
        table = pa.Table.from_pandas(
            frame, schema=schema.append(pa.field(PATH_BYTES, pa.binary())), preserve_index=False
        )
        with atomic_open(self.path, "wb") as f:
            pq.write_table(table, f)


class SegmentRows:
    """The timeline table (``--segments FILE``): a row per segment, the format by suffix.
    A video without a timeline (or that failed) has no rows."""

    per_file: ClassVar[bool] = False

    def __init__(self, path: str) -> None:
        if path == "-":
            raise OutputError("the segments table needs a file (.csv, .jsonl or .parquet), not stdout")
        self.table = TABLES[table_format(path)](path, SEGMENT_FIELDS)

    def write(self, result: VideoResult) -> None:
        for segment in result.segments:
            self.table.write_row(segment.row(result.path, result.model))

    def done(self, result: VideoResult) -> bool:
        return False  # the table is written whole each run, so every video goes in again

    def remove(self, video_path: str) -> None:
        pass

    def close(self) -> None:
        self.table.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.table.__exit__(exc_type, exc, tb)


TABLES: dict[str, type[Table]] = {cls.name: cls for cls in (CsvTable, JsonlTable, ParquetTable)}
_BY_SUFFIX = {suffix: name for name, cls in TABLES.items() for suffix in cls.suffixes}
TABLE_FORMATS: tuple[str, ...] = tuple(TABLES)


def table_format(path: str) -> str:
    """The table format for an output path: ``-`` is CSV on stdout, else from the suffix."""
    if path == "-":
        return "csv"
    fmt = _BY_SUFFIX.get(Path(path).suffix.lower())
    if fmt is None:
        raise OutputError(
            f"cannot tell the output format of {display(path)!r}: use a .csv, .jsonl (or .ndjson) "
            "or .parquet suffix, or '-' for CSV on stdout"
        )
    return fmt


def open_table(path: str, stdout: IO[str] | None = None, fields: Sequence[str] = FIELDS) -> Table:
    """The table writer for ``path``, chosen by its suffix (``-``: CSV on stdout)."""
    if path == "-":
        return CsvTable(path, fields, sys.stdout if stdout is None else stdout)
    return TABLES[table_format(path)](path, fields)


def write_table(path: str, rows: Iterable[dict[str, Any]], stdout: IO[str] | None = None) -> int:
    """Write rows (``FIELDS`` keys) to ``path`` (``-``: CSV on stdout); return the count."""
    with open_table(path, stdout) as table:
        for row in rows:
            table.write_row(row)
    return table.count
