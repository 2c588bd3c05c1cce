"""The nouns of vidtag: what flows between discovery, decoding, the model and the sinks.

Frozen dataclasses with no torch import, so sinks, ``--help`` and most tests stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The output schema, one row per video (DESIGN.md "Outputs").
FIELDS: tuple[str, ...] = (
    "path",
    "label",
    "score",
    "labels",
    "scores",
    "clips",
    "duration_s",
    "model",
    "status",
    "error",
)


class TaggerError(Exception):
    """Base class of every error vidtag raises on purpose; the message is for the user."""


class DecodeError(TaggerError):
    """A video could not be probed or decoded."""


class VideoTooLargeError(DecodeError):
    """A video exceeds the size or duration caps (decoder-bomb guard)."""


class DecodeTimeoutError(DecodeError):
    """Decoding one file took longer than the per-file timeout."""


class InputError(TaggerError):
    """The user's input is wrong, though it parsed: the CLI exits 2 (a usage error)."""


class ModelLoadError(InputError):
    """A model could not be found or loaded."""


class OutputError(TaggerError):
    """An output could not be written (or would overwrite a file vidtag did not write)."""


class StorageError(OutputError):
    """The disk under an output is full, read-only or failing: every later write would fail
    too, so a run stops at the first one (and keeps what the state store holds)."""


class StateError(TaggerError):
    """The SQLite state cannot be used: locked past the busy timeout, damaged, or its disk full."""


class StatePathError(StateError, InputError):
    """The state file would be somewhere it cannot work (a network share)."""


@dataclass(frozen=True)
class VideoFile:
    """A file found by discovery, with the stat fields that key the state store."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found; width and height are as displayed (after rotation)."""

    path: str
    duration_s: float
    fps: float
    frames: int
    width: int
    height: int
    rotation: int = 0
    codec: str = ""


@dataclass(frozen=True, eq=False)
class Clip:
    """``frames`` is uint8 ``(T, H, W, 3)`` RGB; times are seconds from pts."""

    path: str
    index: int
    start_s: float
    end_s: float
    frames: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Tag:
    label: str
    score: float


@dataclass(frozen=True)
class VideoResult:
    """The verdict on one video: top-k tags over all its clips, or an error."""

    path: str
    tags: tuple[Tag, ...] = ()
    clips: int = 0
    duration_s: float | None = None
    model: str = ""
    status: str = "ok"
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def row(self) -> dict[str, Any]:
        """The output row (see ``FIELDS``)."""
        top = self.tags[0] if self.tags else None
        return {
            "path": self.path,
            "label": top.label if top else "",
            "score": round(top.score, 6) if top else None,
            "labels": "|".join(t.label for t in self.tags),
            "scores": "|".join(f"{t.score:.6f}" for t in self.tags),
            "clips": self.clips,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "model": self.model,
            "status": self.status,
            "error": self.error,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VideoResult:
        """Inverse of :meth:`row` (used by the state store)."""
        labels = [s for s in str(row.get("labels") or "").split("|") if s]
        scores = [float(s) for s in str(row.get("scores") or "").split("|") if s]
        duration = row.get("duration_s")
        return cls(
            path=row["path"],
            tags=tuple(Tag(label, score) for label, score in zip(labels, scores, strict=False)),
            clips=int(row.get("clips") or 0),
            duration_s=None if duration in (None, "") else float(duration),
            model=str(row.get("model") or ""),
            status=str(row.get("status") or "ok"),
            error=str(row.get("error") or ""),
        )

    @classmethod
    def failed(cls, path: str, error: str, model: str = "") -> VideoResult:
        return cls(path=path, model=model, status="error", error=error)
