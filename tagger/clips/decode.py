"""Probe a video and cut its planned clips with PyAV (the only module that imports ``av``).

Runs inside decode worker processes: a job goes in, ``(VideoInfo, [Clip])`` comes out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tagger.clips import sampling
from tagger.clips.crops import centre_crop
from tagger.options import MAX_DURATION_S as DEFAULT_MAX_DURATION_S
from tagger.options import MAX_PIXELS as DEFAULT_MAX_PIXELS
from tagger.records import Clip, DecodeError, VideoInfo, VideoTooLargeError

if TYPE_CHECKING:
    from tagger.options import TagOptions
    from tagger.transforms import Preprocessing

#: Frame rates above this are container time bases, not frame rates (MKV/FLV report 1000).
_MAX_PLAUSIBLE_FPS = 240.0
#: The average rate raw elementary stream demuxers give every stream (their default).
_RAW_DEFAULT_FPS = 25.0
#: Decode forward instead of seeking when the next clip starts less than this far ahead.
_SEEK_GAP_S = 2.0
#: Files up to this size without a frame count in the header get their packets counted.
_COUNT_PACKETS_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DecodeJob:
    """Everything a worker needs to cut the clips of one file (picklable)."""

    path: str
    num_frames: int = 16
    stride: int = sampling.DEFAULT_STRIDE
    clips: int | None = None
    #: When set, one clip this far (0 to 1) through the video instead of uniform clips (training).
    start_fraction: float | None = None
    short_side: int | None = 224
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    threads: int = 2


def make_job(path: str, prep: Preprocessing, stride: int, options: TagOptions) -> DecodeJob:
    """The decode job that cuts exactly the clips a model with ``prep`` and ``stride`` expects
    (tagging, evaluation and preview all decode through it)."""
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
    )


def ready() -> None:
    """A no-op job: scheduling it starts a worker process, which imports this module."""


def run_job(job: DecodeJob) -> tuple[VideoInfo, list[Clip]]:
    """Worker entry point: probe and decode, with every failure turned into a DecodeError."""
    try:
        return decode_clips(job)
    except DecodeError:
        raise
    except av.FFmpegError as exc:
        raise DecodeError(f"cannot decode: {_ffmpeg_message(exc)}") from None
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        raise DecodeError(f"cannot decode: {exc}") from None


def _ffmpeg_message(exc: av.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _open(path: str) -> Any:
    try:
        # "file:" makes FFmpeg take the name as it is: without it a name such as
        # "concat:a.mp4" or "http:x.mp4" in the current folder is read as a protocol.
        return av.open("file:" + path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise DecodeError(f"not a readable video: {_ffmpeg_message(exc)}") from None


def _video_stream(container: Any, path: str) -> Any:
    if not container.streams.video:
        raise DecodeError("no video stream")
    return container.streams.best("video") or container.streams.video[0]


def _rate(value: Fraction | None) -> float:
    return float(value) if value else 0.0


def _estimate_fps(stream: Any, frames: int, duration_s: float | None) -> float:
    if frames > 0 and duration_s:
        return frames / duration_s
    average, guessed = _rate(stream.average_rate), _rate(stream.guessed_rate)
    if average == _RAW_DEFAULT_FPS and 0 < guessed <= _MAX_PLAUSIBLE_FPS:
        # Raw elementary stream demuxers report 25 whatever the stream was coded at; the
        # guessed rate comes from the stream's own timing (SPS, VOL) when it has one.
        average = guessed
    for candidate in (average, guessed, _rate(stream.base_rate)):
        if 0 < candidate <= _MAX_PLAUSIBLE_FPS:
            return candidate
    return _RAW_DEFAULT_FPS


def _small(path: str) -> bool:
    try:
        return os.path.getsize(path) <= _COUNT_PACKETS_MAX_BYTES
    except OSError:
        return False


def _count_packets(path: str) -> tuple[int, float | None]:
    """Frames and duration of a stream whose header has neither (raw elementary streams)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        count, end, timed, untimed = 0, None, 0, False
        # Raw H.264 and HEVC packets have no timestamps, but the parser gives each a duration.
        lasting: Fraction | None = Fraction(0)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            count += 1
            if lasting is not None:
                known = packet.duration and packet.time_base
                lasting = lasting + packet.duration * packet.time_base if known else None
            if packet.pts is not None and packet.time_base:
                timed += 1
                t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                if end is None or t > end:
                    end, untimed = t, not packet.duration
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        if end is None:
            return count, float(lasting) if lasting else None
        if untimed and timed > 1:
            # The last packet has no duration (raw elementary streams), so the stream ends
            # where it starts: add the mean frame interval so the last frame counts too.
            end += (end - start) / (timed - 1)
        return count, end - start


