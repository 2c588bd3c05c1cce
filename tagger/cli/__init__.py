"""The ``vidtag`` command: each command is its options and one call into the library.

Heavy modules (torch, transformers, av) are imported inside commands so ``--help`` is instant.
The options several commands share, and how an error becomes an exit code, are in ``params``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from tagger import __version__
from tagger import options as defaults
from tagger.cli.params import (
    EXIT_FAILED,
    EXIT_OK,
    append_path,
    calibration_options,
    clip_options,
    daemon_options,
    engine_options,
    fail,
    inference_options,
    model_choice,
    model_option,
    output_path,
    ray_settings,
    state_options,
    tag_options,
    tagging_options,
    writable_file,
)
from tagger.records import TaggerError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidtag")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Tag videos with what happens in them (VideoMAE over the whole video)."""
    from tagger import logs

    logs.setup(verbose, daemon=ctx.invoked_subcommand == "watch")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=str))
@click.option(
    "-o",
    "--output",
    callback=output_path,
    help="Table to write: .csv, .jsonl or .parquet; '-' for CSV on stdout "
    "[default: stdout unless --sidecar or --segments].",
)
@click.option(
    "--segments",
    callback=output_path,
    help="Also write the timeline, one row per segment: .csv, .jsonl or .parquet.",
)
@tagging_options
@click.option("--hidden", is_flag=True, help="Also scan dot-files and dot-folders.")
@state_options
@click.option("--force", is_flag=True, help="Re-tag videos the state file already has.")
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    default=None,
    help="Parquet or CSV file whose 'path' column lists videos (local paths or URIs: s3://, gs://, ...).",
)
@engine_options
def scan(
    paths: tuple[str, ...],
    output: str | None,
    segments: str | None,
    state: str | None,
    force: bool,
    manifest: str | None,
    **params: Any,
) -> None:
    """Tag every video under PATHS (and in --manifest) and write one row per video.

    \b
    Examples:
      vidtag scan ./videos -o labels.csv
      vidtag scan ./videos -o labels.csv --segments segments.csv --sidecar xmp,vtt
      vidtag scan --manifest videos.parquet -o labels.parquet --engine ray --ray-address auto
    """
    from tagger import progress
    from tagger.scan import run
    from tagger.sources.filters import VideoFilter

    if not paths and manifest is None:
        raise click.UsageError("name PATHS to scan, or a --manifest of them")
    try:
        summary = run(
            paths,
            output,
            **model_choice(params),
            options=tag_options(params, segments=segments is not None),
            filter=VideoFilter(include=params["include"], exclude=params["exclude"], hidden=params["hidden"]),
            state=state,
            sidecars=params["sidecars"],
            segments=segments,
            force=force,
            allow_network_state=params["allow_network_state"],
            reporter=progress.Reporter,
            engine=params["engine"],
            ray=ray_settings(params),
            manifest=manifest,
        )
    except TaggerError as exc:
        raise fail(exc) from None
    progress.print_summary(summary)
    sys.exit(EXIT_OK if summary.ok else EXIT_FAILED)


@cli.command()
@click.argument(
    "roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=str)
)
@click.option("-o", "--output", callback=append_path, help="CSV or JSONL file that rows are appended to.")
@tagging_options
@state_options
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, path_type=str),
    callback=writable_file,
    default=None,
    help="Append the log to this file (reopened when logrotate moves it) [default: stderr].",
)
@daemon_options
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
            **model_choice(params),
            options=tag_options(params),
            watch=watching,
            state=state,
            sidecars=params["sidecars"],
            allow_network_state=params["allow_network_state"],
            log_file=log_file,
        )
    except TaggerError as exc:
        raise fail(exc) from None


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
        raise fail(exc) from None
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
        raise fail(exc) from None
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
@calibration_options
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
        raise fail(exc) from None
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
    runtime: str,
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

    from tagger.training.evaluate import evaluate as run_evaluate
    from tagger.training.evaluate import labeled_videos
    from tagger.training.report import format_report, write_report

    try:
        report = run_evaluate(
            labeled_videos(split_dir),
            model,
            clips=clips,
            crops=3 if three_crop else 1,
            device=device,
            precision=precision,
            compile=compile_model,
            runtime=runtime,
            batch_size=batch_size,
        )
        click.echo(format_report(report))
        if out:
            for path in write_report(report, out, prefix=Path(split_dir).name or "eval"):
                click.echo(f"wrote {path}", err=True)
    except TaggerError as exc:
        raise fail(exc) from None


@cli.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@inference_options
@calibration_options
@click.option(
    "--clips",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Clips per video, averaged (as --clips at scan time).",
)
def calibrate(
    data_dir: str,
    model: str,
    device: str,
    precision: str,
    compile_model: bool,
    runtime: str,
    target_precision: float,
    temperature: bool,
    clips: int,
) -> None:
    """Pick a threshold per class of MODEL on the labelled videos in DATA_DIR (its val/ split,
    or its class folders) and store them in MODEL/vidtag.json: scan and watch then keep only
    labels that reach their class's threshold, and tag the rest unknown.

    \b
    Example:
      vidtag calibrate data -m models/my-tags --target-precision 0.9
    """
    from tagger.training.calibrate import calibrate_model

    try:
        result = calibrate_model(
            data_dir,
            model,
            target_precision=target_precision,
            temperature=temperature,
            device=device,
            precision=precision,
            runtime=runtime,
            clips=clips,
            compile=compile_model,
        )
    except TaggerError as exc:
        raise fail(exc) from None
    click.echo(result.format())
    click.echo(f"stored in {os.path.join(model, 'vidtag.json')}", err=True)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="vidtag")


if __name__ == "__main__":
    main()
