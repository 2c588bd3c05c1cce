"""SQLite store of what vidtag has tagged: a run skips unchanged files and resumes after a kill.

For ``vidtag watch`` it also tracks which rows reached the appended output (``emitted``),
follows renames and deletions, and holds a lock file so only one daemon uses a database.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from tagger.names import display, is_utf8, json_text
from tagger.records import LIVE_STATUSES, StateError, StatePathError, TaggerError, VideoFile, VideoResult
from tagger.sources.mounts import network_filesystem

log = logging.getLogger(__name__)

#: Stored in ``PRAGMA user_version``; bump it when the table layout changes.
#: 1: results. 2: + ``emitted`` (migrated in place; old rows count as emitted).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    path TEXT NOT NULL,
    model TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    row TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    emitted INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (path, model)
)
"""

# Partial: the daemon asks for the few unemitted rows among a library's worth at each start.
_UNEMITTED_INDEX = """
CREATE INDEX IF NOT EXISTS results_unemitted ON results (model) WHERE emitted = 0
"""

_UPSERT = """
INSERT INTO results (path, model, size, mtime_ns, status, row, updated_at, emitted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (path, model) DO UPDATE SET
    size = excluded.size,
    mtime_ns = excluded.mtime_ns,
    status = excluded.status,
    row = excluded.row,
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


def _parse(status: str, row: str) -> VideoResult | None:
    """The stored result with the row's current status, or None if the row cannot be read."""
    try:
        result = VideoResult.from_row(json.loads(row))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    # The status column is the truth: a removed row keeps its old result (tags) in ``row``.
    return result if result.status == status else replace(result, status=status)


