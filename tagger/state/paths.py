"""Where the state file lives: beside the output on a local disk, else vidtag's own folder.

SQLite's locking and WAL do not work over network file systems, and a watched share is often
one, so the state is never put on one unless the user insists.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from tagger.names import display
from tagger.records import StateError, StatePathError
from tagger.sources.mounts import network_filesystem
from tagger.state.store import state_error

log = logging.getLogger("tagger.state")


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
