"""The state database's tables, and the migration of older formats to this one, in place."""

from __future__ import annotations

import json
import sqlite3

from tagger.names import json_text
from tagger.records import DOCUMENT_FORMAT, TaggerError, VideoResult

#: Stored in ``PRAGMA user_version``; bump it when the table layout changes.
#: 1: results. 2: + ``emitted`` (old rows count as emitted). 3: ``row`` (the output row) becomes
#: ``doc`` (the result document, with clip scores), + ``models`` (each model's classes).
#: 4: documents keep clip scores sparse; format-3 documents still read as they are, so the
#: step only marks the file (a vidtag that reads format 3 must not misread format 4).
#: Each step migrates in place, in one transaction.
SCHEMA_VERSION = DOCUMENT_FORMAT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    path TEXT NOT NULL,
    model TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    emitted INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (path, model)
)
"""

# Each model's classes, once: a result document holds scores in the model's class order.
_MODELS = """
CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY,
    classes TEXT NOT NULL
)
"""

# Partial: the daemon asks for the few unemitted rows among a library's worth at each start.
_UNEMITTED_INDEX = """
CREATE INDEX IF NOT EXISTS results_unemitted ON results (model) WHERE emitted = 0
"""


def create_or_migrate(conn: sqlite3.Connection, path: str) -> None:
    """Set ``conn`` up, and create the tables or migrate them to this format in one transaction.
    Raises ``TaggerError`` for a newer format or a database that is not vidtag's."""
    if path != ":memory:":
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
                f"state database {path!r} has format {version}, written by a newer "
                f"vidtag; this one reads format {SCHEMA_VERSION}"
            )
        if version == 0:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if tables - {"results", "models"}:
                raise TaggerError(f"{path!r} is an SQLite database but not a vidtag state database")
            conn.execute(_SCHEMA)
            conn.execute(_MODELS)
        if version == 1:
            # Rows of format 1 were written by batch runs, whose table came from the store:
            # they are already in an output, so they count as emitted (DEFAULT 1).
            conn.execute("ALTER TABLE results ADD COLUMN emitted INTEGER NOT NULL DEFAULT 1")
        if version in (1, 2):
            _migrate_rows(conn)
        if version < SCHEMA_VERSION:
            conn.execute(_UNEMITTED_INDEX)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _migrate_rows(conn: sqlite3.Connection) -> None:
    """Format 2 -> 3: each stored output row becomes a result document (with no clip scores,
    which format 2 never kept). A row that cannot be read is left as it was: it reads as
    missing, so its video is tagged again."""
    conn.execute("ALTER TABLE results RENAME COLUMN row TO doc")
    conn.execute(_MODELS)
    for rowid, doc in conn.execute("SELECT rowid, doc FROM results").fetchall():
        try:
            row = json.loads(doc)
            new = json_text(VideoResult.from_row(row).document())
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        conn.execute("UPDATE results SET doc = ? WHERE rowid = ?", (new, rowid))
