"""Evaluation of a saved model on a labeled split, through the same engine as tagging.

Apart from training so that ``vidtag evaluate`` needs neither the Trainer nor its datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagger.options import TagOptions
from tagger.records import TaggerError
from tagger.training import datasets

log = logging.getLogger(__name__)


def labeled_videos(folder: str | Path) -> list[datasets.LabeledVideo]:
    """Videos of one split folder (``<folder>/<Class>/*``, classes nested or not), labeled by
    their class folder as in training."""
    classes = datasets.class_videos(folder)
    if not classes:
        raise TaggerError(f"{folder} has no class folders (expected {folder}/<Class>/<video>)")
    return [
        datasets.LabeledVideo(path=path, label=label, group=datasets.group_of(label, path))
        for label, paths in classes.items()
        for path in paths
    ]


def evaluate(
    videos: Sequence[datasets.LabeledVideo],
    model: str,
    clips: int | None = 1,
    crops: int = 1,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    compile: bool = False,
    runtime: str = "torch",
) -> Any:
    """Accuracy and per-class metrics of ``model`` on labeled videos, through the tagging pipeline.

    ``clips=1, crops=1`` is the single-clip score; more clips and ``crops=3`` give the
    VideoMAE paper's multi-view evaluation (scores averaged over all views).
    """
    from tagger.classify import load_classifier
    from tagger.engines.local import tag
    from tagger.training.report import evaluate_predictions

    classifier = load_classifier(model, device=device, precision=precision, compile=compile, runtime=runtime)
    unknown = sorted({v.label for v in videos} - set(classifier.labels))
    if unknown:
        raise TaggerError(
            f"the model has no label for: {', '.join(unknown)} (its labels: {classifier.labels})"
        )
    truth = {v.path: classifier.labels.index(v.label) for v in videos}
    options = TagOptions(clips=clips, crops=crops, top_k=1, batch_size=batch_size)
    y_true, y_pred = [], []
    for result in tag(list(truth), classifier, options):
        if not result.ok:
            log.warning("not evaluated: %s: %s", result.path, result.error)
            continue
        y_true.append(truth[result.path])
        y_pred.append(classifier.labels.index(result.tags[0].label))
    return evaluate_predictions(y_true, y_pred, classifier.labels)
