"""From a model's probabilities to the tags a user sees: calibrated thresholds, abstaining,
and the user's own names for the labels.

One rule (``Labelling``) makes a video's tags and its timeline's segments from its clip scores.
It joins what the user asks (``--top-k``, ``--threshold``, ``--keep-unsure``, ``--labels``) to
what the model's calibration stored (a threshold per class, a temperature). The engines apply
it to each result, and a scan applies it again to the results the state store already holds,
so a new label map or threshold needs no model run.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tagger.models import CALIBRATION_KEY
from tagger.names import display
from tagger.options import TARGET_PRECISION, TagOptions, TimelineOptions
from tagger.records import InputError, Segment, Tag, VideoResult
from tagger.segments import segments

#: Before the calibration's and the label map's digests in the ``model`` column.
THRESHOLDS_MARK = ";thresholds="
LABELS_MARK = ";labels="


@dataclass(frozen=True)
class Calibration:
    """What calibration on a labelled validation set found for a model."""

    #: One per model class, in index order: a label is kept when its score reaches it.
    thresholds: tuple[float, ...]
    #: Probabilities are ``softmax(log p / T)`` (sigmoid of logit / T for multi-label) first.
    temperature: float = 1.0
    target_precision: float = TARGET_PRECISION
    #: Classes whose threshold is their F1-best one: the target precision was out of reach.
    fallback: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """Short hash of the thresholds and temperature, written with the model in each row."""
        return hashlib.sha256(json.dumps([self.thresholds, self.temperature]).encode()).hexdigest()[:8]

    @classmethod
    def from_plan(cls, plan: Mapping[str, Any], classes: Sequence[str]) -> Calibration | None:
        """The calibration in a model's ``vidtag.json``; None when it has none. A threshold
        for a class the model lacks, or a class without one, makes the file stale: an error."""
        found = plan.get(CALIBRATION_KEY)
        if not found:
            return None
        thresholds = found.get("thresholds") or {}
        missing = [c for c in classes if c not in thresholds]
        extra = [c for c in thresholds if c not in classes]
        if missing or extra:
            raise InputError(
                "the model's vidtag.json has thresholds for other classes than the model's "
                f"({', '.join(map(repr, (missing or extra)[:3]))}): run vidtag calibrate again"
            )
        figures = (found.get("validation") or {}).get("per_class") or {}
        return cls(
            thresholds=tuple(float(thresholds[c]) for c in classes),
            temperature=float(found.get("temperature", 1.0)),
            target_precision=float(found.get("target_precision", TARGET_PRECISION)),
            fallback=tuple(c for c in classes if not (figures.get(c) or {}).get("target_reached", True)),
        )


@dataclass(frozen=True)
class LabelMap:
    """``--labels FILE``: each model label to the user's word for it, or None (hidden).
    Labels the file does not name keep their own names; several mapped to one are merged."""

    names: tuple[tuple[str, str | None], ...]
    #: Short hash of the mapping, written with the model in each row.
    digest: str

    def target(self, label: str) -> str | None:
        return dict(self.names).get(label, label)


def load_label_map(path: str | Path, classes: Sequence[str]) -> LabelMap:
    """Read a ``--labels`` TOML file: a ``[labels]`` table of ``"model label" = "your label"``,
    with ``false`` to hide one. Every name must be one of ``classes``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise InputError(f"--labels {display(str(path))}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--labels {display(str(path))} is not valid TOML: {exc}") from None
    table = data.get("labels")
    if not isinstance(table, dict) or set(data) - {"labels"}:
        raise InputError(
            f"--labels {display(str(path))} needs one [labels] table of "
            '"model label" = "your label" (or = false to hide it)'
        )
    names: list[tuple[str, str | None]] = []
    for label, target in table.items():
        if label not in classes:
            close = [c for c in classes if c.lower() == label.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"--labels {display(str(path))}: the model has no label {label!r}{hint}")
        if target is False:
            names.append((label, None))
        elif isinstance(target, str) and target.strip() and "|" not in target:
            names.append((label, target.strip()))
        else:
            raise InputError(
                f"--labels {display(str(path))}: {label!r} must map to a non-empty name without '|', "
                f"or to false, not {target!r}"
            )
    digest = hashlib.sha256(json.dumps(sorted(names, key=str)).encode()).hexdigest()[:8]
    return LabelMap(tuple(names), digest)


