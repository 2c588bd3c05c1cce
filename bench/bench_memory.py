"""Peak memory of ``vidtag scan`` over a small and a ten times larger folder of videos.

    python bench/bench_memory.py --model models/demo [--small 200] [--large 2000]
                                 [--long VIDEO | --long-minutes 10]

Writes the videos once (short generated clips, ``tagger.demo.synth``), then runs ``vidtag scan``
over each folder in a fresh process and reports the peak resident memory of the largest
process of the run (the tagger or a decode worker). Streaming with bounded queues should keep
the two within a few per cent. ``--long`` scans one long video alone; ``--long-minutes N``
first generates one (H.264, 1920x1080, 25 fps, N minutes, cached in bench/.cache).
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
    from tagger.demo.synth import CLASSES, _frames, write_video

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = CLASSES[i % len(CLASSES)]
        write_video(folder / f"{label}_{i:05d}.mp4", _frames(label, rng, 24, (96, 72)), 12, (96, 72))


def make_long_video(path: Path, minutes: float, width: int = 1920, height: int = 1080) -> None:
    """An H.264 video of ``minutes`` (1080p unless told): a bright bar sweeping over a gradient, 25 fps."""
    import av
    import numpy as np

    if path.is_file():
        return
    fps = 25
    partial = path.with_suffix(".part.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    luma = np.tile(np.linspace(16, 200, width, dtype=np.uint8), (height, 1))
    chroma = np.full((height // 2, width), 128, dtype=np.uint8)  # U and V planes, stacked
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(minutes * 60 * fps)):
            y = luma.copy()
            bar = max(8, width // 30)
            x = (i * 8) % (width - bar)
            y[:, x : x + bar] = 235
            frame = av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    partial.rename(path)


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
    parser.add_argument("--long-minutes", type=float, help="generate a 1080p video this long as --long")
    args = parser.parse_args()
    if args.long_minutes:
        args.long = str(ROOT / "bench" / ".cache" / f"long_1080p_{args.long_minutes:g}min.mp4")
        started = time.perf_counter()
        make_long_video(Path(args.long), args.long_minutes)
        print(f"{Path(args.long).name}: ready in {time.perf_counter() - started:.0f} s", flush=True)
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
