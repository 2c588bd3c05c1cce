"""Where clips go in a video: one plan shared by training and tagging.

A plan is a list of frame indices per clip. Tagging spreads clips uniformly over the whole
video; training draws one random clip. Both use the same span (``num_frames`` frames taken
every ``stride`` frames), so a model sees at tagging time the clips it saw when it learned.
"""

from __future__ import annotations

import math

#: The fine-tuning guide samples 16 frames over 64 (sample_rate 4); used when the model
#: directory does not record its own stride.
DEFAULT_STRIDE = 4
#: Default clip count: one clip per this many seconds, between 1 and MAX_AUTO_CLIPS.
SECONDS_PER_CLIP = 10.0
MAX_AUTO_CLIPS = 8


def auto_clip_count(duration_s: float) -> int:
    """Clips for whole-video coverage: one per ~10 s of video, at least 1, at most 8."""
    if not math.isfinite(duration_s) or duration_s <= 0:
        return 1
    return max(1, min(MAX_AUTO_CLIPS, math.ceil(duration_s / SECONDS_PER_CLIP)))


def clip_span(num_frames: int, stride: int) -> int:
    """Frames covered by one clip from its first to its last sampled frame, inclusive."""
    return (num_frames - 1) * stride + 1


def clip_indices(start: int, num_frames: int, stride: int, total: int) -> list[int]:
    """Frame indices of one clip; a video shorter than the span is stretched by repeating frames."""
    if total <= 0:
        raise ValueError("a video needs at least one frame")
    if total < clip_span(num_frames, stride):
        # Cover the whole short video; frames repeat where it has fewer than the clip needs.
        return [round(i * (total - 1) / max(1, num_frames - 1)) for i in range(num_frames)]
    return [start + i * stride for i in range(num_frames)]


def uniform_clips(total: int, num_frames: int, stride: int, clips: int) -> list[list[int]]:
    """``clips`` clips centred on equal segments of the video (frame indices per clip)."""
    span = clip_span(num_frames, stride)
    if total < span:
        return [clip_indices(0, num_frames, stride, total)]
    last_start = total - span
    starts = []
    for i in range(clips):
        centre = (i + 0.5) * total / clips
        starts.append(min(last_start, max(0, round(centre - span / 2))))
    # Clips of a very short video collapse onto the same start; scoring one twice adds nothing.
    unique = sorted(set(starts))
    return [clip_indices(s, num_frames, stride, total) for s in unique]


def clip_at(total: int, num_frames: int, stride: int, fraction: float) -> list[int]:
    """One clip starting ``fraction`` (0 to 1) of the way through the possible starts."""
    span = clip_span(num_frames, stride)
    start = round(min(1.0, max(0.0, fraction)) * (total - span)) if total >= span else 0
    return clip_indices(start, num_frames, stride, total)


def timeline_step(fps: float, num_frames: int, stride: int, step_s: float | None) -> int:
    """Frames between timeline clip starts: ``step_s`` seconds, or one clip length."""
    if step_s is None or not math.isfinite(fps) or fps <= 0:
        return clip_span(num_frames, stride)
    return max(1, round(step_s * fps))


def timeline_clips(total: int, num_frames: int, stride: int, step: int) -> list[list[int]]:
    """Clips every ``step`` frames from the first frame, plus one ending on the last frame when
    the steps stop short of it: every frame of the video is in a clip when ``step`` is at most
    one clip length. No cap on the count: this is the plan of a timeline."""
    span = clip_span(num_frames, stride)
    if total < span:
        return [clip_indices(0, num_frames, stride, total)]
    starts = list(range(0, total - span + 1, step))
    if starts[-1] < total - span:
        starts.append(total - span)
    return [clip_indices(s, num_frames, stride, total) for s in starts]
