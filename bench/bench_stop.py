"""How long ``vidtag watch`` takes to exit after SIGTERM while the model works on the CPU.

    python bench/bench_stop.py [--rounds 3] [--shape base] [--baseline DIR]

A base-shaped VideoMAE (random weights; the compute of videomae-base) tags UCF101-shaped
videos, two clips each, one clip per forward pass (the CPU default). Once the first video
has its row, a SIGTERM lands at a random moment of the work on the next ones, and the time
from the signal to the process's exit is measured. ``--baseline DIR`` also runs the daemon of
another checkout (an older commit: ``git worktree add DIR REV``) on the same model and
videos, the two in rotating order within each round.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CACHE, ROOT, machine, make_model, ucf101_sized


def one_round(project: Path, model: Path, videos: list[str], rng: random.Random) -> tuple[float, int]:
    """Seconds from SIGTERM to exit, and the rows written before it."""
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "lib", Path(tmp) / "out.csv"
        root.mkdir()
        for i, video in enumerate(videos):
            os.link(video, root / f"v{i:02d}.mp4")
        cmd = [sys.executable, "-m", "tagger", "watch", str(root), "-o", str(out), "-m", str(model)]
        cmd += ["--device", "cpu", "--precision", "fp32", "--clips", "2", "--settle", "0.2"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(project)}
        proc = subprocess.Popen(cmd, cwd=project, env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 600
            while not (out.is_file() and len(out.read_text().splitlines()) >= 2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon stopped or stalled: {proc.stderr.read()}")  # type: ignore[union-attr]
                time.sleep(0.05)
            # Somewhere inside the next forward passes (one takes about 3 s on 2 cores).
            time.sleep(rng.uniform(0.2, 3.0))
            rows = len(out.read_text().splitlines()) - 1
            proc.send_signal(signal.SIGTERM)
            sent = time.perf_counter()
            proc.wait(timeout=300)
            return time.perf_counter() - sent, rows
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", default="base", choices=["base", "tiny"])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--baseline", type=Path, default=None, help="checkout to compare with")
    args = parser.parse_args()
    model = make_model(args.shape)
    videos = ucf101_sized(CACHE / "stop-videos", args.videos, distinct=args.videos)
    print(machine())
    rng = random.Random(0)
    projects = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    times: dict[Path, list[float]] = {p: [] for p in projects}
    for i in range(args.rounds):
        order = projects[i % len(projects) :] + projects[: i % len(projects)]
        for project in order:
            seconds, rows = one_round(project, model, videos, rng)
            times[project].append(seconds)
            print(f"round {i + 1}, {project}: exit {seconds:.2f} s after SIGTERM ({rows} rows before it)")
    for project, values in times.items():
        print(
            f"SIGTERM to exit, {project}: median {statistics.median(values):.2f} s, max {max(values):.2f} s"
        )


if __name__ == "__main__":
    main()
