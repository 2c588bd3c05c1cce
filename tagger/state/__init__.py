"""What vidtag has tagged, kept in SQLite: a run skips unchanged files and resumes after a kill.

``store`` is the database (versioned result documents, migrated in place); ``paths`` is where
it lives; ``locks`` keeps one writer per output and per state file.
"""

from __future__ import annotations

from tagger.state.locks import hold_lock, release_lock, writer_locks
from tagger.state.paths import default_state_path, resolve_state_path, state_dir
from tagger.state.schema import SCHEMA_VERSION
from tagger.state.store import StateStore, state_error

__all__ = [
    "SCHEMA_VERSION",
    "StateStore",
    "default_state_path",
    "hold_lock",
    "release_lock",
    "resolve_state_path",
    "state_dir",
    "state_error",
    "writer_locks",
]
