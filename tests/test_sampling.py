"""Clip plans: how many clips, where they go, and the random training clip."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tagger.clips.sampling import (
    DEFAULT_STRIDE,
    MAX_AUTO_CLIPS,
    auto_clip_count,
    clip_at,
    clip_indices,
    clip_span,
    uniform_clips,
)


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (3.0, 1),
        (10.0, 1),
        (10.5, 2),
        (25.0, 3),
        (80.0, 8),
        (3600.0, MAX_AUTO_CLIPS),
        (0.0, 1),
        (-5.0, 1),
        (math.nan, 1),
        (math.inf, 1),
    ],
)
def test_auto_clip_count(duration: float, expected: int) -> None:
    assert auto_clip_count(duration) == expected


def test_max_auto_clips_is_eight() -> None:
    assert MAX_AUTO_CLIPS == 8
    assert auto_clip_count(3600.0) == 8


def test_clip_span() -> None:
    assert clip_span(16, 4) == 61
    assert clip_span(16, 1) == 16
    assert clip_span(1, 4) == 1


@pytest.mark.parametrize(("total", "clips"), [(1000, 8), (1000, 1), (300, 3), (61, 2), (10_883, 8)])
def test_uniform_clips_shape_stride_and_range(total: int, clips: int) -> None:
    num_frames, stride = 16, DEFAULT_STRIDE
    plan = uniform_clips(total, num_frames, stride, clips)
    assert 1 <= len(plan) <= clips
    for indices in plan:
        assert len(indices) == num_frames
        assert [b - a for a, b in itertools.pairwise(indices)] == [stride] * (num_frames - 1)
        assert indices[0] >= 0 and indices[-1] < total
    starts = [c[0] for c in plan]
    assert starts == sorted(set(starts)), "clips are ordered and never repeated"


def test_uniform_clips_count_when_room() -> None:
    assert len(uniform_clips(1000, 16, 4, 8)) == 8
    assert len(uniform_clips(1000, 16, 4, 3)) == 3


def test_uniform_clips_exact_starts() -> None:
    # 200 frames, 2 clips of span 29: centres 50 and 150, minus half a span (14.5).
    assert [c[0] for c in uniform_clips(200, 8, 4, 2)] == [36, 136]
    assert uniform_clips(200, 8, 4, 2)[1] == [136, 140, 144, 148, 152, 156, 160, 164]


def test_uniform_clips_spread_over_whole_video() -> None:
    total, num_frames, stride, clips = 1000, 16, 4, 8
    plan = uniform_clips(total, num_frames, stride, clips)
    segment = total / clips
    # First clip starts in the first segment, last clip ends in the last one.
    assert plan[0][0] < segment
    assert plan[-1][-1] >= total - segment
    # Every clip is centred on its own segment (within a frame).
    for i, indices in enumerate(plan):
        centre = (indices[0] + indices[-1]) / 2
        assert abs(centre - (i + 0.5) * segment) <= 1
    # The second half is covered, not only the start of the video.
    assert sum(1 for c in plan if c[0] >= total / 2) == clips // 2


def test_uniform_clips_single_clip_is_centred() -> None:
    (indices,) = uniform_clips(1000, 16, 4, 1)
    assert indices[0] == round(500 - 61 / 2)
    assert indices[-1] == indices[0] + 60


def test_uniform_clips_collapse_for_short_video() -> None:
    # Just longer than a span: the 8 requested starts clamp onto few distinct ones.
    plan = uniform_clips(70, 16, 4, 8)
    assert len(plan) < 8
    assert plan[0][0] == 0
    assert plan[-1][-1] == 69  # the last clip ends at the last frame (start clamped to total - span)


@pytest.mark.parametrize("total", [1, 3, 10, 60])
def test_short_video_gives_one_stretched_clip(total: int) -> None:
    num_frames, stride = 16, 4  # span 61 > total
    plan = uniform_clips(total, num_frames, stride, 5)
    assert len(plan) == 1
    (indices,) = plan
    assert len(indices) == num_frames
    assert indices[0] == 0
    assert indices[-1] == total - 1
    assert indices == sorted(indices)
    assert all(0 <= i < total for i in indices)
    if total < num_frames:
        assert len(set(indices)) == total, "every frame is used, some repeated"


def test_short_video_exact_indices() -> None:
    assert uniform_clips(3, 4, 4, 2) == [[0, 1, 1, 2]]
    assert uniform_clips(1, 4, 4, 1) == [[0, 0, 0, 0]]


def test_clip_indices_rejects_empty_video() -> None:
    with pytest.raises(ValueError):
        clip_indices(0, 16, 4, 0)


@pytest.mark.parametrize("total", [61, 62, 100, 5000])
def test_clip_at_a_random_fraction_in_range(total: int) -> None:
    rng = random.Random(1)
    starts = set()
    for _ in range(200):
        indices = clip_at(total, 16, 4, rng.random())
        assert len(indices) == 16
        assert indices[0] >= 0 and indices[-1] <= total - 1
        assert [b - a for a, b in itertools.pairwise(indices)] == [4] * 15
        starts.add(indices[0])
    if total > 61:
        assert len(starts) > 1, "the start is random"
    else:
        assert starts == {0}


def test_clip_at_a_random_fraction_reaches_both_ends() -> None:
    rng = random.Random(0)
    starts = {clip_at(64, 16, 4, rng.random())[0] for _ in range(300)}
    assert starts == {0, 1, 2, 3}


def test_clip_at_a_random_fraction_reproducible() -> None:
    a = [clip_at(1000, 16, 4, random.Random(42).random()) for _ in range(3)]
    rng1, rng2 = random.Random(7), random.Random(7)
    seq1 = [clip_at(1000, 16, 4, rng1.random()) for _ in range(20)]
    seq2 = [clip_at(1000, 16, 4, rng2.random()) for _ in range(20)]
    assert a[0] == a[1] == a[2]
    assert seq1 == seq2
    assert len({tuple(c) for c in seq1}) > 1


def test_clip_at_a_random_fraction_short_video_stretched() -> None:
    indices = clip_at(10, 16, 4, random.Random(0).random())
    assert indices == uniform_clips(10, 16, 4, 1)[0]
    assert indices[0] == 0 and indices[-1] == 9
