"""Clip probabilities -> a video's verdict: each clip's crops averaged, then the clips;
with a timeline, its segments too."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tagger.options import TagOptions
from tagger.records import ClipScore, Tag, VideoInfo, VideoResult
from tagger.segments import with_timeline


def top_tags(
    probs: np.ndarray, labels: Sequence[str], top_k: int, threshold: float | None
) -> tuple[Tag, ...]:
    """The ``top_k`` best labels, dropping those under ``threshold``."""
    order = np.argsort(-probs, kind="stable")[:top_k]
    return tuple(Tag(labels[i], float(probs[i])) for i in order if threshold is None or probs[i] >= threshold)


def video_result(
    info: VideoInfo,
    spans: Sequence[tuple[float, float]],
    view_probs: np.ndarray,
    classes: tuple[str, ...],
    options: TagOptions,
    model: str,
) -> VideoResult:
    """The result of a video whose clips cover ``spans``; ``view_probs`` is ``(clips * crops,
    classes)``, the crops of each clip next to each other. The video's score is the mean over
    its clips, so the whole video counts, not its first seconds."""
    per_clip = view_probs.astype(np.float64).reshape(len(spans), -1, view_probs.shape[-1]).mean(axis=1)
    result = VideoResult(
        path=info.path,
        tags=top_tags(per_clip.mean(axis=0), classes, options.top_k, options.threshold),
        clips=len(spans),
        duration_s=info.duration_s,
        model=model,
        classes=classes,
        clip_scores=tuple(
            ClipScore(start, end, tuple(float(p) for p in probs))
            for (start, end), probs in zip(spans, per_clip, strict=True)
        ),
        timeline=options.timeline is not None,
    )
    return with_timeline(result, options.timeline)
