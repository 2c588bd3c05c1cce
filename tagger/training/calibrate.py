"""Thresholds a user can trust: one per class, picked on a labelled validation set for a
target precision, after temperature scaling; stored in the model's ``vidtag.json``.

The rule they serve is ``tagger.labels.Labelling``'s: a video's label is its best class when
that class's score reaches the class's threshold, and the video is unknown otherwise. So the
precision of class ``c`` at threshold ``t`` is measured over the videos whose best class is
``c`` and whose score for it reaches ``t``; the lowest such ``t`` that keeps the precision at
the target is taken (the most recall for that precision), just under the score of the last
video it keeps. A class that cannot reach the target
on the validation set gets the threshold of its best F1 instead, and the report says so.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger.fsutil import atomic_open
from tagger.labels import Calibration, temper
from tagger.models import CALIBRATION_KEY, CLIP_PLAN_FILE
from tagger.options import TARGET_PRECISION
from tagger.records import InputError, TaggerError

log = logging.getLogger(__name__)

#: How far scores of one video move between runtimes and precisions (int8 against fp32: up
#: to 8e-3): a threshold at a validation score exactly would turn that video away elsewhere.
SCORE_NOISE = 0.01
#: A class with no validation video keeps this threshold (nothing to measure it on).
UNMEASURED_THRESHOLD = 0.5


@dataclass(frozen=True)
class ClassCalibration:
    """The threshold of one class, with its precision and recall there on the validation set."""

    label: str
    threshold: float
    precision: float
    recall: float
    support: int
    #: False: the target precision was out of reach; the threshold is the F1-best one.
    reached: bool


@dataclass(frozen=True)
class CalibrationResult:
    target_precision: float
    temperature: float
    classes: tuple[ClassCalibration, ...]
    videos: int

    @property
    def calibration(self) -> Calibration:
        return Calibration(
            thresholds=tuple(c.threshold for c in self.classes),
            temperature=self.temperature,
            target_precision=self.target_precision,
            fallback=tuple(c.label for c in self.classes if not c.reached),
        )

    def to_plan(self) -> dict[str, Any]:
        """The ``calibration`` entry of ``vidtag.json``."""
        return {
            "target_precision": self.target_precision,
            "temperature": round(self.temperature, 6),
            # Rounded down: a threshold rounded up could leave out the scores it was set to keep.
            "thresholds": {c.label: math.floor(c.threshold * 1e6) / 1e6 for c in self.classes},
            "validation": {
                "videos": self.videos,
                "per_class": {
                    c.label: {
                        "precision": round(c.precision, 4),
                        "recall": round(c.recall, 4),
                        "support": c.support,
                        "target_reached": c.reached,
                    }
                    for c in self.classes
                },
            },
        }

    def format(self) -> str:
        """A table for the terminal: each class's threshold and validation figures."""
        width = max([len(c.label) for c in self.classes] + [5])
        lines = [
            f"calibrated on {self.videos} validation videos for precision {self.target_precision:g}"
            f" (temperature {self.temperature:.3f})",
            f"{'class':<{width}}  threshold  precision  recall  support",
        ]
        for c in self.classes:
            note = "" if c.reached else "  (target out of reach: best F1)"
            if c.support == 0:
                note = "  (no validation videos)"
            figures = f"{c.threshold:9.3f}  {c.precision:9.3f}  {c.recall:6.3f}  {c.support:7d}"
            lines.append(f"{c.label:<{width}}  {figures}{note}")
        return "\n".join(lines)


def fit_temperature(probs: np.ndarray, truth: np.ndarray, multi_label: bool = False) -> float:
    """The temperature that minimizes the negative log-likelihood of ``truth`` (class indices)
    under ``probs`` (videos x classes), searched on a log grid, then refined around the best."""

    def nll(temperature: float) -> float:
        p = np.clip(temper(probs, temperature, multi_label), 1e-12, 1.0)
        if multi_label:
            onehot = np.eye(probs.shape[1])[truth]
            return float(-np.mean(onehot * np.log(p) + (1 - onehot) * np.log(np.clip(1 - p, 1e-12, 1.0))))
        return float(-np.mean(np.log(p[np.arange(len(truth)), truth])))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    at = int(np.argmin([nll(t) for t in grid]))
    if at in (0, len(grid) - 1):
        # The likelihood keeps rising towards the edge: with every validation video right
        # (or wrong) by a margin, no temperature fits, and making scores ever surer is no fit.
        log.warning("no temperature fits the validation videos (they are separated perfectly); using 1")
        return 1.0
    fine = grid[at] * np.exp(np.linspace(-0.1, 0.1, 21))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def pick_threshold(
    scores: np.ndarray, predicted: np.ndarray, positive: np.ndarray, target: float
) -> tuple[float, float, float, bool]:
    """(threshold, precision, recall, reached) of one class: ``scores`` its score per video,
    ``predicted`` whether it is the video's best class, ``positive`` whether it is the truth."""
    support = int(positive.sum())
    candidates = np.unique(scores[predicted])[::-1]  # highest first
    if support == 0 or not len(candidates):
        return UNMEASURED_THRESHOLD, 0.0, 0.0, False
    best_f1 = (-1.0, 0, 0.0, 0.0)
    chosen: tuple[int, float, float] | None = None
    for k, t in enumerate(candidates):
        kept = predicted & (scores >= t)
        hits = int((kept & positive).sum())
        precision = hits / int(kept.sum())
        recall = hits / support
        if precision >= target:
            chosen = (k, precision, recall)  # lower thresholds keep more; go on
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        if f1 > best_f1[0]:
            best_f1 = (f1, k, precision, recall)
    k, precision, recall = chosen if chosen is not None else best_f1[1:]  # type: ignore[assignment]
    # Just under the lowest score kept, not far below it: any lower threshold does as well on
    # the validation videos, but takes in more of what they do not show (classes the model was
    # never taught), which is what an unknown tag is for. Never down past halfway to the best
    # score it must leave out: the next candidate, or a video of another class.
    kept = float(candidates[k])
    below = scores < kept
    shut_out = scores[below & (predicted | ~positive)]
    low = float(shut_out.max()) if len(shut_out) else 0.0
    return max(kept - SCORE_NOISE, (kept + low) / 2), precision, recall, chosen is not None


