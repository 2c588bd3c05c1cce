"""One scan of a set of files: skip what the state store already knows, tag the rest,
record each result as it lands, then write the whole table atomically from the store.

Writing the table from the store (not from memory) is what makes a killed run resumable:
every video ends up in the output exactly once, whichever run tagged it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tagger import sinks
from tagger.clips.pool import DecodePool, default_workers
from tagger.engines.local import LocalEngine
from tagger.options import DEFAULT_MODEL, ENGINES, TagOptions
from tagger.records import InputError, VideoFile, VideoResult
from tagger.sinks import Outputs, SegmentRows, open_table, table_format
from tagger.sinks.tables import Table
from tagger.sources.discover import discover
from tagger.sources.filters import VideoFilter
from tagger.sources.manifest import is_uri, manifest_files
from tagger.state import StateStore, resolve_state_path, writer_locks

if TYPE_CHECKING:
    from tagger.engines import Engine
    from tagger.engines.ray import RaySettings

log = logging.getLogger(__name__)

#: Makes the progress shown during a run: called with the number of videos, it gives a
#: context manager whose ``update(result, skipped)`` sees each video as it finishes.
Reporter = Callable[[int], AbstractContextManager[object]]


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
    engine: Engine,
    state: StateStore,
    output: str | None = None,
    outputs: Outputs | None = None,
    force: bool = False,
    on_result: Callable[[VideoResult, bool], None] | None = None,
    segments: str | None = None,
) -> ScanSummary:
    """Tag ``files`` with ``engine`` and write the table ``output`` (a path, ``-`` for stdout,
    or None); ``outputs`` get each result as it lands (sidecars). ``segments``: a table of
    the timeline's segments, written like ``output`` (the engine must make timelines).

    ``on_result(result, skipped)`` is called once per file as it finishes (progress).
    """
    started = time.perf_counter()
    summary = ScanSummary(videos=len(files))
    model = engine.model
    # Stored results are labelled again: a changed label map or threshold needs no model run.
    relabel = engine.labelling.apply
    outputs = outputs or Outputs()
    by_path = {f.path: f for f in files}

    def finish(result: VideoResult, skipped: bool) -> None:
        if not result.ok:
            summary.failed.append(result)
        summary.sidecar_errors += outputs.emit(result, skipped=skipped)
        if on_result:
            on_result(result, skipped)

    todo: list[str] = []
    for file in files:
        known = None if force else state.lookup(file, model, timeline=outputs.timeline is not None)
        if known is None:
            todo.append(file.path)
        else:
            summary.skipped += 1
            finish(relabel(known, outputs.timeline), skipped=True)

    for result in engine.tag(todo):
        state.record(by_path[result.path], model, result)
        summary.tagged += 1
        summary.clips += result.clips
        finish(result, skipped=False)

    summary.seconds = time.perf_counter() - started
    with ExitStack() as stack:
        tables: list[Table | SegmentRows] = []
        if output is not None:
            tables.append(stack.enter_context(open_table(output)))
        if segments is not None:
            tables.append(stack.enter_context(SegmentRows(segments)))
        for stored in state.results(files, model) if tables else ():
            stored = relabel(stored, outputs.timeline)
            for table in tables:
                table.write(stored)
    return summary


def run(
    paths: Sequence[str],
    output: str | None = None,
    *,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    runtime: str = "torch",
    options: TagOptions | None = None,
    filter: VideoFilter | None = None,
    state: str | None = None,
    sidecars: Sequence[str] = (),
    segments: str | None = None,
    force: bool = False,
    allow_network_state: bool = False,
    reporter: Reporter | None = None,
    engine: str = "local",
    ray: RaySettings | None = None,
    manifest: str | None = None,
) -> ScanSummary:
    """What ``vidtag scan`` does: find the videos under ``paths``, tag them and write ``output``.

    ``output`` is a .csv, .jsonl or .parquet path, or ``-`` for CSV on stdout; with neither it
    nor ``sidecars`` (names from ``tagger.sinks.SIDECARS``: json, xmp, nfo, vtt), CSV goes to
    stdout. ``segments``: a table of the timeline (.csv, .jsonl or .parquet); it, or a vtt
    sidecar, makes a timeline even when ``options.timeline`` is None. The state is ``state`` or
    the default next to the output (see ``tagger.state``), locked for the run together with the
    outputs. The decode processes start while the model loads.

    ``engine``: "local" (decode processes on this machine feeding one model) or "ray" (Ray
    Data, joined or started as ``ray`` says; see ``tagger.engines.ray``). ``manifest``: a
    Parquet or CSV file whose ``path`` column lists more videos, local or URIs (s3://...).
    """
    from tagger.classify import load_classifier, resolve_device

    if output is None and not sidecars and segments is None:
        output = "-"
    for table in (output, segments):
        if table is not None:
            table_format(table)  # a bad suffix is refused before anything starts
    if segments == "-":
        raise InputError("--segments needs a file (.csv, .jsonl or .parquet), not stdout")
    writers = sinks.sidecars(sidecars)
    options = (options or TagOptions()).for_outputs(segments is not None, sidecars)
    state = resolve_state_path(state, output, allow_network=allow_network_state)
    files = list(discover(paths, filter=filter or VideoFilter()))
    if manifest is not None:
        files = list({f.path: f for f in [*files, *manifest_files(manifest)]}.values())
        if sidecars and any(is_uri(f.path) for f in files):
            raise InputError("sidecars are written next to local videos; the manifest lists URIs")
    if not files:
        log.warning("no video files under %s", ", ".join([*paths, *([manifest] if manifest else [])]))
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (one of: {', '.join(ENGINES)})")
    with ExitStack() as stack:
        store = stack.enter_context(StateStore(state))
        stack.enter_context(writer_locks(store, output, segments))
        runner: Engine
        if engine == "ray":
            from tagger.engines.ray import RayEngine

            runner = RayEngine(
                model, options, ray, device=device, precision=precision, compile=compile, runtime=runtime
            )
        else:
            workers = options.workers or default_workers(resolve_device(device).type)
            decoder = stack.enter_context(DecodePool(workers, options.timeout_s).start())
            classifier = load_classifier(model, device, precision, compile=compile, runtime=runtime)
            runner = LocalEngine(classifier, options, decoder)
        report: Any = stack.enter_context(reporter(len(files))) if reporter else None
        return scan(
            files,
            runner,
            store,
            output=output,
            outputs=Outputs(writers, timeline=options.timeline, labelling=runner.labelling),
            force=force,
            on_result=report.update if report is not None else None,
            segments=segments,
        )
