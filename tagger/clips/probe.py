"""What a video file is: its video stream, frame rate, duration, frame count, size and rotation.

Refuses files over the size caps before anything is decoded. The clips/ decode and probe modules
are the only ones importing ``av``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from fractions import Fraction
from typing import Any

import av

from tagger.options import MAX_DURATION_S as DEFAULT_MAX_DURATION_S
from tagger.options import MAX_PIXELS as DEFAULT_MAX_PIXELS
from tagger.records import DecodeError, VideoInfo, VideoTooLargeError

#: Frame rates above this are container time bases, not frame rates (MKV/FLV report 1000).
_MAX_PLAUSIBLE_FPS = 240.0
#: The average rate raw elementary stream demuxers give every stream (their default).
_RAW_DEFAULT_FPS = 25.0
#: Files up to this size without a frame count in the header get their packets counted.
_COUNT_PACKETS_MAX_BYTES = 64 * 1024 * 1024


def ffmpeg_message(exc: av.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def open_video(path: str) -> Any:
    from tagger.sources.manifest import is_uri, open_input

    try:
        if is_uri(path):  # s3://, gs://, file://...: read through a file system library
            return av.open(open_input(path), metadata_errors="ignore")
        # "file:" makes FFmpeg take the name as it is: without it a name such as
        # "concat:a.mp4" or "http:x.mp4" in the current folder is read as a protocol.
        return av.open("file:" + path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise DecodeError(f"not a readable video: {ffmpeg_message(exc)}") from None


def video_stream(container: Any, path: str) -> Any:
    if not container.streams.video:
        raise DecodeError("no video stream")
    return container.streams.best("video") or container.streams.video[0]


def as_float(value: Fraction | None) -> float:
    """A stream's rate or aspect ratio as a float, 0.0 when the stream leaves it unset."""
    return float(value) if value else 0.0


def _estimate_fps(stream: Any, frames: int, duration_s: float | None) -> float:
    if frames > 0 and duration_s:
        return frames / duration_s
    average, guessed = as_float(stream.average_rate), as_float(stream.guessed_rate)
    if average == _RAW_DEFAULT_FPS and 0 < guessed <= _MAX_PLAUSIBLE_FPS:
        # Raw elementary stream demuxers report 25 whatever the stream was coded at; the
        # guessed rate comes from the stream's own timing (SPS, VOL) when it has one.
        average = guessed
    for candidate in (average, guessed, as_float(stream.base_rate)):
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
    with open_video(path) as container:
        stream = video_stream(container, path)
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
    with open_video(path) as container:
        stream = video_stream(container, path)
        info = probe_stream(path, container, stream, max_pixels, max_duration_s)
        # PyAV shows the display matrix on decoded frames only, so the first one is decoded
        # (decode_clips reads it from the first frame it converts instead).
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise DecodeError(f"cannot decode: {ffmpeg_message(exc)}") from None
        if first is None:
            raise DecodeError("no frames could be decoded")
        rotation = frame_rotation(first)
        width, height = turned(info.width, info.height, rotation)
        return replace(info, width=width, height=height, rotation=rotation)


def probe_stream(path: str, container: Any, stream: Any, max_pixels: int, max_duration_s: float) -> VideoInfo:
    """What the headers (and, where they fall short, the packets) tell of ``stream``, in coded
    orientation and with rotation 0: nothing is decoded, so the display matrix is not known yet."""
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


def frame_rotation(frame: Any) -> int:
    """Counter-clockwise degrees (0 to 359) the display matrix turns a decoded frame by."""
    return int(getattr(frame, "rotation", 0) or 0) % 360


def turned(width: int, height: int, rotation: int) -> tuple[int, int]:
    """Width and height after turning by ``rotation``: a quarter turn swaps them (and back)."""
    return (width, height) if rotation % 180 == 0 else (height, width)
