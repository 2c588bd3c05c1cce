"""Frames to model tensors in torch, with the preprocessing the checkpoint declares.

Mirrors transformers' VideoMAE image processor (shortest-edge resize, centre crop, rescale,
normalize) on uint8 ``(..., T, H, W, 3)`` tensors, so it runs batched and on the GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tagger.clips.crops import centre_crop
from tagger.records import Planes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What ``preprocessor_config.json`` says, reduced to the steps vidtag applies."""

    num_frames: int = 16
    short_side: int | None = 224
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = (224, 224)
    rescale: float = 1 / 255
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def from_config(cls, processor: Mapping[str, Any], num_frames: int, image_size: int) -> Preprocessing:
        """Read a (video or image) processor config; missing keys take VideoMAE's defaults."""
        size = processor.get("size") or {"shortest_edge": image_size}
        short_side = size.get("shortest_edge")
        exact = (int(size["height"]), int(size["width"])) if "height" in size else None
        if short_side is None:
            short_side = image_size
        crop = processor.get("crop_size") or {"height": image_size, "width": image_size}
        do_crop = processor.get("do_center_crop", True)
        do_rescale = processor.get("do_rescale", True)
        do_normalize = processor.get("do_normalize", True)
        return cls(
            num_frames=num_frames,
            short_side=None if exact else int(short_side),
            size=exact,
            crop=(int(crop["height"]), int(crop["width"])) if do_crop else None,
            rescale=float(processor.get("rescale_factor", 1 / 255)) if do_rescale else 1.0,
            mean=tuple(processor.get("image_mean", IMAGENET_MEAN)) if do_normalize else (0.0, 0.0, 0.0),
            std=tuple(processor.get("image_std", IMAGENET_STD)) if do_normalize else (1.0, 1.0, 1.0),
        )

    def to_config(self) -> dict[str, Any]:
        """A ``preprocessor_config.json`` that transformers' VideoMAE processor reads the same way."""
        size = (
            {"height": self.size[0], "width": self.size[1]}
            if self.size
            else {"shortest_edge": self.short_side}
        )
        config: dict[str, Any] = {
            "image_processor_type": "VideoMAEImageProcessor",
            "do_resize": True,
            "size": size,
            "resample": 2,  # bilinear
            "do_center_crop": self.crop is not None,
            "do_rescale": True,
            "rescale_factor": self.rescale,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }
        if self.crop:
            config["crop_size"] = {"height": self.crop[0], "width": self.crop[1]}
        return config

    @property
    def input_size(self) -> tuple[int, int]:
        """Height and width of the tensors the model gets."""
        if self.crop:
            return self.crop
        if self.size:
            return self.size
        raise ValueError("a shortest-edge resize without a crop has no fixed input size")


def resized_size(height: int, width: int, prep: Preprocessing) -> tuple[int, int]:
    """Output size of the resize step, rounded as transformers rounds it (long side floored)."""
    if prep.size:
        return prep.size
    short = prep.short_side or min(height, width)
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def to_model_input(
    frames: torch.Tensor, prep: Preprocessing, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 ``(..., T, H, W, 3)`` to normalized ``(..., T, 3, h, w)`` in ``dtype``.

    Resizing is skipped when the frames already have the resized size (the decoder resizes
    early), so on the hot path this is one crop, one multiply-add and a permute.
    """
    height, width = frames.shape[-3], frames.shape[-2]
    target = resized_size(height, width, prep)
    x = frames
    if (height, width) != target:
        lead = x.shape[:-3]
        flat = x.reshape(-1, height, width, 3).permute(0, 3, 1, 2).float()
        # antialias=True follows PIL's bilinear filter, which the transformers processor uses.
        flat = F.interpolate(flat, size=target, mode="bilinear", antialias=True, align_corners=False)
        x = flat.round().clamp(0, 255).permute(0, 2, 3, 1).reshape(*lead, *target, 3)
    if prep.crop:
        x = centre_crop(x, prep.crop)
    mean = torch.tensor(prep.mean, device=x.device, dtype=torch.float32) / prep.rescale
    std = torch.tensor(prep.std, device=x.device, dtype=torch.float32) / prep.rescale
    x = (x.float() - mean) / std
    return x.movedim(-1, -3).contiguous().to(dtype)


def planes_to_rgb(frames: torch.Tensor, planes: Planes) -> torch.Tensor:
    """uint8 ``(..., planes.row_size)`` 4:2:0 rows (``tagger.clips.planes``) to uint8
    ``(..., H, W, 3)`` RGB, on the device the rows are on.

    Chroma is upsampled bilinearly to the luma grid from where swscale's RGB path takes it
    (``planes.origin``), then ``planes.matrix`` maps each (Y, U, V) to RGB.
    """
    height, width = planes.height, planes.width
    ch, cw = planes.chroma_shape
    lead = frames.shape[:-1]
    x = frames.float()
    luma = x[..., : height * width].reshape(*lead, height, width)
    chroma = x[..., height * width :].reshape(*lead, 2, ch, cw)
    rows = _upsampling(height, ch, planes.origin[0], x.device)
    cols = _upsampling(width, cw, planes.origin[1], x.device)
    u, v = (rows @ chroma[..., k, :, :] @ cols.T for k in (0, 1))
    yuv1 = torch.stack([luma, u, v, torch.ones_like(luma)], dim=-1)
    matrix = torch.tensor(planes.matrix, dtype=torch.float32, device=x.device).view(3, 4)
    return (yuv1 @ matrix.T).round_().clamp_(0, 255).to(torch.uint8)


def _upsampling(size: int, samples: int, origin: float, device: torch.device) -> torch.Tensor:
    """``(size, samples)`` bilinear weights taking pixel ``j`` from sample ``origin + j / 2``."""
    position = (origin + torch.arange(size, dtype=torch.float64) / 2).clamp(0, samples - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=samples - 1)
    frac = position - low
    weights = torch.zeros(size, samples, dtype=torch.float64)
    index = torch.arange(size)
    weights.index_put_((index, low), 1 - frac, accumulate=True)
    weights.index_put_((index, high), frac, accumulate=True)
    return weights.to(device=device, dtype=torch.float32)


def to_display(pixel_values: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Undo normalization: ``(T, 3, h, w)`` model input back to uint8 ``(T, h, w, 3)``."""
    mean = torch.tensor(prep.mean).view(3, 1, 1)
    std = torch.tensor(prep.std).view(3, 1, 1)
    x = (pixel_values.float().cpu() * std + mean) / prep.rescale
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
