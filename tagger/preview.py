"""The debugging GIF of the fine-tuning guide: exactly the frames the model sees."""

from __future__ import annotations

import torch

from tagger.clips.decode import make_job, run_job
from tagger.fsutil import atomic_open
from tagger.models import load_spec
from tagger.options import MAX_DURATION_S, MAX_PIXELS, TagOptions
from tagger.transforms import to_display, to_model_input


def write_preview(
    video: str,
    gif_path: str,
    model: str,
    clips: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_duration_s: float = MAX_DURATION_S,
) -> int:
    """Decode ``video``'s clips as tagging does, un-normalize them and write a GIF; returns clips."""
    spec = load_spec(model)
    options = TagOptions(clips=clips, workers=1, max_pixels=max_pixels, max_duration_s=max_duration_s)
    info, decoded = run_job(make_job(video, spec.prep, spec.stride, options))
    from PIL import Image

    frames: list[Image.Image] = []
    for clip in decoded:
        pixel_values = to_model_input(torch.from_numpy(clip.frames), spec.prep)
        frames.extend(Image.fromarray(f.numpy()) for f in to_display(pixel_values, spec.prep))
    # Play back at the clip's real pace: one sampled frame every `stride` source frames.
    duration_ms = max(20, round(1000 * spec.stride / info.fps))
    with atomic_open(gif_path, "wb") as f:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return len(decoded)
