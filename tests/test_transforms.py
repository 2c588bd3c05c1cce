"""Model-input preprocessing in torch, checked against transformers' own VideoMAE processor."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import VideoMAEImageProcessor

from tagger.clips.crops import centre_crop
from tagger.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    resized_size,
    to_display,
    to_model_input,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _processor(**kw: object) -> VideoMAEImageProcessor:
    """The reference processor; without torchvision transformers falls back to its PIL backend."""
    args: dict[str, object] = {
        "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224},
        "image_mean": list(MEAN),
        "image_std": list(STD),
    }
    args.update(kw)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return VideoMAEImageProcessor(**args)


def _processor_defaults() -> VideoMAEImageProcessor:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return VideoMAEImageProcessor()


def _frames(t: int = 16, h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients that drift over time, plus noise: uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1)
    frames = [base + 3 * i + rng.normal(0, 8, size=(h, w, 3)) for i in range(t)]
    return np.clip(np.stack(frames), 0, 255).round().astype(np.uint8)


def _hf(processor: VideoMAEImageProcessor, frames: np.ndarray) -> torch.Tensor:
    out = processor(list(frames), return_tensors="pt")["pixel_values"]
    assert out.shape[0] == 1  # one video
    return out[0]


# --- from_config ---------------------------------------------------------------------------


def test_from_config_reads_processor_dict() -> None:
    config = _processor(
        size={"shortest_edge": 160},
        crop_size={"height": 144, "width": 128},
        image_mean=[0.5, 0.4, 0.3],
        image_std=[0.2, 0.25, 0.3],
        rescale_factor=1 / 127.5,
    ).to_dict()
    prep = Preprocessing.from_config(config, num_frames=8, image_size=224)
    assert prep.num_frames == 8
    assert prep.short_side == 160
    assert prep.size is None
    assert prep.crop == (144, 128)
    assert prep.input_size == (144, 128)
    assert prep.mean == pytest.approx((0.5, 0.4, 0.3))
    assert prep.std == pytest.approx((0.2, 0.25, 0.3))
    assert prep.rescale == pytest.approx(1 / 127.5)


def test_from_config_default_processor() -> None:
    prep = Preprocessing.from_config(_processor_defaults().to_dict(), num_frames=16, image_size=112)
    assert prep.short_side == 224
    assert prep.crop == (224, 224)
    assert prep.rescale == pytest.approx(1 / 255)
    # The processor's own defaults (IMAGENET_STANDARD, 0.5) are in its dict and win over
    # vidtag's fallback for missing keys (the ImageNet statistics).
    assert prep.mean == pytest.approx((0.5, 0.5, 0.5))
    assert prep.std == pytest.approx((0.5, 0.5, 0.5))


def test_from_config_exact_size() -> None:
    config = {
        "size": {"height": 180, "width": 240},
        "crop_size": {"height": 160, "width": 160},
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.4, 0.5, 0.6],
        "rescale_factor": 0.5,
    }
    prep = Preprocessing.from_config(config, num_frames=4, image_size=224)
    assert prep.size == (180, 240)
    assert prep.short_side is None
    assert prep.crop == (160, 160)
    assert prep.mean == (0.1, 0.2, 0.3)
    assert prep.std == (0.4, 0.5, 0.6)
    assert prep.rescale == 0.5
    assert resized_size(480, 640, prep) == (180, 240)


def test_from_config_missing_keys_and_switches() -> None:
    prep = Preprocessing.from_config({}, num_frames=16, image_size=112)
    assert (prep.short_side, prep.crop) == (112, (112, 112))
    assert prep.mean == IMAGENET_MEAN and prep.std == IMAGENET_STD
    off = Preprocessing.from_config(
        {
            "size": {"height": 64, "width": 96},
            "do_center_crop": False,
            "do_rescale": False,
            "do_normalize": False,
        },
        num_frames=16,
        image_size=112,
    )
    assert off.crop is None
    assert off.input_size == (64, 96)
    assert off.rescale == 1.0
    assert off.mean == (0.0, 0.0, 0.0) and off.std == (1.0, 1.0, 1.0)


# --- resize arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (240, 320, (224, 298)),  # 224 * 320 / 240 = 298.67, floored
        (320, 240, (298, 224)),
        (256, 340, (224, 297)),  # 297.5 floored
        (720, 1280, (224, 398)),  # 398.2
        (224, 224, (224, 224)),
        (100, 100, (224, 224)),
    ],
)
def test_resized_size_floors_long_side(height: int, width: int, expected: tuple[int, int]) -> None:
    assert resized_size(height, width, Preprocessing()) == expected


def test_resized_size_matches_transformers() -> None:
    from transformers.image_transforms import get_resize_output_image_size

    for height, width in [(240, 320), (256, 340), (720, 1280), (1080, 1920), (544, 1280), (480, 854)]:
        image = np.zeros((height, width, 3), dtype=np.uint8)
        expected = get_resize_output_image_size(image, size=224, default_to_square=False)
        assert resized_size(height, width, Preprocessing()) == tuple(expected)


def test_center_crop_offsets() -> None:
    x = torch.arange(10 * 13).reshape(1, 10, 13, 1).expand(1, 10, 13, 3)
    out = centre_crop(x, (4, 6))
    assert out.shape == (1, 4, 6, 3)
    # top = (10 - 4) // 2 = 3, left = (13 - 6) // 2 = 3
    assert out[0, 0, 0, 0].item() == 3 * 13 + 3


# --- against transformers --------------------------------------------------------------------


def test_matches_transformers_with_resize() -> None:
    frames = _frames()  # 16 x 240 x 320, resized to 224 x 298 then cropped to 224
    processor = _processor()
    prep = Preprocessing.from_config(processor.to_dict(), num_frames=16, image_size=224)
    expected = _hf(processor, frames)
    ours = to_model_input(torch.from_numpy(frames), prep)
    assert expected.shape == ours.shape == (16, 3, 224, 224)
    diff = (expected - ours).abs()
    # Measured: max 0.0175, mean 0.0032 (19% of values differ at all). One grey level is
    # 1 / 255 / 0.224 = 0.0175, so no pixel is off by more than one level of 255.
    assert diff.max().item() < 0.018
    assert diff.mean().item() < 0.005


def test_matches_transformers_portrait_and_odd_crop() -> None:
    frames = _frames(t=4, h=200, w=150, seed=1)
    processor = _processor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 96})
    prep = Preprocessing.from_config(processor.to_dict(), num_frames=4, image_size=112)
    expected = _hf(processor, frames)
    ours = to_model_input(torch.from_numpy(frames), prep)
    assert expected.shape == ours.shape == (4, 3, 112, 96)
    diff = (expected - ours).abs()
    # Measured: max 0.0175 (one grey level), mean 0.0030.
    assert diff.max().item() < 0.018
    assert diff.mean().item() < 0.005


def test_matches_transformers_exact_size_without_crop() -> None:
    frames = _frames(t=4, h=120, w=160, seed=2)
    processor = _processor(size={"height": 96, "width": 112}, do_center_crop=False)
    prep = Preprocessing.from_config(processor.to_dict(), num_frames=4, image_size=224)
    assert prep.size == (96, 112) and prep.crop is None
    expected = _hf(processor, frames)
    ours = to_model_input(torch.from_numpy(frames), prep)
    assert expected.shape == ours.shape == (4, 3, 96, 112)
    diff = (expected - ours).abs()
    # Measured: max 0.0175 (one grey level), mean 0.0033.
    assert diff.max().item() < 0.018
    assert diff.mean().item() < 0.005


def test_matches_transformers_without_resize() -> None:
    # Frames already at the resized size (what the decoder hands over): crop + normalize only.
    frames = np.ascontiguousarray(_frames()[:, :224, :298])
    processor = _processor()
    prep = Preprocessing.from_config(processor.to_dict(), num_frames=16, image_size=224)
    expected = _hf(processor, frames)
    ours = to_model_input(torch.from_numpy(frames), prep)
    assert expected.shape == ours.shape == (16, 3, 224, 224)
    # Measured: max 4.8e-07 (float rounding).
    assert (expected - ours).abs().max().item() < 1e-5


# --- shapes, dtypes, round trip --------------------------------------------------------------


def test_to_display_round_trip_is_exact() -> None:
    frames = torch.from_numpy(np.ascontiguousarray(_frames(t=4)[:, :224, :298]))
    prep = Preprocessing(num_frames=4)
    back = to_display(to_model_input(frames, prep), prep)
    assert back.dtype == torch.uint8
    assert back.shape == (4, 224, 224, 3)
    assert torch.equal(back, centre_crop(frames, (224, 224)))


def test_to_display_round_trip_custom_normalization() -> None:
    frames = torch.from_numpy(_frames(t=2, h=64, w=64))
    prep = Preprocessing(
        num_frames=2, short_side=64, crop=(48, 48), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    x = to_model_input(frames, prep)
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    assert torch.equal(to_display(x, prep), frames[:, 8:56, 8:56])


def test_normalization_values() -> None:
    frames = torch.full((1, 224, 224, 3), 255, dtype=torch.uint8)
    x = to_model_input(frames, Preprocessing(num_frames=1))
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    for c in range(3):
        assert x[0, c].unique().tolist() == pytest.approx([expected[c]], rel=1e-6)


def test_batched_shape_and_dtype() -> None:
    frames = torch.from_numpy(_frames(t=6, h=120, w=160)).reshape(2, 3, 120, 160, 3)
    prep = Preprocessing(num_frames=3, short_side=64, crop=(64, 64))
    out = to_model_input(frames, prep)
    assert out.shape == (2, 3, 3, 64, 64)
    assert out.dtype == torch.float32
    assert out.is_contiguous()
    # Batched is the same as one video at a time.
    single = torch.stack([to_model_input(v, prep) for v in frames])
    assert torch.equal(out, single)


def test_bf16_output() -> None:
    frames = torch.from_numpy(_frames(t=4, h=120, w=160)).reshape(1, 4, 120, 160, 3)
    prep = Preprocessing(num_frames=4, short_side=64, crop=(56, 56))
    out = to_model_input(frames, prep, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert out.shape == (1, 4, 3, 56, 56)
    ref = to_model_input(frames, prep)
    assert (out.float() - ref).abs().max().item() < 0.02  # bf16 has 8 bits of mantissa


def test_input_size_without_crop_or_size_is_an_error() -> None:
    with pytest.raises(ValueError):
        _ = Preprocessing(crop=None).input_size


def test_to_config_round_trips_through_from_config_and_transformers():
    from transformers import VideoMAEImageProcessor

    prep = Preprocessing(
        num_frames=8, short_side=72, crop=(64, 64), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25)
    )
    config = prep.to_config()
    assert Preprocessing.from_config(config, num_frames=8, image_size=64) == prep
    hf = VideoMAEImageProcessor(**{k: v for k, v in config.items() if k != "image_processor_type"})
    assert hf.size == {"shortest_edge": 72} and hf.crop_size == {"height": 64, "width": 64}
    assert list(hf.image_mean) == [0.4, 0.5, 0.6]
