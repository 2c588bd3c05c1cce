"""Pieces the speed benchmarks share: models, files, and the timed runs.

torch, transformers and tagger are imported inside the functions: decode workers are
spawned processes that re-import the main script, and each would otherwise load torch
before its first file.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL_DATA = ROOT.parent / "shared" / "data" / "real"
CACHE = ROOT / "bench" / ".cache"

SHAPES = {
    # VideoMAEConfig() defaults: the compute of videomae-base (16 x 224 x 224, ViT-B).
    "base": {},
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}


def make_model(shape: str, cache: Path = CACHE) -> Path:
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
    (out / "preprocessor_config.json").write_text(json.dumps(prep.to_config(), indent=2))
    return out


def action_clips(videos: str | Path) -> list[str]:
    """The labeled action clips among the real samples (UCF101, HMDB51, Kinetics), sorted."""
    from tagger.sources.discover import discover

    pool = [
        f.path for f in discover([str(videos)]) if Path(f.path).suffix.lower() in (".avi", ".mp4", ".mkv")
    ]
    keys = ("v_", "3dnet", "st-gcn", "mmaction2/demo.mp4", "tiny-ucf101")
    return sorted(p for p in pool if any(k in p for k in keys))


def ucf101_sized(folder: Path, count: int, distinct: int = 64, seconds: float = 7.0) -> list[str]:
    """``count`` UCF101-shaped videos (320x240, 25 fps, MPEG-4 Part 2, ~7 s, like UCF101's
    XviD clips): ``distinct`` generated ones, hard-linked under more names."""
    from tagger.demo.synth import CLASSES, _frames, write_video

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(distinct):
        path = folder / f"src_{i:04d}.mp4"
        if not path.is_file():
            label = CLASSES[i % len(CLASSES)]
            frames = _frames(label, random.Random(i), int(25 * seconds), (320, 240))
            write_video(path, frames, 25, (320, 240))
        made.append(path)
    names = []
    for i in range(count):
        link = folder / f"v_{i:05d}.mp4"
        if not link.exists():
            os.link(made[i % distinct], link)
        names.append(str(link))
    return names


@dataclass
class Run:
    """One timed run: wall seconds, videos, clips, and seconds spent inside the model."""

    seconds: float
    videos: int
    clips: int
    model_seconds: float = 0.0
    #: CPU time of this (the tagger's) process, where measured.
    cpu_seconds: float = 0.0

    @property
    def videos_per_s(self) -> float:
        return self.videos / self.seconds

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds

    @property
    def model_share(self) -> float:
        """Share of the wall time the model was busy (forward, copies and normalization)."""
        return self.model_seconds / self.seconds


class PipelineLoop:
    """The guide's recipe: ``pipeline("video-classification")`` called once per file."""

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        from transformers import pipeline

        self.classify = pipeline("video-classification", model=str(model_dir), device=device)

    def run(self, files: list[str]) -> Run:
        started = time.perf_counter()
        for path in files:
            self.classify(path)
        return Run(time.perf_counter() - started, len(files), len(files))


def vidtag(files: list[str], classifier: Any, options: Any, decoder: Any) -> Run:
    """``tagger.engines.local.tag`` end to end on a started decoder; times the model calls too."""
    from tagger.engines.local import tag

    busy = 0.0
    predict = classifier.predict

    def timed(clips: Any, planes: Any = None) -> Any:
        nonlocal busy
        t = time.perf_counter()
        try:
            return predict(clips, planes)  # returns numpy: the device is synchronized
        finally:
            busy += time.perf_counter() - t

    classifier.predict = timed
    try:
        started = time.perf_counter()
        done = list(tag(files, classifier, options, decoder=decoder))
        seconds = time.perf_counter() - started
    finally:
        del classifier.predict
    failed = [r.error for r in done if not r.ok]
    if failed:
        raise SystemExit(f"vidtag failed on {len(failed)} files: {failed[:3]}")
    return Run(seconds, len(done), sum(r.clips for r in done), busy)


def ceiling(classifier: Any, batch_size: int, clips: int) -> Run:
    """The forward pass alone on ready uint8 clips (normalization included), in batches."""
    import numpy as np

    batches = max(1, round(clips / batch_size))
    size = classifier.prep.crop or (224, 224)
    frames = np.random.default_rng(0).integers(
        0, 255, (batch_size, classifier.prep.num_frames, *size, 3), dtype=np.uint8
    )
    classifier.predict(frames)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        classifier.predict(frames)
    seconds = time.perf_counter() - started
    return Run(seconds, 0, batches * batch_size, seconds)


def decode_only(decoder: Any, jobs: Iterable[Any]) -> Run:
    """The decode processes alone, no model: how fast clips can be fed (and this process's CPU)."""
    cpu, started = time.process_time(), time.perf_counter()
    videos = clips = 0
    for item in decoder.run(jobs):
        if item is None:
            continue
        _, outcome = item
        if isinstance(outcome, str):
            raise SystemExit(f"decode failed: {outcome}")
        videos += 1
        clips += len(outcome[1])
    seconds = time.perf_counter() - started
    return Run(seconds, videos, clips, cpu_seconds=time.process_time() - cpu)


def spread(values: list[float], fmt: str = ".2f") -> str:
    """Median and range, as ``1.02 (0.97-1.08)``."""
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def machine() -> str:
    import platform

    import av
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()} cores ({cpu}){gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads),"
        f" transformers {transformers.__version__}, PyAV {av.__version__}"
    )
