"""Load a VideoMAE checkpoint and turn batches of clips into label probabilities.

Models come from an alias in ``tagger/registry.toml``, a hub id, or a local directory;
safetensors only, never remote code. Device and precision are resolved once, here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tagger.clips import sampling
from tagger.names import display, is_utf8
from tagger.options import DEFAULT_MODEL
from tagger.records import ModelLoadError, TaggerError
from tagger.transforms import Preprocessing, to_model_input

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
#: Built-in aliases, shipped as package data.
REGISTRY = Path(__file__).resolve().parent / "registry.toml"
#: Written next to a fine-tuned model: how its training clips were cut.
CLIP_PLAN_FILE = "vidtag.json"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def aliases() -> dict[str, str]:
    """Alias → checkpoint (hub id, or a directory relative to ``models/``)."""
    if not REGISTRY.is_file():
        return {}
    with REGISTRY.open("rb") as f:
        return dict(tomllib.load(f).get("aliases", {}))


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: ``source`` is what ``from_pretrained`` gets."""

    name: str
    source: str
    local: bool


def resolve_model(ref: str) -> ModelRef:
    """Turn ``--model`` into a local directory or hub id; an alias wins over a hub id."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{display(ref)} is a directory but has no config.json: not a model directory"
            )
        return _local(ref, path)
    known = aliases()
    if ref in known:
        target = known[ref]
        local = MODELS_DIR / target
        if local.is_dir():
            return _local(ref, local)
        return ModelRef(ref, target, False)
    if (MODELS_DIR / ref / "config.json").is_file():
        return _local(ref, MODELS_DIR / ref)
    # Hub ids are "name" or "org/name"; anything else that names no directory is a typo.
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelLoadError(f"model directory {ref} does not exist")
    return ModelRef(ref, ref, False)


def _local(ref: str, folder: Path) -> ModelRef:
    # safetensors opens files by UTF-8 path only; renaming is the one fix.
    if not is_utf8(str(folder.resolve())):
        raise ModelLoadError(
            f"the path of model directory {display(ref)} is not valid UTF-8, which the "
            "safetensors loader cannot open: rename it (or link it under a UTF-8 name)"
        )
    return ModelRef(ref, str(folder), True)


def model_load_error(ref: ModelRef, exc: Exception) -> ModelLoadError:
    """The error for a checkpoint that cannot be loaded: for a hub model, how to get it offline."""
    if ref.local:
        return ModelLoadError(f"cannot load the model in {ref.source}: {exc}")
    return ModelLoadError(
        f"cannot load model '{ref.name}' ({ref.source}) from the Hugging Face hub or its local cache"
        f" ({type(exc).__name__}). Pass a local model directory with --model DIR, or fill the cache"
        f" on a machine with network access (`hf download {ref.source}`) and copy"
        " ~/.cache/huggingface over."
    )


def _optional_json(ref: ModelRef, filename: str) -> dict[str, Any]:
    """A JSON file of the checkpoint, or {} when it has none."""
    from transformers.utils import cached_file

    try:
        found = cached_file(ref.source, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return {}
    if not found:
        return {}
    with open(found, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def load_config(ref: ModelRef) -> Any:
    """The checkpoint's ``config.json`` (labels, clip length) without loading weights."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref.source)
    except (OSError, ValueError) as exc:
        raise model_load_error(ref, exc) from None