def state_dir() -> Path:
    """vidtag's own folder for state files, on a local disk in any sane setup.

    ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/vidtag``,
    else ``~/.local/state/vidtag``.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "vidtag"


def default_state_path(output: str | None, roots: Sequence[str] = ()) -> str | None:
    """Where the state lives when ``--state`` is not given.

    Next to an output file (``labels.csv`` -> ``labels.csv.vidtag.db``) when that folder is on
    a local file system. An output on NFS/SMB/FUSE, and a daemon that writes sidecars only, keep
    it in :func:`state_dir` instead, named after the output or the roots: SQLite's locking and
    WAL do not work over network file systems, and the watched share is often one. ``None``
    (in memory) for a scan with no output file.
    """
    if output is not None and output != "-":
        beside = output + ".vidtag.db"
        if network_filesystem(os.path.dirname(os.path.abspath(beside))) is None:
            return beside
        key, name = os.path.abspath(output), os.path.basename(output)
    elif roots:
        key, name = "\0".join(sorted(os.path.abspath(r) for r in roots)), "watch"
    else:
        return None
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()[:16]
    # A bounded, readable stem: the digest alone keys it, the name is for people.
    stem = os.fsencode(display(name))[:80].decode("utf-8", errors="ignore")
    return str(state_dir() / f"{stem}-{digest}.db")


def resolve_state_path(
    explicit: str | None, output: str | None, roots: Sequence[str] = (), allow_network: bool = False
) -> str | None:
    """The state file a run uses (``explicit`` or the default), checked before any model loads.

    Raises ``StateError`` when it would be on a network file system and ``allow_network`` is
    not set. The default folder is created (0o700) when it is missing.
    """
    path = explicit or default_state_path(output, roots)
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    fstype = network_filesystem(folder)
    if fstype is not None and not allow_network:
        raise StatePathError(
            f"state database {display(path)} would be on a network file system ({fstype}), where "
            "SQLite's locks and WAL do not work; put --state on a local disk, or pass "
            "--allow-network-state if this share is known to support them"
        )
    if explicit is None:
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create the state folder {display(folder)}: {e.strerror or e}") from e
        if output is None and roots:
            _adopt_legacy(os.path.join(roots[0], ".vidtag.db"), path)
    return path


def _adopt_legacy(legacy: str, path: str) -> None:
    """Copy the state an earlier vidtag kept in ``ROOT/.vidtag.db`` (sidecars only) to ``path``.

    SQLite's backup API copies a consistent snapshot; the old file is left where it is.
    """
    if os.path.exists(path) or not os.path.isfile(legacy):
        return
    # Copied beside, then renamed: a copy cut short must not pass for the state next time.
    partial = f"{path}.{os.getpid()}.partial"
    try:
        source, target = sqlite3.connect(legacy), sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        os.replace(partial, path)
    except (sqlite3.Error, OSError) as e:
        with suppress(OSError):
            os.unlink(partial)
        if isinstance(e, OSError):
            raise StateError(
                f"cannot copy the state {display(legacy)} to {display(path)}: {e.strerror or e}"
            ) from e
        raise state_error(legacy, e) from e
    log.warning("copied the state of an earlier vidtag from %s to %s", display(legacy), display(path))


def hold_lock(path: str) -> int:
    """Claim ``path`` for this process (``<path>.lock``, flock, our pid inside); returns the fd.

    One writer per output and per state file: a second vidtag on the same file (a scan
    pointed at a running daemon's table, a second daemon) is refused with the holder's pid.
    Released by :func:`release_lock` or when the process ends, however it ends.
    """
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise TaggerError(
            f"cannot lock {display(path)}: cannot open {display(lock_path)}: {e.strerror or e}"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise TaggerError(f"{display(path)} is in use by another vidtag process (pid {pid})") from None
    except OSError as e:
        os.close(fd)
        raise TaggerError(f"cannot lock {display(path)}: {e.strerror or e}") from e
    try:
        # Write, then cut: a reader racing with us sees our pid first, never an empty file.
        data = f"{os.getpid()}\n".encode("ascii")
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError:
        pass  # the lock holds without the pid; the message then says "pid unknown"
    return fd


def release_lock(fd: int) -> None:
    os.close(fd)


@contextmanager
def writer_locks(store: StateStore, output: str | None) -> Iterator[None]:
    """One writer per output and per state file: claim both for a run (scan or daemon)."""
    store.lock()
    fd = None if output is None or output == "-" else hold_lock(output)
    try:
        yield
    finally:
        if fd is not None:
            release_lock(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace")
    except OSError:
        return "unknown"
    pid = text.split("\n", 1)[0].strip()
    return pid if pid.isdigit() else "unknown"


class StateStore:
    """Results keyed by (path, model), valid while the file's size and mtime_ns are unchanged."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = ":memory:" if path is None else str(path)
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
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
            self._setup()
        except sqlite3.Error as e:
            self._conn.close()
            raise state_error(self.path, e) from e
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
        # IMMEDIATE: two processes opening a new database at once must not both create it
        # (or both migrate it).
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
            elif version == 1:
                # Rows of format 1 were written by batch runs, whose table came from the store:
                # they are already in an output, so they count as emitted (DEFAULT 1).
                conn.execute("ALTER TABLE results ADD COLUMN emitted INTEGER NOT NULL DEFAULT 1")
            if version < SCHEMA_VERSION:
                conn.execute(_UNEMITTED_INDEX)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
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

    @_guarded
    def _fetch(self, file: VideoFile, model: str) -> tuple[str, VideoResult] | None:
        with self._lock:
            found = self._conn.execute(
                "SELECT size, mtime_ns, status, row FROM results WHERE path = ? AND model = ?",
                (_key(file.path), model),
            ).fetchone()
        if found is None:
            return None
        size, mtime_ns, status, row = found
        if size != file.size or mtime_ns != file.mtime_ns:
            return None
        # A row this vidtag cannot read is as good as missing: the file gets re-tagged.
        result = _parse(status, row)
        return None if result is None else (status, result)

    def lookup(self, file: VideoFile, model: str) -> VideoResult | None:
        """The stored result if ``file`` is unchanged since ``model`` tagged it successfully."""
        found = self._fetch(file, model)
        if found is None or found[0] != "ok":
            # Error rows are retried on the next run; removed and moved rows are history.
            return None
        return found[1]

    @_guarded
    def record(self, file: VideoFile, model: str, result: VideoResult, emitted: bool = True) -> None:
        """Store ``result`` for ``file`` and ``model`` (upsert); on disk when this returns.

        ``emitted=False``: the row is not in the output yet; it is listed by :meth:`unemitted`
        until :meth:`mark_emitted` (record, append, mark: a kill in between loses nothing).
        """
        row = json_text(result.row())
        with self._lock:
            self._conn.execute(
                _UPSERT,
                (_key(file.path), model, file.size, file.mtime_ns, result.status, row, _now(), int(emitted)),
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
                "SELECT path, size, mtime_ns, status, row FROM results "
                "WHERE model = ? AND emitted = 0 ORDER BY updated_at, rowid",
                (model,),
            ).fetchall()
        out = []
        for path, size, mtime_ns, status, row in found:
            result = _parse(status, row)
            if result is not None:
                out.append((VideoFile(_path(path), size, mtime_ns), result))
        return out

    @_guarded
    def find(self, path: str, model: str) -> tuple[VideoFile, VideoResult] | None:
        """The stored row of ``path`` whatever its size, mtime and status (the file as stored)."""
        with self._lock:
            found = self._conn.execute(
                "SELECT size, mtime_ns, status, row FROM results WHERE path = ? AND model = ?",
                (_key(path), model),
            ).fetchone()
        if found is None:
            return None
        size, mtime_ns, status, row = found
        result = _parse(status, row)
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
                "SELECT size, mtime_ns, status, row FROM results WHERE path = ? AND model = ?",
                (_key(src), model),
            ).fetchone()
            if found is None:
                return None
            size, mtime_ns, status, row = found
            if status not in LIVE_STATUSES or (size, mtime_ns) != (dst.size, dst.mtime_ns):
                return None
            try:
                doc = json.loads(row)
                if not isinstance(doc, dict):
                    return None
                doc["path"] = dst.path
                result = VideoResult.from_row(doc)
            except (ValueError, TypeError, KeyError):
                return None
            conn.execute("DELETE FROM results WHERE path = ? AND model = ?", (_key(dst.path), model))
            # The stored row is edited, not rebuilt from the result, so nothing in it is lost.
            conn.execute(
                "UPDATE results SET path = ?, row = ?, updated_at = ?, emitted = ? "
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
                "SELECT status, row FROM results WHERE path = ? AND model = ?", (_key(path), model)
            ).fetchone()
            if found is None:
                return None
            status, row = found
            if not keep:
                conn.execute("DELETE FROM results WHERE path = ? AND model = ?", (_key(path), model))
            elif status != "removed":
                conn.execute(
                    "UPDATE results SET status = 'removed', updated_at = ?, emitted = ? "
                    "WHERE path = ? AND model = ?",
                    (_now(), int(emitted), _key(path), model),
                )
        return _parse(status, row)

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
