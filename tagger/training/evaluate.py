"""Evaluation of a saved model on a labeled split, through the same engine as tagging.

Apart from training so that ``vidtag evaluate`` needs neither the Trainer nor its datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


def video_probabilities(
    videos: Sequence[datasets.LabeledVideo],
    classifier: Any,
    clips: int | None = 1,
    crops: int = 1,
    batch_size: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Each video's class probabilities (its clips averaged, videos x classes) and its true
    class, through the tagging pipeline; a video that fails to decode is left out (logged)."""
    from tagger.engines.local import tag

    unknown = sorted({v.label for v in videos} - set(classifier.labels))
    if unknown:
        raise TaggerError(
            f"the model has no label for: {', '.join(unknown)} (its labels: {classifier.labels})"
        )
    truth = {v.path: classifier.labels.index(v.label) for v in videos}
    options = TagOptions(clips=clips, crops=crops, top_k=1, threshold=0, batch_size=batch_size)
    rows, y_true = [], []
    for result in tag(list(truth), classifier, options):
        if not result.ok:
            log.warning("not evaluated: %s: %s", result.path, result.error)
            continue
        rows.append(np.mean([c.scores for c in result.clip_scores], axis=0))
        y_true.append(truth[result.path])
    probs = np.array(rows, dtype=np.float64).reshape(len(rows), len(classifier.labels))
    return probs, y_true


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
    """Accuracy and per-class metrics of ``model`` on labeled videos, through the tagging pipeline;
    with a calibrated model, also how its thresholds do (``Report.calibrated``).

    ``clips=1, crops=1`` is the single-clip score; more clips and ``crops=3`` give the
    VideoMAE paper's multi-view evaluation (scores averaged over all views).
    """
    from dataclasses import replace

    from tagger.classify import load_classifier
    from tagger.labels import Labelling
    from tagger.training.report import calibrated_report, evaluate_predictions

    classifier = load_classifier(model, device=device, precision=precision, compile=compile, runtime=runtime)
    probs, y_true = video_probabilities(videos, classifier, clips, crops, batch_size)
    y_pred = [int(i) for i in probs.argmax(axis=1)] if len(probs) else []
    report = evaluate_predictions(y_true, y_pred, classifier.labels)
    if classifier.calibration is None or not len(probs):
        return report
    rule = Labelling(top_k=1, calibration=classifier.calibration, multi_label=classifier.multi_label)
    return replace(report, calibrated=calibrated_report(probs, y_true, rule, classifier.labels))
