"""Files in, one VideoResult per file out: decode workers feed batched inference.

Decoding runs in child processes (a crash or a hang costs one file); a bounded window of
jobs keeps memory flat; batches mix clips of different files so the model never idles on
a short video; a video's score is the mean of its clips' probabilities.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tagger.clips import transport
from tagger.clips.decode import DecodeJob, ready, run_job
from tagger.clips.transport import Decoded, Packed, discard, run_packed, unpack
from tagger.options import DECODE_TIMEOUT_S, MAX_DURATION_S, MAX_PIXELS, TOP_K
from tagger.records import DecodeError, Tag, VideoInfo, VideoResult

if TYPE_CHECKING:
    from tagger.classify import Classifier
    from tagger.transforms import Preprocessing


#: How often a quiet source is asked again while files are in flight.
IDLE_POLL_S = 0.1
STOP_POLL_S = 0.5
_END = object()


def default_workers(device: str = "cpu") -> int:
    """Decode processes for a model on ``device`` ("cpu" or "cuda").

    On CPU the model needs the cores too: half of them decode (at least one). On a GPU
    decoding is the bound, so every core but the one feeding the GPU decodes.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device == "cuda":
        return max(1, min(32, cores - 1))
    return max(1, min(8, cores // 2))


@dataclass(frozen=True)
class TagOptions:
    """What only the user knows; everything else comes from the checkpoint."""

    clips: int | None = None
    #: 1 (centre crop) or 3 (both ends and the centre of the long side, averaged).
    crops: int = 1
    top_k: int = TOP_K
    threshold: float | None = None
    #: Clips per forward pass; None: the classifier's default for its device.
    batch_size: int | None = None
    #: Decode processes; None: ``default_workers`` for the model's device.
    workers: int | None = None
    timeout_s: float = DECODE_TIMEOUT_S
    max_pixels: int = MAX_PIXELS
    max_duration_s: float = MAX_DURATION_S


def make_job(path: str, prep: Preprocessing, stride: int, options: TagOptions) -> DecodeJob:
    """The decode job that cuts exactly the clips a model with ``prep`` and ``stride`` expects."""
    return DecodeJob(
        path=path,
        num_frames=prep.num_frames,
        stride=stride,
        clips=options.clips,
        short_side=prep.short_side,
        size=prep.size,
        # Three crops are cut from the resized frames here, after decoding.
        crop=prep.crop if options.crops == 1 else None,
        max_pixels=options.max_pixels,
        max_duration_s=options.max_duration_s,
    )


def top_tags(probs: np.ndarray, labels: list[str], top_k: int, threshold: float | None) -> tuple[Tag, ...]:
    """The ``top_k`` best labels, dropping those under ``threshold``."""
    order = np.argsort(-probs, kind="stable")[:top_k]
    return tuple(Tag(labels[i], float(probs[i])) for i in order if threshold is None or probs[i] >= threshold)


def views(frames: np.ndarray, crop: tuple[int, int] | None, count: int) -> list[np.ndarray]:
    """``count`` crops of uint8 ``(T, H, W, 3)`` frames along their long side (1: the centre)."""
    if crop is None:
        return [frames]
    height, width = frames.shape[1:3]
    ch, cw = crop
    top, left = (height - ch) // 2, (width - cw) // 2
    if count == 1:
        return [frames[:, top : top + ch, left : left + cw]]
    if width >= height:
        lefts = (0, left, width - cw)
        return [frames[:, top : top + ch, x : x + cw] for x in lefts]
    tops = (0, top, height - ch)
    return [frames[:, y : y + ch, left : left + cw] for y in tops]


@dataclass
class _Pending:
    """Views of one video's clips still waiting for the model."""

    info: VideoInfo
    clips: int
    expected: int
    scored: int = 0
    total: np.ndarray | None = None


class Decoder:
    """Decode processes (a pebble pool) with a bounded window of in-flight files.

    Pass one to ``tag`` to start the processes early, while the model loads (``start``);
    otherwise ``tag`` makes its own. As a context manager it stops the processes on exit.
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

    def start(self) -> Decoder:
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

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, jobs: Iterable[DecodeJob | None], stop: threading.Event | None = None
    ) -> Iterator[tuple[str, Decoded | str] | None]:
        """Yield ``(path, (info, clips))`` or ``(path, error message)`` as files finish.

        A ``None`` job means the source has nothing right now (a watched folder is quiet):
        once the files in flight are done, ``None`` is yielded so the caller can flush.
        Once ``stop`` is set the run ends: files in flight are abandoned (their frames freed)
        and the caller's source tags them another time.
        """
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
                exhausted, idle = job is _END, job is None
                break
            if not running:
                if exhausted:
                    return
                yield None
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


def tag(
    paths: Iterable[str | None],
    classifier: Classifier,
    options: TagOptions | None = None,
    worker: Callable[[DecodeJob], Decoded] = run_job,
    stop: threading.Event | None = None,
    decoder: Decoder | None = None,
) -> Iterator[VideoResult]:
    """Tag each path; results come in completion order, errors as ``status="error"`` results.

    ``paths`` may be endless (a watched folder) and may yield ``None`` when it has nothing
    new, which flushes clips waiting for a full batch. Once ``stop`` is set no new forward
    pass starts: the stream ends after the one under way, and files not finished by then
    yield nothing (a daemon must exit within its service manager's grace period).
    ``worker`` runs in the decode processes; it must be a picklable top-level function. A
    ``decoder`` given by the caller (already started, say) is used instead of ``worker``,
    ``workers`` and ``timeout_s``, and left open.
    """
    options = options or TagOptions()
    batch_size = options.batch_size or classifier.default_batch_size
    jobs = (
        None if path is None else make_job(path, classifier.prep, classifier.stride, options)
        for path in paths
    )
    pending: dict[str, _Pending] = {}
    batch: deque[tuple[str, np.ndarray]] = deque()
    own_decoder = decoder is None
    if decoder is None:
        workers = options.workers or default_workers(classifier.device.type)
        decoder = Decoder(workers, options.timeout_s, worker)

    def run_batch(size: int) -> Iterator[VideoResult]:
        items = [batch.popleft() for _ in range(min(size, len(batch)))]
        probs = classifier.predict(classifier.stack([frames for _, frames in items]))
        for (path, _), p in zip(items, probs, strict=True):
            state = pending[path]
            state.total = p.astype(np.float64) if state.total is None else state.total + p
            state.scored += 1
            if state.scored == state.expected:
                del pending[path]
                yield _result(state, classifier, options)

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    try:
        for item in decoder.run(jobs, stop):
            if stopping():
                break
            if item is None:
                while batch and not stopping():
                    yield from run_batch(batch_size)
                continue
            path, outcome = item
            if isinstance(outcome, str):
                yield VideoResult.failed(path, outcome, model=classifier.id)
                continue
            info, clips = outcome
            cut = [v for clip in clips for v in views(clip.frames, classifier.prep.crop, options.crops)]
            pending[path] = _Pending(info, clips=len(clips), expected=len(cut))
            batch.extend((path, frames) for frames in cut)
            while len(batch) >= batch_size and not stopping():
                yield from run_batch(batch_size)
        while batch and not stopping():
            yield from run_batch(batch_size)
    finally:
        if own_decoder:
            decoder.close()


def _result(state: _Pending, classifier: Classifier, options: TagOptions) -> VideoResult:
    assert state.total is not None
    mean = state.total / state.scored
    return VideoResult(
        path=state.info.path,
        tags=top_tags(mean, classifier.labels, options.top_k, options.threshold),
        clips=state.clips,
        duration_s=state.info.duration_s,
        model=classifier.id,
    )
