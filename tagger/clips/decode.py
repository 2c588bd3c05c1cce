"""Cut the planned clips of a video with PyAV (the clips/ decode and probe modules are the only
ones importing ``av``).

Runs inside decode worker processes: a job goes in, ``(VideoInfo, [Clip])`` comes out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tagger.clips import planes as yuv
from tagger.clips import sampling
from tagger.clips.crops import centre_crop
from tagger.clips.probe import (
    as_float,
    ffmpeg_message,
    frame_rotation,
    open_video,
    probe_stream,
    turned,
    video_stream,
)
from tagger.options import MAX_DURATION_S as DEFAULT_MAX_DURATION_S
from tagger.options import MAX_PIXELS as DEFAULT_MAX_PIXELS
from tagger.options import TIMELINE_PART_CLIPS
from tagger.records import Clip, DecodeError, Planes, VideoInfo

if TYPE_CHECKING:
    from tagger.options import TagOptions
    from tagger.transforms import Preprocessing

#: Decode forward instead of seeking when the next clip starts less than this far ahead.
_SEEK_GAP_S = 2.0


@dataclass(frozen=True)
class DecodeJob:
    """Everything a worker needs to cut the clips of one file (picklable)."""

    path: str
    num_frames: int = 16
    stride: int = sampling.DEFAULT_STRIDE
    clips: int | None = None
    #: When set, one clip this far (0 to 1) through the video instead of uniform clips (training).
    start_fraction: float | None = None
    #: A timeline: clips every ``step_s`` seconds (None: one clip length) over the whole video,
    #: of which this job cuts part ``part`` (``part_clips`` clips from clip ``part * part_clips``).
    timeline: bool = False
    step_s: float | None = None
    part: int = 0
    part_clips: int = TIMELINE_PART_CLIPS
    short_side: int | None = 224
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    threads: int = 2
    #: Ship YUV 4:2:0 planes where the video allows (``tagger.clips.planes``), not RGB.
    planes: bool = False


def make_job(
    path: str, prep: Preprocessing, stride: int, options: TagOptions, planes: bool = False
) -> DecodeJob:
    """The decode job that cuts exactly the clips a model with ``prep`` and ``stride`` expects
    (tagging, evaluation and preview all decode through it). ``planes``: clips may come as
    YUV planes, for a model that converts them on its device."""
    return DecodeJob(
        path=path,
        num_frames=prep.num_frames,
        stride=stride,
        clips=options.clips,
        short_side=prep.short_side,
        size=prep.size,
        # Three crops are cut from the resized frames after decoding (``tagger.clips.crops``).
        crop=prep.crop if options.crops == 1 else None,
        max_pixels=options.max_pixels,
        max_duration_s=options.max_duration_s,
        timeline=options.timeline is not None,
        step_s=options.timeline.step_s if options.timeline else None,
        planes=planes and options.crops == 1,
    )


def plan_clips(job: DecodeJob, info: VideoInfo) -> list[list[int]]:
    """Every clip of ``job``'s plan for the video ``info`` describes (all parts of a timeline)."""
    if job.start_fraction is not None:
        return [sampling.clip_at(info.frames, job.num_frames, job.stride, job.start_fraction)]
    if job.timeline:
        step = sampling.timeline_step(info.fps, job.num_frames, job.stride, job.step_s)
        return sampling.timeline_clips(info.frames, job.num_frames, job.stride, step)
    count = job.clips or sampling.auto_clip_count(info.duration_s)
    return sampling.uniform_clips(info.frames, job.num_frames, job.stride, count)


def parts(job: DecodeJob, info: VideoInfo) -> int:
    """How many jobs (parts) cut all of ``job``'s clips: one, except for a long timeline."""
    return math.ceil(len(plan_clips(job, info)) / job.part_clips) if job.timeline else 1


def ready() -> None:
    """A no-op job: scheduling it starts a worker process, which imports this module."""


def run_job(job: DecodeJob) -> tuple[VideoInfo, list[Clip]]:
    """Worker entry point: probe and decode, with every failure turned into a DecodeError."""
    try:
        return decode_clips(job)
    except DecodeError:
        raise
    except av.FFmpegError as exc:
        raise DecodeError(f"cannot decode: {ffmpeg_message(exc)}") from None
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        raise DecodeError(f"cannot decode: {exc}") from None


