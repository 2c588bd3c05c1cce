"""The Ray engine: the same decode and model as the local engine, spread over a Ray cluster.

A Ray Data job of three stages: a dataset of paths (one block each, so files decode in
parallel) -> CPU tasks that cut each file's clips with vidtag's own decoder -> a pool of
actors, each holding the model once, scoring clips of many files per batch. Rows stream back
to the driver, which assembles each video's result as its last clip lands, exactly as the
local engine does, so the state store, outputs and progress of a scan are the driver's.

Faults: a file that crashes or hangs its decoder costs that file (the decoder runs in a child
process of the Ray worker, with the local engine's timeout), and its error is a row. A worker
or node that dies is Ray's to retry: tasks and actors keep Ray Data's defaults (system failures
retried without limit, actors restarted), and ``max_errored_blocks`` stays 0, so a block Ray
cannot recompute fails the run loudly instead of losing videos quietly; what finished is in
the state, and a rerun tags only the rest. A retried task may send clips twice: the driver
counts each clip once, and each video once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tagger.clips.crops import views
from tagger.clips.decode import DecodeJob, make_job, parts
from tagger.clips.transport import Decoded
from tagger.engines.aggregate import video_result
from tagger.labels import Labelling
from tagger.options import TagOptions
from tagger.records import InputError, Quiet, TaggerError, VideoInfo, VideoResult

log = logging.getLogger(__name__)

INSTALL_HINT = 'the Ray engine needs Ray: pip install "vidtag[ray]"'


def import_ray() -> Any:
    """``ray`` with its Data library, or a usage error that says how to install them."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray sized to
    this machine; nothing to do when this process is connected already."""
    ray = import_ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            # vidtag reports each file itself; workers' own output stays in Ray's log files.
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise InputError(f"cannot start or join {where}: {exc}") from None


def _configure(ray: Any) -> None:
    """What every vidtag job on Ray needs, however Ray was started (by vidtag or its caller):
    no bars or plan lines stacked on vidtag's progress, and no block dropped quietly."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.max_errored_blocks = 0


# --- decode tasks -----------------------------------------------------------------------------

_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _decoder(timeout_s: float) -> Any:
    """This Ray worker's decode process (one, kept between tasks), so a decoder crash or hang
    costs one file, as with the local engine."""
    global _POOL
    from tagger.clips.pool import DecodePool

    with _POOL_LOCK:
        if _POOL is None or _POOL.timeout_s != timeout_s:
            # Frames come back through the pipe: /dev/shm hand-over is for one tagger per host.
            _POOL = DecodePool(1, timeout_s, shared_memory=False)
        return _POOL


def _row(path: str, slot: int, span: tuple[float, float], frames: np.ndarray) -> dict[str, Any]:
    return {
        "path": path,
        "slot": slot,
        "start_s": span[0],
        "end_s": span[1],
        # Every row has frames of one shape, so Ray keeps them as one uint8 tensor column.
        "frames": frames,
        "total": -1,
        "error": "",
        "info": "",
    }


def decode_rows(
    item: dict[str, Any],
    job: DecodeJob,
    crop: tuple[int, int] | None,
    crops: int,
    timeout_s: float,
    clip_shape: tuple[int, int, int],
) -> Iterator[dict[str, Any]]:
    """One file's clips as rows, one per crop view (``slot`` = clip index * crops + crop).

    The file's last row carries ``total`` (its number of views), ``info`` (the probe) and
    ``error`` (why it failed, if it did); a file with no clips at all gets one row of blank
    frames and slot -1, which the model skips. Holding one row back is how the last one is
    known.
    """
    path = str(item["path"])
    pool = _decoder(timeout_s)
    first = replace(job, path=path)
    held: dict[str, Any] | None = None
    total = 0
    info: VideoInfo | None = None
    error = ""

    def outcomes(jobs: list[DecodeJob]) -> Iterator[Decoded | str]:
        for _, outcome in pool.run(jobs):  # type: ignore[misc]
            yield outcome

    pending = [first]
    while pending and not error:
        later: list[DecodeJob] = []
        for outcome in outcomes(pending):
            if isinstance(outcome, str):
                error = outcome
                break
            part_info, clips = outcome
            if info is None:
                info = part_info
                later = [replace(first, part=k) for k in range(1, parts(first, part_info))]
            for clip in clips:
                for k, frames in enumerate(views(clip.frames, crop, crops)):
                    if held is not None:
                        yield held
                    held = _row(path, clip.index * crops + k, (clip.start_s, clip.end_s), frames)
                    total += 1
        pending = later
    last = held or _row(path, -1, (0.0, 0.0), np.zeros((*clip_shape, 3), dtype=np.uint8))
    last.update(total=total, error=error, info=json.dumps(asdict(info)) if info else "")
    yield last


# --- model actors -----------------------------------------------------------------------------


class ModelActor:
    """Holds the model once; scores the clips of a batch (blank rows pass through)."""

    def __init__(self, **load: Any) -> None:
        from tagger.classify import load_classifier

        self.classifier = load_classifier(**load)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = batch.pop("frames")
        probs = np.zeros((len(frames), len(self.classifier.labels)), dtype=np.float32)
        clips = np.flatnonzero(batch["slot"] >= 0)
        if len(clips):
            probs[clips] = self.classifier.predict(self.classifier.stack([frames[i] for i in clips]))
        batch["probs"] = probs
        return batch


# --- the driver's side ------------------------------------------------------------------------


