"""How long ``vidtag watch`` takes to exit after SIGTERM while the model works on the CPU.

    python bench/bench_stop.py [--rounds 3] [--shape base] [--project DIR]

A base-shaped VideoMAE (random weights; the compute of videomae-base) tags UCF101-shaped
videos, two clips each, one clip per forward pass (the CPU default). Once the first video
has its row, a SIGTERM lands at a random moment of the work on the next ones, and the time
from the signal to the process's exit is measured. ``--project DIR`` runs the daemon from
another checkout (an older commit, for the before/after figure), with this script's model
and videos.
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
    parser.add_argument("--project", type=Path, default=ROOT, help="checkout whose vidtag is run")
    args = parser.parse_args()
    model = make_model(args.shape)
    videos = ucf101_sized(CACHE / "stop-videos", args.videos, distinct=args.videos)
    print(machine())
    rng = random.Random(0)
    times = []
    for i in range(args.rounds):
        seconds, rows = one_round(args.project.resolve(), model, videos, rng)
        times.append(seconds)
        print(f"round {i + 1}: exit {seconds:.2f} s after SIGTERM ({rows} rows written before it)")
    print(
        f"SIGTERM to exit: median {statistics.median(times):.2f} s, max {max(times):.2f} s ({args.project})"
    )


if __name__ == "__main__":
    main()
