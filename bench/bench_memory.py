"""Peak memory of ``vidtag scan`` over a small and a ten times larger folder of videos.

    python bench/bench_memory.py --model models/demo [--small 200] [--large 2000] [--long VIDEO]

Writes the videos once (short generated clips, ``tagger.synth``), then runs ``vidtag scan``
over each folder in a fresh process and reports the peak resident memory of the largest
process of the run (the tagger or a decode worker). Streaming with bounded queues should keep
the two within a few per cent.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_videos(folder: Path, count: int) -> None:
    from tagger.synth import CLASSES, _frames, write_video

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = CLASSES[i % len(CLASSES)]
        write_video(folder / f"{label}_{i:05d}.mp4", _frames(label, rng, 24, (96, 72)), 12, (96, 72))


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Run ``args`` in a child that reports its children's peak RSS; returns (MB, seconds)."""
    probe = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return int(done.stdout.strip()) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--long", help="also scan this one long video (e.g. 1080p, minutes) alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for count in (args.small, args.large):
            folder = Path(tmp) / str(count)
            make_videos(folder, count)
            out = Path(tmp) / f"{count}.csv"
            cmd = [sys.executable, "-m", "tagger", "scan", str(folder), "-m", args.model, "-o", str(out)]
            mb, seconds = peak_rss_mb(cmd)
            results.append((count, mb, seconds))
            print(f"{count:6d} videos: peak RSS {mb:7.1f} MB, {seconds:6.1f} s", flush=True)
        if args.long:
            cmd = [
                sys.executable,
                "-m",
                "tagger",
                "scan",
                args.long,
                "-m",
                args.model,
                "-o",
                str(Path(tmp) / "l.csv"),
            ]
            mb, seconds = peak_rss_mb(cmd)
            print(f"{Path(args.long).name}: peak RSS {mb:7.1f} MB, {seconds:6.1f} s", flush=True)
    (small, small_mb, _), (large, large_mb, _) = results
    print(f"peak RSS {large} / {small} videos: {large_mb / small_mb:.3f}")


if __name__ == "__main__":
    main()
