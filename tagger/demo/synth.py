"""A small labeled video dataset made from nothing: moving shapes in UCF101 layout.

A video's class depends on what moves (a red or a blue object) and on how it moves (up or
down), so a model must read both appearance and motion; one frame cannot tell the class.
The object's shape (disc or square), size, place and the background vary as nuisances.
Vertical motion survives the horizontal flip used in training.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

COLORS = ("Red", "Blue")
DIRECTIONS = ("Up", "Down")
CLASSES = tuple(f"{color}{direction}" for color in COLORS for direction in DIRECTIONS)


def _frames(label: str, rng: random.Random, count: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    width, height = size
    red = label.startswith("Red")
    up = label.endswith("Up")
    disc = rng.random() < 0.5
    gray = rng.randint(20, 110)
    background = np.array([gray + rng.randint(-15, 15) for _ in range(3)], dtype=np.uint8)
    strong, weak = rng.randint(170, 255), rng.randint(0, 80)
    color = np.array([strong, weak, weak] if red else [weak, weak, strong], dtype=np.uint8)
    radius = rng.randint(height // 5, height // 4)
    x = rng.randint(radius, width - radius - 1)
    travel = height - 2 * radius
    yy, xx = np.mgrid[0:height, 0:width]
    noise_rng = np.random.default_rng(rng.randint(0, 2**31))
    for i in range(count):
        # One sweep per video, top to bottom or bottom to top, with a little wobble.
        progress = i / max(1, count - 1)
        y = radius + travel * (1 - progress if up else progress)
        cx = x + 3 * np.sin(i / 3)
        if disc:
            mask = (xx - cx) ** 2 + (yy - y) ** 2 <= radius**2
        else:
            mask = (np.abs(xx - cx) <= radius) & (np.abs(yy - y) <= radius)
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = background
        frame[mask] = color
        grain = noise_rng.integers(-10, 11, size=frame.shape)
        yield np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int, size: tuple[int, int]) -> None:
    """Encode RGB frames as MPEG-4 Part 2 (in every PyAV build, decodes fast)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 800_000
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())


def make_dataset(
    root: str | Path,
    per_split: dict[str, int] | None = None,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
    fps: int = 12,
    seconds: float = 3.0,
    size: tuple[int, int] = (96, 72),
) -> Path:
    """Write ``root/{train,val,test}/<Class>/v_<Class>_gNN_cMM.mp4`` and return ``root``.

    ``per_split`` is videos per class in each split; every video is its own scene group.
    """
    per_split = per_split or {"train": 16, "val": 4, "test": 6}
    root = Path(root)
    rng = random.Random(seed)
    group = 0
    for split, count in per_split.items():
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                group += 1
                path = folder / f"v_{label}_g{group:02d}_c01.mp4"
                frames = _frames(label, rng, round(fps * seconds), size)
                write_video(path, frames, fps, size)
    return root
