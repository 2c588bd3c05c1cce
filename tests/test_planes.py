"""YUV 4:2:0 shipping (``--frames yuv``): decoders hand over planes at half the bytes of RGB,
and the conversion on the model's device gives the pixels of the RGB path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import ColorRange, Colorspace
from click.testing import CliRunner

from tagger.cli import cli
from tagger.clips.decode import DecodeJob, run_job
from tagger.records import DecodeError
from tagger.transforms import planes_to_rgb
from tests.conftest import scan_rows, write_video

#: (pixel format, colorspace tag, range tag, size): BT.601 and BT.709, limited and full range.
STREAMS = {
    "bt601-limited": ("yuv420p", None, None, (320, 240)),
    "bt601-full": ("yuvj420p", Colorspace.ITU601, ColorRange.JPEG, (320, 240)),
    "bt709-limited": ("yuv420p", Colorspace.ITU709, ColorRange.MPEG, (640, 360)),
    "bt709-full": ("yuvj420p", Colorspace.ITU709, ColorRange.JPEG, (480, 270)),
}


def tagged_video(path: Path, pix_fmt: str, colorspace, color_range, size: tuple[int, int]) -> Path:
    """Smooth colour gradients moving over 12 frames, encoded with the given colour tags."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"crf": "10"}
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
            stream.codec_context.color_range = color_range
        yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
        for i in range(12):
            t = i / 12
            rgb = np.stack(
                [
                    0.5 + 0.45 * np.sin(6 * xx + 3 * t),
                    0.5 + 0.45 * np.sin(5 * yy + 2 * xx),
                    0.5 + 0.45 * np.cos(4 * (xx + yy) - t),
                ],
                axis=-1,
            )
            frame = av.VideoFrame.from_ndarray((rgb * 255).round().astype(np.uint8), format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def both_ways(path: Path) -> tuple[list, list]:
    """The clips of ``path`` as the RGB path cuts them, and as planes."""
    job = DecodeJob(path=str(path), num_frames=8, stride=1, clips=1, crop=(224, 224))
    return run_job(job)[1], run_job(replace(job, planes=True))[1]


def differences(rgb_clips: list, plane_clips: list) -> np.ndarray:
    """Per value, the planes made RGB minus the RGB path's pixels."""
    out = []
    for rgb, planes in zip(rgb_clips, plane_clips, strict=True):
        assert planes.planes is not None
        converted = planes_to_rgb(torch.from_numpy(np.array(planes.frames)), planes.planes)
        out.append(converted.numpy().astype(np.int16) - rgb.frames.astype(np.int16))
    return np.stack(out)


@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("colour")
    return {name: tagged_video(folder / f"{name}.mp4", *spec) for name, spec in STREAMS.items()}


@pytest.mark.parametrize("name", STREAMS)
def test_planes_made_rgb_match_swscale_within_two_grey_levels(name, streams):
    rgb_clips, plane_clips = both_ways(streams[name])
    diff = np.abs(differences(rgb_clips, plane_clips))
    # Half the bytes of RGB cross from the decoder.
    assert plane_clips[0].frames.nbytes <= 0.51 * rgb_clips[0].frames.nbytes
    assert plane_clips[0].size == rgb_clips[0].size == (224, 224)
    assert diff.mean() < 1.0
    # The rest differ by rounding: swscale converts from 15-bit samples, planes ship 8 bits.
    assert np.mean(diff <= 2) >= 0.98, np.percentile(diff, [50, 99, 99.9, 100])


def test_the_stream_tags_choose_the_matrix_and_range(streams):
    """Each stream's own matrix is needed: another stream's gives other pixels."""
    rgb_clips, plane_clips = both_ways(streams["bt709-limited"])
    other = both_ways(streams["bt601-full"])[1][0].planes
    assert other is not None and other.matrix != plane_clips[0].planes.matrix
    wrong = [replace(c, planes=replace(c.planes, matrix=other.matrix)) for c in plane_clips]
    assert np.mean(np.abs(differences(rgb_clips, wrong)) <= 2) < 0.5


def test_flat_colours_convert_exactly_within_two_levels(tmp_path):
    """Without edges there is nothing for chroma resampling to blur: every value is within 2."""
    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (128, 128, 128)] * 3
    path = write_video(
        tmp_path / "flat.mp4",
        lambda i: np.full((240, 320, 3), colours[i], dtype=np.uint8) if i < len(colours) else None,
        size=(320, 240),
        codec="libx264",
    )
    diff = np.abs(differences(*both_ways(path)))
    assert diff.max() <= 2


def stripes(path: Path, size: tuple[int, int]) -> Path:
    """Colour stripes across: chroma that changes from column to column."""
    width, height = size
    x = np.arange(width)[None, :, None]

    def frame(i: int) -> np.ndarray | None:
        if i >= 8:
            return None
        rgb = 128 + 90 * np.sin(2 * np.pi * (x + i) / 10 + np.array([0, 2.1, 4.2])) * np.ones((height, 1, 1))
        return rgb.round().astype(np.uint8)

    return write_video(path, frame, size=size, codec="libx264")


