"""vidtag against a loop of transformers' video-classification pipeline and the model's own ceiling.

    python bench/bench_cpu.py [--model base|tiny] [--files 8] [--rounds 3] [--videos DIR]

Measured in one run, on the same files and the same model (random weights of the given
shape, saved locally: nothing is downloaded):

- pipeline loop: ``pipeline("video-classification", model=DIR)`` once per file, fp32, default
  arguments (the first 16 frames of each video);
- vidtag: ``tagger.engines.local.tag`` end to end (decode processes, batching) with ``--clips 1``
  at auto precision and at fp32, and with its default whole-video coverage;
- model ceiling: the forward pass alone on ready clips, at vidtag's batch size and precision.

Everything is set up and warmed once (models loaded, decode processes started, one file
through each); then each round times every run, in an order that rotates from round to
round, and the ratios are taken within a round. A shared machine drifts by 10-20 % over
minutes; ratios of neighbouring runs drift far less. The summary gives the median ratio
and its range over the rounds.
"""

from __future__ import annotations

import argparse
import os

from common import (
    REAL_DATA,
    SHAPES,
    PipelineLoop,
    Run,
    action_clips,
    ceiling,
    machine,
    make_model,
    spread,
    vidtag,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(REAL_DATA))
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--batch-size", type=int, default=None, help="default: vidtag's for the device")
    args = parser.parse_args()

    import torch

    from tagger.classify import load_classifier, resolve_precision
    from tagger.clips.pool import DecodePool, default_workers
    from tagger.options import TagOptions

    files = action_clips(args.videos)[: args.files]
    print(f"files ({len(files)}):", *[os.path.relpath(p, args.videos) for p in files], sep="\n  ")
    model_dir = make_model(args.model)
    print(f"model: {args.model}-shaped VideoMAE, random weights")
    print(f"machine: {machine()}")

    loop = PipelineLoop(model_dir)
    fp32 = load_classifier(str(model_dir), device="cpu", precision="fp32")
    same = resolve_precision("auto", torch.device("cpu")) == fp32.dtype
    auto = fp32 if same else load_classifier(str(model_dir), device="cpu", precision="auto")
    batch = args.batch_size or fp32.default_batch_size
    one = TagOptions(clips=1, batch_size=batch)
    whole = TagOptions(batch_size=batch)
    workers = default_workers("cpu")
    print(
        f"auto precision: {str(auto.dtype).removeprefix('torch.')}; batch {batch};"
        f" {workers} decode process(es)"
    )

    with DecodePool(workers).start() as decoder:
        # Warm-up, not timed: first calls, worker imports, page cache.
        loop.run(files[:1])
        for classifier in (fp32,) if same else (fp32, auto):
            vidtag(files[:1], classifier, one, decoder)
        whole_clips = vidtag(files, fp32, whole, decoder).clips

        runs = {
            "pipeline": lambda: loop.run(files),
            "clips1_fp32": lambda: vidtag(files, fp32, one, decoder),
            "whole": lambda: vidtag(files, auto, whole, decoder),
            "ceiling": lambda: ceiling(auto, batch, whole_clips),
        }
        if not same:
            runs["clips1_auto"] = lambda: vidtag(files, auto, one, decoder)
        names = list(runs)
        rounds: list[dict[str, Run]] = []
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            got = {name: runs[name]() for name in order}
            rounds.append(got)
            print(
                f"round {r + 1}: " + ", ".join(f"{n} {got[n].clips_per_s:.3f} clips/s" for n in names),
                flush=True,
            )

    def ratios(top: str, bottom: str, per: str = "videos") -> list[float]:
        attr = f"{per}_per_s"
        return [getattr(g[top], attr) / getattr(g[bottom], attr) for g in rounds]

    def median(name: str, per: str) -> float:
        values = sorted(getattr(g[name], f"{per}_per_s") for g in rounds)
        return values[len(values) // 2]

    auto_name = "clips1_fp32" if same else "clips1_auto"
    rows = [
        ("pipeline loop (fp32, first 16 frames)", "pipeline", ""),
        (
            "vidtag --clips 1, auto" + (" (= fp32 here)" if same else ""),
            auto_name,
            spread(ratios(auto_name, "pipeline")) + "x pipeline",
        ),
        ("vidtag --clips 1, fp32", "clips1_fp32", spread(ratios("clips1_fp32", "pipeline")) + "x pipeline"),
        (
            "vidtag whole video (default clips), auto",
            "whole",
            spread(ratios("whole", "ceiling", "clips")) + "x ceiling",
        ),
        ("model ceiling (forward only), auto", "ceiling", ""),
    ]
    print(f"\n{args.rounds} rounds; rates are medians, ratios are the median (range) of per-round ratios")
    print(f"{'run':46} {'videos/s':>9} {'clips/s':>8} {'model busy':>10}  ratio")
    for label, name, ratio in rows:
        videos = "" if name == "ceiling" else f"{median(name, 'videos'):.3f}"
        busy = (
            spread([g[name].model_share for g in rounds], ".0%")
            if name.startswith(("clips1", "whole"))
            else ""
        )
        print(f"{label:46} {videos:>9} {median(name, 'clips'):8.3f} {busy:>10}  {ratio}")


if __name__ == "__main__":
    main()
