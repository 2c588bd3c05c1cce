"""Clip scores -> a timeline: per label, the stretches of a video where it holds.

Each label is followed on its own, so several actions can hold at once (someone talks while
cooking). A segment opens at a clip scoring at least ``enter`` and closes before the first clip
under ``leave``: with ``leave < enter`` a score hovering near one threshold does not flicker. A
dip of at most one clip between two segments of a label is bridged, and what is left shorter
than ``min_s`` is dropped. Times are the clips' own, which come from frame timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tagger.options import TimelineOptions
from tagger.records import ClipScore, Segment, VideoResult


def segments(
    clip_scores: Sequence[ClipScore],
    classes: Sequence[str],
    options: TimelineOptions,
    scores: np.ndarray | None = None,
    enter: np.ndarray | None = None,
) -> tuple[Segment, ...]:
    """The segments of every label, ordered by start (then label).

    ``scores`` (clips x ``classes``) stand in for the clips' own (the user's labels of
    ``tagger.labels``); ``enter``: a threshold per label in place of ``options.enter``, with
    ``leave`` kept in the same proportion to it (calibrated thresholds).
    """
    if not clip_scores or not classes:
        return ()
    if scores is None:
        scores = np.array([c.scores for c in clip_scores], dtype=np.float64)
    enters = np.full(len(classes), options.enter) if enter is None else np.asarray(enter, dtype=np.float64)
    ratio = options.leave / options.enter if options.enter else 1.0
    starts = np.array([c.start_s for c in clip_scores])
    ends = np.array([c.end_s for c in clip_scores])
    # One clip's length: the longest gap a dip of one clip leaves (clips may overlap or not).
    clip_s = float(np.median(ends - starts)) if len(clip_scores) > 1 else 0.0
    found: list[Segment] = []
    for label in np.flatnonzero(scores.max(axis=0) >= enters):
        column = scores[:, label]
        runs: list[list[int]] = []
        for first, last in _runs(column, enters[label], enters[label] * ratio):
            if runs and starts[first] - ends[runs[-1][1]] <= clip_s * 1.01:
                runs[-1][1] = last  # bridge a dip of at most one clip
            else:
                runs.append([first, last])
        for first, last in runs:
            start, end = float(starts[first]), float(ends[last])
            if end - start < options.min_s:
                continue
            inside = column[first : last + 1]
            found.append(Segment(classes[int(label)], start, end, float(inside.mean()), float(inside.max())))
    return tuple(sorted(found, key=lambda s: (s.start_s, s.label)))


def _runs(column: np.ndarray, enter: float, leave: float) -> list[tuple[int, int]]:
    """``(first, last)`` clip indices of each stretch the hysteresis keeps open."""
    runs, first = [], None
    for i, score in enumerate(column):
        if first is None:
            if score >= enter:
                first = i
        elif score < leave:
            runs.append((first, i - 1))
            first = None
    if first is not None:
        runs.append((first, len(column) - 1))
    return runs


def with_timeline(result: VideoResult, options: TimelineOptions | None) -> VideoResult:
    """``result`` with its segments made from its clip scores (none without a timeline)."""
    if options is None or not result.timeline or not result.ok:
        return result
    return replace(result, segments=segments(result.clip_scores, result.classes, options))