def labels_of(config: Any) -> list[str]:
    """Class names in index order."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label, key=int)]


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


def _fingerprint(ref: ModelRef, config: Any) -> str:
    """Short hash that changes when the weights or labels change (keys the state store)."""
    digest = hashlib.sha256()
    if ref.local:
        for name in sorted(os.listdir(ref.source)):
            if name.endswith((".json", ".safetensors")):
                digest.update(name.encode())
                with open(os.path.join(ref.source, name), "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    else:
        digest.update(str(getattr(config, "_commit_hash", None) or ref.source).encode())
        digest.update(json.dumps(labels_of(config)).encode())
    return digest.hexdigest()[:12]


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
    ) -> None:
        self.model = model
        self.labels = labels_of(config)
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.prep = prep
        self.stride = stride
        self.device = device
        self.dtype = dtype
        self.name = name
        self.fingerprint = fingerprint
        #: Largest batch that fitted in GPU memory, once one did not.
        self.max_batch: int | None = None
        self._batch: np.ndarray | None = None

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
        return f"{self.name}@{self.fingerprint}"

    def stack(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Clips into one batch array, reused from call to call (page-locked on CUDA).

        A fresh array per batch costs a page fault per 4 KB (2 ms per 2.4 MB clip, more than
        the copy itself), and on CUDA a second copy into page-locked memory. The array is
        valid until the next call; ``predict`` is done with it when it returns.
        """
        shape = (len(clips), *clips[0].shape)
        if self._batch is None or self._batch.shape[1:] != shape[1:] or len(self._batch) < len(clips):
            if self.device.type == "cuda":
                self._batch = torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()
            else:
                self._batch = np.empty(shape, dtype=np.uint8)
        return np.stack(clips, out=self._batch[: len(clips)])

    def predict(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 ``(B, T, H, W, 3)`` → float32 ``(B, labels)``; softmax, or sigmoid if multi-label.

        A batch that runs out of GPU memory is split in halves, and the smaller size is kept
        for later calls, so a batch size too large for the card costs one retry, not the run.
        """
        size = len(clips) if self.max_batch is None else self.max_batch
        parts = []
        start = 0
        while start < len(clips):
            chunk = clips[start : start + size]
            try:
                parts.append(self._forward(chunk))
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
    def _forward(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        frames = torch.as_tensor(clips)
        if self.device.type == "cuda":
            # uint8 crosses the bus (4x less than float); normalization happens on the GPU.
            # pin_memory() is free for a batch from stack(), which is page-locked already;
            # reading the probabilities back waits for the copy, so the batch can be reused.
            frames = frames.pin_memory().to(self.device, non_blocking=True)
        pixel_values = to_model_input(frames, self.prep, self.dtype)
        logits = self.model(pixel_values=pixel_values).logits.float()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs.cpu().numpy()


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint says about its inputs and outputs, read without loading weights."""

    ref: ModelRef
    config: Any
    prep: Preprocessing
    stride: int

    @property
    def labels(self) -> list[str]:
        return labels_of(self.config)


def load_spec(model: str = DEFAULT_MODEL) -> ModelSpec:
    """Config, preprocessing and clip plan of ``model`` (alias, hub id or directory)."""
    ref = resolve_model(model)
    config = load_config(ref)
    processor = _optional_json(ref, "preprocessor_config.json") or _optional_json(
        ref, "video_preprocessor_config.json"
    )
    prep = Preprocessing.from_config(processor, config.num_frames, config.image_size)
    plan = _optional_json(ref, CLIP_PLAN_FILE)
    stride = int(plan.get("frame_stride", sampling.DEFAULT_STRIDE))
    if ref.local:
        # A model copied without these files still runs, on guesses the user should know about.
        if not processor:
            log.warning(
                "%s has no preprocessor_config.json: using ImageNet normalisation (mean %s, std %s) "
                "and resizing the short side to %s px",
                ref.source,
                list(prep.mean),
                list(prep.std),
                prep.short_side,
            )
        if not plan:
            log.warning(
                "%s has no %s: using frame stride %d (training's may have differed)",
                ref.source,
                CLIP_PLAN_FILE,
                stride,
            )
    return ModelSpec(ref, config, prep, stride)


def load_classifier(
    model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto", compile: bool = False
) -> Classifier:
    """Load ``model`` (alias, hub id or directory) for inference on ``device``.

    ``compile`` wraps the model in ``torch.compile``: worth it on a GPU for long runs; the
    first batch of each new size pays the compilation (about 30 s for a tiny model on CPU).
    """
    from transformers import AutoModelForVideoClassification
    from transformers.utils import logging as hf_logging

    # A per-tensor loading bar on stderr would bury vidtag's own progress.
    hf_logging.disable_progress_bar()
    spec = load_spec(model)
    ref = spec.ref
    torch_device = resolve_device(device)
    dtype = resolve_precision(precision, torch_device)
    try:
        net = AutoModelForVideoClassification.from_pretrained(
            ref.source,
            use_safetensors=True,
            attn_implementation="sdpa",
            dtype=dtype,
        )
    except (OSError, ValueError) as exc:
        raise model_load_error(ref, exc) from None
    net.eval().to(torch_device)
    if compile:
        net = torch.compile(net)
    log.info("loaded %s on %s as %s", ref.name, torch_device, str(dtype).removeprefix("torch."))
    fingerprint = _fingerprint(ref, spec.config)
    return Classifier(net, spec.config, spec.prep, spec.stride, torch_device, dtype, ref.name, fingerprint)
