"""Candidates: videos that may still be arriving, each handed on once it has settled.

Settled means: size and mtime unchanged for ``settle_s``, and the file opens for reading. A
file that stops changing but will not open (or stays empty) is handed on after a grace period,
so that its decode fails and becomes an error row rather than being polled for ever.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tagger.records import VideoFile

log = logging.getLogger("tagger.sources.watch")

#: A file moved into a folder created a moment before can reach inotify as a deletion plus a
#: creation, and watchdog only calls an unpaired IN_MOVED_FROM a deletion after 0.5 s: an
#: arrival never settles before that deletion can have come (and been paired with it).
PAIR_DELAY_S = 0.6

_Key = tuple[int, int]


@dataclass
class _Candidate:
    key: _Key | None
    since: float
    arrived: float = float("-inf")
    # When it was first found settled but unreadable; None while it reads or is still changing.
    unreadable: float | None = None


class Candidates:
    """The files being watched until they settle. ``is_done(file)`` says one needs nothing."""

    def __init__(self, settle_s: float, grace_s: float, is_done: Callable[[VideoFile], bool]) -> None:
        self.settle_s, self.grace_s, self.is_done = settle_s, grace_s, is_done
        self.pending: dict[str, _Candidate] = {}
        # Settled but perhaps not yet done: a consumer that batches its work only reports
        # done after flushing, and a rescan in between must not settle the file again.
        self.yielded: dict[str, _Key] = {}
        #: Videos that showed up lately, and when: a video that vanished may have moved there.
        self.arrivals: dict[str, float] = {}

    def __contains__(self, path: str) -> bool:
        return path in self.pending

    def __len__(self) -> int:
        return len(self.pending)

    def offer(self, file: VideoFile, done: bool | None = None, arrival: bool = True) -> bool:
        """Watch ``file`` unless it is watched, or needs nothing (``done``: asked already).
        ``arrival``: it showed up just now (an event, a new folder), not in a periodic rescan.
        Whether it became a candidate."""
        if file.path in self.pending:
            return False
        key = (file.size, file.mtime_ns)
        if self.yielded.get(file.path) == key or (self.is_done(file) if done is None else done):
            return False
        now = time.monotonic()
        self.pending[file.path] = _Candidate(key, now, now if arrival else float("-inf"))
        if arrival:
            self.arrivals[file.path] = now
        log.debug("candidate %s", file.path)
        return True

    def touch(self, path: str) -> bool:
        """Start the settle wait of a candidate again (it was written to); whether it is one."""
        candidate = self.pending.get(path)
        if candidate is not None:
            candidate.since = time.monotonic()
        return candidate is not None

    def drop(self, path: str, arrival: bool = True) -> None:
        self.pending.pop(path, None)
        if arrival:
            self.arrivals.pop(path, None)

    def drop_under(self, folder: str) -> None:
        prefix = os.path.join(folder, "")
        for path in [p for p in self.pending if p.startswith(prefix)]:
            del self.pending[path]

    def expire(self, now: float, window_s: float) -> None:
        """Forget arrivals older than ``window_s``: no deletion can pair with them any more."""
        for path in [p for p, since in self.arrivals.items() if now - since > window_s]:
            del self.arrivals[path]

    def settle(self, now: float) -> Iterator[VideoFile]:
        """Yield each candidate that has settled (and is not done), and stop watching it."""
        for path, candidate in list(self.pending.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self.pending[path]
                continue
            if not stat.S_ISREG(st.st_mode):
                del self.pending[path]
                continue
            key = (st.st_size, st.st_mtime_ns)
            if key != candidate.key:
                candidate.key, candidate.since, candidate.unreadable = key, now, None
                continue
            if now - candidate.since < self.settle_s or now - candidate.arrived < PAIR_DELAY_S:
                continue
            # An empty file is most often a copy that has not started writing; one that stays
            # empty is handed on like an unreadable one, to fail and become an error row.
            error = _read_error(path) if st.st_size else "empty"
            if error is not None:
                if candidate.unreadable is None:
                    candidate.unreadable = now
                    log.debug("%s not ready yet: %s", path, error)
                if now - candidate.unreadable < self.grace_s:
                    continue
                why = "stays empty" if error == "empty" else f"stays unreadable ({error})"
                log.info("%s settled but %s: handing it on to be tried", path, why)
            del self.pending[path]
            file = VideoFile(path, st.st_size, st.st_mtime_ns)
            if self.yielded.get(path) == key or self.is_done(file):
                continue
            self.yielded[path] = key
            log.debug("settled %s (%d bytes)", path, st.st_size)
            yield file


def stat_file(path: str) -> VideoFile | None:
    """``path`` as a regular file now; ``None`` when it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return VideoFile(path, st.st_size, st.st_mtime_ns)


def _read_error(path: str) -> str | None:
    """Why ``path`` cannot be read now; ``None`` when it can."""
    # A share may hold a lock on a file still being copied even when its size stopped moving.
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
