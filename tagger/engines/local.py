"""The local engine: decode processes on this machine feed batched inference in this process.

Batches mix clips of different files, so the model never idles on a short video; a video's
result is made once its last clip is scored (``tagger.engines.aggregate``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from tagger.clips.crops import views
from tagger.clips.decode import DecodeJob, make_job, parts, plan_clips
from tagger.clips.pool import DecodePool, Decoder, default_workers
from tagger.clips.transport import Decoded
from tagger.engines.aggregate import video_result
from tagger.labels import Labelling
from tagger.options import TagOptions
from tagger.records import QUIET, Planes, Quiet, VideoInfo, VideoResult

if TYPE_CHECKING:
    from tagger.classify import Classifier


@dataclass
class _Pending:
    """One video whose clips are still being decoded (``parts_left``) or scored (``views_left``).

    Slots are made for every planned clip when the first part lands; a clip the video turned
    out too short for stays empty and is left out of the result.
    """

    info: VideoInfo
    spans: list[tuple[float, float] | None]
    probs: np.ndarray
    parts_left: int
    views_left: int = 0
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.parts_left == 0 and self.views_left == 0


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
    rule = labelling(classifier, options)
    crops = options.crops
    planes = options.planes(classifier.device.type)
    pending: dict[str, _Pending] = {}
    # The later parts of a long timeline, queued as soon as its first part tells how many there
    # are; they go before new files, so a long video finishes and its slots are freed early.
    more: deque[DecodeJob] = deque()
    first_parts: dict[str, DecodeJob] = {}

    def jobs() -> Iterator[DecodeJob | Quiet]:
        for path in paths:
            while more:
                yield more.popleft()
            if isinstance(path, Quiet):
                yield path
                continue
            job = make_job(path, classifier.prep, classifier.stride, options, planes)
            first_parts[path] = job
            yield job
            # Before waiting on the source (a watched folder may be quiet for hours).
            while more:
                yield more.popleft()
        # The source is done, but a first part in flight may still add parts: ask again.
        while more or first_parts:
            yield more.popleft() if more else QUIET

    batch: deque[tuple[str, int, np.ndarray, Planes | None]] = deque()

    def finish(path: str) -> VideoResult:
        video = pending.pop(path)
        if video.error is not None:
            return VideoResult.failed(path, video.error, model=classifier.id)
        kept = [i for i, span in enumerate(video.spans) if span is not None]
        views = np.concatenate([video.probs[i * crops : (i + 1) * crops] for i in kept])
        spans = [video.spans[i] for i in kept]
        return video_result(video.info, spans, views, classes, rule, options.timeline, classifier.id)  # type: ignore[arg-type]

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    def run_batch(size: int) -> Iterator[VideoResult]:
        items = [batch.popleft() for _ in range(min(size, len(batch)))]
        # Clips of one kind (RGB, or planes of one colour matrix and crop) go through together.
        kinds: dict[Planes | None, list[tuple[str, int, np.ndarray]]] = {}
        for path, view, frames, kind in items:
            kinds.setdefault(kind, []).append((path, view, frames))
        for kind, group in kinds.items():
            if stopping():
                return
            stacked = classifier.stack([frames for _, _, frames in group])
            probs = classifier.predict(stacked) if kind is None else classifier.predict(stacked, kind)
            for (path, view, _), p in zip(group, probs, strict=True):
                video = pending[path]
                video.probs[view] = p
                video.views_left -= 1
                if video.finished:
                    yield finish(path)

    def landed(path: str, outcome: Decoded | str) -> Iterator[VideoResult]:
        """Take one decoded part (or why it failed) of ``path``."""
        job = first_parts.pop(path, None)
        if job is not None:  # the first part: now the number of clips and parts is known
            if isinstance(outcome, str):
                yield VideoResult.failed(path, outcome, model=classifier.id)
                return
            info = outcome[0]
            planned = len(plan_clips(job, info))
            count = parts(job, info)
            more.extend(replace(job, part=k) for k in range(1, count))
            spans: list[tuple[float, float] | None] = [None] * planned
            probs = np.zeros((planned * crops, len(classes)), dtype=np.float32)
            pending[path] = _Pending(info, spans, probs, parts_left=count)
        video = pending[path]
        video.parts_left -= 1
        if isinstance(outcome, str):
            video.error = video.error or outcome
        elif video.error is None:
            for clip in outcome[1]:
                video.spans[clip.index] = (clip.start_s, clip.end_s)
                # Planes are cut to the one centre crop already.
                cut = [clip.frames] if clip.planes else views(clip.frames, classifier.prep.crop, crops)
                batch.extend((path, clip.index * crops + k, f, clip.planes) for k, f in enumerate(cut))
                video.views_left += len(cut)
        if video.error is not None:
            # Clips of a failed video already queued are scored for nothing, but are harmless.
            video.views_left = sum(1 for p, *_ in batch if p == path)
        if video.finished:
            yield finish(path)

    for item in decoder.run(jobs(), stop):
        if stopping():
            return
        if isinstance(item, Quiet):
            while batch and not stopping():
                yield from run_batch(batch_size)
            continue
        yield from landed(*item)
        while len(batch) >= batch_size and not stopping():
            yield from run_batch(batch_size)
    while batch and not stopping():
        yield from run_batch(batch_size)


def labelling(classifier: Classifier, options: TagOptions) -> Labelling:
    """The rule that makes tags from ``classifier``'s scores with ``options``."""
    return Labelling.of(options, classifier.calibration, classifier.multi_label)


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

    @property
    def labelling(self) -> Labelling:
        return labelling(self.classifier, self.options)

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