def _target_size(frame: Any, sar: float, job: DecodeJob) -> tuple[int, int, int]:
    """Size to convert to, in coded orientation, and the rotation to apply after.

    Matches the model's resize: the displayed short side becomes ``job.short_side`` (long side
    floored, as transformers does), or the frame becomes exactly ``job.size``.
    """
    rotation = frame_rotation(frame)
    coded_w, coded_h = frame.width * sar, float(frame.height)
    if job.size is not None:
        height, width = job.size
        return (*turned(width, height, rotation), rotation)
    short = job.short_side or round(min(coded_w, coded_h))
    if coded_w <= coded_h:
        return short, max(1, int(short * coded_h / coded_w)), rotation
    return max(1, int(short * coded_w / coded_h)), short, rotation


def _to_rgb(
    frame: Any, size: tuple[int, int, int], crop: tuple[int, int] | None, reformatter: Any
) -> np.ndarray:
    width, height, rotation = size
    # One swscale call converts and resizes; later stages never touch full-size frames. The
    # reformatter is reused: a new swscale context per frame cost more than the scaling.
    rgb = reformatter.reformat(
        frame, format="rgb24", width=width, height=height, interpolation="BILINEAR"
    ).to_ndarray()
    if rotation:
        # rotation is counter-clockwise degrees from the display matrix.
        rgb = np.rot90(rgb, k=rotation // 90)
    if crop:
        rgb = centre_crop(rgb, crop)
    return np.ascontiguousarray(rgb)


def decode_clips(job: DecodeJob) -> tuple[VideoInfo, list[Clip]]:
    """Probe ``job.path`` and decode its clips, spread over the whole video."""
    container = open_video(job.path)
    try:
        stream = video_stream(container, job.path)
        info = probe_stream(job.path, container, stream, job.max_pixels, job.max_duration_s)
        plan = plan_clips(job, info)
        first = 0
        if job.timeline:
            first = job.part * job.part_clips
            plan = plan[first : first + job.part_clips]
        frames = _Frames(job.path, container, stream, info.fps, job.threads)
        try:
            clips = list(_cut(frames, info, plan, job, first))
        finally:
            frames.close()
    finally:
        container.close()
    if not clips:
        if job.part > 0:
            return info, []  # the video ended before this part's clips
        raise DecodeError("no frames could be decoded")
    height, width = clips[0].size
    return replace(info, width=width, height=height, rotation=frames.rotation), clips


class _Frames:
    """Decoded frames with their time in seconds from the stream start, seekable."""

    def __init__(self, path: str, container: Any, stream: Any, fps: float, threads: int) -> None:
        self.path, self.container, self.fps, self.threads = path, container, fps, threads
        #: A frame this close to a wanted time (half a frame) is the frame for it.
        self.tolerance = 0.5 / fps
        self._use(stream)
        self.seekable = True
        self._landed = False
        self.rotation = 0

    def _use(self, stream: Any) -> None:
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        self.stream = stream
        self.start_pts = stream.start_time or 0
        self._iter: Iterator[Any] | None = None
        self._count = 0
        self._restart(0.0)

    def _restart(self, position_s: float) -> None:
        """Decoding goes on from ``position_s``, with no frame handed out since."""
        self._pending: tuple[float, Any] | None = None
        self._handed = False
        #: The time of the last frame handed out, or where decoding resumes before the first.
        self.position_s = position_s

    def seek(self, t: float) -> None:
        """Go to a frame at or before ``t``, so that decoding forward reaches the frame for ``t``."""
        if not self.seekable:
            # Decoding on reaches any later time; an earlier one needs the start again (slow,
            # but only overlapping clips of a stream that cannot seek come back).
            if self.behind(t):
                self._rewind()
            return
        back = 0.0
        while t - back > 0:
            landed = self._seek_to(t - back)
            if landed is None or (landed == math.inf and not self._landed):
                # This stream cannot seek (raw streams; HEVC in MPEG-TS seeks to where nothing
                # decodes): decode from the start, and only forward from now on.
                self.seekable = False
                self._rewind()
                return
            if landed <= t + self.tolerance:
                return
            # Landed after t: some seeks (MPEG-TS, MPEG-PS, VVC in MP4) come back at the keyframe
            # after the time asked for (or past the last one, where nothing decodes), and decoding
            # on from there would start the clip late. Ask again further back.
            back = max(2 * back, landed - t if landed < math.inf else 0.0, 1.0)
        # Even asking for the stream start did not land before t.
        self._rewind()

    def _seek_to(self, t: float) -> float | None:
        """Seek to a keyframe near ``t``: the time of the first frame decoded there (kept for
        ``__next__``), inf when nothing decodes from there, None when the seek failed."""
        pts = self.start_pts + int(t / self.stream.time_base)
        try:
            self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        except av.FFmpegError:
            # Raw streams cannot seek, and FFmpeg's generic seek has read the file to its end
            # looking for the time: nothing would decode from here.
            return None
        self._iter = None
        self._restart(t)
        first = self._decode()
        if first is None:
            return math.inf
        if first[1].pts is None:
            # A frame without a timestamp cannot tell where the seek landed.
            return None
        # A seek of this stream has come to a point that decodes, so a later one that finds
        # nothing went past the last keyframe rather than nowhere.
        self._landed = True
        self._pending = first
        return first[0]

    def _rewind(self) -> None:
        """Reopen and decode from the start: the fallback for streams that do not seek where asked."""
        index = self.stream.index
        self.container.close()
        # The path itself, not container.name, which carries open_video's "file:" prefix.
        self.container = open_video(self.path)
        self._use(self.container.streams[index])

    def _decode(self) -> tuple[float, Any] | None:
        """The next decoded frame with its time, or None at the end of the stream."""
        if self._iter is None:
            self._iter = self.container.decode(self.stream)
        frame = next(self._iter, None)
        if frame is None:
            return None
        if frame.pts is not None:
            t = float((frame.pts - self.start_pts) * self.stream.time_base)
        else:
            # Frame k (from 0) of a stream without timestamps starts at k / fps.
            t = self._count / self.fps
        self._count += 1
        return t, frame

    def behind(self, t: float) -> bool:
        """Whether the frame for time ``t`` may already have been handed out."""
        return self._handed and self.position_s >= t - self.tolerance

    def __iter__(self) -> Iterator[tuple[float, Any]]:
        return self

    def __next__(self) -> tuple[float, Any]:
        item, self._pending = self._pending, None
        if item is None:
            item = self._decode()
            if item is None:
                raise StopIteration
        self.position_s, self._handed = item[0], True
        return item

    def close(self) -> None:
        self.container.close()


def _cut(
    frames: _Frames, info: VideoInfo, plan: list[list[int]], job: DecodeJob, first: int = 0
) -> Iterator[Clip]:
    """The clips of ``plan``, numbered from ``first``; a clip past the video's end is left out."""
    sar = as_float(frames.stream.sample_aspect_ratio) or 1.0
    half_frame = frames.tolerance
    size: tuple[int, int, int] | None = None
    planes: Planes | None = None
    reformatter = VideoReformatter()
    for index, indices in enumerate(plan, start=first):
        start_s = indices[0] / info.fps
        # Offsets from the clip's first frame; a stretched short clip repeats offsets.
        offsets = [i - indices[0] for i in indices]
        kept: list[np.ndarray] = []
        times: list[float] = []
        want = iter(offsets)
        offset = next(want)
        n = 0
        try:
            # Back when the clip's first frame may already be behind (overlapping clips, or one
            # that starts on the frame the last one ended with); ahead when it is far.
            if frames.behind(start_s) or start_s - frames.position_s > _SEEK_GAP_S:
                frames.seek(start_s)
            for t, frame in frames:
                if t < start_s - half_frame:
                    continue
                while n == offset:
                    if size is None:
                        size = _target_size(frame, sar, job)
                        frames.rotation = size[2]
                        if job.planes:
                            planes = yuv.describe(frame, *size, job.crop)
                    if not kept or times[-1] != t:
                        if planes is not None:
                            pixels = yuv.cut(frame, planes, size[0], size[1], reformatter)
                        else:
                            pixels = _to_rgb(frame, size, job.crop, reformatter)
                    kept.append(pixels)
                    times.append(t)
                    nxt = next(want, None)
                    if nxt is None:
                        break
                    offset = nxt
                if len(kept) == len(offsets):
                    break
                n += 1
        except av.FFmpegError as exc:
            raise DecodeError(
                f"decoding failed near {frames.position_s:.2f} s: {ffmpeg_message(exc)}"
            ) from None
        if not kept:
            continue
        # The video ended before the clip did: pad by repeating its last frame.
        while len(kept) < len(offsets):
            kept.append(kept[-1])
            times.append(times[-1])
        yield Clip(
            path=info.path,
            index=index,
            start_s=times[0],
            end_s=times[-1] + 1.0 / info.fps,
            frames=np.stack(kept),
            planes=planes,
        )
