"""The forward pass in each CPU runtime and precision against torch fp32, and end to end against
a loop of transformers' video-classification pipeline.

    python bench/bench_runtimes.py [--model base|tiny] [--clips 4] [--rounds 3] [--files 4]

Model: random weights of the given shape (``common.make_model``; "base" is videomae-base's
compute), loaded through ``load_classifier`` with each ``--runtime``; the exports are made
before timing (into a temporary cache) and their time is printed. Two measures, in rounds
whose order rotates, ratios taken within a round:

- model: ``Classifier.predict`` on ready uint8 clips (normalization included) at vidtag's CPU
  batch size, ``--clips`` clips per run;
- end to end: ``tagger.engines.local.tag`` with ``--clips 1`` on the first ``--files`` labeled
  action clips of ../shared/data/real, against ``pipeline("video-classification")`` once per
  file (fp32, the first 16 frames): the same count of clips per file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from common import REAL_DATA, SHAPES, PipelineLoop, action_clips, ceiling, machine, make_model, spread, vidtag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--videos", default=str(REAL_DATA))
    args = parser.parse_args()

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="vidtag-bench-cache-")
    from tagger.classify import load_classifier
    from tagger.clips.pool import DecodePool, default_workers
    from tagger.options import TagOptions
    from tagger.runtimes import installed

    model_dir = make_model(args.model)
    from tagger.classify import cpu_has_bf16

    print(f"machine: {machine()}; {args.model}-shaped VideoMAE, random weights; bf16 units: {cpu_has_bf16()}")
    # auto: bf16 where the CPU has bf16 units (torch and OpenVINO alike), else fp32.
    variants = [("torch", "fp32"), ("torch", "auto")]
    variants += [(r, "fp32") for r in ("onnx", "openvino") if installed(r)]
    variants += [("openvino", "auto")] if installed("openvino") else []
    variants += [("onnx", "int8")] if installed("onnx") else []
    classifiers = {}
    for runtime, precision in variants:
        started = time.perf_counter()
        classifiers[f"{runtime} {precision}"] = load_classifier(
            str(model_dir), "cpu", precision, runtime=runtime
        )
        print(f"{runtime} {precision}: loaded (export included) in {time.perf_counter() - started:.1f} s")

    files = action_clips(args.videos)[: args.files]
    loop = PipelineLoop(model_dir) if files else None
    one = TagOptions(clips=1, batch_size=1)
    names = list(classifiers)
    model_rates: dict[str, list[float]] = {n: [] for n in names}
    e2e_rates: dict[str, list[float]] = {n: [] for n in [*names, "pipeline"]} if files else {}
    with DecodePool(default_workers("cpu")).start() as decoder:
        for classifier in classifiers.values():  # warm-up: first calls, page cache
            ceiling(classifier, 1, 1)
            if files:
                vidtag(files[:1], classifier, one, decoder)
        if loop:
            loop.run(files[:1])
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                model_rates[name].append(ceiling(classifiers[name], 1, args.clips).clips_per_s)
                if files:
                    e2e_rates[name].append(vidtag(files, classifiers[name], one, decoder).clips_per_s)
            if loop:
                e2e_rates["pipeline"].append(loop.run(files).clips_per_s)
            said = ", ".join(f"{n} {model_rates[n][-1]:.3f}" for n in names)
            print(f"round {r + 1}, model clips/s: {said}", flush=True)

    def ratio(rates: dict[str, list[float]], top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]

    print()
    print("| runtime | model clips/s | × torch fp32 | end to end clips/s | × pipeline loop |")
    print("|---|---|---|---|---|")
    for name in names:
        e2e = (
            f"{spread(e2e_rates[name], '.3f')} | {spread(ratio(e2e_rates, name, 'pipeline'))}"
            if files
            else "|"
        )
        model = f"{spread(model_rates[name], '.3f')} | {spread(ratio(model_rates, name, 'torch fp32'))}"
        print(f"| {name} | {model} | {e2e} |")
    if files:
        print(f"| pipeline loop (torch fp32) | | | {spread(e2e_rates['pipeline'], '.3f')} | 1 |")
    best = max((n for n in names if n.endswith("fp32")), key=lambda n: statistics.median(model_rates[n]))
    print(f"\nfastest fp32: {best}")


if __name__ == "__main__":
    main()
