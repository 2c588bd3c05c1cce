"""vidtag against a loop of transformers' video-classification pipeline and the model's own ceiling.

    python bench/bench_cpu.py [--videos DIR] [--files 12] [--model base|tiny] [--batch-size N]

All three are measured in one run on the same files and the same model (random weights of
the given shape, saved locally: nothing is downloaded):

- pipeline loop: ``pipeline("video-classification", model=DIR)`` once per file, fp32, default
  arguments (the first 16 frames of each video);
- model ceiling: the forward pass alone on ready tensors, at vidtag's batch size and precision;
- vidtag: ``tagger.pipeline.tag`` end to end (decode workers, batching), with ``--clips 1``
  and with its default whole-video coverage, at auto precision and at fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# torch and tagger are imported inside the functions: decode workers are spawned processes
# that re-import this script, and each would otherwise load torch before its first file.

SHAPES = {
    # VideoMAEConfig() defaults: the compute of videomae-base (16 x 224 x 224, ViT-B).
    "base": {},
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}


def make_model(shape: str, cache: Path) -> Path:
    """A VideoMAE of the given shape with random weights, saved like a real checkpoint."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from tagger.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    out = cache / shape
    if (out / "model.safetensors").is_file():
        return out
    labels = [f"class_{i}" for i in range(400)]
    config = VideoMAEConfig(
        **SHAPES[shape], id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    torch.manual_seed(0)
    VideoMAEForVideoClassification(config).save_pretrained(out)
    prep = Preprocessing(num_frames=16, short_side=224, crop=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    import json

    (out / "preprocessor_config.json").write_text(json.dumps(prep.to_config(), indent=2))
    return out


def pipeline_loop(model_dir: Path, files: list[str]) -> float:
    """Seconds for the guide's recipe: one pipeline call per file."""
    from transformers import pipeline

    classify = pipeline("video-classification", model=str(model_dir), device="cpu")
    classify(files[0])  # warm-up, not timed
    started = time.perf_counter()
    for path in files:
        classify(path)
    return time.perf_counter() - started


def ceiling(model_dir: Path, batch_size: int | None, precision: str, clips: int) -> float:
    """Clips/s of the forward pass alone on ready uint8 clips (normalization included)."""
    import torch

    from tagger.classify import load_classifier

    classifier = load_classifier(str(model_dir), device="cpu", precision=precision)
    batch_size = batch_size or classifier.default_batch_size
    batches = max(1, clips // batch_size)
    clips = torch.randint(0, 255, (batch_size, 16, 224, 224, 3), dtype=torch.uint8).numpy()
    classifier.predict(clips)
    started = time.perf_counter()
    for _ in range(batches):
        classifier.predict(clips)
    return batches * batch_size / (time.perf_counter() - started)


def vidtag(
    model_dir: Path, files: list[str], batch_size: int | None, precision: str, clips: int | None
) -> tuple[float, int]:
    """Seconds and clips for tagging ``files`` end to end."""
    from tagger.classify import load_classifier
    from tagger.pipeline import TagOptions, tag

    classifier = load_classifier(str(model_dir), device="cpu", precision=precision)
    options = TagOptions(clips=clips, batch_size=batch_size)
    list(tag(files[:1], classifier, options))  # warm-up (worker start, first forward)
    started = time.perf_counter()
    done = list(tag(files, classifier, options))
    seconds = time.perf_counter() - started
    assert all(r.ok for r in done), [r.error for r in done if not r.ok]
    return seconds, sum(r.clips for r in done)


def main() -> None:
    import torch

    from tagger.discover import discover

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(ROOT.parent / "shared" / "data" / "real"))
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--batch-size", type=int, default=None, help="default: vidtag's for the device")
    parser.add_argument("--cache", default=str(ROOT / "bench" / ".cache"))
    args = parser.parse_args()

    # Action clips with labels in their names: UCF101 (v_*), HMDB51 and Kinetics samples.
    pool = [
        f.path for f in discover([args.videos]) if Path(f.path).suffix.lower() in (".avi", ".mp4", ".mkv")
    ]
    labeled = [
        p for p in pool if any(k in p for k in ("v_", "3dnet", "st-gcn", "mmaction2/demo.mp4", "tiny-ucf101"))
    ]
    files = sorted(labeled)[: args.files]
    print(f"files ({len(files)}):", *[os.path.relpath(p, args.videos) for p in files], sep="\n  ")
    model_dir = make_model(args.model, Path(args.cache))
    print(f"model: {args.model}-shaped VideoMAE, random weights, {model_dir}")
    print(
        f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    base_s = pipeline_loop(model_dir, files)
    auto_s, auto_clips = vidtag(model_dir, files, args.batch_size, "auto", 1)
    fp32_s, _ = vidtag(model_dir, files, args.batch_size, "fp32", 1)
    whole_s, whole_clips = vidtag(model_dir, files, args.batch_size, "auto", None)
    top = ceiling(model_dir, args.batch_size, "auto", clips=whole_clips)

    n = len(files)
    print()
    print(f"{'run':44} {'videos/s':>9} {'clips/s':>8} {'ratio':>24}")
    print(f"{'pipeline loop (fp32, first 16 frames)':44} {n / base_s:9.3f} {n / base_s:8.3f}")
    print(
        f"{'vidtag --clips 1, auto precision':44} {n / auto_s:9.3f} {auto_clips / auto_s:8.3f}"
        f" {base_s / auto_s:10.2f}x pipeline"
    )
    print(
        f"{'vidtag --clips 1, fp32':44} {n / fp32_s:9.3f} {n / fp32_s:8.3f} {base_s / fp32_s:10.2f}x pipeline"
    )
    print(
        f"{'vidtag default clips (whole video), auto':44} {n / whole_s:9.3f} {whole_clips / whole_s:8.3f}"
        f" {whole_clips / whole_s / top:10.2f}x ceiling"
    )
    print(f"{'model ceiling (forward only), auto':44} {'':9} {top:8.3f}")


if __name__ == "__main__":
    main()
