"""The local engine: decode processes on this machine feed batched inference in this process.

Batches mix clips of different files, so the model never idles on a short video; a video's
result is made once its last clip is scored (``tagger.engines.aggregate``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tagger.clips.crops import views
from tagger.clips.decode import make_job
from tagger.clips.pool import DecodePool, Decoder, default_workers
from tagger.engines.aggregate import video_result
from tagger.options import TagOptions
from tagger.records import Quiet, VideoInfo, VideoResult

if TYPE_CHECKING:
    from tagger.classify import Classifier


@dataclass
class _Pending:
    """One video whose views (clips x crops) are still waiting for the model."""

    info: VideoInfo
    spans: list[tuple[float, float]]
    probs: np.ndarray
    left: int = field(init=False)

    def __post_init__(self) -> None:
        self.left = len(self.probs)


def tag(
    paths: Iterable[str | Quiet],
    classifier: Classifier,
    options: TagOptions | None = None,
    *,
    stop: threading.Event | None = None,
    decoder: Decoder | None = None,
) -> Iterator[VideoResult]:
    """Tag each path with ``classifier``; results come in completion order (see ``Engine.tag``).

    ``decoder``: decode processes started by the caller (a ``DecodePool``, say, started while the
    model loaded), or an ``InlineDecoder``; left open. Without one a ``DecodePool`` of
    ``options.workers`` processes is made for this call.
    """
    options = options or TagOptions()
    if decoder is None:
        workers = options.workers or default_workers(classifier.device.type)
        with DecodePool(workers, options.timeout_s) as pool:
            yield from _tag(paths, classifier, options, stop, pool)
    else:
        yield from _tag(paths, classifier, options, stop, decoder)


def _tag(
    paths: Iterable[str | Quiet],
    classifier: Classifier,
    options: TagOptions,
    stop: threading.Event | None,
    decoder: Decoder,
) -> Iterator[VideoResult]:
    batch_size = options.batch_size or classifier.default_batch_size
    classes = tuple(classifier.labels)
    jobs = (
        path if isinstance(path, Quiet) else make_job(path, classifier.prep, classifier.stride, options)
        for path in paths
    )
    pending: dict[str, _Pending] = {}
    batch: deque[tuple[str, int, np.ndarray]] = deque()

    def run_batch(size: int) -> Iterator[VideoResult]:
        items = [batch.popleft() for _ in range(min(size, len(batch)))]
        probs = classifier.predict(classifier.stack([frames for _, _, frames in items]))
        for (path, view, _), p in zip(items, probs, strict=True):
            video = pending[path]
            video.probs[view] = p
            video.left -= 1
            if video.left == 0:
                del pending[path]
                yield video_result(video.info, video.spans, video.probs, classes, options, classifier.id)

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    for item in decoder.run(jobs, stop):
        if stopping():
            return
        if isinstance(item, Quiet):
            while batch and not stopping():
                yield from run_batch(batch_size)
            continue
        path, outcome = item
        if isinstance(outcome, str):
            yield VideoResult.failed(path, outcome, model=classifier.id)
            continue
        info, clips = outcome
        cut = [v for clip in clips for v in views(clip.frames, classifier.prep.crop, options.crops)]
        spans = [(clip.start_s, clip.end_s) for clip in clips]
        pending[path] = _Pending(info, spans, np.zeros((len(cut), len(classes)), dtype=np.float32))
        batch.extend((path, view, frames) for view, frames in enumerate(cut))
        while len(batch) >= batch_size and not stopping():
            yield from run_batch(batch_size)
    while batch and not stopping():
        yield from run_batch(batch_size)


class LocalEngine:
    """``tag`` as an :class:`~tagger.engines.Engine`: one classifier, one decoder, many calls."""

    def __init__(
        self, classifier: Classifier, options: TagOptions | None = None, decoder: Decoder | None = None
    ) -> None:
        self.classifier = classifier
        self.options = options or TagOptions()
        self._pool: DecodePool | None = None
        if decoder is None:
            workers = self.options.workers or default_workers(classifier.device.type)
            decoder = self._pool = DecodePool(workers, self.options.timeout_s)
        self.decoder = decoder

    @property
    def model(self) -> str:
        return self.classifier.id

    def tag(self, paths: Iterable[str | Quiet], stop: threading.Event | None = None) -> Iterator[VideoResult]:
        return tag(paths, self.classifier, self.options, stop=stop, decoder=self.decoder)

    def close(self) -> None:
        """Stop the decode processes this engine made (a decoder passed in stays open)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
