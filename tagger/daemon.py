"""``vidtag watch``: tag each video that lands in watched folders once, after it has arrived.

Settled files from the watcher feed one long-lived tagging pipeline. Each result is recorded
in the state store, then appended to the output and marked emitted, so a kill at any moment
loses at most the videos in flight; a restart re-emits anything recorded but not appended.
"""

from __future__ import annotations

import heapq
import logging
import os
import signal
import threading
import time
from collections.abc import Generator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tagger import sinks
from tagger.engines.local import LocalEngine, labelling
from tagger.options import DEFAULT_MODEL, TagOptions, WatchOptions
from tagger.records import LIVE_STATUSES, QUIET, InputError, Quiet, VideoFile, VideoResult
from tagger.sinks import Outputs
from tagger.sources.watch import Deleted, Moved, Settled, Watcher
from tagger.state import StateStore, resolve_state_path, writer_locks

if TYPE_CHECKING:
    from tagger.engines import Engine

log = logging.getLogger(__name__)


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
        engine: Engine,
        store: StateStore,
        outputs: Outputs,
        watch: WatchOptions | None = None,
    ) -> None:
        self.roots = [str(r) for r in roots]
        self.engine, self.store, self.outputs = engine, store, outputs
        self.watch = watch or WatchOptions()
        self.model = engine.model
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
            for result in self.engine.tag(source, stop):
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
        if (stored.size, stored.mtime_ns) != (file.size, file.mtime_ns):
            return False
        # A video tagged before a timeline was asked for is tagged again, densely.
        needs_timeline = self.outputs.timeline is not None and result.ok and not result.timeline
        return result.status in LIVE_STATUSES and not needs_timeline

    def _known_paths(self) -> list[str]:
        return [p for root in self.roots for p in self.store.paths_under(root, self.model)]

    def _paths(self, watcher: Watcher, stop: threading.Event) -> Generator[str | Quiet, None, None]:
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
            yield QUIET

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
        """Send the result to the outputs, then mark the stored row emitted."""
        for reason in self.outputs.emit(result):
            log.warning("%s", reason)
        self.store.mark_emitted(path, self.model)

    def _moved(self, event: Moved) -> None:
        moved = self.store.move(event.src, event.dst, self.model)
        if moved is None:
            return  # not tagged yet, or changed: the destination is tagged when it settles
        log.info("moved %s -> %s (result kept)", event.src, event.dst.path)
        gone = VideoResult(
            path=event.src, model=self.model, status="moved", error=f"moved to {event.dst.path}"
        )
        self.outputs.emit(gone)
        self._emit(event.dst.path, moved)
        self.outputs.withdraw(event.src)

    def _deleted(self, path: str) -> None:
        keep = self.watch.on_delete == "keep"
        previous = self.store.remove(path, self.model, keep=keep)
        if previous is None:
            return
        log.info("removed %s", path)
        self.outputs.emit(VideoResult(path=path, model=self.model, status="removed"))
        if keep:
            self.store.mark_emitted(path, self.model)
        else:
            self.outputs.withdraw(path)


def _stat(path: str) -> VideoFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return VideoFile(path, st.st_size, st.st_mtime_ns)


def watch_videos(
    roots: Sequence[str],
    output: str | None = None,
    *,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    runtime: str = "torch",
    options: TagOptions | None = None,
    watch: WatchOptions | None = None,
    state: str | None = None,
    sidecars: Sequence[str] = (),
    allow_network_state: bool = False,
    log_file: str | None = None,
    stop: threading.Event | None = None,
) -> DaemonStats:
    """What ``vidtag watch`` does: tag each video that settles under ``roots`` until stopped.

    Rows are appended to ``output`` (.csv or .jsonl) and/or ``sidecars`` are written. Without
    ``stop``, SIGTERM and SIGINT stop the daemon (a second one leaves at once) and the old
    handlers come back on return. The log goes to ``log_file`` when given; a log that cannot be
    written stops the daemon, which then raises the fault.
    """
    from tagger import logs
    from tagger.classify import load_classifier

    if output is None and not sidecars:
        raise InputError("nothing to write: give --output FILE and/or --sidecar")
    writers = sinks.sidecars(sidecars)
    if log_file is not None:
        logs.to_file(log_file, logging.getLogger().getEffectiveLevel())
    own_stop = stop is None
    stop = stop or threading.Event()
    log_faults = logs.stop_on_fault(stop, log_file or "the log (stderr)")
    state = resolve_state_path(state, output, roots, allow_network=allow_network_state)
    options = (options or TagOptions()).for_outputs(False, sidecars)
    with ExitStack() as stack:
        store = stack.enter_context(StateStore(state))
        stack.enter_context(writer_locks(store, output))
        classifier = load_classifier(model, device, precision, compile=compile, runtime=runtime)
        outputs = Outputs(
            [*([sinks.Appender(output)] if output else []), *writers],
            timeline=options.timeline,
            labelling=labelling(classifier, options),
        )
        stack.callback(outputs.close)
        if own_stop:
            _stop_on_signals(stack, stop)
        engine = stack.enter_context(LocalEngine(classifier, options))
        stats = Daemon(roots, engine, store, outputs, watch).run(stop)
    if log_faults:
        raise log_faults[0]
    return stats


def _stop_on_signals(stack: ExitStack, stop: threading.Event) -> None:
    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)  # a second signal: leave now
        log.info("stopping (signal %d); again to quit at once", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        # The old handler comes back on the way out (a Python caller's process goes on).
        stack.callback(signal.signal, signum, signal.signal(signum, on_signal))
