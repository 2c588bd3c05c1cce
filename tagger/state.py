"""SQLite store of what vidtag has tagged: a run skips unchanged files and resumes after a kill."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from tagger.records import TaggerError, VideoFile, VideoResult

#: Stored in ``PRAGMA user_version``; bump it when the table layout changes.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    path TEXT NOT NULL,
    model TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    row TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (path, model)
)
"""

_UPSERT = """
INSERT INTO results (path, model, size, mtime_ns, status, row, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (path, model) DO UPDATE SET
    size = excluded.size,
    mtime_ns = excluded.mtime_ns,
    status = excluded.status,
    row = excluded.row,
    updated_at = excluded.updated_at
"""

_BUSY_TIMEOUT_S = 30.0


class StateStore:
    """Results keyed by (path, model), valid while the file's size and mtime_ns are unchanged."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = ":memory:" if path is None else str(path)
        self._lock = threading.Lock()
        try:
            # Autocommit: each record() is its own committed statement, durable when it returns.
            self._conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            raise TaggerError(f"cannot open state database {self.path!r}: {e}") from e
        try:
            self._setup()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            if isinstance(e, sqlite3.OperationalError):
                raise TaggerError(f"cannot open state database {self.path!r}: {e}") from e
            raise TaggerError(
                f"{self.path!r} is not a vidtag state database ({e}); "
                "choose another state file or move that one away"
            ) from e
        except TaggerError:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        if self.path != ":memory:":
            # WAL lets a reader (another vidtag, sqlite3 CLI) look in while a run writes.
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a recorded result costs seconds of inference; keep it through a power cut.
            conn.execute("PRAGMA synchronous=FULL")
        # IMMEDIATE: two processes opening a new database at once must not both create it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise TaggerError(
                    f"state database {self.path!r} has format {version}, written by a newer "
                    f"vidtag; this one reads format {SCHEMA_VERSION}"
                )
            if version == 0:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if tables - {"results"}:
                    raise TaggerError(f"{self.path!r} is an SQLite database but not a vidtag state database")
                conn.execute(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _fetch(self, file: VideoFile, model: str) -> tuple[str, VideoResult] | None:
        with self._lock:
            found = self._conn.execute(
                "SELECT size, mtime_ns, status, row FROM results WHERE path = ? AND model = ?",
                (file.path, model),
            ).fetchone()
        if found is None:
            return None
        size, mtime_ns, status, row = found
        if size != file.size or mtime_ns != file.mtime_ns:
            return None
        try:
            return status, VideoResult.from_row(json.loads(row))
        except (ValueError, TypeError, KeyError):
            # A row this vidtag cannot read is as good as missing: the file gets re-tagged.
            return None

    def lookup(self, file: VideoFile, model: str) -> VideoResult | None:
        """The stored result if ``file`` is unchanged since ``model`` tagged it successfully."""
        found = self._fetch(file, model)
        if found is None or found[0] != "ok":
            # Error rows are retried on the next run.
            return None
        return found[1]

    def record(self, file: VideoFile, model: str, result: VideoResult) -> None:
        """Store ``result`` for ``file`` and ``model`` (upsert); on disk when this returns."""
        row = json.dumps(result.row(), ensure_ascii=False)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            self._conn.execute(
                _UPSERT,
                (file.path, model, file.size, file.mtime_ns, result.status, row, now),
            )

    def results(self, files: Iterable[VideoFile], model: str) -> Iterator[VideoResult]:
        """Stored results (any status) of the unchanged ``files``, in order; others skipped."""
        for file in files:
            found = self._fetch(file, model)
            if found is not None:
                yield found[1]

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
