"""The decode processes: jobs in, decoded clips (or a reason) out, as files finish.

Decoding runs in child processes, so a decoder crash or hang costs one file; a bounded window
of jobs keeps memory flat whatever the source's length. ``InlineDecoder`` does the same work in
the calling thread, for tests and for callers that bring their own parallelism.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from tagger.clips import transport
from tagger.clips.decode import DecodeJob, ready, run_job
from tagger.clips.transport import Decoded, Packed, discard, run_packed, unpack
from tagger.options import DECODE_TIMEOUT_S
from tagger.records import QUIET, DecodeError, Quiet

#: How often a quiet source is asked again while files are in flight.
IDLE_POLL_S = 0.1
STOP_POLL_S = 0.5
_END = object()

#: What a decoder yields: a finished file (its decoded clips, or why it has none), or ``Quiet``.
Outcome = tuple[str, Decoded | str] | Quiet


class Decoder(Protocol):
    """What the tagging engine needs from a decoder."""

    def run(
        self, jobs: Iterable[DecodeJob | Quiet], stop: threading.Event | None = None
    ) -> Iterator[Outcome]:
        """Yield ``(path, (info, clips))`` or ``(path, reason)`` per job as files finish, and
        ``Quiet`` once the files in flight are done after the source said ``Quiet``. Once
        ``stop`` is set the run ends; files in flight yield nothing."""
        ...


def default_workers(device: str = "cpu") -> int:
    """Decode processes for a model on ``device`` ("cpu" or "cuda").

    On CPU the model needs the cores too: half of them decode (at least one). On a GPU
    decoding is the bound, so every core but the one feeding the GPU decodes.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device == "cuda":
        return max(1, min(32, cores - 1))
    return max(1, min(8, cores // 2))


class DecodePool:
    """Decode processes (a pebble pool) with a bounded window of in-flight files.

    Start one early, while the model loads (``start``), and hand it to the engine. As a context
    manager it stops the processes on exit. ``worker`` runs in the processes: a picklable
    top-level function (tests pass one that crashes or hangs).
    """

    def __init__(
        self,
        workers: int,
        timeout_s: float = DECODE_TIMEOUT_S,
        worker: Callable[[DecodeJob], Decoded] = run_job,
        shared_memory: bool = True,
    ) -> None:
        import pebble

        # spawn, not fork: the parent holds torch's thread pools, which do not survive fork.
        self.pool = pebble.ProcessPool(max_workers=workers, context=multiprocessing.get_context("spawn"))
        self.workers = workers
        self.timeout_s = timeout_s
        self.worker = worker
        #: Frames come back through shared memory (``tagger.clips.transport``), not a pipe.
        self.shared_memory = shared_memory
        self.window = 2 * workers + 2
        self._running: dict[Any, str] = {}
        if shared_memory:
            transport.sweep()

    def start(self) -> DecodePool:
        """Start the processes now (each imports the decoder) instead of at the first file."""
        for _ in range(self.workers):
            self.pool.schedule(ready)
        return self

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()
        self._abandon()

    def _abandon(self) -> None:
        """Forget the files of a run nobody listens to any more; their frames are freed."""
        for future in self._running:
            future.add_done_callback(_free_frames)
        self._running = {}

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, jobs: Iterable[DecodeJob | Quiet], stop: threading.Event | None = None
    ) -> Iterator[Outcome]:
        """See :class:`Decoder`. Files in flight at a stop are abandoned (their frames freed),
        and the caller's source tags them another time."""
        todo = iter(jobs)
        self._abandon()  # files of an earlier run that was left unfinished are not this run's
        running = self._running
        exhausted = False
        while True:
            idle = False
            if stop is not None and stop.is_set():
                self._abandon()
                return
            while not exhausted and len(running) < self.window:
                job = next(todo, _END)
                if isinstance(job, DecodeJob):
                    if self.shared_memory:
                        future = self.pool.schedule(run_packed, (self.worker, job), timeout=self.timeout_s)
                    else:
                        future = self.pool.schedule(self.worker, (job,), timeout=self.timeout_s)
                    running[future] = job.path
                    continue
                exhausted, idle = job is _END, isinstance(job, Quiet)
                break
            if not running:
                if exhausted:
                    return
                yield QUIET
                continue
            # With a stop event, wake up now and then so a stop request is seen promptly.
            timeout = IDLE_POLL_S if idle else (None if stop is None else STOP_POLL_S)
            done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
            for finished in done:
                path = running.pop(finished)
                yield path, self._outcome(finished)

    def _outcome(self, future: object) -> Decoded | str:
        import pebble

        try:
            result = future.result()  # type: ignore[attr-defined]
            return unpack(result) if isinstance(result, Packed) else result  # type: ignore[no-any-return]
        except DecodeError as exc:
            return str(exc)
        except FutureTimeout:
            return f"decoding took longer than {self.timeout_s:g} s (--timeout); the decoder was stopped"
        except pebble.ProcessExpired as exc:
            return f"the decoder crashed (exit code {exc.exitcode})"
        except Exception as exc:
            return f"decoding failed: {type(exc).__name__}: {exc}"


def _free_frames(future: Any) -> None:
    """Done-callback of an abandoned file: free its shared-memory frames, if any."""
    if not future.cancelled() and future.exception() is None and isinstance(future.result(), Packed):
        discard(future.result())


class InlineDecoder:
    """Decodes each job in the calling thread: no processes, no timeout, no crash isolation.

    For tests of what surrounds decoding, and for callers that run many taggers in parallel
    themselves; a crash of the decoder here is a crash of the caller.
    """

    def __init__(self, worker: Callable[[DecodeJob], Decoded] = run_job) -> None:
        self.worker = worker

    def run(
        self, jobs: Iterable[DecodeJob | Quiet], stop: threading.Event | None = None
    ) -> Iterator[Outcome]:
        for job in jobs:
            if stop is not None and stop.is_set():
                return
            if isinstance(job, Quiet):
                yield job
                continue
            try:
                yield job.path, self.worker(job)
            except DecodeError as exc:
                yield job.path, str(exc)
