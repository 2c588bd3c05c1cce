"""The nouns of vidtag: what flows between discovery, decoding, the model and the sinks.

Frozen dataclasses with no torch (nor numpy) import, so ``--help`` and the sinks stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    "segment_labels",
)
#: The video rows before ``segment_labels`` was added: a table the daemon appends to that
#: started with these columns keeps them.
FIELDS_BEFORE_SEGMENTS: tuple[str, ...] = FIELDS[:-1]
#: One row per timeline segment (``--segments FILE``).
SEGMENT_FIELDS: tuple[str, ...] = ("path", "label", "start_s", "end_s", "score", "peak_score", "model")


#: Statuses of rows that stand for a file that is there: the others ("removed", "moved")
#: are kept only so the outputs can say what happened.
LIVE_STATUSES: tuple[str, ...] = ("ok", "error")

#: Joins the levels of a hierarchical label (``Sports/Basketball``, from nested class folders).
LABEL_SEP = "/"

#: Version of :meth:`VideoResult.document`; the state store's schema follows it.
#: 4: clip scores are kept sparse (``SCORE_FLOOR``), and whether the clips were a timeline.
DOCUMENT_FORMAT = 4
#: Clip scores under this are stored as 0: a dense timeline of a 400-class model would
#: otherwise keep 400 numbers per clip. No threshold that matters is this low.
SCORE_FLOOR = 1e-4


class TaggerError(Exception):
    """Base class of every error vidtag raises on purpose; the message is for the user."""


class DecodeError(TaggerError):
    """A video could not be probed or decoded."""


class VideoTooLargeError(DecodeError):
    """A video exceeds the size or duration caps (decoder-bomb guard)."""


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
class Settled:
    """A watched video that is complete: size and mtime unchanged for a while, and it reads."""

    file: VideoFile


@dataclass(frozen=True)
class Moved:
    """A watched video renamed or moved inside the watched tree; ``dst`` as it is now."""

    src: str
    dst: VideoFile


@dataclass(frozen=True)
class Deleted:
    """A watched video path that disappeared from an available root."""

    path: str


#: What a watch reports.
WatchEvent = Settled | Moved | Deleted


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


@dataclass(frozen=True)
class Planes:
    """How a clip's frames are YUV 4:2:0 planes rather than RGB (``tagger.clips.planes``).

    Each frame is one flat uint8 row: the luma crop (``height`` x ``width``), then U and V,
    each ``chroma_shape`` samples covering that crop. The model's device turns them into RGB
    (``tagger.transforms.planes_to_rgb``): half the bytes of RGB cross from the decoders.
    """

    height: int
    width: int
    #: Row and column, in the resized frame's U and V planes, of the chroma window's first sample.
    start: tuple[int, int]
    #: Where in the window (in samples, rows and columns) the chroma of the crop's first pixel
    #: is taken from; each pixel after it moves half a sample.
    origin: tuple[float, float]
    #: RGB = M @ (Y, U, V, 1), row-major 3x4: the map swscale applies to the stream's tags.
    matrix: tuple[float, ...]

    @property
    def chroma_shape(self) -> tuple[int, int]:
        """Rows and columns of the chroma window: the crop's, and a sample more each side."""
        return self.height // 2 + 3, self.width // 2 + 3

    @property
    def row_size(self) -> int:
        """Bytes per frame."""
        ch, cw = self.chroma_shape
        return self.height * self.width + 2 * ch * cw


@dataclass(frozen=True, eq=False)
class Clip:
    """``frames`` is uint8 ``(T, H, W, 3)`` RGB, or ``(T, planes.row_size)`` when ``planes`` is
    set; times are seconds from pts."""

    path: str
    index: int
    start_s: float
    end_s: float
    frames: np.ndarray = field(repr=False)
    planes: Planes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """Height and width of the RGB frames."""
        if self.planes is not None:
            return self.planes.height, self.planes.width
        return self.frames.shape[1], self.frames.shape[2]


class Quiet:
    """What an endless source yields when it has nothing new (a watched folder is quiet): the
    tagger then finishes the files in flight and runs the clips waiting for a full batch."""

    def __repr__(self) -> str:
        return "QUIET"


#: The one ``Quiet``: sources yield it between paths.
QUIET = Quiet()


@dataclass(frozen=True)
class Tag:
    label: str
    score: float


@dataclass(frozen=True)
class ClipScore:
    """The model's verdict on one clip: its span (seconds from pts) and a probability per class
    (in the order of the result's ``classes``), averaged over the clip's crops."""

    start_s: float
    end_s: float
    scores: tuple[float, ...]


