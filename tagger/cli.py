"""The ``vidtag`` command: thin Click commands over the tagger library.

Heavy modules (torch, transformers, av) are imported inside commands so ``--help`` is instant.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tagger import __version__
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


def _writable_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
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


def _output_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from tagger.sinks import table_format

    try:
        table_format(value)
    except TaggerError as exc:
        raise click.BadParameter(str(exc)) from None
    return _writable_file(ctx, param, value)


def state_options(f: F) -> F:
    f = click.option(
        "--allow-network-state",
        is_flag=True,
        help="Allow --state on NFS/SMB/FUSE (SQLite's locks and WAL need a local disk).",
    )(f)
    return click.option(
        "--state",
        type=click.Path(dir_okay=False, path_type=str),
        callback=_writable_file,
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
        help="auto: bf16 on CUDA and on CPUs with bf16 matrix units, else fp32.",
    )(f)
    f = click.option(
        "--device", type=DeviceType(), default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
    )(f)
    f = click.option(
        "--compile", "compile_model", is_flag=True, help="torch.compile the model (long GPU runs)."
    )(f)
    return model_option(f)


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


def _fail(exc: TaggerError) -> click.ClickException:
    if isinstance(exc, InputError):
        return UsageFailure(str(exc))
    return click.ClickException(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidtag")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Tag videos with what happens in them (VideoMAE over the whole video)."""
    from tagger import logs

    logs.setup(verbose, daemon=ctx.invoked_subcommand == "watch")


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
                type=click.FloatRange(0, 1),
                default=None,
                help="Drop labels scoring under this.",
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
                "--sidecar", is_flag=True, help="Also write <video>.<ext>.vidtag.json next to each video."
            ),
        ]
    ):
        f = option(f)
    return clip_options(inference_options(f))


def _tag_options(params: dict[str, Any]) -> defaults.TagOptions:
    return defaults.TagOptions(
        clips=params["clips"],
        top_k=params["top_k"],
        threshold=params["threshold"],
        batch_size=params["batch_size"],
        workers=params["workers"],
        timeout_s=params["timeout"],
        max_pixels=params["max_pixels"],
        max_duration_s=params["max_duration"],
    )


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option(
    "-o",
    "--output",
    callback=_output_path,
    help="Table to write: .csv, .jsonl or .parquet; '-' for CSV on stdout "
    "[default: stdout unless --sidecar].",
)
@tagging_options
@click.option("--hidden", is_flag=True, help="Also scan dot-files and dot-folders.")
@state_options
@click.option("--force", is_flag=True, help="Re-tag videos the state file already has.")
def scan(paths: tuple[str, ...], output: str | None, state: str | None, force: bool, **params: Any) -> None:
    """Tag every video under PATHS and write one row per video.

    \b
    Example:
      vidtag scan ./videos -o labels.csv
    """
    from tagger import progress
    from tagger.scan import run
    from tagger.sources.filters import VideoFilter

    try:
        summary = run(
            paths,
            output,
            model=params["model"],
            device=params["device"],
            precision=params["precision"],
            compile=params["compile_model"],
            options=_tag_options(params),
            filter=VideoFilter(include=params["include"], exclude=params["exclude"], hidden=params["hidden"]),
            state=state,
            sidecars=("json",) if params["sidecar"] else (),
            force=force,
            allow_network_state=params["allow_network_state"],
            reporter=progress.Reporter,
        )
    except TaggerError as exc:
        raise _fail(exc) from None
    progress.print_summary(summary)
    sys.exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _append_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    value = _output_path(ctx, param, value)
    if value is not None and (value == "-" or value.lower().endswith(".parquet")):
        raise click.BadParameter("watch appends rows as videos finish: use a .csv or .jsonl file")
    return value


@cli.command()
@click.argument(
    "roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=str)
)
@click.option("-o", "--output", callback=_append_path, help="CSV or JSONL file that rows are appended to.")
@tagging_options
@state_options
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, path_type=str),
    callback=_writable_file,
    default=None,
    help="Append the log to this file (reopened when logrotate moves it) [default: stderr].",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=defaults.WatchOptions.settle_s,
    show_default=True,
    help="Seconds a file's size and mtime must stay unchanged before it is tagged.",
)
@click.option(
    "--rescan",
    type=click.FloatRange(min=1),
    default=defaults.WatchOptions.rescan_s,
    show_default=True,
    help="Seconds between full rescans that catch events the observer missed.",
)
@click.option(
    "--poll/--no-poll", default=None, help="Poll instead of inotify [default: poll only on NFS/SMB/FUSE]."
)
@click.option(
    "--on-delete",
    type=click.Choice(defaults.ON_DELETE),
    default=defaults.WatchOptions.on_delete,
    show_default=True,
    help="keep: mark a deleted video's row removed; remove: drop it and its sidecar.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=defaults.WatchOptions.retries,
    show_default=True,
    help="Times a settled file that fails to decode is tried again (with back-off).",
)
@click.option(
    "--status-every",
    type=click.FloatRange(min=1),
    default=defaults.WatchOptions.status_every_s,
    show_default=True,
    help="Seconds between status lines in the log.",
)
def watch(
    roots: tuple[str, ...],
    output: str | None,
    state: str | None,
    settle: float,
    rescan: float,
    poll: bool | None,
    on_delete: str,
    retries: int,
    status_every: float,
    log_file: str | None,
    **params: Any,
) -> None:
    """Tag each new video under ROOTS once it has finished arriving; runs until stopped.

    \b
    Example:
      vidtag watch /media/library -o /var/lib/vidtag/labels.csv
    """
    from tagger.daemon import watch_videos

    watching = defaults.WatchOptions(
        settle_s=settle,
        rescan_s=rescan,
        poll=poll,
        on_delete=on_delete,
        retries=retries,
        status_every_s=status_every,
        include=params["include"],
        exclude=params["exclude"],
    )
    try:
        watch_videos(
            roots,
            output,
            model=params["model"],
            device=params["device"],
            precision=params["precision"],
            compile=params["compile_model"],
            options=_tag_options(params),
            watch=watching,
            state=state,
            sidecars=("json",) if params["sidecar"] else (),
            allow_network_state=params["allow_network_state"],
            log_file=log_file,
        )
    except TaggerError as exc:
        raise _fail(exc) from None