def probe(
    path: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> VideoInfo:
    """Duration, frame rate, frame count and size of ``path``; refuses decoder bombs."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        info = _probe_stream(path, container, stream, max_pixels, max_duration_s)
        # PyAV shows the display matrix on decoded frames only, so the first one is decoded
        # (decode_clips reads it from the first frame it converts instead).
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise DecodeError(f"cannot decode: {_ffmpeg_message(exc)}") from None
        if first is None:
            raise DecodeError("no frames could be decoded")
        rotation = _rotation(first)
        width, height = _turned(info.width, info.height, rotation)
        return replace(info, width=width, height=height, rotation=rotation)


def _probe_stream(
    path: str, container: Any, stream: Any, max_pixels: int, max_duration_s: float
) -> VideoInfo:
    ctx = stream.codec_context
    width, height = ctx.width, ctx.height
    if width <= 0 or height <= 0:
        raise DecodeError("video stream has no frame size")
    if width * height > max_pixels:
        raise VideoTooLargeError(
            f"frame size {width}x{height} is over the cap of {max_pixels} pixels (--max-pixels)"
        )
    duration_s: float | None = None
    if stream.duration and stream.time_base:
        duration_s = float(stream.duration * stream.time_base)
    elif container.duration:
        duration_s = container.duration / av.time_base
    frames = stream.frames or 0
    if not duration_s or duration_s <= 0 or (not frames and _small(path)):
        # Without a frame count the rate is a guess (MKV and FLV report 1000 fps); counting
        # packets is exact and, for a small file, cheap.
        frames, counted_s = _count_packets(path)
        duration_s = duration_s if duration_s and duration_s > 0 else counted_s
    fps = _estimate_fps(stream, frames, duration_s)
    if not duration_s or duration_s <= 0:
        duration_s = frames / fps if frames else 0.0
    if duration_s > max_duration_s:
        raise VideoTooLargeError(
            f"duration {duration_s:.0f} s is over the cap of {max_duration_s:.0f} s (--max-duration)"
        )
    if frames <= 0:
        frames = max(1, round(duration_s * fps))
    return VideoInfo(
        path=path,
        duration_s=duration_s,
        fps=fps,
        frames=frames,
        width=width,
        height=height,
        # The codec, not the decoder that reads it (AV1 is decoded by "libdav1d").
        codec=ctx.codec.canonical_name,
    )


def _rotation(frame: Any) -> int:
    """Counter-clockwise degrees (0 to 359) the display matrix turns a decoded frame by."""
    return int(getattr(frame, "rotation", 0) or 0) % 360


def _turned(width: int, height: int, rotation: int) -> tuple[int, int]:
    """Width and height after turning by ``rotation``: a quarter turn swaps them (and back)."""
    return (width, height) if rotation % 180 == 0 else (height, width)


def _target_size(frame: Any, sar: float, job: DecodeJob) -> tuple[int, int, int]:
    """Size to convert to, in coded orientation, and the rotation to apply after.

    Matches the model's resize: the displayed short side becomes ``job.short_side`` (long side
    floored, as transformers does), or the frame becomes exactly ``job.size``.
    """
    rotation = _rotation(frame)
    coded_w, coded_h = frame.width * sar, float(frame.height)
    if job.size is not None:
        height, width = job.size
        return (*_turned(width, height, rotation), rotation)
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
    container = _open(job.path)
    try:
        stream = _video_stream(container, job.path)
        info = _probe_stream(job.path, container, stream, job.max_pixels, job.max_duration_s)
        if job.start_fraction is not None:
            plan = [sampling.clip_at(info.frames, job.num_frames, job.stride, job.start_fraction)]
        else:
            count = job.clips or sampling.auto_clip_count(info.duration_s)
            plan = sampling.uniform_clips(info.frames, job.num_frames, job.stride, count)
        frames = _Frames(job.path, container, stream, info.fps, job.threads)
        try:
            clips = list(_cut(frames, info, plan, job))
        finally:
            frames.close()
    finally:
        container.close()
    if not clips:
        raise DecodeError("no frames could be decoded")
    _, height, width, _ = clips[0].frames.shape
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
        # The path itself, not container.name, which carries _open's "file:" prefix.
        self.container = _open(self.path)
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


def _cut(frames: _Frames, info: VideoInfo, plan: list[list[int]], job: DecodeJob) -> Iterator[Clip]:
    sar = _rate(frames.stream.sample_aspect_ratio) or 1.0
    half_frame = frames.tolerance
    size: tuple[int, int, int] | None = None
    reformatter = VideoReformatter()
    for index, indices in enumerate(plan):
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
                    if not kept or times[-1] != t:
                        rgb = _to_rgb(frame, size, job.crop, reformatter)
                    kept.append(rgb)
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
                f"decoding failed near {frames.position_s:.2f} s: {_ffmpeg_message(exc)}"
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
        )
