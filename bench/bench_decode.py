"""What feeding the model costs: decoding a file, and moving its clips to the tagger process.

    python bench/bench_decode.py [--files 16] [--clips 400] [--rounds 3]

1. Decode: ``run_job`` on UCF101-shaped videos (320x240, 25 fps, 7 s), ms per file, with one
   swscale context per video (vidtag) against a new one per frame (what
   ``VideoFrame.to_ndarray(width=, height=)`` does, the baseline). Same pixels either way.
2. Transport: one decode process returns ready 16x224x224 clips (no decoding, so only the
   transport is measured); the tagger's CPU time per clip received and clips/s, through
   shared memory (vidtag) against a pickled result over the pipe (the baseline). The
   tagger's CPU per clip bounds how many clips/s one tagger can take in, whatever the
   number of decode processes: the figure that matters on a GPU.

3. Batch assembly: stacking 32 clips into one batch, ms per clip, into a new array each
   time (``np.stack``, the baseline) against ``Classifier.stack``, which reuses one array.
4. Frame threads: decode-only clips/s of one decode process per core, each decoding with
   one FFmpeg thread (vidtag when the processes fill the cores) against two (the baseline,
   still used when there is a spare core per process).

Rounds alternate the two variants; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from common import CACHE, decode_only, machine, make_model, ucf101_sized

_FRAMES: Any = None


def ready_clips(job: Any) -> Any:
    """Decode-process stand-in: ``job.clips`` clips of 16x224x224 RGB, no decoding."""
    global _FRAMES
    import numpy as np

    from tagger.records import Clip, VideoInfo

    if _FRAMES is None:
        _FRAMES = np.random.default_rng(0).integers(0, 255, (16, 224, 224, 3), dtype=np.uint8)
    info = VideoInfo(path=job.path, duration_s=7.0, fps=25.0, frames=175, width=224, height=224)
    return info, [Clip(job.path, i, 0.0, 2.56, _FRAMES.copy()) for i in range(job.clips)]


class FreshContext:
    """The baseline: a new swscale context for every frame."""

    def reformat(self, frame: Any, **kwargs: Any) -> Any:
        from av.video.reformatter import VideoReformatter

        return VideoReformatter().reformat(frame, **kwargs)


def decode_ms(files: list[str], fresh: bool) -> float:
    from av.video.reformatter import VideoReformatter

    from tagger.clips import decode

    decode.VideoReformatter = FreshContext if fresh else VideoReformatter  # type: ignore[misc, assignment]
    jobs = [
        decode.DecodeJob(
            path=p, num_frames=16, stride=4, clips=None, short_side=224, size=None, crop=(224, 224)
        )
        for p in files
    ]
    started = time.perf_counter()
    for job in jobs:
        decode.run_job(job)
    return (time.perf_counter() - started) / len(jobs) * 1000


def transport(decoder: Any, clips: int, per_file: int) -> tuple[float, float]:
    """(tagger CPU ms per clip, clips/s) for ``clips`` clips in files of ``per_file``."""
    from tagger.clips.decode import DecodeJob

    jobs = [
        DecodeJob(path=f"f{i}", num_frames=16, stride=4, clips=per_file) for i in range(clips // per_file)
    ]
    run = decode_only(decoder, jobs)
    return run.cpu_seconds / run.clips * 1000, run.clips_per_s


def decode_rate(decoder: Any, files: list[str], threads: int) -> float:
    """Decode-only clips/s over ``files`` with ``threads`` FFmpeg threads per file."""
    from tagger.clips.decode import DecodeJob

    jobs = [
        DecodeJob(
            path=p, num_frames=16, stride=4, short_side=224, size=None, crop=(224, 224), threads=threads
        )
        for p in files
    ]
    return decode_only(decoder, jobs).clips_per_s


def assembly_ms(batches: int, reuse: bool, clips: list[Any], classifier: Any) -> float:
    """ms per clip to stack ``clips`` into a batch ``batches`` times."""
    import numpy as np

    started = time.process_time()
    for _ in range(batches):
        batch = classifier.stack(clips) if reuse else np.stack(clips)
        del batch
    return (time.process_time() - started) / (batches * len(clips)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--per-file", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tagger.clips.pool import DecodePool

    print(f"machine: {machine()}")
    files = ucf101_sized(CACHE / "ucf101-sized", args.files, distinct=args.files)
    decode_ms(files, fresh=False)  # warm-up: page cache, codec set-up

    fresh, reused = [], []
    for r in range(args.rounds):
        for variant in (False, True) if r % 2 else (True, False):
            (fresh if variant else reused).append(decode_ms(files, fresh=variant))
    print(
        f"decode, ms per UCF101-sized file (median of {args.rounds}): new swscale context per frame"
        f" {statistics.median(fresh):.1f}, one per video {statistics.median(reused):.1f}"
        f" ({statistics.median(fresh) / statistics.median(reused):.2f}x)"
    )

    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with (
        DecodePool(1, worker=ready_clips, shared_memory=True).start() as shared,
        DecodePool(1, worker=ready_clips, shared_memory=False).start() as piped,
    ):
        transport(shared, 20, args.per_file)
        transport(piped, 20, args.per_file)  # warm-up
        for r in range(args.rounds):
            for use_shared in (True, False) if r % 2 else (False, True):
                decoder = shared if use_shared else piped
                results[use_shared].append(transport(decoder, args.clips, args.per_file))
    print(f"transport of {args.clips} clips of 16x224x224x3 ({args.per_file} per file), 1 decode process:")
    for use_shared, name in ((False, "pickled over the pipe"), (True, "shared memory")):
        cpu = statistics.median(c for c, _ in results[use_shared])
        rate = statistics.median(r for _, r in results[use_shared])
        print(
            f"  {name:22} tagger CPU {cpu:6.2f} ms/clip (caps one tagger at {1000 / cpu:6.0f} clips/s);"
            f" {rate:6.1f} clips/s"
        )

    import numpy as np

    from tagger.classify import load_classifier

    classifier = load_classifier(str(make_model("tiny")), device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8) for _ in range(32)]
    assembly_ms(2, True, clips, classifier)  # warm-up
    stacked: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds):
        for reuse in (True, False) if r % 2 else (False, True):
            stacked[reuse].append(assembly_ms(10, reuse, clips, classifier))
    new_array, reused = statistics.median(stacked[False]), statistics.median(stacked[True])
    print(
        f"batch of 32 clips: np.stack into a new array {new_array:.3f} ms/clip,"
        f" Classifier.stack into a reused one {reused:.3f} ms/clip ({new_array / reused:.1f}x)"
    )

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    many = ucf101_sized(CACHE / "ucf101-sized", 4 * args.files, distinct=args.files)
    rates: dict[int, list[float]] = {1: [], 2: []}
    with DecodePool(cores).start() as decoder:
        decode_rate(decoder, many[: 2 * cores], 1)  # warm-up
        for r in range(args.rounds):
            for threads in (1, 2) if r % 2 else (2, 1):
                rates[threads].append(decode_rate(decoder, many, threads))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        f"{cores} decode processes on {cores} cores, decode only: 2 FFmpeg threads each"
        f" {two:.1f} clips/s, 1 thread each {one:.1f} clips/s ({one / two:.2f}x)"
    )


if __name__ == "__main__":
    main()