def calibrate(
    probs: np.ndarray,
    truth: Sequence[int],
    classes: Sequence[str],
    target_precision: float = TARGET_PRECISION,
    temperature: bool = True,
    multi_label: bool = False,
) -> CalibrationResult:
    """Thresholds for ``classes`` from validation ``probs`` (videos x classes, the model's own
    probabilities, each video's clips averaged) and the true class of each video."""
    if not 0 < target_precision <= 1:
        raise TaggerError(f"the target precision must be in (0, 1], not {target_precision}")
    y = np.asarray(truth, dtype=int)
    if len(y) == 0:
        raise TaggerError("no validation videos to calibrate on")
    t = fit_temperature(probs, y, multi_label) if temperature else 1.0
    tempered = temper(probs, t, multi_label)
    best = tempered.argmax(axis=1)
    found = []
    for c, label in enumerate(classes):
        # Multi-label: each class is decided on its own, on every video.
        predicted = np.ones(len(y), dtype=bool) if multi_label else best == c
        threshold, precision, recall, reached = pick_threshold(
            tempered[:, c], predicted, y == c, target_precision
        )
        found.append(ClassCalibration(label, threshold, precision, recall, int((y == c).sum()), reached))
    return CalibrationResult(target_precision, t, tuple(found), len(y))


def store(model_dir: str | Path, result: CalibrationResult) -> Path:
    """Write ``result`` into the model's ``vidtag.json`` (atomically), keeping what else it holds."""
    path = Path(model_dir) / CLIP_PLAN_FILE
    plan: dict[str, Any] = {}
    if path.is_file():
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TaggerError(f"cannot read {path}: {exc}") from None
    plan[CALIBRATION_KEY] = result.to_plan()
    with atomic_open(path) as f:
        json.dump(plan, f, indent=2)
    return path


def calibrate_model(
    data_dir: str,
    model: str,
    target_precision: float = TARGET_PRECISION,
    temperature: bool = True,
    device: str = "auto",
    precision: str = "auto",
    runtime: str = "torch",
    clips: int | None = 1,
    batch_size: int | None = None,
    compile: bool = False,
) -> CalibrationResult:
    """``vidtag calibrate``: thresholds for a local ``model`` from the labelled videos of
    ``data_dir`` (its val/ split when it has one, else its class folders), stored with it."""
    from tagger.classify import load_classifier
    from tagger.models import resolve_model
    from tagger.training.evaluate import labeled_videos

    ref = resolve_model(model)
    if not ref.local:
        raise InputError(
            f"calibration is stored in the model's folder: {model} is not a local model directory"
        )
    folder = Path(data_dir)
    split = folder / "val" if (folder / "val").is_dir() else folder
    classifier = load_classifier(model, device=device, precision=precision, compile=compile, runtime=runtime)
    return calibrate_classifier(
        classifier, labeled_videos(split), ref.source, target_precision, temperature, clips, batch_size
    )


def calibrate_classifier(
    classifier: Any,
    videos: Sequence[Any],
    model_dir: str | Path,
    target_precision: float = TARGET_PRECISION,
    temperature: bool = True,
    clips: int | None = 1,
    batch_size: int | None = None,
) -> CalibrationResult:
    """Calibrate a loaded model on labelled ``videos`` and store the result in ``model_dir``."""
    from tagger.training.evaluate import video_probabilities

    probs, truth = video_probabilities(videos, classifier, clips=clips, batch_size=batch_size)
    result = calibrate(probs, truth, classifier.labels, target_precision, temperature, classifier.multi_label)
    store(model_dir, result)
    return result
