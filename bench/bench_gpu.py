"""vidtag throughput on a GPU: end to end against decoding alone and the model alone.

    python bench/bench_gpu.py [--videos 2000] [--model base|tiny] [--precision auto]
                              [--batch-size N] [--workers N] [--compile] [--pipeline-files 50]
                              [--frames auto|rgb|yuv]

Videos: UCF101-shaped clips (320x240, 25 fps, MPEG-4 Part 2, 7 s) generated once into
bench/.cache/ucf101-sized (a few dozen distinct ones, hard-linked under more names, so the
page cache holds them and decoding, not the disk, is measured). At about 7 s each, vidtag's
default is one clip per video.

Runs, one after another, on the same files:

- decode only: the decode processes feed nothing; clips/s is the most they can supply;
- model ceiling: ``Classifier.predict`` on ready uint8 clips at the batch size and precision
  (upload, normalization on the device, forward, probabilities back);
- vidtag: ``tagger.engines.local.tag`` end to end, with the share of wall time the model was busy
  and, when NVML answers, the mean GPU utilization;
- pipeline loop: ``pipeline("video-classification")`` once per file on the same device
  (fp32, first 16 frames), over the first ``--pipeline-files``.

``--frames`` is vidtag's: auto ships YUV 4:2:0 planes to a model on a GPU; ``--frames rgb``
gives the RGB baseline to compare against. The bound is whichever of decoding and the model
supplies fewer clips/s. ``--device cpu``
runs the same script without a GPU (for a quick check of the script itself).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from common import (
    CACHE,
    SHAPES,
    PipelineLoop,
    Run,
    ceiling,
    decode_only,
    machine,
    make_model,
    ucf101_sized,
    vidtag,
)


class Utilization:
    """Samples ``torch.cuda.utilization()`` (NVML) every 0.2 s while active."""

    def __init__(self, enabled: bool) -> None:
        import torch

        self.samples: list[int] = []
        self.ok = False
        if enabled:
            try:
                torch.cuda.utilization()
                self.ok = True
            except Exception:  # no pynvml / NVML: report n/a
                self.ok = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self.stop.wait(0.2):
            self.samples.append(torch.cuda.utilization())

    def __enter__(self) -> Utilization:
        if self.ok:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.ok:
            self.thread.join()

    def mean(self) -> str:
        return f"{statistics.mean(self.samples):.0f} %" if self.samples else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=64)
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--frames", choices=("auto", "rgb", "yuv"), default="auto")
    parser.add_argument("--pipeline-files", type=int, default=50)
    args = parser.parse_args()

    from tagger.classify import load_classifier
    from tagger.clips.decode import make_job
    from tagger.clips.pool import DecodePool, default_workers
    from tagger.options import TagOptions

    started = time.perf_counter()
    files = ucf101_sized(CACHE / "ucf101-sized", args.videos, args.distinct)
    print(
        f"videos: {len(files)} UCF101-sized ({args.distinct} distinct),"
        f" ready in {time.perf_counter() - started:.0f} s"
    )
    model_dir = make_model(args.model)
    classifier = load_classifier(str(model_dir), args.device, args.precision, compile=args.compile)
    batch = args.batch_size or classifier.default_batch_size
    workers = args.workers or default_workers(classifier.device.type)
    options = TagOptions(batch_size=batch, frames=args.frames)
    planes = options.planes(classifier.device.type)
    precision = str(classifier.dtype).removeprefix("torch.")
    print(f"machine: {machine()}")
    print(
        f"model: {args.model}-shaped VideoMAE on {classifier.device} as {precision}, batch {batch},"
        f" {workers} decode processes{', compiled' if args.compile else ''}"
    )

    with DecodePool(workers).start() as decoder:
        vidtag(files[: 2 * batch], classifier, options, decoder)  # warm-up (and compilation)
        decoded = decode_only(
            decoder, (make_job(p, classifier.prep, classifier.stride, options, planes) for p in files)
        )
        print(f"decode only: {decoded.clips_per_s:.1f} clips/s", flush=True)
        top = ceiling(classifier, batch, clips=max(len(files), 4 * batch))
        print(f"model ceiling: {top.clips_per_s:.1f} clips/s", flush=True)
        with Utilization(classifier.device.type == "cuda") as gpu:
            tagged = vidtag(files, classifier, options, decoder)
        print(f"vidtag: {tagged.clips_per_s:.1f} clips/s", flush=True)

    base: Run | None = None
    if args.pipeline_files:
        loop = PipelineLoop(model_dir, device=args.device)
        subset = files[: args.pipeline_files]
        loop.run(subset[:1])
        base = loop.run(subset)

    bound = "decode" if decoded.clips_per_s < top.clips_per_s else "model"
    print()
    print(f"{'run':40} {'videos/s':>9} {'clips/s':>9}  note")
    print(f"{'decode only':40} {decoded.videos_per_s:9.1f} {decoded.clips_per_s:9.1f}")
    print(f"{'model ceiling, ' + precision:40} {'':9} {top.clips_per_s:9.1f}")
    print(
        f"{'vidtag end to end, ' + precision:40} {tagged.videos_per_s:9.1f} {tagged.clips_per_s:9.1f}"
        f"  {tagged.clips_per_s / top.clips_per_s:.2f}x ceiling; model busy {tagged.model_share:.0%};"
        f" GPU utilization {gpu.mean()}; bound: {bound}"
    )
    if base is not None:
        print(
            f"{'pipeline loop, fp32, first 16 frames':40} {base.videos_per_s:9.1f} {base.clips_per_s:9.1f}"
            f"  vidtag is {tagged.videos_per_s / base.videos_per_s:.1f}x ({len(subset)} files)"
        )


if __name__ == "__main__":
    main()
