"""Turn filesystem activity under watched folders into settled videos, moves and deletions.

Nothing here tags or stores anything: :class:`Watcher` asks its caller what is done and known.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
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
from watchdog.observers.polling import PollingObserver

from tagger.discover import VIDEO_SUFFIXES, discover
from tagger.mounts import network_filesystem
from tagger.records import VideoFile

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

#: Base-name globs (any case) of files still being written; they count once renamed.
TEMP_PATTERNS: tuple[str, ...] = (
    "*.part",
    "*.crdownload",
    "*.tmp",
    "*.partial",
    "*.download",
    "*.!qb",
    ".*",  # rsync's ".name.XXXXXX", ".syncthing.*", and every other dot-file
)

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

# Raw events handled per pass before the tick's own work, so a flood cannot starve settling.
_BATCH = 2000
# How long a yielded move is remembered, to drop the copy a nested or repeated watch reports.
_MOVE_MEMORY_S = 30.0
# A file moved into a folder created a moment before can reach inotify as a deletion plus a
# creation (the new folder's watch came too late for IN_MOVED_TO), and watchdog only calls an
# unpaired IN_MOVED_FROM a deletion after 0.5 s. Arrivals are kept this long to pair them up,
# and an arrival never settles before that deletion can have come.
_PAIR_WINDOW_S = 5.0
_PAIR_DELAY_S = 0.6
_PAIR_CHECKS = 64

_Key = tuple[int, int]


@dataclass(frozen=True)
class Settled:
    """A complete video: size and mtime unchanged for ``settle_s`` and it opens for reading."""

    file: VideoFile


@dataclass(frozen=True)
class Moved:
    """A video renamed or moved inside the watched tree; ``dst`` as it is now."""

    src: str
    dst: VideoFile


@dataclass(frozen=True)
class Deleted:
    """A video path that disappeared from an available root."""

    path: str


Event = Settled | Moved | Deleted


def is_temporary(path: str) -> bool:
    """Whether the base name of ``path`` is a download or sync in progress (see ``TEMP_PATTERNS``)."""
    name = os.path.basename(path.rstrip(os.sep)).lower()
    return any(fnmatchcase(name, pattern) for pattern in TEMP_PATTERNS)


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
        self.include, self.exclude = tuple(include), tuple(exclude)
        self.is_done, self.known_paths = is_done, known_paths
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
        inbox: queue.SimpleQueue[FileSystemEvent] = queue.SimpleQueue()
        session = _Session(self, _Enqueue(inbox))
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


class _Enqueue(FileSystemEventHandler):
    """Runs in the observer thread: hands each raw event over and does nothing else."""

    def __init__(self, inbox: queue.SimpleQueue[FileSystemEvent]) -> None:
        self.inbox = inbox

    def dispatch(self, event: FileSystemEvent) -> None:
        self.inbox.put(event)


@dataclass
class _Candidate:
    key: _Key | None
    since: float
    arrived: float = float("-inf")


class _Session:
    """The state of one ``Watcher.events`` run; every method runs in the consumer's thread."""

    def __init__(self, watcher: Watcher, handler: _Enqueue) -> None:
        self.w = watcher
        self.handler = handler
        self.out: deque[Event] = deque()
        self.candidates: dict[str, _Candidate] = {}
        # Settled but perhaps not yet done: a consumer that batches its work only reports
        # done after flushing, and a rescan in between must not settle the file again.
        self.yielded: dict[str, _Key] = {}
        self.gone: set[str] = set()
        self.moved: dict[str, tuple[str, float]] = {}
        self.arrivals: dict[str, float] = {}
        # Vanished videos waiting for their arrival elsewhere: path -> when to call them deleted.
        self.unpaired: dict[str, float] = {}
        self.new_dirs: list[str] = []
        self.gone_dirs: list[str] = []
        self.observers: dict[bool, BaseObserver] = {}
        self.watches: dict[str, ObservedWatch] = {}
        self.dev: dict[str, int | None] = dict.fromkeys(watcher.roots)
        self.up: dict[str, bool] = dict.fromkeys(watcher.roots, False)
        self.held: set[str] = set()
        self.next_rescan = 0.0
        # Longest first, so a root nested in another owns its own files.
        self.prefixes = sorted(((r, os.path.join(r, "")) for r in watcher.roots), key=lambda p: -len(p[1]))
        self.name_excludes = tuple(p for p in watcher.exclude if "/" not in p)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        for polled in {root in self.w.polled_roots for root in self.w.roots}:
            observer = PollingObserver(timeout=self.w.poll_interval_s) if polled else Observer()
            observer.start()
            self.observers[polled] = observer
        known = list(self.w.known_paths())
        # An empty folder where results are expected is most likely a share not mounted yet:
        # its st_dev is the parent's, and trusting it would report the whole library deleted.
        self.held = {root for root in map(self.root_of, known) if root is not None}
        for root in self.w.roots:
            self.up[root] = self.available(root)
            if self.up[root]:
                self.watch(root)
            else:
                log.warning("%s is not available (missing or not mounted): waiting for it", root)
        self.reconcile(self.w.roots, known)
        self.next_rescan = time.monotonic() + self.w.rescan_s

    def close(self) -> None:
        for observer in self.observers.values():
            if observer.is_alive():
                observer.stop()
        for observer in self.observers.values():
            if observer.is_alive():
                observer.join()

    def watch(self, root: str) -> None:
        observer = self.observers[root in self.w.polled_roots]
        old = self.watches.pop(root, None)
        if old is not None:
            # The old watch died with the folder (or its mount): it must be replaced, and
            # scheduling the same path again would reuse its dead emitter.
            with contextlib.suppress(KeyError, RuntimeError):
                observer.unschedule(old)
        try:
            self.watches[root] = observer.schedule(
                self.handler, root, recursive=True, event_filter=_EVENT_TYPES
            )
        except OSError as exc:
            log.warning("cannot watch %s (%s): relying on rescans every %g s", root, exc, self.w.rescan_s)

    # -- roots ---------------------------------------------------------------------

    def root_of(self, path: str) -> str | None:
        for root, prefix in self.prefixes:
            if path == root or path.startswith(prefix):
                return root
        return None

    def available(self, root: str) -> bool:
        try:
            st = os.stat(root)
        except OSError:
            return False
        dev = self.dev[root]
        if dev is None:
            if root in self.held and _empty(root):
                return False
            self.dev[root] = dev = st.st_dev
        return st.st_dev == dev

    def check_roots(self) -> None:
        for root in self.w.roots:
            up = self.available(root)
            if up == self.up[root]:
                continue
            self.up[root] = up
            if up:
                log.info("%s is available again: rescanning it", root)
                self.watch(root)
                self.reconcile([root], list(self.w.known_paths()))
            else:
                log.warning("%s went away (removed or unmounted): ignoring it until it is back", root)
                self.drop_under(root)

    # -- names ---------------------------------------------------------------------

    def wanted_file(self, root: str, path: str) -> bool:
        """Whether ``path`` is a video name that ``discover`` would yield under ``root``."""
        rel = path[len(os.path.join(root, "")) :] if path != root else ""
        if not rel or is_temporary(rel):
            return False
        parts = rel.split("/")
        name = parts[-1]
        if os.path.splitext(name)[1].lower() not in VIDEO_SUFFIXES:
            return False
        if not self.wanted_dirs(parts[:-1]) or _matches(self.w.exclude, rel, name):
            return False
        return not self.w.include or _matches(self.w.include, rel, name)

    def wanted_dir(self, root: str, path: str) -> bool:
        rel = path[len(os.path.join(root, "")) :] if path != root else ""
        return self.wanted_dirs(rel.split("/") if rel else [])

    def wanted_dirs(self, parts: list[str]) -> bool:
        # discover prunes hidden and excluded folders, so their contents never count.
        for i, part in enumerate(parts):
            if part.startswith(".") or _matches(self.w.exclude, "/".join(parts[: i + 1]), part):
                return False
        return True

    # -- candidates ----------------------------------------------------------------

    def offer(self, file: VideoFile, done: bool | None = None, arrival: bool = True) -> None:
        """Make ``file`` a candidate unless it is one, or needs nothing (``done``: asked already).

        ``arrival``: it showed up just now (an event, a new folder), not in a periodic rescan.
        """
        if file.path in self.candidates:
            return
        key = (file.size, file.mtime_ns)
        if self.yielded.get(file.path) == key or (self.w.is_done(file) if done is None else done):
            return
        now = time.monotonic()
        self.candidates[file.path] = _Candidate(key, now, now if arrival else float("-inf"))
        if arrival:
            self.arrivals[file.path] = now
        self.gone.discard(file.path)
        log.debug("candidate %s", file.path)

    def pair(self, src: str) -> bool:
        """Yield ``Moved`` for a vanished ``src`` if what the caller holds for it just arrived elsewhere."""
        for path in list(reversed(self.arrivals))[:_PAIR_CHECKS]:
            file = _stat_file(path)
            if file is None or path == src or not self.w.is_done(VideoFile(src, file.size, file.mtime_ns)):
                continue
            del self.arrivals[path]
            self.moved[path] = (src, time.monotonic() + _MOVE_MEMORY_S)
            self.yielded.pop(src, None)
            log.debug("%s arrived as %s was deleted: taken as a move", path, src)
            self.out.append(Moved(src, file))
            return True
        return False

    def drop_under(self, folder: str) -> None:
        prefix = os.path.join(folder, "")
        for path in [p for p in self.candidates if p.startswith(prefix)]:
            del self.candidates[path]

    def report_gone(self, path: str) -> None:
        root = self.root_of(path)
        if path in self.gone or root is None or not (self.up[root] and self.available(root)):
            return
        if os.path.lexists(path):
            return  # replaced already; its own events make it a candidate
        if not self.pair(path):
            # Its arrival elsewhere may come later: polling can see a folder half-renamed
            # (this file gone, its new copy only in the next snapshot). Wait one poll for it.
            self.unpaired.setdefault(path, time.monotonic() + _PAIR_DELAY_S + self.w.poll_interval_s)

    def report_unpaired(self, now: float) -> None:
        """A vanished video that no arrival claimed in time is deleted."""
        for path, until in list(self.unpaired.items()):
            if os.path.lexists(path) or self.pair(path):
                del self.unpaired[path]
            elif now >= until:
                del self.unpaired[path]
                self.gone.add(path)
                self.yielded.pop(path, None)
                self.out.append(Deleted(path))

    # -- raw events ----------------------------------------------------------------

    def handle(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        kind = event.event_type
        if event.is_directory:
            if kind == EVENT_TYPE_CREATED and not event.is_synthetic:
                # Synthetic ones are the sub-folders of a new folder, which its own scan covers.
                self.new_dirs.append(src)
            elif kind == EVENT_TYPE_DELETED:
                self.drop_under(src)
                self.gone_dirs.append(src)
            elif kind == EVENT_TYPE_MOVED:
                self.dir_moved(src, os.fsdecode(event.dest_path), event.is_synthetic)
        elif kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            self.touched(src)
        elif kind == EVENT_TYPE_MOVED:
            self.file_moved(src, os.fsdecode(event.dest_path))
        elif kind == EVENT_TYPE_DELETED:
            self.candidates.pop(src, None)
            self.arrivals.pop(src, None)
            root = self.root_of(src)
            if root is not None and self.wanted_file(root, src):
                self.report_gone(src)

    def touched(self, path: str) -> None:
        root = self.root_of(path)
        if root is None or not self.up[root] or not self.wanted_file(root, path):
            return
        candidate = self.candidates.get(path)
        if candidate is not None:
            candidate.since = time.monotonic()
            return
        file = _stat_file(path)
        if file is not None:
            self.offer(file)

    def file_moved(self, src: str, dst: str) -> None:
        self.candidates.pop(src, None)
        self.arrivals.pop(src, None)
        # The file moved on from an earlier destination, so a later identical move is a new one.
        self.moved.pop(src, None)
        src_root, dst_root = self.root_of(src), self.root_of(dst)
        src_video = src_root is not None and self.wanted_file(src_root, src)
        if dst_root is not None and self.up[dst_root] and self.wanted_file(dst_root, dst):
            file = _stat_file(dst)
            if file is not None:
                self.gone.discard(dst)
                earlier = self.moved.get(dst)
                if src_video and (earlier is None or earlier[0] != src):
                    self.moved[dst] = (src, time.monotonic() + _MOVE_MEMORY_S)
                    self.yielded.pop(src, None)
                    self.out.append(Moved(src, file))
                self.touched(dst)
                self.arrivals.pop(dst, None)
                return
        if src_video:
            self.report_gone(src)

    def dir_moved(self, src: str, dst: str, synthetic: bool) -> None:
        # Each file inside gets its own moved event (inotify sends them after this one,
        # polling before), which yields Moved; here every video only lands as a candidate.
        self.drop_under(src)
        dst_root = self.root_of(dst)
        if dst_root is not None and self.wanted_dir(dst_root, dst):
            if not synthetic:
                self.new_dirs.append(dst)
        else:
            self.gone_dirs.append(src)

    def flush(self) -> None:
        """Scan new folders and report what vanished with deleted ones, once per batch."""
        new_dirs, self.new_dirs = sorted(set(self.new_dirs)), []
        scanned: list[str] = []
        for folder in new_dirs:
            if not any(folder.startswith(os.path.join(s, "")) for s in scanned):
                scanned.append(folder)
                self.scan_dir(folder)
        gone_dirs, self.gone_dirs = self.gone_dirs, []
        if gone_dirs:
            prefixes = tuple(os.path.join(d, "") for d in gone_dirs)
            for path in self.w.known_paths():
                if path.startswith(prefixes) and not os.path.exists(path):
                    self.report_gone(path)

    def scan_dir(self, folder: str) -> None:
        root = self.root_of(folder)
        if root is None or not self.up[root] or not self.wanted_dir(root, folder):
            return
        try:
            # Files may have landed before the observer watched the folder.
            found = list(discover([folder], exclude=self.name_excludes))
        except OSError:
            return
        for file in found:
            if self.wanted_file(root, file.path):
                self.offer(file)

    # -- ticks ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.check_roots()
        if now >= self.next_rescan:
            self.reconcile(self.w.roots, list(self.w.known_paths()), quiet=True)
            self.next_rescan = time.monotonic() + self.w.rescan_s
        self.settle(now)
        self.report_unpaired(now)
        for dst in [d for d, (_, until) in self.moved.items() if until <= now]:
            del self.moved[dst]
        for path in [p for p, since in self.arrivals.items() if now - since > _PAIR_WINDOW_S]:
            del self.arrivals[path]

    def settle(self, now: float) -> None:
        for path, candidate in list(self.candidates.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self.candidates[path]
                continue
            if not stat.S_ISREG(st.st_mode):
                del self.candidates[path]
                continue
            key = (st.st_size, st.st_mtime_ns)
            if key != candidate.key:
                candidate.key, candidate.since = key, now
                continue
            if (
                now - candidate.since < self.w.settle_s
                or now - candidate.arrived < _PAIR_DELAY_S
                or st.st_size == 0
                or not _readable(path)
            ):
                continue
            del self.candidates[path]
            file = VideoFile(path, st.st_size, st.st_mtime_ns)
            if self.yielded.get(path) == key or self.w.is_done(file):
                continue
            self.yielded[path] = key
            log.debug("settled %s (%d bytes)", path, st.st_size)
            self.out.append(Settled(file))

    def reconcile(self, roots: Iterable[str], known: list[str], quiet: bool = False) -> None:
        """Find what the observer missed: new files in, and known files gone from, ``roots``."""
        present: set[str] = set()
        scanned: list[str] = []
        with _quiet_discover(quiet):
            for root in roots:
                if not self.up[root]:
                    continue
                try:
                    found = discover([root], include=self.w.include, exclude=self.w.exclude)
                    for file in found:
                        if is_temporary(file.path):
                            continue
                        present.add(file.path)
                        if self.w.is_done(file):
                            self.yielded.pop(file.path, None)
                        else:
                            self.offer(file, done=False, arrival=False)
                except OSError as exc:
                    log.warning("cannot rescan %s: %s", root, exc)
                    continue
                scanned.append(root)
        scanned_set = set(scanned)
        self.yielded = {
            p: k for p, k in self.yielded.items() if p in present or self.root_of(p) not in scanned_set
        }
        missing = {
            p for p in known if self.root_of(p) in scanned_set and p not in present and not os.path.exists(p)
        }
        for path in sorted(missing - self.gone):
            self.report_gone(path)
        # Forget what the caller no longer knows, so the set stays as small as its store.
        self.gone = {p for p in self.gone if p in missing or self.root_of(p) not in scanned_set}
        log.debug(
            "rescanned %d root(s): %d videos, %d candidates", len(scanned), len(present), len(self.candidates)
        )


class _Demote(logging.Filter):
    """Turns discover's INFO notes into DEBUG during periodic rescans: the first scan said them."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.local, "on", False) and record.levelno == logging.INFO:
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_DEMOTE = _Demote()


@contextlib.contextmanager
def _quiet_discover(quiet: bool) -> Iterator[None]:
    if not quiet:
        yield
        return
    logging.getLogger(discover.__module__).addFilter(_DEMOTE)
    _DEMOTE.local.on = True
    try:
        yield
    finally:
        _DEMOTE.local.on = False


def _matches(patterns: tuple[str, ...], rel: str, name: str) -> bool:
    # As discover does: a glob with "/" matches the path under the root, others the name.
    return any(fnmatchcase(rel if "/" in p else name, p) for p in patterns)


def _stat_file(path: str) -> VideoFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return VideoFile(path, st.st_size, st.st_mtime_ns)


def _readable(path: str) -> bool:
    # A share may hold a lock on a file still being copied even when its size stopped moving.
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        log.debug("%s not readable yet: %s", path, exc)
        return False
    return True


def _empty(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return next(it, None) is None
    except OSError:
        return True
