"""One scan of a set of files: skip what the state store already knows, tag the rest,
record each result as it lands, then write the whole table atomically from the store.

Writing the table from the store (not from memory) is what makes a killed run resumable:
every video ends up in the output exactly once, whichever run tagged it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tagger import __version__, sinks
from tagger.pipeline import Decoder, TagOptions, tag
from tagger.records import OutputError, StorageError, VideoFile, VideoResult
from tagger.state import StateStore

if TYPE_CHECKING:
    from tagger.classify import Classifier


@dataclass
class ScanSummary:
    """Counts for the end-of-run table and the exit code."""

    videos: int = 0
    tagged: int = 0
    skipped: int = 0
    failed: list[VideoResult] = field(default_factory=list)
    sidecar_errors: list[str] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.sidecar_errors

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def scan(
    files: Sequence[VideoFile],
    classifier: Classifier,
    state: StateStore,
    options: TagOptions | None = None,
    output: str | None = None,
    sidecar: bool = False,
    force: bool = False,
    on_result: Callable[[VideoResult, bool], None] | None = None,
    decoder: Decoder | None = None,
) -> ScanSummary:
    """Tag ``files`` and write ``output`` (a table path, ``-`` for stdout, or None).

    ``on_result(result, skipped)`` is called once per file as it finishes (progress).
    ``decoder``: decode processes started by the caller (see ``tagger.pipeline.tag``).
    """
    started = time.perf_counter()
    summary = ScanSummary(videos=len(files))
    model = classifier.id
    by_path = {f.path: f for f in files}

    def finish(result: VideoResult, skipped: bool) -> None:
        if not result.ok:
            summary.failed.append(result)
        if sidecar:
            try:
                path = sinks.sidecar_path(result.path)
                if not (skipped and os.path.isfile(path)):
                    sinks.write_sidecar(result, {"version": __version__})
            except StorageError:
                raise  # the disk, not this file: every later sidecar would fail too
            except OutputError as exc:
                summary.sidecar_errors.append(str(exc))
        if on_result:
            on_result(result, skipped)

    todo: list[str] = []
    for file in files:
        known = None if force else state.lookup(file, model)
        if known is None:
            todo.append(file.path)
        else:
            summary.skipped += 1
            finish(known, skipped=True)

    for result in tag(todo, classifier, options, decoder=decoder):
        state.record(by_path[result.path], model, result)
        summary.tagged += 1
        summary.clips += result.clips
        finish(result, skipped=False)

    summary.seconds = time.perf_counter() - started
    if output is not None:
        sinks.write_table(output, (r.row() for r in state.results(files, model)))
    return summary
