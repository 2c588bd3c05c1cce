"""The SQLite store of results: one versioned result document per (path, model).

A document holds the verdict and every clip's scores (``VideoResult.document``), so a resumed
run can still build a timeline; a model's classes are kept once, in ``models``. For ``vidtag
watch`` the store also tracks which rows reached the appended output (``emitted``) and follows
renames and deletions.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from tagger.names import display, is_utf8, json_text
from tagger.records import LIVE_STATUSES, StateError, TaggerError, VideoFile, VideoResult
from tagger.state.locks import hold_lock, release_lock
from tagger.state.schema import create_or_migrate

log = logging.getLogger("tagger.state")

_UPSERT = """
INSERT INTO results (path, model, size, mtime_ns, status, doc, updated_at, emitted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (path, model) DO UPDATE SET
    size = excluded.size,
    mtime_ns = excluded.mtime_ns,
    status = excluded.status,
    doc = excluded.doc,
    updated_at = excluded.updated_at,
    emitted = excluded.emitted
"""

_BUSY_TIMEOUT_S = 30.0

# What an SQLite result code means for the user (prefixes: SQLITE_IOERR_WRITE is an IOERR).
_SQLITE_FAULTS = (
    ("SQLITE_FULL", "the disk is full"),
    ("SQLITE_BUSY", f"another process kept it locked for over {_BUSY_TIMEOUT_S:g} s"),
    ("SQLITE_LOCKED", f"another process kept it locked for over {_BUSY_TIMEOUT_S:g} s"),
    ("SQLITE_CORRUPT", "it is damaged; move it away and run again (its videos are tagged again)"),
    ("SQLITE_NOTADB", "it is not an SQLite database; choose another state file or move it away"),
    ("SQLITE_IOERR", "an I/O error (the disk or share may be failing)"),
    ("SQLITE_READONLY", "it is read-only"),
    ("SQLITE_CANTOPEN", "it cannot be opened (is its folder there and writable?)"),
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def state_error(path: str, exc: sqlite3.Error) -> StateError:
    """One clear line for an SQLite failure on the state database at ``path``."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    what = next((text for prefix, text in _SQLITE_FAULTS if code.startswith(prefix)), None)
    name = display(path)
    if what is None:
        return StateError(f"state database {name}: {exc}")
    return StateError(f"state database {name}: {what} ({exc})")


def _guarded(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn any ``sqlite3.Error`` of a store method into a ``StateError`` naming the file."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as e:
            store = args[0]
            raise state_error(store.path, e) from e  # type: ignore[attr-defined]

    return wrapper


def _key(path: str) -> str | bytes:
    """The ``path`` column's value: the name as TEXT, or its raw bytes (a BLOB) when it is not
    UTF-8, which SQLite's TEXT cannot hold. TEXT and BLOB never compare equal, so no two
    names share a key, and a readable name stays readable in the sqlite3 shell."""
    return path if is_utf8(path) else os.fsencode(path)


def _path(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse(status: str, doc: str, classes: tuple[str, ...] = ()) -> VideoResult | None:
    """The stored result with the row's current status, or None if the document cannot be read."""
    try:
        result = VideoResult.from_document(json.loads(doc), classes)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    # The status column is the truth: a removed row keeps its old result (tags) in ``doc``.
    return result if result.status == status else replace(result, status=status)


class StateStore:
    """Results keyed by (path, model), valid while the file's size and mtime_ns are unchanged."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = ":memory:" if path is None else str(path)
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        #: Each model's classes, as stored in ``models`` (read once, written once).
        self._known: dict[str, tuple[str, ...]] = {}
        try:
            # Autocommit: each record() is its own committed statement, durable when it returns.
            self._conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            raise state_error(self.path, e) from e
        try:
            create_or_migrate(self._conn, self.path)
        except sqlite3.Error as e:
            self._conn.close()
            raise state_error(self.path, e) from e
        except TaggerError:
            self._conn.close()
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success; the thread lock is held throughout."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _classes(self, model: str) -> tuple[str, ...]:
        """The classes stored for ``model`` (the caller holds the thread lock)."""
        if model not in self._known:
            found = self._conn.execute("SELECT classes FROM models WHERE model = ?", (model,)).fetchone()
            try:
                self._known[model] = tuple(json.loads(found[0])) if found else ()
            except (ValueError, TypeError):
                self._known[model] = ()
        return self._known[model]

    @_guarded
    def _fetch(self, file: VideoFile, model: str) -> tuple[str, VideoResult] | None:
        with self._lock:
            found = self._conn.execute(
                "SELECT size, mtime_ns, status, doc FROM results WHERE path = ? AND model = ?",
                (_key(file.path), model),
            ).fetchone()
            classes = self._classes(model)
        if found is None:
            return None
        size, mtime_ns, status, doc = found
        if size != file.size or mtime_ns != file.mtime_ns:
            return None
        # A row this vidtag cannot read is as good as missing: the file gets re-tagged.
        result = _parse(status, doc, classes)
        return None if result is None else (status, result)

    def lookup(self, file: VideoFile, model: str, timeline: bool = False) -> VideoResult | None:
        """The stored result if ``file`` is unchanged since ``model`` tagged it successfully
        (with ``timeline``: densely, so that a timeline can be made from its clip scores)."""
        found = self._fetch(file, model)
        if found is None or found[0] != "ok":
            # Error rows are retried on the next run; removed and moved rows are history.
            return None
        if timeline and not found[1].timeline:
            return None
        return found[1]

    @_guarded
    def record(self, file: VideoFile, model: str, result: VideoResult, emitted: bool = True) -> None:
        """Store ``result`` for ``file`` and ``model`` (upsert); on disk when this returns.

        ``emitted=False``: the row is not in the output yet; it is listed by :meth:`unemitted`
        until :meth:`mark_emitted` (record, append, mark: a kill in between loses nothing).
        """
        doc = json_text(result.document())
        with self._transaction() as conn:
            if result.classes and self._known.get(model) != result.classes:
                conn.execute(
                    "INSERT INTO models (model, classes) VALUES (?, ?) "
                    "ON CONFLICT (model) DO UPDATE SET classes = excluded.classes",
                    (model, json_text(list(result.classes))),
                )
                self._known[model] = result.classes
            conn.execute(
                _UPSERT,
                (_key(file.path), model, file.size, file.mtime_ns, result.status, doc, _now(), int(emitted)),
            )

    @_guarded
    def mark_emitted(self, path: str, model: str) -> None:
        """Note that the row of ``path`` has reached the output."""
        with self._lock:
            self._conn.execute(
                "UPDATE results SET emitted = 1 WHERE path = ? AND model = ? AND emitted = 0",
                (_key(path), model),
            )

    @_guarded
    def unemitted(self, model: str) -> list[tuple[VideoFile, VideoResult]]:
        """Rows (any status) stored but not yet in the output, oldest first, to append again."""
        with self._lock:
            found = self._conn.execute(
                "SELECT path, size, mtime_ns, status, doc FROM results "
                "WHERE model = ? AND emitted = 0 ORDER BY updated_at, rowid",
                (model,),
            ).fetchall()
            classes = self._classes(model)
        out = []
        for path, size, mtime_ns, status, doc in found:
            result = _parse(status, doc, classes)
            if result is not None:
                out.append((VideoFile(_path(path), size, mtime_ns), result))
        return out

    @_guarded
    def find(self, path: str, model: str) -> tuple[VideoFile, VideoResult] | None:
        """The stored row of ``path`` whatever its size, mtime and status (the file as stored)."""
        with self._lock:
            found = self._conn.execute(
                "SELECT size, mtime_ns, status, doc FROM results WHERE path = ? AND model = ?",
                (_key(path), model),
            ).fetchone()
            classes = self._classes(model)
        if found is None:
            return None
        size, mtime_ns, status, doc = found
        result = _parse(status, doc, classes)
        return None if result is None else (VideoFile(path, size, mtime_ns), result)

    @_guarded
    def move(self, src: str, dst: VideoFile, model: str, *, emitted: bool = False) -> VideoResult | None:
        """Re-key the row of ``src`` to ``dst.path`` if it is the same file (size and mtime_ns).

        Only ok and error rows move; a row already at ``dst.path`` is replaced. Returns the
        moved result (its path is ``dst.path``), or None with nothing changed. The moved row
        is unemitted (see :meth:`record`) unless ``emitted``.
        """
        if src == dst.path:
            return None
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT size, mtime_ns, status, doc FROM results WHERE path = ? AND model = ?",
                (_key(src), model),
            ).fetchone()
            if found is None:
                return None
            size, mtime_ns, status, stored = found
            if status not in LIVE_STATUSES or (size, mtime_ns) != (dst.size, dst.mtime_ns):
                return None
            try:
                doc = json.loads(stored)
                if not isinstance(doc, dict):
                    return None
                doc["path"] = dst.path
                result = VideoResult.from_document(doc, self._classes(model))
            except (ValueError, TypeError, KeyError):
                return None
            conn.execute("DELETE FROM results WHERE path = ? AND model = ?", (_key(dst.path), model))
            # The stored document is edited, not rebuilt from the result, so nothing in it is lost.
            conn.execute(
                "UPDATE results SET path = ?, doc = ?, updated_at = ?, emitted = ? "
                "WHERE path = ? AND model = ?",
                (_key(dst.path), json_text(doc), _now(), int(emitted), _key(src), model),
            )
        return result

    @_guarded
    def remove(self, path: str, model: str, keep: bool, *, emitted: bool = False) -> VideoResult | None:
        """Forget that ``path`` is there; return its previous result, or None if none is stored.

        ``keep``: mark the row "removed" and keep its result (so it can come back), unemitted
        unless ``emitted`` (see :meth:`record`); a row already removed is left as it is.
        Otherwise the row is deleted.
        """
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT status, doc FROM results WHERE path = ? AND model = ?", (_key(path), model)
            ).fetchone()
            if found is None:
                return None
            status, doc = found
            classes = self._classes(model)
            if not keep:
                conn.execute("DELETE FROM results WHERE path = ? AND model = ?", (_key(path), model))
            elif status != "removed":
                conn.execute(
                    "UPDATE results SET status = 'removed', updated_at = ?, emitted = ? "
                    "WHERE path = ? AND model = ?",
                    (_now(), int(emitted), _key(path), model),
                )
        return _parse(status, doc, classes)

    @_guarded
    def paths_under(self, root: str, model: str) -> list[str]:
        """Stored paths of files that are there (ok or error rows) equal to ``root`` or below it."""
        exact = root.rstrip("/") or "/"
        prefix = exact if exact.endswith("/") else exact + "/"
        # Every string starting with prefix sorts in [prefix, prefix with "/" -> "0"), and
        # nothing else does: a range on the primary key, with none of LIKE's % and _ escaping.
        upper = prefix[:-1] + "0"
        # Once over the TEXT keys, once over the BLOB keys of names that are not UTF-8 (SQLite
        # sorts every TEXT before every BLOB, so neither range reaches into the other).
        ranges: list[Any] = [(exact, prefix, upper)] if is_utf8(exact) else []
        ranges.append(tuple(os.fsencode(p) for p in (exact, prefix, upper)))
        marks = ", ".join("?" * len(LIVE_STATUSES))
        found = []
        with self._lock:
            for bounds in ranges:
                found += self._conn.execute(
                    "SELECT path FROM results WHERE model = ? AND status IN ("
                    + marks
                    + ") AND (path = ? OR (path >= ? AND path < ?))",
                    (model, *LIVE_STATUSES, *bounds),
                ).fetchall()
        paths = sorted(_path(p) for (p,) in found)
        return [p for p in paths if p == exact or p.startswith(prefix)]

    def results(self, files: Iterable[VideoFile], model: str) -> Iterator[VideoResult]:
        """Stored ok and error results of the unchanged ``files``, in order; others skipped."""
        for file in files:
            found = self._fetch(file, model)
            if found is not None and found[0] in LIVE_STATUSES:
                yield found[1]

    def lock(self) -> None:
        """Claim the database for this process (``<db>.lock``, flock); released by :meth:`close`.

        Raises ``TaggerError`` naming the holder's pid when another process (or another store
        in this one) holds it. A no-op for an in-memory store or when already held.
        """
        if self.path == ":memory:" or self._lock_fd is not None:
            return
        self._lock_fd = hold_lock(self.path)

    def close(self) -> None:
        """Close the database, then release the lock; safe to call twice."""
        with self._lock:
            self._conn.close()
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            release_lock(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
