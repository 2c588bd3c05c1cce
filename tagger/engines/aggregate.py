"""Clip probabilities -> a video's verdict: each clip's crops averaged, then the clips; its
tags (and, with a timeline, its segments) are the labelling rule's (``tagger.labels``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tagger.labels import Labelling
from tagger.options import TimelineOptions
from tagger.records import ClipScore, VideoInfo, VideoResult


def video_result(
    info: VideoInfo,
    spans: Sequence[tuple[float, float]],
    view_probs: np.ndarray,
    classes: tuple[str, ...],
    labelling: Labelling,
    timeline: TimelineOptions | None,
    model: str,
) -> VideoResult:
    """The result of a video whose clips cover ``spans``; ``view_probs`` is ``(clips * crops,
    classes)``, the crops of each clip next to each other. The video's score is the mean over
    its clips, so the whole video counts, not its first seconds."""
    per_clip = view_probs.astype(np.float64).reshape(len(spans), -1, view_probs.shape[-1]).mean(axis=1)
    result = VideoResult(
        path=info.path,
        clips=len(spans),
        duration_s=info.duration_s,
        model=model,
        classes=classes,
        clip_scores=tuple(
            ClipScore(start, end, tuple(float(p) for p in probs))
            for (start, end), probs in zip(spans, per_clip, strict=True)
        ),
        timeline=timeline is not None,
    )
    return labelling.apply(result, timeline)
