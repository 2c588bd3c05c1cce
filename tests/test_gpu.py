"""The CUDA path: uint8 clips pinned and moved to the GPU, normalized and run there in bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagger.classify import load_classifier
from tagger.engines.local import tag
from tagger.options import TagOptions

from .conftest import TINY_FRAMES, TINY_SIZE

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_auto_precision_agrees_with_cpu_fp32(tiny_model, classifier):
    gpu = load_classifier(str(tiny_model), device="cuda", precision="auto")
    assert gpu.device.type == "cuda" and gpu.dtype in (torch.bfloat16, torch.float16)
    assert gpu.default_batch_size == 32
    rng = np.random.default_rng(3)
    clips = rng.integers(0, 255, size=(16, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    on_gpu, on_cpu = gpu.predict(clips), classifier.predict(clips)
    assert on_gpu.dtype == np.float32 and np.abs(on_gpu - on_cpu).max() < 0.05
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.9


def test_cuda_batches_are_page_locked_and_reused(tiny_model):
    gpu = load_classifier(str(tiny_model), device="cuda")
    rng = np.random.default_rng(4)
    clips = list(rng.integers(0, 255, size=(8, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8))
    batch = gpu.stack(clips)
    assert torch.as_tensor(batch).is_pinned()  # pin_memory() in predict copies nothing more
    first = gpu.predict(batch)
    assert np.shares_memory(gpu.stack(clips[::-1]), batch)
    assert np.allclose(gpu.predict(gpu.stack(clips)), first, atol=1e-3)


def test_cuda_tagging_end_to_end(tiny_model, video_factory):
    gpu = load_classifier(str(tiny_model), device="cuda")
    paths = [str(video_factory([color] * 60)) for color in ("red", "green", "blue")]
    results = {r.path: r for r in tag(paths, gpu, TagOptions(workers=2, top_k=1))}
    assert [results[p].tags[0].label for p in paths] == ["red", "green", "blue"]


def test_cuda_turns_planes_into_the_pixels_the_cpu_does(tmp_path):
    from tagger.transforms import planes_to_rgb
    from tests.test_planes import STREAMS, both_ways, tagged_video

    path = tagged_video(tmp_path / "bt709.mp4", *STREAMS["bt709-limited"])
    _, plane_clips = both_ways(path)
    clip = plane_clips[0]
    frames = torch.from_numpy(np.array(clip.frames))
    on_gpu = planes_to_rgb(frames.cuda(), clip.planes).cpu()
    on_cpu = planes_to_rgb(frames, clip.planes)
    assert (on_gpu.int() - on_cpu.int()).abs().max() <= 1


def test_cuda_tagging_ships_planes_by_default(tiny_model, tmp_path, monkeypatch):
    from tagger import classify
    from tests.conftest import write_video

    converted: list[int] = []
    original = classify.planes_to_rgb

    def spy(frames, planes):  # type: ignore[no-untyped-def]
        converted.append(len(frames))
        return original(frames, planes)

    monkeypatch.setattr(classify, "planes_to_rgb", spy)
    gpu = load_classifier(str(tiny_model), device="cuda")
    paths = [
        str(write_video(tmp_path / f"{c}.mp4", [c] * 60, size=(160, 96))) for c in ("red", "green", "blue")
    ]
    results = {r.path: r for r in tag(paths, gpu, TagOptions(workers=2, top_k=1))}
    assert [results[p].tags[0].label for p in paths] == ["red", "green", "blue"]
    assert sum(converted) == sum(r.clips for r in results.values())
