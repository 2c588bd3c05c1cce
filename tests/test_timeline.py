"""Timelines: dense clips over the whole video, merged into segments, in every output.

The end-to-end tests use a generated video whose colour (the tiny model's "action") changes
every 10 s, and read vidtag's files back with independent readers (csv, pandas, webvtt-py).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import webvtt
from click.testing import CliRunner

from tagger.cli import cli
from tagger.clips import sampling
from tagger.clips.decode import DecodeJob, run_job
from tagger.clips.pool import InlineDecoder
from tagger.engines.local import tag
from tagger.options import TIMELINE_PART_CLIPS, TagOptions, TimelineOptions
from tagger.records import SEGMENT_FIELDS, ClipScore
from tagger.segments import segments

from .conftest import TINY_FRAMES, TINY_STRIDE

FPS = 10
ACTIONS = ("red", "green", "blue")
#: Where each action starts and ends in the three-action video, in seconds.
TRUTH = [(label, 10.0 * i, 10.0 * (i + 1)) for i, label in enumerate(ACTIONS)]
CLIP_S = sampling.clip_span(TINY_FRAMES, TINY_STRIDE) / FPS


@pytest.fixture(scope="module")
def three_actions(video_factory) -> Path:  # type: ignore[no-untyped-def]
    """30 s at 10 fps: red, then green, then blue, 10 s each."""
    return video_factory([c for c in ACTIONS for _ in range(10 * FPS)], fps=FPS)


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def scores(*columns: list[float], clip_s: float = 1.0) -> list[ClipScore]:
    """Clips of ``clip_s`` back to back, with one score list per class."""
    return [
        ClipScore(i * clip_s, (i + 1) * clip_s, tuple(float(c[i]) for c in columns))
        for i in range(len(columns[0]))
    ]


# -- merging -------------------------------------------------------------------------------


def test_hysteresis_keeps_a_hovering_score_in_one_segment() -> None:
    # Over enter once, then around 0.4: under enter but never under leave.
    a = [0.1, 0.6, 0.45, 0.35, 0.42, 0.38, 0.1, 0.1]
    (only,) = segments(scores(a), ["a"], TimelineOptions(enter=0.5, leave=0.3, min_s=0))
    assert (only.start_s, only.end_s) == (1.0, 6.0)
    assert only.peak_score == 0.6 and only.score == pytest.approx(np.mean(a[1:6]))
    # Without hysteresis (leave = enter) the same scores make a one-clip segment.
    (short,) = segments(scores(a), ["a"], TimelineOptions(enter=0.5, leave=0.5, min_s=0))
    assert (short.start_s, short.end_s) == (1.0, 2.0)


def test_a_dip_of_one_clip_is_bridged_and_a_longer_one_is_not() -> None:
    one = [0.9, 0.9, 0.1, 0.9, 0.9]
    assert [(s.start_s, s.end_s) for s in segments(scores(one), ["a"], TimelineOptions(min_s=0))] == [(0, 5)]
    two = [0.9, 0.9, 0.1, 0.1, 0.9, 0.9]
    found = segments(scores(two), ["a"], TimelineOptions(min_s=0))
    assert [(s.start_s, s.end_s) for s in found] == [(0, 2), (4, 6)]


def test_short_segments_are_dropped_and_labels_may_overlap() -> None:
    talk = [0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    cook = [0.1, 0.7, 0.7, 0.7, 0.1, 0.1]
    blip = [0.1, 0.1, 0.1, 0.1, 0.1, 0.9]
    found = segments(scores(talk, cook, blip), ["talk", "cook", "blip"], TimelineOptions(min_s=2.0))
    assert [(s.label, s.start_s, s.end_s) for s in found] == [("talk", 0, 6), ("cook", 1, 4)]


def test_no_clip_scores_no_segments() -> None:
    assert segments([], ["a"], TimelineOptions()) == ()


# -- the clip plan ---------------------------------------------------------------------------


@pytest.mark.parametrize("total", [7, 8, 100, 1001])
def test_timeline_clips_cover_every_frame_with_no_cap(total: int) -> None:
    span = sampling.clip_span(16, 4)
    plan = sampling.timeline_clips(total, 16, 4, span)
    covered = set()
    for clip in plan:
        covered.update(range(clip[0], clip[-1] + 1))
    assert covered == set(range(total))
    if total >= span:
        assert len(plan) == -(-total // span)  # ceil: far more than 8 for a long video


def test_a_long_timeline_is_decoded_in_parts_of_bounded_size(three_actions: Path, classifier) -> None:
    seen: list[tuple[int, int]] = []

    def spy(job: DecodeJob):  # type: ignore[no-untyped-def]
        info, clips = run_job(job)
        seen.append((job.part, len(clips)))
        return info, clips

    options = TagOptions(timeline=TimelineOptions(min_s=0))
    (result,) = tag([str(three_actions)], classifier, options, decoder=InlineDecoder(spy))
    planned = len(sampling.timeline_clips(30 * FPS, TINY_FRAMES, TINY_STRIDE, 7))
    assert result.ok and result.clips == planned > TIMELINE_PART_CLIPS
    assert [part for part, _ in seen] == list(range(-(-planned // TIMELINE_PART_CLIPS)))
    assert all(n <= TIMELINE_PART_CLIPS for _, n in seen) and sum(n for _, n in seen) == planned
    spans = [(c.start_s, c.end_s) for c in result.clip_scores]
    assert spans == sorted(spans) and spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(30.0)


# -- every output of a scan --------------------------------------------------------------------


def _close(found: list[tuple[str, float, float]]) -> None:
    """Three segments with the right labels, each boundary within one clip of the truth."""
    assert [label for label, _, _ in found] == list(ACTIONS)
    for (_, start, end), (_, true_start, true_end) in zip(found, TRUTH, strict=True):
        assert abs(start - true_start) <= CLIP_S and abs(end - true_end) <= CLIP_S


def test_scan_writes_the_timeline_everywhere(tmp_path: Path, three_actions: Path, tiny_model: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    video = folder / "three.mp4"
    video.write_bytes(three_actions.read_bytes())
    out, segs = tmp_path / "labels.csv", tmp_path / "segments.csv"
    args = ["scan", str(folder), "-m", str(tiny_model), "-o", str(out), "--segments", str(segs)]
    result = run(*args, "--sidecar", "json,vtt")
    assert result.exit_code == 0, result.output

    with open(segs, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == SEGMENT_FIELDS
    _close([(r["label"], float(r["start_s"]), float(r["end_s"])) for r in rows])
    assert all(r["path"] == str(video) and float(r["peak_score"]) >= float(r["score"]) > 0.5 for r in rows)

    (row,) = csv.DictReader(out.read_text().splitlines())
    assert row["segment_labels"] == "red|green|blue" and int(row["clips"]) > 8

    cues = webvtt.read(str(folder / ".three.mp4.vidtag.vtt"))
    ms = [(c.text.split()[0], c.start_time.in_milliseconds(), c.end_time.in_milliseconds()) for c in cues]
    _close([(label, start / 1000, end / 1000) for label, start, end in ms])

    sidecar = json.loads((folder / "three.mp4.vidtag.json").read_text())
    _close([(s["label"], s["start_s"], s["end_s"]) for s in sidecar["segments"]])

    # Resumed from the state: nothing is tagged again and the timeline is the same.
    before, vtt_stat = segs.read_bytes(), (folder / ".three.mp4.vidtag.vtt").stat()
    again = run(*args, "--sidecar", "json,vtt")
    assert again.exit_code == 0 and re.search(r"already tagged\s+1", again.stderr)
    assert segs.read_bytes() == before
    # An unchanged timeline is not written again (a new mtime makes media servers re-index).
    assert (folder / ".three.mp4.vidtag.vtt").stat().st_mtime_ns == vtt_stat.st_mtime_ns


def test_a_video_tagged_without_a_timeline_is_tagged_again_for_one(
    tmp_path: Path, three_actions: Path, tiny_model: Path
) -> None:
    out, segs = tmp_path / "labels.csv", tmp_path / "segments.parquet"
    first = run("scan", str(three_actions), "-m", str(tiny_model), "-o", str(out))
    assert first.exit_code == 0
    (row,) = csv.DictReader(out.read_text().splitlines())
    assert row["segment_labels"] == "" and int(row["clips"]) <= 8
    second = run("scan", str(three_actions), "-m", str(tiny_model), "-o", str(out), "--segments", str(segs))
    assert second.exit_code == 0, second.output
    table = pd.read_parquet(segs)
    assert list(table.columns[: len(SEGMENT_FIELDS)]) == list(SEGMENT_FIELDS)
    _close(list(zip(table["label"], table["start_s"], table["end_s"], strict=True)))


def test_segments_to_stdout_and_bad_thresholds_are_usage_errors(
    three_actions: Path, tiny_model: Path
) -> None:
    bad = run("scan", str(three_actions), "-m", str(tiny_model), "--segments", "-")
    assert bad.exit_code == 2 and "not stdout" in bad.output
    flipped = run(
        "scan", str(three_actions), "-m", str(tiny_model), "--timeline",
        "--segment-enter", "0.2", "--segment-leave", "0.6",
    )  # fmt: skip
    assert flipped.exit_code == 2 and "leave <= enter" in flipped.output
    unknown = run("scan", str(three_actions), "-m", str(tiny_model), "--sidecar", "json,srt")
    assert unknown.exit_code == 2 and "unknown sidecar 'srt'" in unknown.output


@pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool is not installed (.ci/run installs it)"
)
def test_the_media_sidecars_name_the_three_actions(
    tmp_path: Path, three_actions: Path, tiny_model: Path
) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    video = folder / "three.mp4"
    video.write_bytes(three_actions.read_bytes())
    result = run("scan", str(folder), "-m", str(tiny_model), "--timeline", "--sidecar", "xmp,nfo")
    assert result.exit_code == 0, result.output

    read = subprocess.run(
        ["exiftool", "-j", "-struct", "-G1", "-XMP:all", str(folder / "three.mp4.xmp")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (xmp,) = json.loads(read.stdout)
    assert set(xmp["XMP-dc:Subject"]) == set(ACTIONS)
    assert set(xmp["XMP-digiKam:TagsList"]) == {f"vidtag/{a}" for a in ACTIONS}
    assert set(xmp["XMP-lr:HierarchicalSubject"]) == {f"vidtag|{a}" for a in ACTIONS}
    (track,) = xmp["XMP-xmpDM:Tracks"]
    assert track["FrameRate"] == "f1000"
    markers = track["Markers"]
    _close([(m["Name"], m["StartTime"] / 1000, (m["StartTime"] + m["Duration"]) / 1000) for m in markers])

    nfo = ElementTree.parse(folder / "three.nfo").getroot()
    assert nfo.tag == "movie" and {t.text for t in nfo.iter("tag")} == set(ACTIONS)
