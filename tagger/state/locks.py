"""One writer per output and per state file: a lock file beside each, held for the run."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tagger.names import display
from tagger.records import TaggerError

if TYPE_CHECKING:
    from tagger.state.store import StateStore


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
def writer_locks(store: StateStore, *outputs: str | None) -> Iterator[None]:
    """One writer per output and per state file: claim them all for a run (scan or daemon)."""
    store.lock()
    fds: list[int] = []
    try:
        for output in outputs:
            if output is not None and output != "-":
                fds.append(hold_lock(output))
        yield
    finally:
        for fd in fds:
            release_lock(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace")
    except OSError:
        return "unknown"
    pid = text.split("\n", 1)[0].strip()
    return pid if pid.isdigit() else "unknown"
