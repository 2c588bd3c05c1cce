"""Where results go: a registry of writers, each a small class with write and close.

Tables (``TABLES``: csv, jsonl, parquet) are chosen by an output's suffix and written whole,
video rows or timeline segments (``SegmentRows``); ``Appender`` adds the daemon's rows to a
CSV or JSONL file; sidecars (``SIDECARS``: json, xmp, nfo, vtt) are chosen by name and written
beside each video. ``Outputs`` is the one place a result is sent to them, for the scan and the
daemon alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from tagger.records import OutputError, StorageError, VideoResult
from tagger.sinks.append import Appender
from tagger.sinks.sidecars import SIDECAR_SUFFIX, JsonSidecar, remove_sidecar, sidecar_path, write_sidecar
from tagger.sinks.tables import (
    PATH_BYTES,
    TABLE_FORMATS,
    TABLES,
    SegmentRows,
    open_table,
    table_format,
    write_table,
)

if TYPE_CHECKING:
    from tagger.labels import Labelling
    from tagger.options import TimelineOptions

#: The sidecar kinds, by name, and the class writing each (imported only when asked for:
#: the XML ones need lxml, and ``vidtag --help`` lists the names).
SIDECARS: dict[str, str] = {
    "json": "tagger.sinks.sidecars:JsonSidecar",
    "xmp": "tagger.sinks.xmp:XmpSidecar",
    "nfo": "tagger.sinks.nfo:NfoSidecar",
    "vtt": "tagger.sinks.vtt:VttSidecar",
}

__all__ = [
    "PATH_BYTES",
    "SIDECARS",
    "SIDECAR_SUFFIX",
    "TABLES",
    "TABLE_FORMATS",
    "Appender",
    "JsonSidecar",
    "Outputs",
    "SegmentRows",
    "Sink",
    "open_table",
    "remove_sidecar",
    "sidecar_path",
    "sidecars",
    "table_format",
    "write_sidecar",
    "write_table",
]


class Sink(Protocol):
    @property
    def per_file(self) -> bool:
        """True: a failure is of one video and the run goes on; False: the output is broken."""
        ...

    def write(self, result: VideoResult) -> None: ...

    def done(self, result: VideoResult) -> bool:
        """Whether this result is in the output already (a scan's skipped video)."""
        ...

    def remove(self, video_path: str) -> None:
        """Take back what was written for a video that left; a table keeps its rows (the
        daemon appends one that says what happened)."""
        ...

    def close(self) -> None: ...


def sidecars(names: Sequence[str]) -> list[Sink]:
    """The sidecar writers called ``names`` (see ``SIDECARS``)."""
    unknown = [n for n in names if n not in SIDECARS]
    if unknown:
        raise OutputError(f"unknown sidecar {unknown[0]!r}: choose from {', '.join(SIDECARS)}")
    writers = []
    for name in dict.fromkeys(names):
        module, cls = SIDECARS[name].split(":")
        writers.append(getattr(importlib.import_module(module), cls)())
    return writers


class Outputs:
    """The sinks each result goes to as it is decided: the one emit of the scan and the daemon.

    With ``labelling`` (``tagger.labels``), each result's tags and segments are made by it from
    the result's clip scores before it is sent, so one read back from the state store is told
    as the run's options say. Without it, a result that has a timeline but no segments yet gets
    them made with the ``timeline`` options.
    """

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        timeline: TimelineOptions | None = None,
        labelling: Labelling | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.timeline = timeline
        self.labelling = labelling

    def emit(self, result: VideoResult, skipped: bool = False) -> list[str]:
        """Send ``result`` to every sink; returns why it is missing from some (one per sink).

        A reason of this one video (a foreign file where its sidecar goes, a name too long) is
        returned and the run goes on. A fault of the disk (``StorageError``), or any failure of
        an output that is not per video, is raised: every later write would fail the same way.
        ``skipped``: a result from the state store; sinks that have it already are left alone.
        """
        if self.labelling is not None:
            result = self.labelling.apply(result, self.timeline)
        elif self.timeline is not None and result.timeline and not result.segments:
            from tagger.segments import with_timeline

            result = with_timeline(result, self.timeline)
        reasons = []
        for sink in self.sinks:
            if skipped and sink.done(result):
                continue
            try:
                sink.write(result)
            except StorageError:
                raise
            except OutputError as exc:
                if not sink.per_file:
                    raise
                reasons.append(str(exc))
        return reasons

    def withdraw(self, video_path: str) -> None:
        """Remove what vidtag wrote beside a video that left (moved, or deleted and dropped)."""
        for sink in self.sinks:
            sink.remove(video_path)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
