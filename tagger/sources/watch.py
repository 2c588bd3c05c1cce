"""Turn filesystem activity under watched folders into settled videos, moves and deletions.

Nothing here tags or stores anything: :class:`Watcher` asks its caller what is done and known.
Which paths are videos, and where symlinks may lead, is ``tagger.sources.filters``' rule, as in scans.
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
from watchdog.observers.polling import PollingObserverVFS

from tagger.records import VideoFile
from tagger.sources.discover import discover, walk_folder, walk_order
from tagger.sources.filters import TEMP_PATTERNS, Confinement, VideoFilter, is_temporary
from tagger.sources.mounts import mount_point, network_filesystem

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
    # When it was first found settled but unreadable; None while it reads or is still changing.
    unreadable: float | None = None


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
        # Where each root's filesystem was mounted when its device was taken, to tell a remount
        # (a new device there) from the mount gone (the folder beneath it, on a higher mount).
        self.mount: dict[str, str] = {}
        self.up: dict[str, bool] = dict.fromkeys(watcher.roots, False)
        self.held: set[str] = set()
        self.next_rescan = 0.0
        # Longest first, so a root nested in another owns its own files.
        self.prefixes = sorted(((r, os.path.join(r, "")) for r in watcher.roots), key=lambda p: -len(p[1]))
        self.confinement = Confinement.of(watcher.roots)
        # The path by which each file reached through a symlink was taken, so that a second
        # link to it is not taken too (a scan yields a file once, by the first path it meets).
        self.linked: dict[_Key, str] = {}

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        for polled in {root in self.w.polled_roots for root in self.w.roots}:
            observer = _polling_observer(self.w.poll_interval_s) if polled else Observer()
            observer.start()
            self.observers[polled] = observer
        known = list(self.w.known_paths())
        # An empty folder where results are expected is most likely a share not mounted yet:
        # its st_dev is the parent's, and trusting it would report the whole library deleted.
        self.held = {root for root in map(self.root_of, known) if root is not None}
        for root in self.w.roots:
            self.up[root] = self.probe(root)[0]
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

    def probe(self, root: str) -> tuple[bool, bool]:
        """Whether ``root`` can be trusted now, and whether it came to be on a new device.

        A root seen for the first time, or on another device, is taken unless it is an empty
        folder where results are expected (most likely the placeholder of a share not mounted
        yet: trusting it would report the whole library deleted) or, after a device change, its
        filesystem is mounted higher up than before (the mount went away and the folder beneath
        it shows). A new device mounted where the old one was, or deeper (a mount arriving over
        a folder first taken as it was), is the root back: remounted, or mounted late.
        """
        try:
            dev = _device(root)
        except OSError:
            return False, False
        known = self.dev[root]
        if dev == known:
            return True, False
        if root in self.held and _empty(root):
            return False, False
        mount = mount_point(root)
        if known is not None and len(mount) < len(self.mount[root]):
            return False, False
        self.dev[root], self.mount[root] = dev, mount
        return True, known is not None

    def hold(self, path: str) -> None:
        """Expect results under the root of ``path`` from now on, as the caller will hold one."""
        root = self.root_of(path)
        if root is not None:
            self.held.add(root)

    def trusted(self, root: str) -> bool:
        """Whether ``root`` is up and still on the device it was taken on: only then is a file
        missing from it deleted (a device change waits for ``check_roots``)."""
        if not self.up[root]:
            return False
        try:
            return _device(root) == self.dev[root]
        except OSError:
            return False

    def check_roots(self) -> None:
        # Resolved again each tick: a root may be a symlink, appear late or be remounted.
        self.confinement = Confinement.of(self.w.roots)
        for root in self.w.roots:
            up, new_device = self.probe(root)
            if up == self.up[root] and not new_device:
                continue
            was_up, self.up[root] = self.up[root], up
            if up:
                if was_up:
                    log.info("%s changed device (remounted): watching it again and rescanning it", root)
                elif new_device:
                    log.info("%s is back on another device (remounted): rescanning it", root)
                else:
                    log.info("%s is available again: rescanning it", root)
                # The old watch died with the folder or its mount.
                self.watch(root)
                self.reconcile([root], list(self.w.known_paths()))
            else:
                log.warning("%s went away (removed or unmounted): ignoring it until it is back", root)
                self.drop_under(root)

    # -- names ---------------------------------------------------------------------

    def wanted_file(self, root: str, path: str) -> bool:
        """Whether ``path`` is a video name that ``discover`` would yield under ``root``."""
        return self.w.filter.wants_file(_rel(root, path))

    def wanted_dir(self, root: str, path: str) -> bool:
        return self.w.filter.wants_dir(_rel(root, path))

    def admit(self, path: str, folder: bool = False) -> bool:
        """Whether a scan reaches the file (or ``folder``) at ``path`` by that path.

        As ``discover`` does: a symlink leading outside the roots is not followed, and a path
        through a symlink is not taken when a scan reaches the same file or folder by its own
        path first (the file is yielded once, by the path a scan would give).
        """
        real = os.path.realpath(path)
        found = self.confinement.locate(real)
        if found is None:
            log.info("skipping %s: symlink to %s, outside the watched folders", path, real)
            return False
        index, rel = found
        target = os.path.join(self.w.roots[index], rel) if rel else self.w.roots[index]
        if target == path:
            return True  # no symlink on the way
        wanted = self.w.filter.wants_dir if folder else self.w.filter.wants_file
        if wanted(rel) and os.path.exists(target) and walk_order(index, rel) < self.order(path):
            log.debug("skipping %s: leads to %s, which a scan reaches first", path, target)
            return False
        return folder or self.first_link(path)

    def first_link(self, path: str) -> bool:
        """Whether ``path``, a symlinked way to a file, is the first such way a scan meets."""
        key = _file_key(path)
        if key is None:
            return False
        other = self.linked.get(key)
        if other is not None and other != path and _file_key(other) == key:
            if self.order(other) < self.order(path):
                log.debug("skipping %s: same file as %s", path, other)
                return False
            # A scan meets this one first: the other is dropped if it has not settled yet.
            self.candidates.pop(other, None)
        self.linked[key] = path
        return True

    def order(self, path: str) -> tuple[int, tuple[str, ...]]:
        """Where a scan of all roots reaches ``path``: the first root holding it, in order."""
        for index, root in enumerate(self.w.roots):
            if path == root or path.startswith(os.path.join(root, "")):
                return walk_order(index, _rel(root, path))
        return walk_order(len(self.w.roots), path)

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
            self.hold(path)
            self.out.append(Moved(src, file))
            return True
        return False

    def drop_under(self, folder: str) -> None:
        prefix = os.path.join(folder, "")
        for path in [p for p in self.candidates if p.startswith(prefix)]:
            del self.candidates[path]

    def report_gone(self, path: str) -> None:
        root = self.root_of(path)
        if path in self.gone or root is None or not self.trusted(root):
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
            self.touched(src, created=kind == EVENT_TYPE_CREATED)
        elif kind == EVENT_TYPE_MOVED:
            self.file_moved(src, os.fsdecode(event.dest_path))
        elif kind == EVENT_TYPE_DELETED:
            self.candidates.pop(src, None)
            self.arrivals.pop(src, None)
            root = self.root_of(src)
            if root is not None and self.wanted_file(root, src):
                self.report_gone(src)

    def touched(self, path: str, created: bool = False) -> None:
        root = self.root_of(path)
        if root is None or not self.up[root]:
            return
        if created and _is_folder_link(path):
            # The observers do not follow symlinks; a scan does, as far as the roots go.
            self.new_dirs.append(path)
            return
        if not self.wanted_file(root, path):
            return
        candidate = self.candidates.get(path)
        if candidate is not None:
            candidate.since = time.monotonic()
            return
        file = _stat_file(path)
        if file is not None and self.admit(path):
            self.offer(file)

    def file_moved(self, src: str, dst: str) -> None:
        self.candidates.pop(src, None)
        self.arrivals.pop(src, None)
        # The file moved on from an earlier destination, so a later identical move is a new one.
        self.moved.pop(src, None)
        src_root, dst_root = self.root_of(src), self.root_of(dst)
        if _is_folder_link(dst):
            # A symlinked folder renamed: nothing inside it reports a move of its own, so its
            # videos leave with the old name and arrive with the new one, paired into moves.
            self.drop_under(src)
            self.gone_dirs.append(src)
            if dst_root is not None and self.up[dst_root]:
                self.new_dirs.append(dst)
            return
        src_video = src_root is not None and self.wanted_file(src_root, src)
        if dst_root is not None and self.up[dst_root] and self.wanted_file(dst_root, dst):
            file = _stat_file(dst)
            if file is not None and self.admit(dst):
                self.gone.discard(dst)
                earlier = self.moved.get(dst)
                if src_video and (earlier is None or earlier[0] != src):
                    self.moved[dst] = (src, time.monotonic() + _MOVE_MEMORY_S)
                    self.yielded.pop(src, None)
                    self.hold(dst)
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
        if not self.admit(folder, folder=True):
            return
        try:
            # Files may have landed before the observer watched the folder.
            found = list(walk_folder(folder, _rel(root, folder), self.w.filter, self.confinement))
        except OSError:
            return
        for file in found:
            # The walk kept to the roots; this also drops a file the scan meets first elsewhere.
            if self.admit(file.path):
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
                candidate.key, candidate.since, candidate.unreadable = key, now, None
                continue
            if now - candidate.since < self.w.settle_s or now - candidate.arrived < _PAIR_DELAY_S:
                continue
            # An empty file is most often a copy that has not started writing; one that stays
            # empty is handed on like an unreadable one, to fail and become an error row.
            error = _read_error(path) if st.st_size else "empty"
            if error is not None:
                if candidate.unreadable is None:
                    candidate.unreadable = now
                    log.debug("%s not ready yet: %s", path, error)
                if now - candidate.unreadable < self.w.unreadable_grace_s:
                    continue
                why = "stays empty" if error == "empty" else f"stays unreadable ({error})"
                log.info("%s settled but %s: handing it on to be tried", path, why)
            del self.candidates[path]
            file = VideoFile(path, st.st_size, st.st_mtime_ns)
            if self.yielded.get(path) == key or self.w.is_done(file):
                continue
            self.yielded[path] = key
            log.debug("settled %s (%d bytes)", path, st.st_size)
            self.hold(path)
            self.out.append(Settled(file))

    def reconcile(self, roots: Iterable[str], known: list[str], quiet: bool = False) -> None:
        """Find what the observer missed: new files in, and known files gone from, ``roots``."""
        # Settled files count too: a caller that batches its work may not hold them yet.
        self.held = {root for root in map(self.root_of, [*known, *self.yielded]) if root is not None}
        present: set[str] = set()
        scanned: list[str] = []
        with _quiet_discover(quiet):
            for group, found in self.walks([root for root in roots if self.up[root]]):
                for file in found:
                    present.add(file.path)
                    if self.w.is_done(file):
                        self.yielded.pop(file.path, None)
                    else:
                        self.offer(file, done=False, arrival=False)
                scanned.extend(group)
        scanned_set = set(scanned)
        self.linked = {
            k: p for k, p in self.linked.items() if p in present or self.root_of(p) not in scanned_set
        }
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

    def walks(self, roots: list[str]) -> Iterator[tuple[list[str], Iterator[VideoFile]]]:
        """``discover`` over ``roots``, with the roots each walk covers.

        One walk for all, so that a file reached from two roots counts once, as in a scan;
        root by root when one of them vanished since ``check_roots`` looked.
        """
        if not roots:
            return
        try:
            found = discover(roots, filter=self.w.filter)
        except OSError:
            pass
        else:
            yield roots, found
            return
        for root in roots:
            try:
                found = discover([root], filter=self.w.filter)
            except OSError as exc:
                log.warning("cannot rescan %s: %s", root, exc)
                continue
            yield [root], found


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


def _polling_observer(interval_s: float) -> BaseObserver:
    # lstat, not stat: a snapshot that followed symlinks would walk, on every poll, folders
    # that lead outside the roots (and around symlink loops); inotify never follows them either.
    return PollingObserverVFS(os.lstat, os.scandir, polling_interval=interval_s)


def _rel(root: str, path: str) -> str:
    return path[len(os.path.join(root, "")) :] if path != root else ""


def _stat_file(path: str) -> VideoFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return VideoFile(path, st.st_size, st.st_mtime_ns)


def _file_key(path: str) -> _Key | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_folder_link(path: str) -> bool:
    return os.path.islink(path) and os.path.isdir(path)


def _read_error(path: str) -> str | None:
    """Why ``path`` cannot be read now; ``None`` when it can."""
    # A share may hold a lock on a file still being copied even when its size stopped moving.
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _device(path: str) -> int:
    """The device ``path`` is on; raises ``OSError`` when it cannot be stat'ed."""
    return os.stat(path).st_dev


def _empty(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return next(it, None) is None
    except OSError:
        return True