@cli.command()
@model_option
def labels(model: str) -> None:
    """Print the labels MODEL can give, one per line.

    \b
    Example:
      vidtag labels -m kinetics-400
    """
    from tagger.models import labels_of, load_config, resolve_model

    try:
        names = labels_of(load_config(resolve_model(model)))
    except TaggerError as exc:
        raise _fail(exc) from None
    for name in names:
        click.echo(name)


@cli.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option(
    "--gif", "gif_path", required=True, type=click.Path(dir_okay=False, path_type=str), help="GIF to write."
)
@model_option
@clip_options
def preview(
    video: str, gif_path: str, model: str, clips: int | None, max_pixels: int, max_duration: float
) -> None:
    """Write a GIF of exactly the frames the model sees in VIDEO (un-normalized).

    \b
    Example:
      vidtag preview clip.mp4 --gif clip.gif -m kinetics-400
    """
    from tagger.preview import write_preview

    try:
        count = write_preview(
            video, gif_path, model, clips=clips, max_pixels=max_pixels, max_duration_s=max_duration
        )
    except TaggerError as exc:
        raise _fail(exc) from None
    click.echo(f"wrote {gif_path}: {count} clip(s) of the frames the model sees", err=True)


@cli.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Model directory to write (e.g. models/NAME).",
)
@click.option(
    "--base",
    default="MCG-NJU/videomae-base",
    show_default=True,
    help="Checkpoint to start from: hub id, alias or directory.",
)
@click.option(
    "--init",
    type=click.Choice(["pretrained", "small"]),
    default="pretrained",
    show_default=True,
    help="small: a small VideoMAE with random weights, for machines without pretrained weights.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate [default: 5e-5 from a pretrained base, 1e-3 for --init small].",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Frames between sampled frames; saved with the model.",
)
@click.option(
    "--flip/--no-flip",
    default=True,
    show_default=True,
    help="Random horizontal flips; turn off when left and right matter (swipe left/right).",
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data-loading processes."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for the split, sampling and weights."
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT/checkpoints.")
@click.option("--push-to-hub", is_flag=True, help="Upload the model to the Hugging Face hub as OUT's name.")
@click.option("--check-only", is_flag=True, help="Check the dataset, report, and stop.")
def finetune(data_dir: str, out: str, check_only: bool, **settings: Any) -> None:
    """Fine-tune a VideoMAE on DATA_DIR (train/ val/ test/ of class folders, or class folders).

    \b
    Example:
      vidtag finetune ./my-clips --out models/my-tags
    """
    from tagger.training.train import FinetuneSettings, check
    from tagger.training.train import finetune as run_finetune

    options = FinetuneSettings(data_dir=data_dir, out=out, **settings)
    try:
        if check_only:
            data, result = check(options)
            counts = ", ".join(f"{split} {len(videos)}" for split, videos in data.splits.items())
            click.echo(f"{len(data.classes)} classes; videos: {counts}")
            click.echo(result.format())
            sys.exit(EXIT_OK if result.ok else EXIT_FAILED)
        run_finetune(options)
    except TaggerError as exc:
        raise _fail(exc) from None
    # Under torchrun or accelerate only the first process writes the model, so only it says so.
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"saved {out}", err=True)


@cli.command()
@click.argument("split_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@inference_options
@click.option(
    "--clips", type=click.IntRange(1, 64), default=1, show_default=True, help="Clips per video, averaged."
)
@click.option(
    "--three-crop",
    is_flag=True,
    help="Average three crops along the long side (the VideoMAE paper's test views).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Clips per forward pass [default: 32 on CUDA, 1 on CPU].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Folder for the report files [default: print only].",
)
def evaluate(
    split_dir: str,
    model: str,
    device: str,
    precision: str,
    compile_model: bool,
    clips: int,
    three_crop: bool,
    batch_size: int | None,
    out: str | None,
) -> None:
    """Accuracy, per-class scores and confusion matrix of MODEL on SPLIT_DIR/<Class>/videos.

    \b
    Example:
      vidtag evaluate data/test -m models/my-tags --clips 4 --three-crop --out report/
    """
    from pathlib import Path

    from tagger.training.report import format_report, write_report
    from tagger.training.train import evaluate as run_evaluate
    from tagger.training.train import labeled_videos

    try:
        report = run_evaluate(
            labeled_videos(split_dir),
            model,
            clips=clips,
            crops=3 if three_crop else 1,
            device=device,
            precision=precision,
            compile=compile_model,
            batch_size=batch_size,
        )
        click.echo(format_report(report))
        if out:
            for path in write_report(report, out, prefix=Path(split_dir).name or "eval"):
                click.echo(f"wrote {path}", err=True)
    except TaggerError as exc:
        raise _fail(exc) from None


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="vidtag")


if __name__ == "__main__":
    main()
