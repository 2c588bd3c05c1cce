"""The options the commands share, their checks, and how an error becomes an exit code."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tagger import options as defaults
from tagger.records import InputError, TaggerError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageFailure(click.ClickException):
    """A bad model or device found after parsing: still the user's input, so exit 2."""

    exit_code = EXIT_USAGE


class DeviceType(click.ParamType):
    name = "DEVICE"
    _pattern = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not self._pattern.match(str(value)):
            self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:N", param, ctx)
        return str(value)


class ThresholdType(click.ParamType):
    """``auto`` (None: the model's calibrated thresholds, if any) or a number from 0 to 1."""

    name = "auto|0..1"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither auto nor a number from 0 to 1", param, ctx)
        if not 0 <= number <= 1:
            self.fail(f"{number:g} is not from 0 to 1", param, ctx)
        return number


def writable_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A file vidtag will create: its folder must exist and take new files (checked for real)."""
    if value is None or value == "-":
        return value
    from tagger.fsutil import check_writable
    from tagger.names import display

    folder = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {display(folder)} does not exist")
    try:
        check_writable(value)
    except TaggerError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def output_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from tagger.sinks import table_format

    try:
        table_format(value)
    except TaggerError as exc:
        raise click.BadParameter(str(exc)) from None
    return writable_file(ctx, param, value)


def state_options(f: F) -> F:
    f = click.option(
        "--allow-network-state",
        is_flag=True,
        help="Allow --state on NFS/SMB/FUSE (SQLite's locks and WAL need a local disk).",
    )(f)
    return click.option(
        "--state",
        type=click.Path(dir_okay=False, path_type=str),
        callback=writable_file,
        default=None,
        help="SQLite file of finished videos [default: OUTPUT.vidtag.db on a local disk, "
        "else under $XDG_STATE_HOME/vidtag/].",
    )(f)


def model_option(f: F) -> F:
    return click.option(
        "-m",
        "--model",
        default=defaults.DEFAULT_MODEL,
        show_default=True,
        envvar="VIDTAG_MODEL",
        help="Alias from tagger/registry.toml, Hugging Face hub id, or local model directory.",
    )(f)


def inference_options(f: F) -> F:
    f = click.option(
        "--precision",
        type=click.Choice(defaults.PRECISIONS),
        default="auto",
        show_default=True,
        help="auto: bf16 on CUDA and on CPUs with bf16 matrix units, else fp32; int8 with --runtime onnx.",
    )(f)
    f = click.option(
        "--device", type=DeviceType(), default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
    )(f)
    f = click.option(
        "--compile", "compile_model", is_flag=True, help="torch.compile the model (long GPU runs)."
    )(f)
    f = click.option(
        "--runtime",
        type=click.Choice(defaults.RUNTIMES),
        default="torch",
        show_default=True,
        help="Who runs the model: torch, or an export cached per model for onnx (ONNX Runtime; "
        'pip install "vidtag[onnx]") or openvino (OpenVINO; "vidtag[openvino]"), both on the CPU. '
        "auto: on a CPU openvino, else onnx, whichever is installed (the faster first); torch on a GPU.",
    )(f)
    return model_option(f)


def calibration_options(f: F) -> F:
    """How thresholds are picked on labelled videos: ``vidtag calibrate``, and finetune on val/."""
    f = click.option(
        "--temperature/--no-temperature",
        default=True,
        show_default=True,
        help="Temperature-scale the model's confidence to fit the labelled videos first.",
    )(f)
    return click.option(
        "--target-precision",
        type=click.FloatRange(0, 1, min_open=True),
        default=defaults.TARGET_PRECISION,
        show_default=True,
        help="Pick each class's threshold for this precision on the labelled videos (val/ in finetune).",
    )(f)


def clip_options(f: F) -> F:
    f = click.option(
        "--max-duration",
        type=click.FloatRange(min=1),
        default=defaults.MAX_DURATION_S,
        show_default=True,
        help="Refuse videos longer than this many seconds.",
    )(f)
    f = click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=defaults.MAX_PIXELS,
        show_default=True,
        help="Refuse frames larger than this (width x height).",
    )(f)
    return click.option(
        "--clips",
        type=click.IntRange(1, 64),
        default=None,
        help="Clips per video, spread over its whole length [default: one per ~10 s, 1 to 8].",
    )(f)


def fail(exc: TaggerError) -> click.ClickException:
    if isinstance(exc, InputError):
        return UsageFailure(str(exc))
    return click.ClickException(str(exc))


def tagging_options(f: F) -> F:
    """What scan and watch share: the model, the clips, what to keep, and the decoders."""
    for option in reversed(
        [
            click.option(
                "--top-k",
                type=click.IntRange(min=1),
                default=defaults.TOP_K,
                show_default=True,
                help="Labels kept per video.",
            ),
            click.option(
                "--threshold",
                type=ThresholdType(),
                default="auto",
                show_default=True,
                help="Keep labels scoring this much. auto: each label's own threshold when the model "
                "is calibrated (vidtag calibrate), else keep the top-k; 0: keep the top-k; a number: "
                "that for every label. A video whose best label falls short is tagged unknown.",
            ),
            click.option(
                "--keep-unsure",
                is_flag=True,
                help="Keep an unknown video's top-k in its labels column (its label stays empty).",
            ),
            click.option(
                "--labels",
                "labels_file",
                type=click.Path(exists=True, dir_okay=False, path_type=str),
                default=None,
                metavar="FILE",
                help='Your names for the model\'s labels: a TOML [labels] table of "model label" = '
                '"your label" (several to one merges them; = false hides one).',
            ),
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                default=None,
                help="Clips per forward pass [default: 32 on CUDA, 1 on CPU].",
            ),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=None,
                help="Decode processes [default: half the cores on CPU, all but one with CUDA].",
            ),
            click.option(
                "--frames",
                type=click.Choice(defaults.FRAMES),
                default="auto",
                show_default=True,
                help="What decode processes hand the model: rgb, or yuv (4:2:0 planes, half the "
                "bytes, made RGB on the model's device). auto: yuv for a model on a GPU, rgb on a CPU.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=1),
                default=defaults.DECODE_TIMEOUT_S,
                show_default=True,
                help="Seconds allowed to decode one file.",
            ),
            click.option(
                "--include", multiple=True, metavar="GLOB", help="Only files matching GLOB (repeatable)."
            ),
            click.option(
                "--exclude", multiple=True, metavar="GLOB", help="Skip files and folders matching GLOB."
            ),
            click.option(
                "--sidecar",
                "sidecars",
                is_flag=False,
                flag_value="json",
                default=None,
                metavar="KINDS",
                callback=sidecar_kinds,
                help="Also write sidecars next to each video, a comma list of json (vidtag's own), xmp "
                "(digiKam, Immich, PhotoPrism), nfo (Jellyfin, Kodi) and vtt (the timeline) "
                "[bare --sidecar: json].",
            ),
            click.option(
                "--timeline",
                is_flag=True,
                help="Cut clips densely over the whole video and merge them into segments "
                "[implied by --segments and --sidecar vtt].",
            ),
            click.option(
                "--segment-step",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                metavar="SECONDS",
                help="Seconds between timeline clips [default: one clip length, so every frame counts].",
            ),
            click.option(
                "--segment-enter",
                type=click.FloatRange(0, 1),
                default=defaults.TimelineOptions.enter,
                show_default=True,
                help="A segment starts at a clip scoring this much.",
            ),
            click.option(
                "--segment-leave",
                type=click.FloatRange(0, 1),
                default=defaults.TimelineOptions.leave,
                show_default=True,
                help="... and lasts while its clips score this much.",
            ),
            click.option(
                "--segment-min",
                type=click.FloatRange(min=0),
                default=defaults.TimelineOptions.min_s,
                show_default=True,
                metavar="SECONDS",
                help="Drop segments shorter than this.",
            ),
        ]
    ):
        f = option(f)
    return clip_options(inference_options(f))


def model_choice(params: dict[str, Any]) -> dict[str, Any]:
    """The model arguments of ``scan_videos`` and ``watch_videos`` from ``inference_options``."""
    return {
        "model": params["model"],
        "device": params["device"],
        "precision": params["precision"],
        "compile": params["compile_model"],
        "runtime": params["runtime"],
    }


def sidecar_kinds(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from tagger.sinks import SIDECARS

    kinds = tuple(dict.fromkeys(k.strip().lower() for k in (value or "").split(",") if k.strip()))
    unknown = [k for k in kinds if k not in SIDECARS]
    if unknown:
        raise click.BadParameter(f"unknown sidecar {unknown[0]!r}: choose from {', '.join(SIDECARS)}")
    if value is not None and not kinds:
        raise click.BadParameter(f"name at least one sidecar: {', '.join(SIDECARS)}")
    return kinds


def tag_options(params: dict[str, Any], segments: bool = False) -> defaults.TagOptions:
    """The ``TagOptions`` of ``tagging_options``; a timeline when the flags or outputs want one."""
    timeline = None
    if params["timeline"] or segments or any(s in defaults.TIMELINE_SIDECARS for s in params["sidecars"]):
        try:
            timeline = defaults.TimelineOptions(
                step_s=params["segment_step"],
                enter=params["segment_enter"],
                leave=params["segment_leave"],
                min_s=params["segment_min"],
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    label_map = None
    if params["labels_file"]:
        from tagger.labels import load_label_map
        from tagger.models import load_spec

        try:
            label_map = load_label_map(params["labels_file"], load_spec(params["model"]).labels)
        except TaggerError as exc:
            raise fail(exc) from None
    return defaults.TagOptions(
        timeline=timeline,
        clips=params["clips"],
        top_k=params["top_k"],
        threshold=params["threshold"],
        keep_unsure=params["keep_unsure"],
        label_map=label_map,
        batch_size=params["batch_size"],
        workers=params["workers"],
        timeout_s=params["timeout"],
        max_pixels=params["max_pixels"],
        max_duration_s=params["max_duration"],
        frames=params["frames"],
    )


def append_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    value = output_path(ctx, param, value)
    if value is not None and (value == "-" or value.lower().endswith(".parquet")):
        raise click.BadParameter("watch appends rows as videos finish: use a .csv or .jsonl file")
    return value


def daemon_options(f: F) -> F:
    """How the daemon waits, rescans, retries and reacts to deletions (``WatchOptions``)."""
    for option in reversed(
        [
            click.option(
                "--settle",
                type=click.FloatRange(min=0),
                default=defaults.WatchOptions.settle_s,
                show_default=True,
                help="Seconds a file's size and mtime must stay unchanged before it is tagged.",
            ),
            click.option(
                "--rescan",
                type=click.FloatRange(min=1),
                default=defaults.WatchOptions.rescan_s,
                show_default=True,
                help="Seconds between full rescans that catch events the observer missed.",
            ),
            click.option(
                "--poll/--no-poll",
                default=None,
                help="Poll instead of inotify [default: poll only on NFS/SMB/FUSE].",
            ),
            click.option(
                "--on-delete",
                type=click.Choice(defaults.ON_DELETE),
                default=defaults.WatchOptions.on_delete,
                show_default=True,
                help="keep: mark a deleted video's row removed; remove: drop it and what vidtag wrote "
                "beside it.",
            ),
            click.option(
                "--retries",
                type=click.IntRange(min=0),
                default=defaults.WatchOptions.retries,
                show_default=True,
                help="Times a settled file that fails to decode is tried again (with back-off).",
            ),
            click.option(
                "--status-every",
                type=click.FloatRange(min=1),
                default=defaults.WatchOptions.status_every_s,
                show_default=True,
                help="Seconds between status lines in the log.",
            ),
        ]
    ):
        f = option(f)
    return f


def engine_options(f: F) -> F:
    """Where a scan runs: this machine, or a Ray cluster (``tagger.engines.ray``)."""
    for option in reversed(
        [
            click.option(
                "--engine",
                type=click.Choice(defaults.ENGINES),
                default="local",
                show_default=True,
                help="local: decode processes feed one model here; ray: Ray Data on a cluster "
                '(pip install "vidtag[ray]"), with --workers model actors.',
            ),
            click.option(
                "--ray-address",
                metavar="ADDR",
                default=None,
                help="Ray cluster to join [default: $RAY_ADDRESS, else a local Ray sized to this machine].",
            ),
            click.option(
                "--gpus-per-worker",
                type=click.FloatRange(min=0),
                default=0.0,
                show_default=True,
                help="GPUs each model actor takes (0.5: two actors share a GPU).",
            ),
            click.option(
                "--decode-cpus",
                type=click.FloatRange(min=0, min_open=True),
                default=1.0,
                show_default=True,
                help="CPUs Ray reserves for each decode task (one file at a time each).",
            ),
        ]
    ):
        f = option(f)
    return f


def ray_settings(params: dict[str, Any]) -> Any:
    """The ``RaySettings`` of ``engine_options``; None for the local engine."""
    if params["engine"] != "ray":
        ctx = click.get_current_context()
        for name in ("ray_address", "gpus_per_worker", "decode_cpus"):
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"--{name.replace('_', '-')} is for --engine ray")
        return None
    if params["frames"] == "yuv":
        raise click.UsageError("--frames yuv is for --engine local: Ray's model actors take RGB")
    from tagger.engines.ray import RaySettings

    return RaySettings(
        address=params["ray_address"],
        workers=params["workers"],
        gpus_per_worker=params["gpus_per_worker"],
        decode_cpus=params["decode_cpus"],
    )
