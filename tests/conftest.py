"""Shared fixtures: videos made with PyAV and a tiny VideoMAE trained here, saved with
``save_pretrained`` so the real loading code reads it. Nothing touches the network."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("VIDTAG_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


def _lol(level: int) -> str:
    return f"&lol{level - 1};" * 10 if level else "lol" * 10


#: The declarations of a "billion laughs" entity bomb: ten levels of ten, 10^10 "lol"s (30 GB)
#: if &lol9; were ever expanded. Hostile-sidecar tests put it in a DOCTYPE.
ENTITY_BOMB = "".join(f'<!ENTITY lol{i} "{_lol(i)}">' for i in range(10))


def assert_nothing_read_from_passwd(folder: Path) -> None:
    """No file in ``folder`` holds a line of /etc/passwd (what an external entity would pull in)."""
    passwd = Path("/etc/passwd")
    if passwd.exists():
        first = passwd.read_text().splitlines()[0].encode()
        assert all(first not in p.read_bytes() for p in folder.iterdir() if p.is_file())


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TINY_SIZE = 32
TINY_FRAMES = 4
TINY_STRIDE = 2


def write_video(
    path: Path,
    colors: Sequence[str] | Callable[[int], np.ndarray],
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "mpeg4",
    container_format: str | None = None,
) -> Path:
    """A video whose frame ``i`` is ``colors[i]`` (a COLORS name) or ``colors(i)`` (an RGB array)."""
    import av

    width, height = size
    count = len(colors) if not callable(colors) else None
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        i = 0
        while count is None or i < count:
            if callable(colors):
                rgb = colors(i)
                if rgb is None:
                    break
            else:
                base = np.array(COLORS[colors[i]], dtype=np.int16)
                noise = rng.integers(-12, 13, size=(height, width, 3))
                rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
            i += 1
        for packet in stream.encode():
            out.mux(packet)
    return path


def scan_rows(folder: Path, model: Path, out: Path, *flags: str) -> dict[str, dict[str, str]]:
    """``vidtag scan FOLDER -m MODEL -o OUT`` on the CPU at fp32 (and ``flags``): its rows by path."""
    import csv

    from click.testing import CliRunner

    from tagger.cli import cli

    args = ["scan", str(folder), "-m", str(model), "-o", str(out), "--device", "cpu", "--precision", "fp32"]
    result = CliRunner().invoke(cli, [*args, *flags])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="session")
def video_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    folder = tmp_path_factory.mktemp("videos")
    counter = iter(range(10**6))

    def make(
        colors: Sequence[str] | Callable[[int], np.ndarray], name: str | None = None, **kw: object
    ) -> Path:
        return write_video(folder / (name or f"v{next(counter)}.mp4"), colors, **kw)  # type: ignore[arg-type]

    return make


def _train_color_model(out_dir: Path) -> Path:
    """A tiny VideoMAE that tells red, green and blue clips apart, trained for a few seconds."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    from tagger.transforms import Preprocessing, to_model_input

    labels = list(COLORS)
    config = VideoMAEConfig(
        image_size=TINY_SIZE,
        patch_size=8,
        num_channels=3,
        num_frames=TINY_FRAMES,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = VideoMAEForVideoClassification(config)
    processor = VideoMAEImageProcessor(
        size={"shortest_edge": TINY_SIZE},
        crop_size={"height": TINY_SIZE, "width": TINY_SIZE},
        image_mean=[0.45, 0.45, 0.45],
        image_std=[0.225, 0.225, 0.225],
    )
    prep = Preprocessing.from_config(processor.to_dict(), TINY_FRAMES, TINY_SIZE)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        y = rng.integers(0, len(labels), size=12)
        base = np.array([COLORS[labels[i]] for i in y], dtype=np.int16)[:, None, None, None, :]
        noise = rng.integers(-40, 41, size=(len(y), TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3))
        frames = torch.from_numpy(np.clip(base + noise, 0, 255).astype(np.uint8))
        loss = model(pixel_values=to_model_input(frames, prep), labels=torch.from_numpy(y)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "vidtag.json").write_text(json.dumps({"frame_stride": TINY_STRIDE}))
    return out_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a trained tiny color classifier (labels red, green, blue)."""
    return _train_color_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def classifier(tiny_model: Path):  # type: ignore[no-untyped-def]
    from tagger.classify import load_classifier

    return load_classifier(str(tiny_model), device="cpu", precision="fp32")


@pytest.fixture
def model_load_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """``load_classifier`` replaced by one that records its arguments, then refuses (exit 2)."""
    from tagger import classify
    from tagger.records import ModelLoadError

    seen: dict[str, object] = {}

    def refuse(model, device="auto", precision="auto", compile=False, runtime="torch"):  # type: ignore[no-untyped-def]
        seen.update(model=model, device=device, precision=precision, compile=compile, runtime=runtime)
        raise ModelLoadError("stop here")

    monkeypatch.setattr(classify, "load_classifier", refuse)
    return seen


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real test videos not present at {REAL_DATA}")
    return REAL_DATA
