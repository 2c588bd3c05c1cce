"""Which checkpoint a ``--model`` names, and what it says about its inputs, without weights.

Models come from an alias in ``tagger/registry.toml``, a hub id, or a local directory. A
model's spec (classes, clip length, preprocessing, frame stride) and fingerprint are read
here; loading the weights for inference is ``tagger.classify``'s job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagger.clips import sampling
from tagger.names import display, is_utf8
from tagger.options import DEFAULT_MODEL
from tagger.records import ModelLoadError
from tagger.transforms import Preprocessing

if TYPE_CHECKING:
    from tagger.labels import Calibration

log = logging.getLogger("tagger.classify")

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
#: Built-in aliases, shipped as package data.
REGISTRY = Path(__file__).resolve().parent / "registry.toml"
#: Written next to a fine-tuned model: how its training clips were cut.
CLIP_PLAN_FILE = "vidtag.json"
#: The thresholds of ``vidtag calibrate`` in that file (``tagger.labels.Calibration``).
CALIBRATION_KEY = "calibration"


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


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint says about its inputs and outputs, read without loading weights."""

    ref: ModelRef
    config: Any
    prep: Preprocessing
    stride: int
    #: The model's ``vidtag.json`` ({} when it has none).
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return labels_of(self.config)

    @property
    def multi_label(self) -> bool:
        return getattr(self.config, "problem_type", None) == "multi_label_classification"

    @property
    def calibration(self) -> Calibration | None:
        """The thresholds calibrated for the model (``vidtag calibrate``), if any."""
        from tagger.labels import Calibration

        return Calibration.from_plan(self.plan, self.labels)

    @property
    def clip_shape(self) -> tuple[int, int, int]:
        """Frames, height and width of one clip as the model takes it."""
        size = self.prep.crop or self.prep.size or (self.config.image_size, self.config.image_size)
        return (self.prep.num_frames, *size)


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
    return ModelSpec(ref, config, prep, stride, plan)


def fingerprint(ref: ModelRef, config: Any) -> str:
    """Short hash that changes when the weights or labels change (keys the state store).

    The calibration in ``vidtag.json`` is left out: thresholds change which labels a video's
    stored scores give, not the scores, so calibrating needs no video tagged again.
    """
    digest = hashlib.sha256()
    if ref.local:
        for name in sorted(os.listdir(ref.source)):
            if name.endswith((".json", ".safetensors")):
                digest.update(name.encode())
                path = os.path.join(ref.source, name)
                if name == CLIP_PLAN_FILE:
                    digest.update(_plan_bytes(path))
                    continue
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    else:
        digest.update(str(getattr(config, "_commit_hash", None) or ref.source).encode())
        digest.update(json.dumps(labels_of(config)).encode())
    return digest.hexdigest()[:12]


def _plan_bytes(path: str) -> bytes:
    """``vidtag.json`` as hashed: its bytes, or without its calibration when it has one (as
    ``json.dump(..., indent=2)``, how vidtag writes it, so calibrating keeps the hash)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        plan = json.loads(data)
    except ValueError:
        return data
    if not isinstance(plan, dict) or CALIBRATION_KEY not in plan:
        return data
    rest = {k: v for k, v in plan.items() if k != CALIBRATION_KEY}
    return json.dumps(rest, indent=2).encode()