@dataclass(frozen=True)
class Labelling:
    """How a result's tags and segments are made from its scores (see the module docstring)."""

    top_k: int
    #: None: the calibrated thresholds when the model has them, else none; 0: none (top-k);
    #: a number: that threshold for every label.
    threshold: float | None = None
    keep_unsure: bool = False
    calibration: Calibration | None = None
    label_map: LabelMap | None = None
    multi_label: bool = False

    @classmethod
    def of(cls, options: TagOptions, calibration: Calibration | None, multi_label: bool) -> Labelling:
        return cls(
            top_k=options.top_k,
            threshold=options.threshold,
            keep_unsure=options.keep_unsure,
            calibration=calibration,
            label_map=options.label_map,
            multi_label=multi_label,
        )

    @property
    def calibrated(self) -> bool:
        """Whether each label has its own (calibrated) threshold."""
        return self.threshold is None and self.calibration is not None

    def model(self, model: str) -> str:
        """The ``model`` column: the model, then the calibration whose thresholds kept its
        labels and the label map that named them, when there are."""
        for mark in (THRESHOLDS_MARK, LABELS_MARK):
            model = model.split(mark, 1)[0]
        if self.calibrated:
            assert self.calibration is not None
            model += f"{THRESHOLDS_MARK}{self.calibration.digest}"
        return f"{model}{LABELS_MARK}{self.label_map.digest}" if self.label_map else model

    def columns(
        self, classes: Sequence[str], scores: np.ndarray
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """``scores`` (..., classes) as the user's labels: temperature applied, merged labels
        summed (the chance of any of them; the best of them for multi-label), hidden ones
        gone. Returns the labels, their scores and their thresholds (None: no threshold)."""
        temperature = self.calibration.temperature if self.calibration else 1.0
        probs = temper(np.asarray(scores, dtype=np.float64), temperature, self.multi_label)
        if self.calibrated:
            assert self.calibration is not None
            thresholds: np.ndarray | None = np.array(self.calibration.thresholds)
        elif self.threshold:
            thresholds = np.full(len(classes), float(self.threshold))
        else:
            thresholds = None
        if self.label_map is None:
            return list(classes), probs, thresholds
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(classes):
            target = self.label_map.target(label)
            if target is not None:
                groups.setdefault(target, []).append(i)
        if not groups:  # every label hidden
            return [], probs[..., :0], None
        merge = np.max if self.multi_label else np.sum
        merged = np.stack([merge(probs[..., members], axis=-1) for members in groups.values()], axis=-1)
        # A merged label is kept when its score reaches the lowest of its members' thresholds:
        # it is then kept whenever one of them would have been.
        limits = None if thresholds is None else np.array([thresholds[m].min() for m in groups.values()])
        return list(groups), merged, limits

    def tags(self, classes: Sequence[str], probs: np.ndarray) -> tuple[tuple[Tag, ...], bool]:
        """A video's tags from its scores, and whether it is unsure: no label reached its
        threshold. An unsure video has no tags, or its top-k with ``keep_unsure``."""
        labels, scores, thresholds = self.columns(classes, probs)
        if not labels:
            return (), False
        order = np.argsort(-scores, kind="stable")[: self.top_k]
        top = tuple(Tag(labels[i], float(scores[i])) for i in order)
        if thresholds is None:
            return top, False
        kept = tuple(t for t, i in zip(top, order, strict=True) if scores[i] >= thresholds[i])
        # Single-label: the best class is the video's label or nothing is (calibration
        # measured precision that way); a runner-up that clears its threshold does not stand in.
        best_fails = not self.multi_label and scores[order[0]] < thresholds[order[0]]
        if kept and not best_fails:
            return kept, False
        return (top if self.keep_unsure else ()), True

    def apply(self, result: VideoResult, timeline: TimelineOptions | None) -> VideoResult:
        """``result`` with its tags (and timeline segments) made by this rule from its clip
        scores; a result without clip scores (failed, or stored by an older vidtag) as it is."""
        if not result.ok or not result.clip_scores or not result.classes:
            return result
        per_clip = np.array([c.scores for c in result.clip_scores], dtype=np.float64)
        tags, unsure = self.tags(result.classes, per_clip.mean(axis=0))
        found: tuple[Segment, ...] = ()
        if timeline is not None and result.timeline:
            labels, scores, thresholds = self.columns(result.classes, per_clip)
            enter = thresholds if self.calibrated else None
            found = segments(result.clip_scores, labels, timeline, scores=scores, enter=enter)
        return replace(result, tags=tags, unsure=unsure, segments=found, model=self.model(result.model))


def temper(probs: np.ndarray, temperature: float, multi_label: bool = False) -> np.ndarray:
    """Probabilities with their logits divided by ``temperature`` (over 1: less sure)."""
    if temperature == 1.0:
        return probs
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if multi_label:
        return 1 / (1 + np.exp(-np.log(p / (1 - p)) / temperature))
    logits = np.log(p) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)
