"""Timelines on long videos: peak memory and clips/s of ``vidtag scan --segments``, and the
cost per clip of timeline tagging against plain tagging.

    python bench/bench_timeline.py [--long-minutes 10] [--hour-minutes 60] [--rounds 2]

Generates (once, cached in bench/.cache) a 1080p H.264 video of ``--long-minutes`` and a
320x180 one of ``--hour-minutes``, both 25 fps (``bench_memory.make_long_video``). The model
is the "tiny" VideoMAE of ``common.make_model`` (random weights, 16 x 224 x 224 input, 400
classes): the benchmark is about decoding and memory, and 400 near-uniform scores per clip are
the worst case for the stored clip scores.

1. Each video is scanned by ``vidtag scan VIDEO -o labels.csv --segments segments.csv`` in a
   fresh process; the figure is the peak RSS of the largest process of the run (the tagger or
   a decode worker), with the clip count and the wall time.
2. In one process, with the model loaded and the decode processes started once, rounds time
   a timeline of the 1080p video and plain tagging of it (8 clips, the default for a video this
   long), in an order that alternates from round to round; the ratio of seconds per clip is
   taken within a round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import make_long_video, peak_rss_mb
from common import CACHE, machine, make_model, vidtag


def scan_once(video: Path, model: Path, tmp: Path) -> tuple[float, float, int]:
    """Peak RSS (MB), wall seconds and clip count of one ``scan --segments`` of ``video``."""
    import csv

    labels, segments = tmp / f"{video.stem}.csv", tmp / f"{video.stem}.segments.csv"
    cmd = [sys.executable, "-m", "tagger", "scan", str(video), "-m", str(model)]
    mb, seconds = peak_rss_mb([*cmd, "-o", str(labels), "--segments", str(segments)])
    with open(labels, newline="") as f:
        (row,) = csv.DictReader(f)
    if row["status"] != "ok":
        raise SystemExit(f"{video.name}: {row['error']}")
    return mb, seconds, int(row["clips"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--hour-minutes", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    videos = [
        (CACHE / f"long_1080p_{args.long_minutes:g}min.mp4", 1920, 1080, args.long_minutes),
        (CACHE / f"long_320x180_{args.hour_minutes:g}min.mp4", 320, 180, args.hour_minutes),
    ]
    for path, width, height, minutes in videos:
        started = time.perf_counter()
        make_long_video(path, minutes, width, height)
        print(f"{path.name}: ready in {time.perf_counter() - started:.0f} s", flush=True)
    model = make_model("tiny")
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        for path, width, height, minutes in videos:
            mb, seconds, clips = scan_once(path, model, Path(tmp))
            print(
                f"scan --segments {path.name} ({width}x{height}, {minutes:g} min): {clips} clips, "
                f"peak RSS {mb:.1f} MB, {seconds:.1f} s, {clips / seconds:.1f} clips/s",
                flush=True,
            )

    from tagger.classify import load_classifier
    from tagger.clips.pool import DecodePool, default_workers
    from tagger.options import TagOptions, TimelineOptions

    classifier = load_classifier(str(model), device="cpu")
    runs = {"timeline": TagOptions(timeline=TimelineOptions()), "plain": TagOptions()}
    long_video = [str(videos[0][0])]
    ratios = []
    with DecodePool(default_workers("cpu")).start() as decoder:
        vidtag(long_video, classifier, runs["plain"], decoder)  # warm-up
        for round_ in range(args.rounds):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            got = {name: vidtag(long_video, classifier, runs[name], decoder) for name in order}
            per_clip = {name: run.seconds / run.clips for name, run in got.items()}
            ratios.append(per_clip["timeline"] / per_clip["plain"])
            print(
                f"round {round_ + 1} ({' then '.join(order)}): "
                + ", ".join(f"{n} {got[n].clips} clips {got[n].clips_per_s:.1f} clips/s" for n in order)
                + f"; seconds per clip, timeline / plain: {ratios[-1]:.2f}",
                flush=True,
            )
    print(
        f"seconds per clip, timeline / plain: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)"
    )


if __name__ == "__main__":
    main()
