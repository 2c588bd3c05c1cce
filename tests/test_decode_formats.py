"""Decoding paths that real sample files cover, on tiny videos generated here with PyAV.

Rotation from the display matrix, H.264 / HEVC / VP9 / AV1 in their usual containers, MPEG-TS
seeks that land after the time asked for or where nothing decodes, clips that start on or before
a frame already decoded, and a raw H.264 stream that refuses to seek. Frame ``i`` of most videos
shows ``i`` in binary (9 black or white stripes), so a decoded frame tells which source frame it
came from; the rotation videos have one red quadrant and a grey level that encodes ``i``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

import tagger.clips.decode as decode_mod
import tagger.clips.probe as probe_mod
from tagger.clips import sampling
from tagger.clips.decode import DecodeJob, decode_clips, run_job
from tagger.clips.probe import probe
from tagger.records import DecodeError

from .test_decode import index_of as pattern_index
from .test_decode import keyframe_count, pattern

W, H = 72, 48
FPS = 10
BITS = 9  # stripes of 8 pixels: frames 0 to 511
RED = (230, 30, 30)


# --- helpers ----------------------------------------------------------------------------------


def stripes(i: int) -> np.ndarray:
    return pattern(i, W, H, BITS)


def index_of(frame: np.ndarray) -> int:
    return pattern_index(frame, BITS)


def grey_level(i: int) -> int:
    return 24 + 20 * i


def quadrant_picture(i: int) -> np.ndarray:
    """Frame ``i`` (0 to 9): grey at ``grey_level(i)`` with the top-left quadrant red."""
    rgb = np.full((H, W, 3), grey_level(i), np.uint8)
    rgb[: H // 2, : W // 2] = RED
    return rgb


def quadrants(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Mean RGB of the four quadrants of a decoded frame, away from the edges between them."""
    h, w = frame.shape[:2]
    mh, mw = max(1, h // 8), max(1, w // 8)
    cells = {
        "top-left": frame[: h // 2, : w // 2],
        "top-right": frame[: h // 2, w // 2 :],
        "bottom-left": frame[h // 2 :, : w // 2],
        "bottom-right": frame[h // 2 :, w // 2 :],
    }
    return {k: c[mh:-mh, mw:-mw].reshape(-1, 3).mean(axis=0) for k, c in cells.items()}


def red_quadrant_and_index(frame: np.ndarray) -> tuple[str, int]:
    """Which quadrant of a decoded quadrant picture is red, and which frame the grey says it is."""
    means = quadrants(frame)
    red = [k for k, m in means.items() if m[0] > 180 and m[1] < 80 and m[2] < 80]
    assert len(red) == 1, means
    greys = [m for k, m in means.items() if k != red[0]]
    for m in greys:
        assert float(m.max() - m.min()) < 12, means  # grey, not a colour
    level = float(np.mean(greys))
    return red[0], round((level - grey_level(0)) / (grey_level(1) - grey_level(0)))


def encoder(candidates: Iterable[tuple[str, dict[str, str]]], what: str) -> tuple[str, dict[str, str]]:
    """The first of ``candidates`` (name, options) this PyAV's FFmpeg can encode with, else skip."""
    tried = []
    for name, options in candidates:
        tried.append(name)
        try:
            av.Codec(name, "w")
        except Exception:
            continue
        return name, options
    pytest.skip(f"the FFmpeg bundled with PyAV {av.__version__} has no {what} encoder ({', '.join(tried)})")


def encode(
    path: Path,
    pictures: Iterable[np.ndarray],
    codec: str,
    container_format: str | None = None,
    options: dict[str, str] | None = None,
    gop: int | None = None,
    rotation: int | None = None,
) -> Path:
    """Write ``pictures`` (RGB arrays) at FPS; ``rotation`` (counter-clockwise degrees) goes into
    the container's display matrix."""
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=FPS)
        assert isinstance(stream, av.video.stream.VideoStream)
        first = True
        for rgb in pictures:
            if first:
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                if gop is not None:
                    stream.codec_context.gop_size = gop
                if options:
                    stream.options = dict(options)  # their own rate control (crf and such)
                else:
                    stream.bit_rate = 2_000_000
                if rotation is not None:
                    stream.set_display_rotation(rotation)
                first = False
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def spy_rewinds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every fall back to decoding from the start (the file reopened, one entry each)."""
    calls: list[int] = []
    rewind = decode_mod._Frames._rewind

    def spy(self: decode_mod._Frames) -> None:
        calls.append(len(calls) + 1)
        rewind(self)

    monkeypatch.setattr(decode_mod._Frames, "_rewind", spy)
    return calls


def spy_seeks(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the time (s) of every seek the decoder asks the container for."""
    times: list[float] = []
    seek_to = decode_mod._Frames._seek_to

    def spy(self: decode_mod._Frames, t: float) -> float | None:
        times.append(t)
        return seek_to(self, t)

    monkeypatch.setattr(decode_mod._Frames, "_seek_to", spy)
    return times


def spy_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the frame number (time x FPS) of every frame the decoder hands to the clip cutter."""
    numbers: list[int] = []
    step = decode_mod._Frames.__next__

    def spy(self: decode_mod._Frames) -> tuple[float, object]:
        t, frame = step(self)
        numbers.append(round(t * FPS))
        return t, frame

    monkeypatch.setattr(decode_mod._Frames, "__next__", spy)
    return numbers


def assert_planned(clips: list, plan: list[list[int]], fps: float = FPS) -> None:
    """The clips hold exactly the planned source frames, with times from those frames."""
    assert len(clips) == len(plan)
    for clip, indices in zip(clips, plan, strict=True):
        assert [index_of(f) for f in clip.frames] == indices
        assert clip.start_s == pytest.approx(indices[0] / fps)
        assert clip.end_s == pytest.approx((indices[-1] + 1) / fps)


X264 = ("libx264", {"preset": "ultrafast", "crf": "12", "x264-params": "scenecut=0"})
X265 = ("libx265", {"preset": "ultrafast", "crf": "12", "x265-params": "log-level=error:scenecut=0"})


# --- rotation from the display matrix ---------------------------------------------------------


needs_display_matrix = pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason=f"PyAV {av.__version__} cannot write a display matrix (VideoStream.set_display_rotation)",
)

# Where the coded top-left quadrant is shown after turning the picture counter-clockwise by the
# display matrix's angle: a quarter turn left takes the top-left corner to the bottom-left.
SHOWN_AT = {0: "top-left", 90: "bottom-left", 180: "bottom-right", 270: "top-right"}
ROTATION_CODECS = [
    pytest.param("mpeg4", {}, "mp4", "mpeg4", id="mpeg4-mp4"),
    pytest.param(*X264, "mov", "h264", id="h264-mov"),
]


def rotated_video(folder: Path, codec: str, options: dict[str, str], ext: str, degrees: int) -> Path:
    if codec != "mpeg4":
        codec, options = encoder([(codec, options)], codec)
    path = encode(
        folder / f"rot{degrees}.{ext}",
        (quadrant_picture(i) for i in range(10)),
        codec,
        options=options,
        gop=4,
        rotation=degrees,
    )
    # The file really carries the matrix: read back, the frames say they must be turned.
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation % 360 == degrees % 360
    return path


@needs_display_matrix
@pytest.mark.parametrize(("codec", "options", "ext", "codec_name"), ROTATION_CODECS)
@pytest.mark.parametrize("degrees", [90, 270, -90, 180])
def test_rotation_from_display_matrix(
    tmp_path: Path, codec: str, options: dict[str, str], ext: str, codec_name: str, degrees: int
) -> None:
    path = rotated_video(tmp_path, codec, options, ext, degrees)
    rotation = degrees % 360
    quarter = rotation % 180 == 90
    shown_w, shown_h = (H, W) if quarter else (W, H)
    plan = sampling.uniform_clips(10, 4, 2, 1)  # [[2, 4, 6, 8]]

    info, clips = run_job(DecodeJob(str(path), num_frames=4, stride=2, short_side=None))
    assert info.rotation == rotation
    assert (info.width, info.height) == (shown_w, shown_h)
    assert (info.frames, info.fps, info.duration_s) == (10, pytest.approx(FPS), pytest.approx(1.0))
    assert info.codec == codec_name
    assert len(clips) == 1
    assert clips[0].frames.shape == (4, shown_h, shown_w, 3)
    for frame, i in zip(clips[0].frames, plan[0], strict=True):
        assert red_quadrant_and_index(frame) == (SHOWN_AT[rotation], i)

    # Resizing works on the displayed picture: its short side becomes 24 (long side 36).
    info, clips = run_job(DecodeJob(str(path), num_frames=4, stride=2, short_side=24))
    expected = (36, 24) if quarter else (24, 36)
    assert clips[0].frames.shape == (4, *expected, 3)
    assert (info.height, info.width) == expected
    assert red_quadrant_and_index(clips[0].frames[0]) == (SHOWN_AT[rotation], plan[0][0])

    # An exact size is the displayed height and width.
    info, clips = run_job(DecodeJob(str(path), num_frames=4, stride=2, size=(40, 30)))
    assert clips[0].frames.shape == (4, 40, 30, 3)
    assert red_quadrant_and_index(clips[0].frames[-1]) == (SHOWN_AT[rotation], plan[0][-1])


def test_unrotated_control(tmp_path: Path) -> None:
    """Without a display matrix nothing turns: the red quadrant stays where it was coded."""
    path = encode(tmp_path / "plain.mp4", (quadrant_picture(i) for i in range(10)), "mpeg4", gop=4)
    info, clips = run_job(DecodeJob(str(path), num_frames=4, stride=2, short_side=None))
    assert (info.rotation, info.width, info.height) == (0, W, H)
    assert [red_quadrant_and_index(f) for f in clips[0].frames] == [("top-left", i) for i in (2, 4, 6, 8)]


@needs_display_matrix
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_probe_reports_displayed_size_and_rotation(tmp_path: Path, degrees: int) -> None:
    path = rotated_video(tmp_path, "mpeg4", {}, "mp4", degrees)
    info = probe(str(path))
    shown = (H, W) if degrees % 180 else (W, H)
    assert (info.width, info.height, info.rotation) == (*shown, degrees)
    # The same rotation and size as decoding clips at full size reports.
    decoded, _ = run_job(DecodeJob(str(path), num_frames=4, stride=2, short_side=None))
    assert (decoded.width, decoded.height, decoded.rotation) == (info.width, info.height, info.rotation)


def test_probe_of_frames_that_do_not_decode(tmp_path: Path) -> None:
    """probe() reads the rotation from the first frame, so a file whose frames do not decode is
    refused by probe() too, as decode_clips refuses it, instead of probing as a good video."""
    name, options = encoder([X264], "H.264")
    path = encode(tmp_path / "zeroed.mp4", (stripes(i) for i in range(10)), name, options=options)
    data = bytearray(path.read_bytes())
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)  # the coded frames become zeros
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.width == W  # the header is intact
    with pytest.raises(DecodeError, match="cannot decode"):
        probe(str(path))
    with pytest.raises(DecodeError):
        run_job(DecodeJob(str(path)))


# --- codecs and containers --------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    ext: str
    #: The decoded stream's codec.
    codec: str
    #: Encoders that make it, with their options, best first.
    encoders: list[tuple[str, dict[str, str]]]


FORMATS = [
    Format("H.264", "mp4", "h264", [X264, ("libopenh264", {})]),
    Format("HEVC", "mp4", "hevc", [X265]),
    Format(
        "VP9",
        "webm",
        "vp9",
        [("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "12", "b": "0"})],
    ),
    Format(
        "AV1",
        "mkv",
        "av1",
        [
            ("libsvtav1", {"preset": "12", "crf": "20"}),
            ("libaom-av1", {"usage": "realtime", "cpu-used": "8", "crf": "20"}),
            ("librav1e", {"speed": "10", "qp": "40"}),
        ],
    ),
]
FRAMES = 40


@pytest.fixture(scope="module", params=FORMATS, ids=[f.codec for f in FORMATS])
def coded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Format, Path]:
    """4 s of stripes at 10 fps, a keyframe every 10 frames, in the format's usual container."""
    fmt: Format = request.param
    name, options = encoder(fmt.encoders, fmt.name)
    path = tmp_path_factory.mktemp(fmt.codec) / f"stripes.{fmt.ext}"
    encode(path, (stripes(i) for i in range(FRAMES)), name, options=options, gop=10)
    # Seeking below only proves something if there is more than one keyframe to land on.
    assert keyframe_count(path) >= 4
    return fmt, path


def test_probe_codec_and_container(coded: tuple[Format, Path]) -> None:
    fmt, path = coded
    info = probe(str(path))
    assert info.frames == FRAMES
    assert info.fps == pytest.approx(FPS, abs=1e-6)
    assert info.duration_s == pytest.approx(FRAMES / FPS, abs=1e-6)
    assert (info.width, info.height, info.rotation) == (W, H, 0)
    # The codec's own name, whichever decoder reads it (AV1: see test_av1_codec_name).
    assert info.codec == fmt.codec


@pytest.mark.parametrize("seek_gap", [0.0, 1e9], ids=["always-seek", "never-seek"])
def test_codec_clips_are_the_planned_frames(
    coded: tuple[Format, Path], monkeypatch: pytest.MonkeyPatch, seek_gap: float
) -> None:
    """Seeking to each clip (to a keyframe, then decoding forward) or decoding straight through
    gives exactly the planned frames."""
    _, path = coded
    monkeypatch.setattr(decode_mod, "_SEEK_GAP_S", seek_gap)
    rewinds = spy_rewinds(monkeypatch)
    seeks = spy_seeks(monkeypatch)
    decoded = spy_decoded(monkeypatch)
    info, clips = decode_clips(DecodeJob(str(path), num_frames=4, stride=2, clips=3, short_side=None))
    plan = sampling.uniform_clips(FRAMES, 4, 2, 3)  # [3..9], [16..22], [30..36]
    assert [c.index for c in clips] == [0, 1, 2]
    assert all(c.frames.shape == (4, H, W, 3) for c in clips)
    assert_planned(clips, plan)
    assert (info.width, info.height, info.frames) == (W, H, FRAMES)
    assert not rewinds  # these containers seek where asked
    if seek_gap:
        assert not seeks
        assert decoded == list(range(37))  # straight through, up to the last planned frame
    else:
        # One seek per clip, to its start: none of them landed after it and had to be redone.
        assert seeks == pytest.approx([i[0] / FPS for i in plan])
        # Each seek went to the keyframe before its clip (0, 10, 30): frames 23 to 29 were
        # jumped over, and decoding restarted at a keyframe.
        assert not set(range(23, 30)) & set(decoded)
        assert decoded[decoded.index(22) + 1] == 30


def test_codec_default_job(coded: tuple[Format, Path]) -> None:
    """The default job on a video shorter than one clip: one stretched clip, short side 224."""
    _, path = coded
    info, clips = run_job(DecodeJob(str(path)))
    (plan,) = sampling.uniform_clips(FRAMES, 16, sampling.DEFAULT_STRIDE, sampling.auto_clip_count(4.0))
    assert len(clips) == 1
    assert clips[0].frames.shape == (16, 224, 336, 3)  # 72x48 -> 336x224
    assert (info.height, info.width) == (224, 336)
    assert [index_of(f) for f in clips[0].frames] == plan


def test_av1_codec_name(tmp_path: Path) -> None:
    fmt = next(f for f in FORMATS if f.codec == "av1")
    name, options = encoder(fmt.encoders, fmt.name)
    path = encode(tmp_path / "one.mkv", (stripes(i) for i in range(3)), name, options=options)
    assert probe(str(path)).codec == "av1"


# --- streams whose seek lands nowhere: decoding from the start --------------------------------

TS_FRAMES = 300  # 30 s at 10 fps: three clips by default, each start more than _SEEK_GAP_S ahead


def ts_video(folder: Path, candidate: tuple[str, dict[str, str]], frames: int, gop: int) -> Path:
    name, options = encoder([candidate], candidate[0])
    path = folder / f"{name}-gop{gop}.ts"
    return encode(path, (stripes(i) for i in range(frames)), name, "mpegts", options, gop=gop)


TS_CODECS = [pytest.param(X265, "hevc", id="hevc-ts"), pytest.param(X264, "h264", id="h264-ts")]


@pytest.mark.parametrize(("candidate", "codec_name"), TS_CODECS)
def test_ts_seek_to_nowhere_falls_back_to_decoding_from_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate: tuple[str, dict[str, str]], codec_name: str
) -> None:
    """One keyframe (at the start) in MPEG-TS: a seek to a later time finds nothing to decode,
    so the decoder reopens the file and decodes from the start, and the clips are still right."""
    path = ts_video(tmp_path, candidate, TS_FRAMES, gop=1000)
    assert keyframe_count(path) == 1
    info = probe(str(path))
    assert (info.frames, info.width, info.height, info.rotation) == (TS_FRAMES, W, H, 0)
    assert info.fps == pytest.approx(FPS, abs=1e-6)
    assert info.duration_s == pytest.approx(TS_FRAMES / FPS, abs=1e-6)
    assert info.codec == codec_name

    rewinds = spy_rewinds(monkeypatch)
    job = DecodeJob(str(path), num_frames=8, stride=4, short_side=None)  # clips: auto (3 for 30 s)
    info, clips = run_job(job)
    plan = sampling.uniform_clips(TS_FRAMES, 8, 4, 3)  # starts 36, 136, 236
    # The first seek (3.6 s ahead) found nothing and fell back, once: later seeks are skipped.
    assert len(rewinds) == 1
    assert all(c.frames.shape == (8, H, W, 3) for c in clips)
    assert_planned(clips, plan)
    assert info.frames == TS_FRAMES

    # The same clips as decoding straight through without ever seeking.
    monkeypatch.setattr(decode_mod, "_SEEK_GAP_S", 1e9)
    _, forward = run_job(job)
    assert len(rewinds) == 1
    for a, b in zip(forward, clips, strict=True):
        assert (a.start_s, a.end_s) == (b.start_s, b.end_s)
        assert np.array_equal(a.frames, b.frames)


@pytest.mark.parametrize(("candidate", "codec_name"), TS_CODECS)
def test_ts_seek_that_overshoots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate: tuple[str, dict[str, str]], codec_name: str
) -> None:
    """A seek in MPEG-TS to 3.6 s lands on the next keyframe (4.0 s); the decoder notices and
    seeks again further back instead of starting the clip late."""
    path = ts_video(tmp_path, candidate, TS_FRAMES, gop=10)
    assert keyframe_count(path) == TS_FRAMES // 10
    rewinds = spy_rewinds(monkeypatch)
    seeks = spy_seeks(monkeypatch)
    info, clips = run_job(DecodeJob(str(path), num_frames=8, stride=4, short_side=None))
    assert (info.frames, info.codec) == (TS_FRAMES, codec_name)
    assert_planned(clips, sampling.uniform_clips(TS_FRAMES, 8, 4, 3))
    # Recovered by seeking again, not by decoding from the start.
    assert not rewinds
    assert len(seeks) > 3


@pytest.mark.parametrize(("candidate", "codec_name"), TS_CODECS)
def test_ts_seeks_that_overshoot_near_the_start_and_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate: tuple[str, dict[str, str]], codec_name: str
) -> None:
    """A seek before every clip of 2 frames, 0.4 s into each second (keyframe every 1 s). At 0.4 s
    even a seek to the start lands late, so that clip is decoded from the start; at 29.4 s the
    seek goes past the last keyframe, where nothing decodes. Neither makes the stream unseekable."""
    path = ts_video(tmp_path, candidate, TS_FRAMES, gop=10)
    monkeypatch.setattr(decode_mod, "_SEEK_GAP_S", 0.0)
    rewinds = spy_rewinds(monkeypatch)
    decoded = spy_decoded(monkeypatch)
    _, clips = run_job(DecodeJob(str(path), num_frames=2, stride=1, clips=30, short_side=None))
    plan = sampling.uniform_clips(TS_FRAMES, 2, 1, 30)
    assert [i[0] for i in plan] == list(range(4, TS_FRAMES, 10))
    assert_planned(clips, plan)
    assert len(rewinds) == 1
    # Every later clip was reached by a seek to the keyframe just before it: frames 6 to 9 of
    # each second were never decoded.
    assert sorted(set(decoded)) == [i for i in range(TS_FRAMES) if i % 10 < 6]


def test_ts_overlapping_clips_after_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ts_video(tmp_path, X264, 100, gop=1000)
    rewinds = spy_rewinds(monkeypatch)
    _, clips = run_job(DecodeJob(str(path), num_frames=16, stride=4, clips=3, short_side=None))
    assert rewinds  # the backward seek to the second clip fell back to decoding from the start
    assert_planned(clips, sampling.uniform_clips(100, 16, 4, 3))


# --- a clip that starts on the frame the last one ended with ---------------------------------


@pytest.mark.parametrize(
    ("ext", "container_format", "candidate", "gop"),
    [
        pytest.param("mp4", None, ("mpeg4", {}), 10, id="mp4"),
        # One keyframe: going back falls back to decoding from the start.
        pytest.param("ts", "mpegts", X264, 1000, id="h264-ts-unseekable"),
    ],
)
@pytest.mark.parametrize("seek_gap", [2.0, 1e9], ids=["default", "never-seek"])
def test_clip_that_starts_on_the_last_clips_final_frame(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ext: str,
    container_format: str | None,
    candidate: tuple[str, dict[str, str]],
    gop: int,
    seek_gap: float,
) -> None:
    """121 frames, 2 clips of 16 every 4: starts 0 and 60, and frame 60 ends the first clip. The
    second must not start one frame late (61, 65, ..., 117 and a repeat)."""
    name, options = encoder([candidate], candidate[0]) if candidate[0] != "mpeg4" else candidate
    path = encode(
        tmp_path / f"touching.{ext}", (stripes(i) for i in range(121)), name, container_format, options, gop
    )
    monkeypatch.setattr(decode_mod, "_SEEK_GAP_S", seek_gap)
    plan = sampling.uniform_clips(121, 16, 4, 2)
    assert plan[1][0] == plan[0][-1] == 60
    _, clips = run_job(DecodeJob(str(path), num_frames=16, stride=4, clips=2, short_side=None))
    assert_planned(clips, plan)


# --- streams that refuse to seek --------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of stripes at 10 fps as a raw H.264 elementary stream: no container timestamps."""
    name, options = encoder([X264], "H.264")
    path = tmp_path_factory.mktemp("raw") / "stripes.h264"
    encode(path, (stripes(i) for i in range(TS_FRAMES)), name, "h264", options, gop=10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base
        with pytest.raises(av.FFmpegError):
            container.seek(int(5.0 / stream.time_base), stream=stream, backward=True, any_frame=False)
    return path


def test_raw_stream_whose_seek_fails(raw_h264: Path) -> None:
    info, clips = run_job(DecodeJob(str(raw_h264), num_frames=8, stride=4, clips=3, short_side=None))
    plan = sampling.uniform_clips(TS_FRAMES, 8, 4, 3)
    assert len(clips) == 3
    assert [[index_of(f) for f in c.frames] for c in clips] == plan
    assert [c.start_s for c in clips] == pytest.approx([i[0] / info.fps for i in plan])


def test_raw_stream_rate(raw_h264: Path) -> None:
    info = probe(str(raw_h264))
    assert info.frames == TS_FRAMES
    assert info.fps == pytest.approx(FPS, abs=1e-6)
    assert info.duration_s == pytest.approx(TS_FRAMES / FPS, abs=1e-6)


def test_raw_stream_rate_without_packet_durations(raw_h264: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When counting the packets gives no duration, the rate still comes from the stream's own
    timing (guessed_rate, from the SPS) rather than the raw demuxer's default of 25."""
    counted: list[str] = []

    def count_without_duration(path: str) -> tuple[int, float | None]:
        counted.append(path)
        return TS_FRAMES, None

    monkeypatch.setattr(probe_mod, "_count_packets", count_without_duration)
    with av.open(str(raw_h264)) as container:
        stream = container.streams.video[0]
        assert (stream.average_rate, stream.guessed_rate) == (25, FPS)
    info = probe(str(raw_h264))
    assert counted, "probe did not count packets through the patched function"
    assert info.fps == pytest.approx(FPS, abs=1e-6)
    assert info.duration_s == pytest.approx(TS_FRAMES / FPS, abs=1e-6)
