"""One run of a watch: raw filesystem events in; settled videos, moves and deletions out.

Which root a path is under is :class:`Roots`' to say, which way to a file counts is
:class:`Links`', when a file has settled is :class:`Candidates`'. What is left here is the
translation of events, telling moves from deletions, and the periodic rescans.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
)

from tagger.records import Deleted, Moved, Settled, VideoFile, WatchEvent
from tagger.sources.discover import discover, walk_folder
from tagger.sources.links import Links
from tagger.sources.observe import Observers
from tagger.sources.roots import Roots, rel
from tagger.sources.settle import PAIR_DELAY_S, Candidates, stat_file

if TYPE_CHECKING:
    from tagger.sources.watch import Watcher

log = logging.getLogger("tagger.sources.watch")

# How long a yielded move is remembered, to drop the copy a nested or repeated watch reports.
_MOVE_MEMORY_S = 30.0
# A file moved into a folder created a moment before can reach inotify as a deletion plus a
# creation (the new folder's watch came too late for IN_MOVED_TO). Arrivals are kept this long
# to pair them up with such deletions, which are checked against this many recent arrivals.
_PAIR_WINDOW_S = 5.0
_PAIR_CHECKS = 64


class WatchSession:
    """The state of one ``Watcher.events`` run; every method runs in the consumer's thread."""

    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher
        self.out: deque[WatchEvent] = deque()
        self.roots = Roots(watcher.roots)
        self.candidates = Candidates(watcher.settle_s, watcher.unreadable_grace_s, watcher.is_done)
        self.links = Links(self.roots, watcher.filter, lambda path: self.candidates.drop(path, arrival=False))
        self.observers = Observers(watcher.polled_roots, watcher.poll_interval_s, watcher.rescan_s)
        self.gone: set[str] = set()
        self.moved: dict[str, tuple[str, float]] = {}
        # Vanished videos waiting for their arrival elsewhere: path -> when to call them deleted.
        self.unpaired: dict[str, float] = {}
        self.new_dirs: list[str] = []
        self.gone_dirs: list[str] = []
        self.next_rescan = 0.0

    def start(self) -> None:
        self.observers.start(self.w.roots)
        known = list(self.w.known_paths())
        # An empty folder where results are expected is most likely a share not mounted yet:
        # its st_dev is the parent's, and trusting it would report the whole library deleted.
        self.roots.hold_only(known)
        for root in self.w.roots:
            self.roots.up[root] = self.roots.probe(root)[0]
            if self.roots.up[root]:
                self.observers.watch(root)
            else:
                log.warning("%s is not available (missing or not mounted): waiting for it", root)
        self.reconcile(self.w.roots, known)
        self.next_rescan = time.monotonic() + self.w.rescan_s

    def close(self) -> None:
        self.observers.close()

    def check_roots(self) -> None:
        self.links.refresh()
        for root, up in self.roots.changes():
            if up:
                self.observers.watch(root)
                self.reconcile([root], list(self.w.known_paths()))
            else:
                self.candidates.drop_under(root)

    def wanted_file(self, path: str) -> bool:
        """Whether ``path`` is a video name that ``discover`` would yield under its root."""
        root = self.roots.root_of(path)
        return root is not None and self.w.filter.wants_file(rel(root, path))

    def wanted_dir(self, path: str) -> bool:
        root = self.roots.root_of(path)
        return root is not None and self.w.filter.wants_dir(rel(root, path))

    def offer(self, file: VideoFile, done: bool | None = None, arrival: bool = True) -> None:
        if self.candidates.offer(file, done, arrival):
            self.gone.discard(file.path)

    def emit_move(self, src: str, dst: VideoFile) -> None:
        self.moved[dst.path] = (src, time.monotonic() + _MOVE_MEMORY_S)
        self.candidates.yielded.pop(src, None)
        self.roots.hold(dst.path)
        self.out.append(Moved(src, dst))

    # -- moves and deletions -------------------------------------------------------

    def pair(self, src: str) -> bool:
        """Yield ``Moved`` for a vanished ``src`` if what the caller holds for it (or what settled
        there) just arrived elsewhere."""
        arrivals = self.candidates.arrivals
        settled = self.candidates.yielded.get(src)
        for path in list(reversed(arrivals))[:_PAIR_CHECKS]:
            file = stat_file(path)
            if file is None or path == src:
                continue
            # What the caller holds for src, or what was settled there, arrived here: a polling
            # snapshot that ran during the rename saw neither name, then only the new one.
            key = (file.size, file.mtime_ns)
            if key != settled and not self.w.is_done(VideoFile(src, *key)):
                continue
            del arrivals[path]
            log.debug("%s arrived as %s was deleted: taken as a move", path, src)
            self.emit_move(src, file)
            return True
        return False

    def report_gone(self, path: str) -> None:
        root = self.roots.root_of(path)
        if path in self.gone or root is None or not self.roots.trusted(root):
            return
        if os.path.lexists(path):
            return  # replaced already; its own events make it a candidate
        if not self.pair(path):
            # Its arrival elsewhere may come later: polling can see a folder half-renamed
            # (this file gone, its new copy only in the next snapshot). Wait one poll for it.
            self.unpaired.setdefault(path, time.monotonic() + PAIR_DELAY_S + self.w.poll_interval_s)

    def report_unpaired(self, now: float) -> None:
        """A vanished video that no arrival claimed in time is deleted."""
        for path, until in list(self.unpaired.items()):
            if os.path.lexists(path) or self.pair(path):
                del self.unpaired[path]
            elif now >= until:
                del self.unpaired[path]
                self.gone.add(path)
                self.candidates.yielded.pop(path, None)
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
                self.candidates.drop_under(src)
                self.gone_dirs.append(src)
            elif kind == EVENT_TYPE_MOVED:
                self.dir_moved(src, os.fsdecode(event.dest_path), event.is_synthetic)
        elif kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
            self.touched(src, created=kind == EVENT_TYPE_CREATED)
        elif kind == EVENT_TYPE_MOVED:
            self.file_moved(src, os.fsdecode(event.dest_path))
        elif kind == EVENT_TYPE_DELETED:
            self.candidates.drop(src)
            if self.wanted_file(src):
                self.report_gone(src)

    def touched(self, path: str, created: bool = False) -> None:
        if not self.roots.is_up(path):
            return
        if created and _is_folder_link(path):
            # The observers do not follow symlinks; a scan does, as far as the roots go.
            self.new_dirs.append(path)
            return
        if not self.wanted_file(path) or self.candidates.touch(path):
            return
        file = stat_file(path)
        if file is not None and self.links.admit(path):
            self.offer(file)

    def file_moved(self, src: str, dst: str) -> None:
        self.candidates.drop(src)
        # The file moved on from an earlier destination, so a later identical move is a new one.
        self.moved.pop(src, None)
        if _is_folder_link(dst):
            # A symlinked folder renamed: nothing inside it reports a move of its own, so its
            # videos leave with the old name and arrive with the new one, paired into moves.
            self.candidates.drop_under(src)
            self.gone_dirs.append(src)
            if self.roots.is_up(dst):
                self.new_dirs.append(dst)
            return
        src_video = self.wanted_file(src)
        if self.roots.is_up(dst) and self.wanted_file(dst):
            file = stat_file(dst)
            if file is not None and self.links.admit(dst):
                self.gone.discard(dst)
                earlier = self.moved.get(dst)
                if src_video and (earlier is None or earlier[0] != src):
                    self.emit_move(src, file)
                self.touched(dst)
                self.candidates.arrivals.pop(dst, None)
                return
        if src_video:
            self.report_gone(src)

    def dir_moved(self, src: str, dst: str, synthetic: bool) -> None:
        # Each file inside gets its own moved event (inotify sends them after this one,
        # polling before), which yields Moved; here every video only lands as a candidate.
        self.candidates.drop_under(src)
        if self.wanted_dir(dst):
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
        root = self.roots.root_of(folder)
        if root is None or not self.roots.up[root] or not self.wanted_dir(folder):
            return
        if not self.links.admit(folder, folder=True):
            return
        try:
            # Files may have landed before the observer watched the folder.
            found = list(walk_folder(folder, rel(root, folder), self.w.filter, self.links.confinement))
        except OSError:
            return
        for file in found:
            # The walk kept to the roots; this also drops a file the scan meets first elsewhere.
            if self.links.admit(file.path):
                self.offer(file)

    # -- ticks ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.check_roots()
        if now >= self.next_rescan:
            self.reconcile(self.w.roots, list(self.w.known_paths()), quiet=True)
            self.next_rescan = time.monotonic() + self.w.rescan_s
        for file in self.candidates.settle(now):
            self.roots.hold(file.path)
            self.out.append(Settled(file))
        self.report_unpaired(now)
        for dst in [d for d, (_, until) in self.moved.items() if until <= now]:
            del self.moved[dst]
        self.candidates.expire(now, _PAIR_WINDOW_S)

    def reconcile(self, roots: Iterable[str], known: list[str], quiet: bool = False) -> None:
        """Find what the observer missed: new files in, and known files gone from, ``roots``.
        ``quiet``: a periodic rescan, which logs at DEBUG what the first one said."""
        yielded = self.candidates.yielded
        # Settled files count too: a caller that batches its work may not hold them yet.
        self.roots.hold_only([*known, *yielded])
        present: set[str] = set()
        scanned: list[str] = []
        for group, found in self.walks([root for root in roots if self.roots.up[root]], quiet):
            for file in found:
                present.add(file.path)
                if self.w.is_done(file):
                    yielded.pop(file.path, None)
                else:
                    self.offer(file, done=False, arrival=False)
            scanned.extend(group)
        scanned_set: set[str | None] = set(scanned)
        root_of = self.roots.root_of
        self.links.forget(present, scanned_set)
        self.candidates.yielded = {
            p: k for p, k in yielded.items() if p in present or root_of(p) not in scanned_set
        }
        missing = {
            p for p in known if root_of(p) in scanned_set and p not in present and not os.path.exists(p)
        }
        for path in sorted(missing - self.gone):
            self.report_gone(path)
        # Forget what the caller no longer knows, so the set stays as small as its store.
        self.gone = {p for p in self.gone if p in missing or root_of(p) not in scanned_set}
        log.debug(
            "rescanned %d root(s): %d videos, %d candidates", len(scanned), len(present), len(self.candidates)
        )

    def walks(self, roots: list[str], quiet: bool) -> Iterator[tuple[list[str], Iterator[VideoFile]]]:
        """``discover`` over ``roots``, with the roots each walk covers.

        One walk for all, so that a file reached from two roots counts once, as in a scan;
        root by root when one of them vanished since ``check_roots`` looked.
        """
        if not roots:
            return
        try:
            found = discover(roots, filter=self.w.filter, quiet=quiet)
        except OSError:
            pass
        else:
            yield roots, found
            return
        for root in roots:
            try:
                found = discover([root], filter=self.w.filter, quiet=quiet)
            except OSError as exc:
                log.warning("cannot rescan %s: %s", root, exc)
                continue
            yield [root], found


def _is_folder_link(path: str) -> bool:
    return os.path.islink(path) and os.path.isdir(path)
