"""The runtime ``Classifier``: a loaded VideoMAE that turns batches of clips into probabilities.

Which checkpoint and what it expects is ``tagger.models``; here the weights load (safetensors
only, never remote code) and device and precision are resolved once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tagger.labels import Calibration
from tagger.models import fingerprint, labels_of, load_spec, model_load_error
from tagger.options import DEFAULT_MODEL
from tagger.records import InputError, Planes, TaggerError
from tagger.transforms import Preprocessing, planes_to_rgb, to_model_input

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; a CUDA device that is not there is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise TaggerError(f"--device {device}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise TaggerError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()) or bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA and on CPUs with bf16 matrix units, else fp32."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


class Classifier:
    """A loaded model: ``predict`` maps uint8 clips to probabilities over ``labels``."""

    def __init__(
        self,
        model: Any,
        config: Any,
        prep: Preprocessing,
        stride: int,
        device: torch.device,
        dtype: torch.dtype,
        name: str,
        fingerprint: str,
        variant: str = "",
        calibration: Calibration | None = None,
    ) -> None:
        self.model = model
        self.labels = labels_of(config)
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        #: Per-class thresholds from ``vidtag calibrate`` (``tagger.labels``), if any.
        self.calibration = calibration
        self.prep = prep
        self.stride = stride
        self.device = device
        self.dtype = dtype
        self.name = name
        self.fingerprint = fingerprint
        #: Set when the scores differ from the checkpoint's own (int8): part of ``id``.
        self.variant = variant
        #: Largest batch that fitted in GPU memory, once one did not.
        self.max_batch: int | None = None
        #: One batch array per clip shape (RGB frames, or planes of one size).
        self._batches: dict[tuple[int, ...], np.ndarray] = {}

    @property
    def default_batch_size(self) -> int:
        """Clips per forward pass when the user does not say.

        On a 2-core CPU a VideoMAE-base forward ran fastest one clip at a time (0.355 clips/s
        at batch 1, 0.291 at batch 8: BENCHMARKS.md); a GPU needs batches to be busy.
        """
        return 32 if self.device.type == "cuda" else 1

    @property
    def id(self) -> str:
        """Model name and weights hash, as written in the ``model`` column."""
        return f"{self.name}@{self.fingerprint}" + (f"+{self.variant}" if self.variant else "")

    def stack(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Clips into one batch array, reused from call to call (page-locked on CUDA).

        A fresh array per batch costs a page fault per 4 KB (2 ms per 2.4 MB clip, more than
        the copy itself), and on CUDA a second copy into page-locked memory. The array is
        valid until the next call; ``predict`` is done with it when it returns.
        """
        shape = (len(clips), *clips[0].shape)
        batch = self._batches.get(shape[1:])
        if batch is None or len(batch) < len(clips):
            if self.device.type == "cuda":
                batch = torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()
            else:
                batch = np.empty(shape, dtype=np.uint8)
            self._batches[shape[1:]] = batch
        return np.stack(clips, out=batch[: len(clips)])

    def predict(self, clips: np.ndarray | torch.Tensor, planes: Planes | None = None) -> np.ndarray:
        """uint8 ``(B, T, H, W, 3)`` → float32 ``(B, labels)``; softmax, or sigmoid if multi-label.
        With ``planes`` the clips are YUV rows ``(B, T, planes.row_size)``, made RGB on the device.

        A batch that runs out of GPU memory is split in halves, and the smaller size is kept
        for later calls, so a batch size too large for the card costs one retry, not the run.
        """
        size = len(clips) if self.max_batch is None else self.max_batch
        parts = []
        start = 0
        while start < len(clips):
            chunk = clips[start : start + size]
            try:
                parts.append(self._forward(chunk, planes))
            except torch.cuda.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                size = self.max_batch = len(chunk) // 2
                log.warning("out of GPU memory at batch %d; continuing with %d", len(chunk), size)
                continue
            start += len(chunk)
        return np.concatenate(parts)

    @torch.inference_mode()
    def _forward(self, clips: np.ndarray | torch.Tensor, planes: Planes | None = None) -> np.ndarray:
        frames = torch.as_tensor(clips)
        if self.device.type == "cuda":
            # uint8 crosses the bus (4x less than float); normalization happens on the GPU.
            # pin_memory() is free for a batch from stack(), which is page-locked already;
            # reading the probabilities back waits for the copy, so the batch can be reused.
            frames = frames.pin_memory().to(self.device, non_blocking=True)
        if planes is not None:
            frames = planes_to_rgb(frames, planes)
        pixel_values = to_model_input(frames, self.prep, self.dtype)
        logits = self.model(pixel_values=pixel_values).logits.float()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs.cpu().numpy()


def load_classifier(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    runtime: str = "torch",
) -> Classifier:
    """Load ``model`` (alias, hub id or directory) for inference on ``device``.

    ``compile`` wraps the model in ``torch.compile``: worth it on a GPU for long runs; the
    first batch of each new size pays the compilation (about 30 s for a tiny model on CPU).
    ``runtime`` (see ``tagger.runtimes``): onnx or openvino run an export of the model, made
    once and cached; ``precision="int8"`` quantizes it (onnx).
    """
    from transformers import AutoModelForVideoClassification
    from transformers.utils import logging as hf_logging

    from tagger.runtimes import load_exported, resolve_runtime

    # A per-tensor loading bar on stderr would bury vidtag's own progress.
    hf_logging.disable_progress_bar()
    spec = load_spec(model)
    calibration = spec.calibration  # a stale one is refused before the weights load
    ref = spec.ref
    torch_device = resolve_device(device)
    runtime = resolve_runtime(runtime, torch_device.type, precision)
    if runtime != "torch" and compile:
        raise InputError(f"--compile is for --runtime torch, not {runtime}")
    exported = runtime != "torch"
    dtype = torch.float32 if exported else resolve_precision(precision, torch_device)

    def load_net() -> Any:
        try:
            net = AutoModelForVideoClassification.from_pretrained(
                ref.source,
                use_safetensors=True,
                attn_implementation="sdpa",
                dtype=dtype,
            )
        except (OSError, ValueError) as exc:
            raise model_load_error(ref, exc) from None
        return net.eval().to(torch_device)

    weights = fingerprint(ref, spec.config)
    variant = ""
    net: Any
    if exported:  # the torch weights are loaded only when there is no export yet
        net = load_exported(load_net, weights, runtime, precision, spec.clip_shape, torch.get_num_threads())
        variant = "int8" if precision == "int8" else ""
        log.info("loaded %s for %s (%s)", ref.name, runtime, precision)
    else:
        net = load_net()
        if compile:
            net = torch.compile(net)
        log.info("loaded %s on %s as %s", ref.name, torch_device, str(dtype).removeprefix("torch."))
    return Classifier(
        net,
        spec.config,
        spec.prep,
        spec.stride,
        torch_device,
        dtype,
        ref.name,
        weights,
        variant=variant,
        calibration=calibration,
    )
