"""Start-up of the vidtag command, and agreement of bf16 with fp32 on a trained model.

    python bench/bench_startup.py --model models/demo --videos demo-output/data/test

- ``vidtag --help`` wall time (median of 5; torch must not be imported for it);
- time to first result: ``vidtag scan`` of one video, process start to exit;
- top-1 agreement of ``--precision bf16`` with ``--precision fp32`` over every video in
  ``--videos``, and the largest difference of any label's score.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def wall(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tagger", *args],
        check=False,
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def scores(model: str, videos: str, precision: str, out: Path) -> dict[str, dict[str, float]]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tagger",
            "scan",
            videos,
            "-m",
            model,
            "-o",
            str(out),
            "--force",
            "--top-k",
            "1000",
            "--precision",
            precision,
        ],
        check=True,
        env=ENV,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    with out.open(newline="") as f:
        return {
            row["path"]: dict(
                zip(row["labels"].split("|"), map(float, row["scores"].split("|")), strict=True)
            )
            for row in csv.DictReader(f)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--videos", required=True)
    args = parser.parse_args()

    help_s = statistics.median(wall("--help") for _ in range(5))
    first = next(
        p for p in sorted(Path(args.videos).rglob("*")) if p.suffix.lower() in (".mp4", ".avi", ".mkv")
    )
    first_s = statistics.median(wall("scan", str(first), "-m", args.model, "-o", "-") for _ in range(3))
    print(f"vidtag --help: {help_s:.2f} s (median of 5)")
    print(f"time to first result (scan of one video, process start to exit): {first_s:.2f} s (median of 3)")

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = scores(args.model, args.videos, "fp32", Path(tmp) / "fp32.csv")
        bf16 = scores(args.model, args.videos, "bf16", Path(tmp) / "bf16.csv")
    agree = sum(max(fp32[p], key=fp32[p].get) == max(bf16[p], key=bf16[p].get) for p in fp32)
    worst = max(abs(fp32[p][label] - bf16[p][label]) for p in fp32 for label in fp32[p])
    print(
        f"bf16 vs fp32 top-1 agreement: {agree}/{len(fp32)} = {agree / len(fp32):.1%}; "
        f"largest score difference {worst:.4f}"
    )


if __name__ == "__main__":
    main()