@dataclass
class _Video:
    """One video's scored views as they land (any order, duplicates of a retry counted once)."""

    spans: dict[int, tuple[float, float]] = field(default_factory=dict)
    probs: dict[int, np.ndarray] = field(default_factory=dict)
    total: int | None = None
    error: str = ""
    info: VideoInfo | None = None

    @property
    def finished(self) -> bool:
        return self.total is not None and (bool(self.error) or len(self.probs) >= self.total)


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray run goes; the defaults start a local Ray."""

    address: str | None = None
    #: Model actors; None: one per GPU asked for, else one.
    workers: int | None = None
    gpus_per_worker: float = 0.0
    #: CPUs Ray reserves for each decode task (one file at a time each).
    decode_cpus: float = 1.0
    #: Started locally when there is no address (tests: a fixed size).
    num_cpus: int | None = None


class RayEngine:
    """An :class:`~tagger.engines.Engine` on Ray Data; results come in completion order."""

    def __init__(
        self,
        model: str,
        options: TagOptions | None = None,
        settings: RaySettings | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        runtime: str = "torch",
    ) -> None:
        from tagger.models import fingerprint, load_spec

        self.options = options or TagOptions()
        self.settings = settings or RaySettings()
        self.ray = import_ray()
        # The driver reads the checkpoint's spec (no weights) for the clip plan and the model
        # column; the actors load the weights from the same place, so it must be reachable there.
        spec = load_spec(model)
        self.spec = spec
        self._model = f"{spec.ref.name}@{fingerprint(spec.ref, spec.config)}"
        self._labelling = Labelling.of(self.options, spec.calibration, spec.multi_label)
        self._actor_args = {
            "model": spec.ref.source,
            "device": device,
            "precision": precision,
            "compile": compile,
            "runtime": runtime,
        }
        connect(self.settings.address, self.settings.num_cpus)
        self._check_fits()

    @property
    def model(self) -> str:
        return self._model

    @property
    def labelling(self) -> Labelling:
        return self._labelling

    def _check_fits(self) -> None:
        """Refuse a job the cluster can never schedule (Ray would wait for it without a word):
        each actor takes 1 CPU and its GPUs, and one decode task at least needs its CPUs."""
        have = self.ray.cluster_resources()
        settings = self.settings
        workers = settings.workers or 1
        gpus = workers * settings.gpus_per_worker
        if gpus > have.get("GPU", 0):
            raise InputError(
                f"the Ray cluster has {have.get('GPU', 0):g} GPUs; --workers {workers} "
                f"--gpus-per-worker {settings.gpus_per_worker:g} need {gpus:g}"
            )
        cpus = workers + settings.decode_cpus
        if cpus > have.get("CPU", 0):
            raise InputError(
                f"the Ray cluster has {have.get('CPU', 0):g} CPUs; {workers} model actors (1 CPU each) "
                f"and a decode task (--decode-cpus {settings.decode_cpus:g}) need {cpus:g}"
            )

    def close(self) -> None:
        """Leaves the Ray connection up (a later run in this process reuses it)."""

    def _dataset(self, paths: list[str]) -> Any:
        ray = self.ray
        _configure(ray)
        options, settings, spec = self.options, self.settings, self.spec
        job = make_job("", spec.prep, spec.stride, options)
        gpus = settings.gpus_per_worker
        workers = settings.workers or 1
        batch_size = options.batch_size or (32 if gpus else 1)
        items = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths)))
        clips = items.flat_map(
            decode_rows,
            fn_kwargs={
                "job": job,
                "crop": spec.prep.crop,
                "crops": options.crops,
                "timeout_s": options.timeout_s,
                "clip_shape": spec.clip_shape,
            },
            num_cpus=settings.decode_cpus,
        )
        return clips.map_batches(
            ModelActor,
            fn_constructor_kwargs=self._actor_args,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus or None,
            batch_size=batch_size,
            batch_format="numpy",
        )

    def tag(self, paths: Iterable[str | Quiet], stop: threading.Event | None = None) -> Iterator[VideoResult]:
        todo = [p for p in paths if not isinstance(p, Quiet)]
        if not todo:
            return
        classes = tuple(self.spec.labels)
        crops = self.options.crops
        videos: dict[str, _Video] = {p: _Video() for p in todo}
        done: set[str] = set()
        try:
            for batch in self._dataset(todo).iter_batches(batch_size=None, batch_format="numpy"):
                if stop is not None and stop.is_set():
                    return
                for i, path in enumerate(batch["path"]):
                    path = str(path)
                    if path in done:
                        continue
                    video = videos[path]
                    slot = int(batch["slot"][i])
                    if slot >= 0:
                        video.spans[slot // crops] = (float(batch["start_s"][i]), float(batch["end_s"][i]))
                        video.probs[slot] = batch["probs"][i]
                    if int(batch["total"][i]) >= 0:
                        video.total = int(batch["total"][i])
                        video.error = str(batch["error"][i])
                        text = str(batch["info"][i])
                        video.info = VideoInfo(**json.loads(text)) if text else None
                    if video.finished:
                        done.add(path)
                        yield self._result(path, videos.pop(path), classes)
        except self.ray.exceptions.RayError as exc:
            log.debug("Ray: %s", exc)
            raise TaggerError(f"the Ray job failed: {_first_line(exc)}") from exc

    def _result(self, path: str, video: _Video, classes: tuple[str, ...]) -> VideoResult:
        if video.error or video.info is None or not video.probs:
            return VideoResult.failed(path, video.error or "no frames could be decoded", model=self._model)
        clips = sorted(video.spans)
        view_probs = np.stack([video.probs[slot] for slot in sorted(video.probs)])
        spans = [video.spans[c] for c in clips]
        return video_result(
            video.info, spans, view_probs, classes, self._labelling, self.options.timeline, self._model
        )

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
