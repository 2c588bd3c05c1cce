"""Where crops sit in a frame: the one rule for the decoder, the tagger and the transforms.

Works on numpy arrays and torch tensors alike, frames shaped ``(..., H, W, C)``.
"""

from __future__ import annotations

from typing import Any

#: A numpy array or torch tensor shaped ``(..., H, W, C)``.
Frames = Any


def offsets(length: int, size: int) -> tuple[int, int, int]:
    """Start, centre and end of a ``size`` window along ``length`` (0 when it does not fit)."""
    end = max(0, length - size)
    return 0, end // 2, end


def centre_crop(frames: Frames, crop: tuple[int, int]) -> Frames:
    """The middle ``crop`` (height, width) of ``frames``."""
    ch, cw = crop
    height, width = frames.shape[-3], frames.shape[-2]
    top, left = offsets(height, ch)[1], offsets(width, cw)[1]
    return frames[..., top : top + ch, left : left + cw, :]


def views(frames: Frames, crop: tuple[int, int] | None, count: int) -> list[Frames]:
    """``count`` crops of ``frames``: 1 is the centre; 3 are both ends and the centre of the
    long side (the VideoMAE paper's test views). No crop: the frames as they are."""
    if crop is None:
        return [frames]
    if count == 1:
        return [centre_crop(frames, crop)]
    ch, cw = crop
    height, width = frames.shape[-3], frames.shape[-2]
    top, left = offsets(height, ch)[1], offsets(width, cw)[1]
    if width >= height:
        return [frames[..., top : top + ch, x : x + cw, :] for x in offsets(width, cw)]
    return [frames[..., y : y + ch, left : left + cw, :] for y in offsets(height, ch)]