def test_a_crop_on_an_odd_column_keeps_its_chroma_aligned(tmp_path):
    """440x240 resizes to 410x224, whose centre crop starts on column 93: the chroma samples
    sit half a sample off, and taking them as if aligned gives other colours."""
    rgb_clips, plane_clips = both_ways(stripes(tmp_path / "stripes.mp4", (440, 240)))
    planes = plane_clips[0].planes
    assert planes.origin[1] % 1 == 0.5  # column 93 takes its chroma between samples 46 and 47
    right = np.abs(differences(rgb_clips, plane_clips)).mean()
    aligned = (planes.origin[0], planes.origin[1] - 0.5)
    shifted = [replace(c, planes=replace(c.planes, origin=aligned)) for c in plane_clips]
    assert right < 0.8 * np.abs(differences(rgb_clips, shifted)).mean()
    rgb_clips, plane_clips = both_ways(tagged_video(tmp_path / "odd.mp4", "yuv420p", None, None, (440, 240)))
    assert np.mean(np.abs(differences(rgb_clips, plane_clips)) <= 2) >= 0.98


def test_what_goes_as_rgb(tmp_path):
    """4:4:4 sources (4:2:0 would halve their colour detail), rotated ones, frames smaller than
    the crop or enlarged to the model's size, and three-crop runs are cut as RGB."""
    from tagger.clips.decode import make_job
    from tagger.clips.planes import describe
    from tagger.options import TagOptions
    from tagger.transforms import Preprocessing

    full = tagged_video(tmp_path / "444.mp4", "yuv444p", None, None, (320, 240))
    assert both_ways(full)[1][0].planes is None
    frame = av.VideoFrame(320, 240, "yuv420p")
    assert describe(frame, 298, 224, 0, (224, 224)) is not None
    assert describe(frame, 298, 224, 90, (224, 224)) is None
    assert describe(frame, 200, 150, 0, (224, 224)) is None
    assert describe(av.VideoFrame(200, 150, "yuv420p"), 298, 224, 0, (224, 224)) is None  # enlarged
    assert describe(av.VideoFrame(320, 240, "rgb24"), 298, 224, 0, (224, 224)) is None
    prep = Preprocessing()
    assert make_job("v.mp4", prep, 4, TagOptions(crops=1), planes=True).planes
    assert not make_job("v.mp4", prep, 4, TagOptions(crops=3), planes=True).planes
    assert TagOptions().planes("cuda") and not TagOptions().planes("cpu")
    assert TagOptions(frames="yuv").planes("cpu") and not TagOptions(frames="rgb").planes("cuda")


def test_scan_with_planes_gives_the_rgb_labels(tmp_path, tiny_model, monkeypatch):
    from tagger import classify

    converted = []

    def spy(frames, planes):
        converted.append(len(frames))
        return planes_to_rgb(frames, planes)

    monkeypatch.setattr(classify, "planes_to_rgb", spy)
    folder = tmp_path / "library"
    folder.mkdir()
    for colour, frames in (("red", 30), ("green", 40), ("blue", 50)):
        write_video(folder / f"{colour}.mp4", [colour] * frames, size=(160, 96))
    write_video(folder / "red-blue.mp4", ["red"] * 30 + ["blue"] * 30, size=(192, 128))
    rgb = scan_rows(folder, tiny_model, tmp_path / "rgb.csv", "--frames", "rgb")
    assert not converted
    planes = scan_rows(folder, tiny_model, tmp_path / "yuv.csv", "--frames", "yuv")
    assert sum(converted) == sum(int(r["clips"]) for r in planes.values())
    assert rgb.keys() == planes.keys()
    for path, row in planes.items():
        assert row["status"] == "ok"
        assert row["label"] == rgb[path]["label"]
        # The frames carry per-pixel colour noise, which 4:2:0 halves; the tiny model sees it.
        assert abs(float(row["score"]) - float(rgb[path]["score"])) < 0.05
    assert {Path(p).stem: r["label"] for p, r in planes.items() if "-" not in Path(p).stem} == {
        "red": "red",
        "green": "green",
        "blue": "blue",
    }


def test_frames_yuv_is_refused_on_the_ray_engine(tmp_path, tiny_model):
    result = CliRunner().invoke(
        cli,
        [
            "scan",
            str(tmp_path),
            "-m",
            str(tiny_model),
            "-o",
            str(tmp_path / "o.csv"),
            "--engine",
            "ray",
            "--frames",
            "yuv",
        ],
    )
    assert result.exit_code == 2
    assert "--frames yuv is for --engine local" in result.output


VIDEO_SUFFIXES = {
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".ts",
    ".3gp",
    ".flv",
    ".m4v",
    ".mpg",
    ".ogv",
    ".gif",
}


def test_real_files_keep_their_colours(real_data):
    """Every real file that ships as planes: no colour bias (the matrix and range are right) and
    most values within 2 grey levels; sharp colour edges of test patterns differ most, since
    4:2:0 at the model's size keeps half the chroma rows the RGB path interpolates from."""
    report = []
    for path in sorted(p for p in real_data.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
        try:
            rgb_clips, plane_clips = both_ways(path)
        except DecodeError:  # a corrupt sample, undecodable on purpose
            continue
        if not plane_clips or plane_clips[0].planes is None:
            continue
        diff = differences(rgb_clips, plane_clips).reshape(-1, 3)
        bias = np.abs(diff.mean(axis=0)).max()
        within = np.mean(np.abs(diff) <= 2)
        report.append((path.relative_to(real_data), bias, within, np.abs(diff).mean()))
    print("\n".join(f"{p}: bias {b:.2f} within-2 {w:.3f} mean {m:.2f}" for p, b, w, m in report))
    assert len(report) >= 50
    assert all(b < 1.0 for _, b, _, _ in report), [r for r in report if r[1] >= 1.0]
    assert all(w >= 0.8 for _, _, w, _ in report), [r for r in report if r[2] < 0.8]
    assert np.median([w for *_, w, _ in report]) >= 0.95
