"""Turn filesystem activity under watched folders into settled videos, moves and deletions.

Nothing here tags or stores anything: :class:`Watcher` asks its caller what is done and known.
Which paths are videos, and where symlinks may lead, is ``tagger.sources.filters``' rule, as in scans.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from tagger.records import Deleted, Moved, Settled, VideoFile, WatchEvent
from tagger.sources.filters import TEMP_PATTERNS, VideoFilter, is_temporary
from tagger.sources.mounts import network_filesystem
from tagger.sources.session import WatchSession

__all__ = [
    "TEMP_PATTERNS",
    "Deleted",
    "Event",
    "Moved",
    "Settled",
    "Watcher",
    "is_temporary",
    "network_filesystem",
]

log = logging.getLogger(__name__)

# Raw events handled per pass before the tick's own work, so a flood cannot starve settling.
_BATCH = 2000


Event = WatchEvent


class Watcher:
    """Yields each video under ``roots`` once it has settled, plus moves and deletions.

    ``is_done(file)`` says a file (at that size and mtime) needs no event; ``known_paths()``
    lists the paths the caller holds results for, so deletions missed by the observer are found.
    """

    def __init__(
        self,
        roots: Sequence[str],
        *,
        settle_s: float = 5.0,
        rescan_s: float = 300.0,
        poll: bool | None = None,
        poll_interval_s: float = 2.0,
        tick_s: float = 0.25,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        is_done: Callable[[VideoFile], bool] = lambda f: False,
        known_paths: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        for name, value in (("roots", roots), ("include", include), ("exclude", exclude)):
            if isinstance(value, (str, bytes, os.PathLike)):
                raise TypeError(f"{name} must be a sequence, not a single {type(value).__name__}")
        if not roots:
            raise ValueError("no folder to watch")
        if settle_s < 0 or rescan_s <= 0 or poll_interval_s <= 0 or tick_s <= 0:
            raise ValueError("settle_s must be >= 0; rescan_s, poll_interval_s and tick_s > 0")
        self.roots: tuple[str, ...] = tuple(dict.fromkeys(os.fspath(r) for r in roots))
        self.settle_s, self.rescan_s, self.tick_s = settle_s, rescan_s, tick_s
        self.poll_interval_s = poll_interval_s
        #: Which paths are videos: discover's rule, plus names of files still being written.
        self.filter = VideoFilter(include=tuple(include), exclude=tuple(exclude), temporary=TEMP_PATTERNS)
        self.is_done, self.known_paths = is_done, known_paths
        # A file whose size stopped moving but that will not open is usually locked by a copy
        # still in progress, which writes again (and so resets the settle wait) within about
        # another settle period. Past that it is most likely a permission problem, which waiting
        # never fixes: it is handed on, so that its decode fails and, after the caller's retries
        # with back-off (which also cover a copy that resumes later), an error is recorded
        # instead of the file being polled silently for ever. A few ticks at least, so that
        # settle_s=0 still gives a lock a moment.
        self.unreadable_grace_s = max(settle_s, 4 * tick_s)
        polled = []
        for root in self.roots:
            fstype = network_filesystem(root) if poll is None else None
            if fstype is not None:
                log.warning(
                    "%s is on %s, where inotify misses changes made elsewhere: polling it every %g s",
                    root,
                    fstype,
                    poll_interval_s,
                )
            if poll or fstype is not None:
                polled.append(root)
        #: The roots watched by polling rather than by the native observer.
        self.polled_roots: tuple[str, ...] = tuple(polled)

    def events(self, stop: threading.Event) -> Iterator[Event | None]:
        """Watch until ``stop`` is set; ``None`` once per quiet tick so callers can flush."""
        session = WatchSession(self)
        inbox = session.observers.inbox
        try:
            session.start()
            next_tick = time.monotonic()
            while not stop.is_set():
                while session.out:
                    yield session.out.popleft()
                    if stop.is_set():
                        return
                try:
                    session.handle(inbox.get(timeout=max(0.0, next_tick - time.monotonic())))
                    for _ in range(_BATCH):
                        session.handle(inbox.get_nowait())
                except queue.Empty:
                    pass
                session.flush()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + self.tick_s
                    session.tick(now)
                    if not session.out:
                        yield None
        finally:
            session.close()
