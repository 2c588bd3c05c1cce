"""Every default vidtag has, in one place: the CLI shows these and the library uses them.

Light on purpose (no numpy, no torch): ``vidtag --help`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tagger.labels import LabelMap

#: The model used when none is named (an alias in tagger/registry.toml).
DEFAULT_MODEL = "kinetics-400"
#: int8: dynamic quantization, with ``--runtime onnx`` only.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16", "int8")
#: Who runs the forward pass: PyTorch, or the model exported to ONNX and run by ONNX Runtime
#: or OpenVINO on the CPU (the ``vidtag[onnx]`` and ``vidtag[openvino]`` extras). auto: on a
#: CPU the first installed of openvino, onnx; torch on a GPU.
RUNTIMES: tuple[str, ...] = ("torch", "onnx", "openvino", "auto")
#: The precision each class's threshold is picked for on labelled videos (``vidtag calibrate``).
TARGET_PRECISION = 0.9
#: Seconds allowed to decode one file; a file over it is an error row.
DECODE_TIMEOUT_S = 120.0
#: 8K (7680x4320) and a little more: larger frames are refused before decoding.
MAX_PIXELS = 8192 * 4320
MAX_DURATION_S = 12 * 3600.0
TOP_K = 5
#: Where tagging runs: "local" (decode processes feeding one model on this machine) or "ray"
#: (Ray Data on a local or remote cluster; the ``vidtag[ray]`` extra).
ENGINES: tuple[str, ...] = ("local", "ray")
#: What decode processes hand the model: RGB frames, or YUV 4:2:0 planes (half the bytes)
#: made RGB on the model's device. auto: planes for a model on a GPU, where the CPU decode is
#: the bound; RGB on a CPU, where the conversion would cost the same cores (BENCHMARKS.md).
FRAMES: tuple[str, ...] = ("auto", "rgb", "yuv")


#: Sidecars that are a timeline, so asking for one cuts clips densely. The XMP sidecar holds
#: the timeline's markers when there is one, but tags alone do not need it.
TIMELINE_SIDECARS: tuple[str, ...] = ("vtt",)
#: Timeline clips decoded per job: a long video is cut in parts of this many clips, so its
#: frames never pile up in memory however long it is.
TIMELINE_PART_CLIPS = 16


@dataclass(frozen=True)
class TimelineOptions:
    """How a video is covered densely and its clip scores merged into segments."""

    #: Seconds between clip starts; None: one clip length, so the clips cover the whole video.
    step_s: float | None = None
    #: A label's segment starts at a clip scoring at least ``enter`` and lasts while its clips
    #: score at least ``leave`` (hysteresis: a score hovering near one threshold does not flicker).
    enter: float = 0.5
    leave: float = 0.3
    #: Segments shorter than this are dropped; a dip of at most one clip is bridged.
    min_s: float = 2.0

    def __post_init__(self) -> None:
        if self.step_s is not None and self.step_s <= 0:
            raise ValueError("the segment step must be over 0 seconds")
        if not 0 <= self.leave <= self.enter <= 1:
            raise ValueError("segment thresholds need 0 <= leave <= enter <= 1")
        if self.min_s < 0:
            raise ValueError("the minimum segment length cannot be negative")


@dataclass(frozen=True)
class TagOptions:
    """What only the user knows about tagging; everything else comes from the checkpoint."""

    clips: int | None = None
    #: 1 (centre crop) or 3 (both ends and the centre of the long side, averaged).
    crops: int = 1
    top_k: int = TOP_K
    #: None (``--threshold auto``): each label's calibrated threshold when the model has
    #: them, else none; 0: none, the top-k; a number: that threshold for every label.
    threshold: float | None = None
    #: An unknown video (no label reached its threshold) keeps its top-k in ``labels``.
    keep_unsure: bool = False
    #: ``--labels FILE``: the user's names for the model's labels (``tagger.labels``).
    label_map: LabelMap | None = None
    #: Clips per forward pass; None: the classifier's default for its device.
    batch_size: int | None = None
    #: Decode processes; None: ``tagger.clips.pool.default_workers`` for the model's device.
    workers: int | None = None
    timeout_s: float = DECODE_TIMEOUT_S
    max_pixels: int = MAX_PIXELS
    max_duration_s: float = MAX_DURATION_S
    #: A timeline: clips cut densely over the whole video (``clips`` then does not apply),
    #: merged into segments. None: ``clips`` clips spread over the video.
    timeline: TimelineOptions | None = None
    #: One of ``FRAMES``.
    frames: str = "auto"

    def planes(self, device: str) -> bool:
        """Whether decoders ship YUV planes to a model on ``device`` (a torch device type)."""
        return self.frames == "yuv" or (self.frames == "auto" and device == "cuda")

    def for_outputs(self, segments: bool, sidecars: Sequence[str]) -> TagOptions:
        """These options, with a (default) timeline when the outputs need one: a segments
        table or a timeline sidecar (``TIMELINE_SIDECARS``)."""
        if self.timeline is None and (segments or any(s in TIMELINE_SIDECARS for s in sidecars)):
            return replace(self, timeline=TimelineOptions())
        return self


ON_DELETE: tuple[str, ...] = ("keep", "remove")


@dataclass(frozen=True)
class WatchOptions:
    """How the daemon waits, retries and reacts to deletions."""

    #: Seconds a file's size and mtime must stay unchanged before it is tagged.
    settle_s: float = 5.0
    #: Seconds between full rescans that catch what the observer missed.
    rescan_s: float = 300.0
    #: None: poll only roots on NFS/SMB/FUSE.
    poll: bool | None = None
    #: keep: mark a deleted video's row removed; remove: drop it (and vidtag's sidecar).
    on_delete: str = "keep"
    #: Times a settled file that fails to decode is tried again, with back-off from retry_base_s.
    retries: int = 3
    retry_base_s: float = 30.0
    status_every_s: float = 60.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
