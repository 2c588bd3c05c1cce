"""``vidtag watch``: tag each video that lands in watched folders once, after it has arrived.

Settled files from the watcher feed one long-lived tagging pipeline. Each result is recorded
in the state store, then appended to the output and marked emitted, so a kill at any moment
loses at most the videos in flight; a restart re-emits anything recorded but not appended.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tagger import sinks
from tagger.pipeline import TagOptions, tag
from tagger.records import VideoFile, VideoResult
from tagger.sources.watch import Deleted, Moved, Settled, Watcher
from tagger.state import StateStore

if TYPE_CHECKING:
    from tagger.classify import Classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchOptions:
    """How the daemon waits, retries and reacts to deletions."""

    settle_s: float = 5.0
    rescan_s: float = 300.0
    poll: bool | None = None
    on_delete: str = "keep"  # keep: mark the row removed; remove: drop it (and our sidecar)
    retries: int = 3
    retry_base_s: float = 30.0
    status_every_s: float = 60.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass
class DaemonStats:
    """Counters for the periodic status line."""

    done: int = 0
    errors: int = 0
    clips: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self, queued: int) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return f"queued {queued}, done {self.done}, errors {self.errors}, clips/s {self.clips / elapsed:.1f}"


class Daemon:
    """One model, one state store, one output: everything ``vidtag watch`` runs."""

    def __init__(
        self,
        roots: Sequence[str],
        classifier: Classifier,
        store: StateStore,
        output: sinks.Appender | None,
        sidecar: bool = False,
        options: TagOptions | None = None,
        watch: WatchOptions | None = None,
    ) -> None:
        self.roots = [str(r) for r in roots]
        self.classifier, self.store, self.output, self.sidecar = classifier, store, output, sidecar
        self.options = options or TagOptions()
        self.watch = watch or WatchOptions()
        self.model = classifier.id
        self.stats = DaemonStats()
        self.in_flight: dict[str, VideoFile] = {}
        self.attempts: dict[str, int] = {}
        self.retry_at: list[tuple[float, str]] = []

    def run(self, stop: threading.Event) -> DaemonStats:
        """Watch until ``stop`` is set; returns the counters."""
        for file, result in self.store.unemitted(self.model):
            self._emit(file.path, result)
        watcher = Watcher(
            self.roots,
            settle_s=self.watch.settle_s,
            rescan_s=self.watch.rescan_s,
            poll=self.watch.poll,
            include=self.watch.include,
            exclude=self.watch.exclude,
            is_done=self._done,
            known_paths=self._known_paths,
        )
        source = self._paths(watcher, stop)
        try:
            for result in tag(source, self.classifier, self.options, stop=stop):
                self._finish(result)
        finally:
            source.close()
        log.info("stopped: %s", self.stats.line(len(self.in_flight) + len(self.retry_at)))
        return self.stats

    def _done(self, file: VideoFile) -> bool:
        """Tagged (or failed for good) with this model, and unchanged since."""
        if file.path in self.in_flight or file.path in self.attempts:
            return True
        found = self.store.find(file.path, self.model)
        if found is None:
            return False
        stored, result = found
        return (stored.size, stored.mtime_ns) == (file.size, file.mtime_ns) and result.status in (
            "ok",
            "error",
        )

    def _known_paths(self) -> list[str]:
        return [p for root in self.roots for p in self.store.paths_under(root, self.model)]

    def _paths(self, watcher: Watcher, stop: threading.Event) -> Generator[str | None, None, None]:
        """Settled paths to tag; moves and deletions are handled here, without the model."""
        next_status = time.monotonic() + self.watch.status_every_s
        for event in watcher.events(stop):
            now = time.monotonic()
            while self.retry_at and self.retry_at[0][0] <= now:
                _, path = heapq.heappop(self.retry_at)
                retry = _stat(path)
                if retry is None:
                    self.attempts.pop(path, None)  # gone: a new file of that name starts afresh
                    continue
                self.in_flight[path] = retry
                yield path
            if now >= next_status:
                log.info("%s", self.stats.line(len(self.in_flight) + len(self.retry_at)))
                next_status = now + self.watch.status_every_s
            if isinstance(event, Settled):
                if not self._done(event.file):
                    self.in_flight[event.file.path] = event.file
                    yield event.file.path
                continue
            if isinstance(event, Moved):
                self._moved(event)
            elif isinstance(event, Deleted):
                self._deleted(event.path)
            yield None

    def _finish(self, result: VideoResult) -> None:
        file = self.in_flight.pop(result.path)
        if not result.ok:
            tries = self.attempts.get(result.path, 0) + 1
            if tries <= self.watch.retries:
                # Back off: a file can settle and still be incomplete (a copy paused for longer
                # than --settle), so a failure is tried again a few times before it is recorded.
                self.attempts[result.path] = tries
                delay = self.watch.retry_base_s * 2 ** (tries - 1)
                heapq.heappush(self.retry_at, (time.monotonic() + delay, result.path))
                log.warning(
                    "%s: %s (retry %d of %d in %.0f s)",
                    result.path,
                    result.error,
                    tries,
                    self.watch.retries,
                    delay,
                )
                return
            self.stats.errors += 1
            log.error("%s: %s", result.path, result.error)
        self.attempts.pop(result.path, None)
        self.stats.done += 1
        self.stats.clips += result.clips
        self.store.record(file, self.model, result, emitted=False)
        self._emit(file.path, result)

    def _emit(self, path: str, result: VideoResult) -> None:
        """Append the row and write the sidecar, then mark the stored row emitted."""
        if self.output is not None:
            self.output.write(result.row())
        if self.sidecar and result.status in ("ok", "error"):
            reason = sinks.emit_sidecar(result)
            if reason is not None:
                log.warning("%s", reason)
        self.store.mark_emitted(path, self.model)

    def _moved(self, event: Moved) -> None:
        moved = self.store.move(event.src, event.dst, self.model)
        if moved is None:
            return  # not tagged yet, or changed: the destination is tagged when it settles
        log.info("moved %s -> %s (result kept)", event.src, event.dst.path)
        if self.output is not None:
            gone = VideoResult(
                path=event.src, model=self.model, status="moved", error=f"moved to {event.dst.path}"
            )
            self.output.write(gone.row())
        self._emit(event.dst.path, moved)
        if self.sidecar:
            sinks.remove_sidecar(event.src)

    def _deleted(self, path: str) -> None:
        keep = self.watch.on_delete == "keep"
        previous = self.store.remove(path, self.model, keep=keep)
        if previous is None:
            return
        log.info("removed %s", path)
        if self.output is not None:
            self.output.write(VideoResult(path=path, model=self.model, status="removed").row())
        if keep:
            self.store.mark_emitted(path, self.model)
        if not keep and self.sidecar:
            sinks.remove_sidecar(path)


def _stat(path: str) -> VideoFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return VideoFile(path, st.st_size, st.st_mtime_ns)
