"""File helpers every writer shares: atomic replacement, and what a failed write means."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from tagger.names import display
from tagger.records import OutputError, StorageError

# Faults of the disk rather than of one file: every later write would fail the same way.
_STORAGE_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an I/O error (the disk or share may be failing)",
}


def _current_umask() -> int:
    # /proc avoids the os.umask() set-and-restore dance, which races with other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o644 & ~_current_umask()


def cannot_write(target: str | Path, error: OSError) -> OutputError:
    """The error for a failed write of ``target``: a ``StorageError`` when the disk is at fault."""
    name = display(str(target))
    fault = _STORAGE_FAULTS.get(error.errno or 0)
    if fault is not None:
        return StorageError(f"cannot write {name}: {fault} ({error.strerror})")
    if error.errno == errno.ENAMETOOLONG:
        return OutputError(f"cannot write {name}: the name is longer than the file system allows")
    return OutputError(f"cannot write {name}: {error.strerror or error}")


def check_writable(path: str) -> None:
    """Raise ``OutputError`` unless a file can be created in the folder of ``path``.

    A real probe (a temp file, removed at once), not ``os.access``: root passes ``access`` on
    a read-only mount's folder permissions, and ACLs or a full disk are found the same way.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".vidtag-probe.", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write in {display(folder)}: {e.strerror or e}") from e
    os.close(fd)
    with suppress(OSError):
        os.unlink(probe)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform or filesystem allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it replaces ``path``, on error it vanishes.

    ``mode`` must be a write mode ("w" or "wb"); text mode defaults to UTF-8. An existing
    target keeps its permissions, a new one gets 0o644 minus the umask.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open needs a write mode, not {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    target = Path(path)
    folder = target.parent
    # The temp name keeps a bounded start of the target's, so a target name near NAME_MAX
    # fails at the rename as itself ("name too long"), not as an unexplained temp file.
    stem = os.fsdecode(os.fsencode(target.name)[:64])
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise cannot_write(target, e) from e
    tmp = Path(tmp_name)
    try:
        # mkstemp makes 0o600 files; the output should be as readable as a normal write.
        os.fchmod(fd, _target_mode(target))
        f = os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        try:
            with f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            # The body's writes too: a full disk shows up in write(), flush() or close().
            raise cannot_write(target, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