@dataclass(frozen=True)
class Segment:
    """A stretch of a video where one label holds: ``score`` is the mean over its clips,
    ``peak_score`` the best clip. Segments of different labels may overlap."""

    label: str
    start_s: float
    end_s: float
    score: float
    peak_score: float

    def row(self, path: str, model: str) -> dict[str, Any]:
        """The segment table's row (see ``SEGMENT_FIELDS``)."""
        return {
            "path": path,
            "label": self.label,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "score": round(self.score, 6),
            "peak_score": round(self.peak_score, 6),
            "model": model,
        }


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
    #: The model's classes in index order, which ``clip_scores`` index (empty without them).
    classes: tuple[str, ...] = field(default=(), repr=False)
    #: One entry per clip, in time order: what a timeline is built from.
    clip_scores: tuple[ClipScore, ...] = field(default=(), repr=False)
    #: Whether the clips cover the whole video densely (a timeline was asked for).
    timeline: bool = False
    #: The timeline, in start order (``tagger.segments``); empty without one.
    segments: tuple[Segment, ...] = ()
    #: No label reached its threshold: the video is tagged unknown (an empty ``label``), and
    #: ``tags`` holds its top-k only when they were asked for (``--keep-unsure``).
    unsure: bool = False

    def segment_labels(self) -> tuple[str, ...]:
        """The labels of the timeline, each once, in order of first appearance."""
        return tuple(dict.fromkeys(s.label for s in self.segments))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def row(self) -> dict[str, Any]:
        """The output row (see ``FIELDS``)."""
        top = self.tags[0] if self.tags and not self.unsure else None
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
            "segment_labels": "|".join(self.segment_labels()),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VideoResult:
        """Inverse of :meth:`row` (used by the state store)."""
        labels = [s for s in str(row.get("labels") or "").split("|") if s]
        scores = [float(s) for s in str(row.get("scores") or "").split("|") if s]
        duration = row.get("duration_s")
        unsure = not row.get("label") and bool(labels) and str(row.get("status") or "ok") == "ok"
        return cls(
            unsure=unsure,
            path=row["path"],
            tags=tuple(Tag(label, score) for label, score in zip(labels, scores, strict=False)),
            clips=int(row.get("clips") or 0),
            duration_s=None if duration in (None, "") else float(duration),
            model=str(row.get("model") or ""),
            status=str(row.get("status") or "ok"),
            error=str(row.get("error") or ""),
        )

    def document(self) -> dict[str, Any]:
        """The result as the state store keeps it (:data:`DOCUMENT_FORMAT`), clip scores included;
        ``classes`` are not in it (the store keeps them once per model)."""
        doc = {"format": DOCUMENT_FORMAT, **self.row()}
        doc["tags"] = [[t.label, t.score] for t in self.tags]
        doc["unsure"] = self.unsure
        doc["timeline"] = self.timeline
        # Sparse: [class index, score] for the scores at or over SCORE_FLOOR.
        doc["clip_scores"] = [
            {
                "start_s": c.start_s,
                "end_s": c.end_s,
                "scores": [[i, round(p, 6)] for i, p in enumerate(c.scores) if p >= SCORE_FLOOR],
            }
            for c in self.clip_scores
        ]
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any], classes: tuple[str, ...] = ()) -> VideoResult:
        """Inverse of :meth:`document`; a row of the old format (no ``format`` key) reads too."""
        base = cls.from_row(doc)
        if "format" not in doc:
            return base
        sparse = int(doc["format"]) >= 4
        clip_scores = doc.get("clip_scores") or ()
        if sparse and clip_scores and not classes:
            raise ValueError("sparse clip scores need the model's classes")
        return replace(
            base,
            tags=tuple(Tag(str(label), float(score)) for label, score in doc.get("tags") or ()),
            classes=classes if clip_scores else (),
            clip_scores=tuple(
                ClipScore(
                    float(c["start_s"]),
                    float(c["end_s"]),
                    _dense(c["scores"], len(classes)) if sparse else tuple(float(p) for p in c["scores"]),
                )
                for c in clip_scores
            ),
            timeline=bool(doc.get("timeline", False)),
            unsure=bool(doc.get("unsure", base.unsure)),
        )

    @classmethod
    def failed(cls, path: str, error: str, model: str = "") -> VideoResult:
        return cls(path=path, model=model, status="error", error=error)


def _dense(pairs: list[list[Any]], width: int) -> tuple[float, ...]:
    """``[class index, score]`` pairs back to one score per class (absent ones 0)."""
    scores = [0.0] * width
    for index, score in pairs:
        scores[int(index)] = float(score)
    return tuple(scores)
