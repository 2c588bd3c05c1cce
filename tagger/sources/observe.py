"""The watchdog observers of one watch: native (inotify) for local roots, polling for others.

Each raw event is only queued by the observer thread; all the work happens in the consumer's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserverVFS

log = logging.getLogger("tagger.sources.watch")

# Only these reach the queue. With inotify the list also narrows the kernel mask, so our own
# reads (the settle check, the tagger decoding) raise no events at all.
_EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


class _Enqueue(FileSystemEventHandler):
    """Runs in the observer thread: hands each raw event over and does nothing else."""

    def __init__(self, inbox: queue.SimpleQueue[FileSystemEvent]) -> None:
        self.inbox = inbox

    def dispatch(self, event: FileSystemEvent) -> None:
        self.inbox.put(event)


class Observers:
    """Watches roots recursively; their raw events arrive in :attr:`inbox`."""

    def __init__(self, polled_roots: tuple[str, ...], poll_interval_s: float, rescan_s: float) -> None:
        self.polled_roots, self.poll_interval_s, self.rescan_s = polled_roots, poll_interval_s, rescan_s
        self.inbox: queue.SimpleQueue[FileSystemEvent] = queue.SimpleQueue()
        self.handler = _Enqueue(self.inbox)
        self.observers: dict[bool, BaseObserver] = {}
        self.watches: dict[str, ObservedWatch] = {}

    def start(self, roots: tuple[str, ...]) -> None:
        for polled in {root in self.polled_roots for root in roots}:
            observer = _polling_observer(self.poll_interval_s) if polled else Observer()
            observer.start()
            self.observers[polled] = observer

    def watch(self, root: str) -> None:
        """Watch ``root``, replacing a watch it had: that one died with the folder (or mount)."""
        observer = self.observers[root in self.polled_roots]
        old = self.watches.pop(root, None)
        if old is not None:
            # Scheduling the same path again would reuse the dead emitter.
            with contextlib.suppress(KeyError, RuntimeError):
                observer.unschedule(old)
        try:
            self.watches[root] = observer.schedule(
                self.handler, root, recursive=True, event_filter=_EVENT_TYPES
            )
        except OSError as exc:
            log.warning("cannot watch %s (%s): relying on rescans every %g s", root, exc, self.rescan_s)

    def close(self) -> None:
        for observer in self.observers.values():
            if observer.is_alive():
                observer.stop()
        for observer in self.observers.values():
            if observer.is_alive():
                observer.join()


def _polling_observer(interval_s: float) -> BaseObserver:
    # lstat, not stat: a snapshot that followed symlinks would walk, on every poll, folders
    # that lead outside the roots (and around symlink loops); inotify never follows them either.
    return PollingObserverVFS(os.lstat, os.scandir, polling_interval=interval_s)
