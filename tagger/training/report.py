"""Evaluation reports for a labelled test set: accuracy, per-class metrics, confusion matrix,
as a terminal table and as JSON, CSV and PNG files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagger.fsutil import atomic_open
from tagger.records import OutputError, TaggerError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Past this many classes the cell counts overlap into noise; the colours still tell the story.
_MAX_ANNOTATED_CLASSES = 40
# Keeps a 400-class (Kinetics) matrix at a few thousand pixels instead of tens of thousands.
_MAX_FIGURE_INCHES = 40.0
_DPI = 100


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class, and how many true examples it has."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ThresholdMetrics:
    """Precision and recall of one class when only labels reaching its threshold are kept."""

    label: str
    threshold: float
    precision: float
    recall: float
    support: int
    #: False: calibration could not reach its target precision on val (the F1-best threshold).
    target_reached: bool = True


@dataclass(frozen=True)
class Reliability:
    """Confidence against accuracy, in equal-width bins of the best class's probability."""

    edges: tuple[float, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def error(self) -> float:
        """Expected calibration error: the count-weighted gap between confidence and accuracy."""
        total = sum(self.counts)
        if not total:
            return 0.0
        gaps = [n * abs(c - a) for c, a, n in zip(self.confidence, self.accuracy, self.counts, strict=True)]
        return sum(gaps) / total


@dataclass(frozen=True)
class CalibratedReport:
    """How the calibrated thresholds do on a labelled set: per class, the unknown share, and
    the reliability of the (temperature-scaled) probabilities."""

    per_class: tuple[ThresholdMetrics, ...]
    unknown_share: float
    reliability: Reliability

    def to_dict(self) -> dict[str, Any]:
        r = self.reliability
        return {
            "unknown_share": self.unknown_share,
            "per_class": [vars(m) for m in self.per_class],
            "reliability": {
                "edges": list(r.edges),
                "confidence": list(r.confidence),
                "accuracy": list(r.accuracy),
                "counts": list(r.counts),
                "expected_calibration_error": r.error,
            },
        }


# eq=False: a generated __eq__ would compare the confusion arrays elementwise and fail.
@dataclass(frozen=True, eq=False)
class Report:
    """The metrics of one evaluation; ``confusion`` rows are true labels, columns predictions."""

    labels: tuple[str, ...]
    accuracy: float
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray
    count: int
    #: With a calibrated model: how its thresholds do on the same videos.
    calibrated: CalibratedReport | None = None

    @property
    def macro(self) -> dict[str, float]:
        """Unweighted means of precision, recall and F1 over all labels."""
        if not self.per_class:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        return {
            name: float(np.mean([getattr(m, name) for m in self.per_class]))
            for name in ("precision", "recall", "f1")
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every number in the report, plus the macro averages."""
        return {
            "labels": list(self.labels),
            "count": self.count,
            "accuracy": self.accuracy,
            "macro_avg": self.macro,
            "per_class": [
                {
                    "label": m.label,
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "support": m.support,
                }
                for m in self.per_class
            ],
            "confusion": [[int(v) for v in row] for row in self.confusion],
            **({"calibrated": self.calibrated.to_dict()} if self.calibrated else {}),
        }


def _indices(values: Sequence[int], name: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise TaggerError(f"{name} must be a flat sequence of class indices, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    # Rejects floats and bools, which would otherwise be silently truncated into indices.
    if arr.dtype.kind not in "iu":
        raise TaggerError(f"{name} must hold integer class indices, not {arr.dtype}")
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        first = int(arr[np.argmax(bad)])
        raise TaggerError(f"{name} has class index {first}, outside 0..{n - 1} for {n} labels")
    return arr.astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0.0 where undefined, like scikit-learn's zero_division=0, without its warning.
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def evaluate_predictions(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> Report:
    """Score predicted class indices against true ones; ``labels[i]`` names class ``i``.

    Undefined precision, recall or F1 is 0.0. Raises ``TaggerError`` on mismatched lengths,
    an index outside ``labels`` or duplicate labels.
    """
    names = tuple(str(label) for label in labels)
    if not names:
        raise TaggerError("cannot evaluate without labels")
    if len(set(names)) != len(names):
        dupes = sorted({x for x in names if names.count(x) > 1})
        raise TaggerError(f"duplicate labels: {', '.join(dupes)}")
    n = len(names)
    true = _indices(y_true, "y_true", n)
    pred = _indices(y_pred, "y_pred", n)
    if true.size != pred.size:
        raise TaggerError(f"{true.size} true labels but {pred.size} predictions")

    confusion = np.bincount(true * n + pred, minlength=n * n).reshape(n, n).astype(np.int64)
    # The report is frozen; a writable array would let it change under its own numbers.
    confusion.setflags(write=False)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _safe_div(tp, predicted.astype(np.float64))
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)

    count = int(true.size)
    per_class = tuple(
        ClassMetrics(
            label=names[i],
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
        )
        for i in range(n)
    )
    accuracy = float(tp.sum() / count) if count else 0.0
    return Report(labels=names, accuracy=accuracy, per_class=per_class, confusion=confusion, count=count)


def format_report(report: Report) -> str:
    """A plain-text table: the accuracy, then label, precision, recall, F1, support per class."""
    macro = report.macro
    label_w = max(len("label"), len("macro avg"), *(len(m.label) for m in report.per_class))
    support_w = max(len("support"), len(str(report.count)))
    num_w = len("precision")

    def line(label: str, p: str, r: str, f: str, s: str) -> str:
        return f"{label:<{label_w}}  {p:>{num_w}}  {r:>{num_w}}  {f:>{num_w}}  {s:>{support_w}}"

    lines = [
        f"accuracy: {report.accuracy:.3f} ({report.count} examples)",
        "",
        line("label", "precision", "recall", "f1", "support"),
    ]
    for m in report.per_class:
        lines.append(line(m.label, f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}", str(m.support)))
    lines.append(
        line(
            "macro avg",
            f"{macro['precision']:.3f}",
            f"{macro['recall']:.3f}",
            f"{macro['f1']:.3f}",
            str(report.count),
        )
    )
    if report.calibrated is not None:
        lines += ["", *_format_calibrated(report.calibrated, label_w)]
    return "\n".join(lines)


def _format_calibrated(calibrated: CalibratedReport, label_w: int) -> list[str]:
    num_w = len("threshold")
    lines = [
        f"at the calibrated thresholds: {calibrated.unknown_share:.1%} of videos tagged unknown;"
        f" expected calibration error {calibrated.reliability.error:.3f}",
        f"{'label':<{label_w}}  {'threshold':>{num_w}}  {'precision':>{num_w}}  {'recall':>{num_w}}",
    ]
    for m in calibrated.per_class:
        figures = (f"{x:>{num_w}.3f}" for x in (m.threshold, m.precision, m.recall))
        note = "" if m.target_reached else "  (best F1: the target precision was out of reach on val)"
        lines.append(f"{m.label:<{label_w}}  " + "  ".join(figures) + note)
    return lines


def calibrated_report(
    probs: np.ndarray, y_true: Sequence[int], labelling: Any, labels: Sequence[str], bins: int = 10
) -> CalibratedReport:
    """Score ``labelling``'s decisions (``tagger.labels.Labelling``, calibrated) on videos'
    model probabilities ``probs`` (videos x classes) against their true class indices."""
    true = np.asarray(y_true, dtype=int)
    _, scores, thresholds = labelling.columns(labels, probs)
    decided = [labelling.tags(labels, p) for p in probs]
    label_of = [tags[0].label if tags and not unsure else None for tags, unsure in decided]
    per_class = []
    for c, name in enumerate(labels):
        kept = np.array([label == name for label in label_of])
        positive = true == c
        hits = int((kept & positive).sum())
        per_class.append(
            ThresholdMetrics(
                label=name,
                threshold=float(thresholds[c]) if thresholds is not None else 0.0,
                precision=hits / int(kept.sum()) if kept.any() else 0.0,
                recall=hits / int(positive.sum()) if positive.any() else 0.0,
                support=int(positive.sum()),
                target_reached=name not in labelling.calibration.fallback,
            )
        )
    unknown = sum(label is None for label in label_of) / len(label_of) if label_of else 0.0
    confidence = scores.max(axis=1)
    correct = scores.argmax(axis=1) == true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    mean_conf = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    mean_acc = np.bincount(which, weights=correct.astype(float), minlength=bins) / np.maximum(counts, 1)
    reliability = Reliability(
        edges=tuple(float(e) for e in edges),
        confidence=tuple(float(c) for c in mean_conf),
        accuracy=tuple(float(a) for a in mean_acc),
        counts=tuple(int(n) for n in counts),
    )
    return CalibratedReport(tuple(per_class), unknown, reliability)


def _reliability_figure(reliability: Reliability) -> Figure:
    """Accuracy against confidence per bin, with the diagonal a calibrated model follows."""
    fig = _new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    edges = np.array(reliability.edges)
    width = float(np.diff(edges).mean())
    filled = [i for i, n in enumerate(reliability.counts) if n]
    ax.bar(
        edges[:-1][filled],
        [reliability.accuracy[i] for i in filled],
        width=width,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (best class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability — ECE {reliability.error:.3f} (n={sum(reliability.counts)})")
    ax.legend(loc="upper left")
    return fig


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure with its own Agg canvas: no pyplot, so no global backend or figure state.
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=_DPI)


def _confusion_figure(report: Report) -> Figure:
    from matplotlib.ticker import MaxNLocator

    n = len(report.labels)
    side = min(4.0 + 0.45 * n, _MAX_FIGURE_INCHES)
    fig = _new_figure(side + 1.5, side)
    ax = fig.add_subplot()
    cm = report.confusion
    vmax = max(int(cm.max()), 1)
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    # Counts are whole numbers; the default locator would label 0.5 steps.
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))

    tick_size = 10 if n <= 20 else max(4, 10 - n // 20)
    ax.set_xticks(range(n), labels=report.labels, rotation=45, ha="right", fontsize=tick_size)
    ax.set_yticks(range(n), labels=report.labels, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix — accuracy {report.accuracy:.3f} (n={report.count})")

    if n <= _MAX_ANNOTATED_CLASSES:
        cell_size = 10 if n <= 15 else 7
        for i in range(n):
            for j in range(n):
                value = int(cm[i, j])
                # White on the dark half of the colour map, black on the light half.
                color = "white" if value > vmax / 2 else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=cell_size)
    return fig


def _number(value: Any) -> float | None:
    # bool is an int subclass; a True "loss" is a bug upstream, not a point to plot.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _curve_points(
    log_history: list[dict[str, Any]],
) -> tuple[str, dict[str, list[tuple[float, float]]]]:
    """The x-axis name and the (x, y) points of train loss, eval loss and eval accuracy."""
    keys = {"train loss": "loss", "eval loss": "eval_loss", "eval accuracy": "eval_accuracy"}
    entries = [
        e
        for e in log_history
        if isinstance(e, dict) and any(_number(e.get(k)) is not None for k in keys.values())
    ]
    # One axis for all series: epochs when every entry has one, else steps.
    x_key = "epoch" if all(_number(e.get("epoch")) is not None for e in entries) else "step"
    series: dict[str, list[tuple[float, float]]] = {name: [] for name in keys}
    for entry in entries:
        x = _number(entry.get(x_key))
        if x is None:
            continue
        for name, key in keys.items():
            y = _number(entry.get(key))
            if y is not None:
                series[name].append((x, y))
    return x_key, series


def _training_figure(x_key: str, series: dict[str, list[tuple[float, float]]]) -> Figure:
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    handles = []
    styles = {"train loss": ("tab:blue", "-"), "eval loss": ("tab:orange", "-o")}
    for name, (color, style) in styles.items():
        points = series[name]
        if points:
            xs, ys = zip(*points, strict=True)
            handles += ax.plot(xs, ys, style, color=color, label=name, markersize=4)
    ax.set_xlabel(x_key)
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if series["eval accuracy"]:
        acc_ax = ax.twinx()
        xs, ys = zip(*series["eval accuracy"], strict=True)
        handles += acc_ax.plot(xs, ys, "-s", color="tab:green", label="eval accuracy", markersize=4)
        acc_ax.set_ylabel("accuracy")
        acc_ax.set_ylim(0.0, 1.05)
    ax.legend(handles=handles, loc="best")
    ax.set_title("Training curve")
    return fig


def _write_per_class(report: Report, path: Path) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "precision", "recall", "f1", "support"])
        for m in report.per_class:
            writer.writerow([m.label, m.precision, m.recall, m.f1, m.support])


def _write_confusion_csv(report: Report, path: Path) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\pred", *report.labels])
        for label, row in zip(report.labels, report.confusion, strict=True):
            writer.writerow([label, *(int(v) for v in row)])


def write_report(
    report: Report,
    out_dir: str | Path,
    prefix: str = "test",
    log_history: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write the report's JSON, CSVs and confusion PNG (and ``training_curve.png`` from a
    Trainer's ``state.log_history`` when it has points) into ``out_dir``; return their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the report folder {str(out)!r}: {e.strerror or e}") from e
    json_path = out / f"{prefix}_report.json"
    per_class_path = out / f"{prefix}_per_class.csv"
    confusion_csv_path = out / f"{prefix}_confusion.csv"
    confusion_png_path = out / f"{prefix}_confusion.png"

    with atomic_open(json_path, "w") as f:
        json.dump(report.to_dict(), f, ensure_ascii=False, indent=2)
        f.write("\n")
    _write_per_class(report, per_class_path)
    _write_confusion_csv(report, confusion_csv_path)
    _save_png(_confusion_figure(report), confusion_png_path)
    written = [json_path, per_class_path, confusion_csv_path, confusion_png_path]
    if report.calibrated is not None:
        reliability_path = out / f"{prefix}_reliability.png"
        _save_png(_reliability_figure(report.calibrated.reliability), reliability_path)
        written.append(reliability_path)

    if log_history is not None:
        x_key, series = _curve_points(log_history)
        if any(series.values()):
            curve_path = out / "training_curve.png"
            _save_png(_training_figure(x_key, series), curve_path)
            written.append(curve_path)
    return written
