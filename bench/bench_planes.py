"""YUV 4:2:0 shipping (``--frames yuv``) against RGB (``--frames rgb``, the baseline): what the
decode processes and the tagger spend per clip.

    python bench/bench_planes.py [--files 16] [--rounds 3]

1. Decode only: clips/s of one decode process per core, each cutting 16x224x224 clips as RGB
   or as planes, on UCF101-sized videos (320x240) and on 720p ones; the bytes per clip handed
   over, and the tagger's CPU per clip received (mapping the shared-memory blocks).
2. The conversion to RGB in torch on this CPU, ms per clip: what a model on the CPU would pay
   for what the decoders save. On a GPU it runs on the device.

Rounds alternate the order of the two variants; figures are medians over rounds, with the
planes/RGB ratio taken within each round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from common import CACHE, decode_only, machine, ucf101_sized


def hd_videos(folder: Path, count: int, seconds: float = 4.0) -> list[str]:
    """``count`` 1280x720 25 fps MPEG-4 videos of the demo's synthetic actions."""
    import random

    from tagger.demo.synth import CLASSES, _frames, write_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"hd_{i:03d}.mp4"
        if not path.is_file():
            frames = _frames(CLASSES[i % len(CLASSES)], random.Random(i), int(25 * seconds), (1280, 720))
            write_video(path, frames, 25, (1280, 720))
        paths.append(str(path))
    return paths


def decode(decoder: Any, files: list[str], planes: bool) -> tuple[float, float, float]:
    """(clips/s, tagger CPU ms per clip, bytes per clip) decoding ``files`` once."""
    from tagger.clips.decode import DecodeJob

    jobs = [
        DecodeJob(path=p, num_frames=16, stride=4, crop=(224, 224), threads=1, planes=planes) for p in files
    ]
    run = decode_only(decoder, jobs)
    return run.clips_per_s, run.cpu_seconds / run.clips * 1000, _clip_bytes(files[0], planes)


def _clip_bytes(path: str, planes: bool) -> float:
    from tagger.clips.decode import DecodeJob, run_job

    clips = run_job(DecodeJob(path=path, num_frames=16, stride=4, clips=1, crop=(224, 224), planes=planes))[1]
    return float(clips[0].frames.nbytes)


def conversion_ms(rounds: int) -> float:
    """ms of this CPU per 16-frame clip for ``planes_to_rgb``, in batches of 8."""
    import numpy as np
    import torch

    from tagger.records import Planes
    from tagger.transforms import planes_to_rgb

    planes = Planes(
        224,
        224,
        (0, 0),
        (1.75, 1.0),
        (1.164, 0, 1.596, -223, 1.164, -0.392, -0.813, 135, 1.164, 2.017, 0, -277),
    )
    batch = torch.from_numpy(
        np.random.default_rng(0).integers(0, 255, (8, 16, planes.row_size), dtype=np.uint8)
    )
    planes_to_rgb(batch, planes)  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        planes_to_rgb(batch, planes)
        times.append((time.perf_counter() - started) / 8 * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tagger.clips.pool import DecodePool

    print(f"machine: {machine()}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    sets = {
        "UCF101-sized 320x240": ucf101_sized(CACHE / "ucf101-sized", args.files, distinct=args.files),
        "720p": hd_videos(CACHE / "hd-720p", args.files),
    }
    with DecodePool(cores).start() as decoder:
        for name, files in sets.items():
            decode(decoder, files[: 2 * cores], False)  # warm-up: page cache, workers
            rates: dict[bool, list[float]] = {False: [], True: []}
            cpu: dict[bool, list[float]] = {False: [], True: []}
            ratios = []
            size = {}
            for r in range(args.rounds):
                got = {}
                for planes in (True, False) if r % 2 else (False, True):
                    got[planes] = decode(decoder, files, planes)
                for planes, (rate, ms, nbytes) in got.items():
                    rates[planes].append(rate)
                    cpu[planes].append(ms)
                    size[planes] = nbytes
                ratios.append(got[True][0] / got[False][0])
            print(
                f"{name}, {cores} decode processes on {cores} cores, decode only (median of {args.rounds}):"
            )
            for planes, label in ((False, "rgb (baseline)"), (True, "yuv 4:2:0 planes")):
                rate = statistics.median(rates[planes])
                print(
                    f"  {label:17} {rate:6.1f} clips/s ({rate / cores:5.1f} per core),"
                    f" {size[planes] / 1e6:.2f} MB per clip,"
                    f" tagger CPU {statistics.median(cpu[planes]):.2f} ms/clip"
                )
            low, high = min(ratios), max(ratios)
            print(f"  planes/rgb within a round: {statistics.median(ratios):.2f}x ({low:.2f}-{high:.2f})")
    print(f"planes_to_rgb on this CPU: {conversion_ms(max(5, args.rounds)):.1f} ms per 16-frame clip")


if __name__ == "__main__":
    main()
