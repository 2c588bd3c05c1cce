"""Tests for tagger.training.report: exact metrics, terminal table, report files, atomic PNG writes."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger.records import OutputError, TaggerError
from tagger.training.report import (
    ClassMetrics,
    Report,
    _curve_points,
    evaluate_predictions,
    format_report,
    write_report,
)

LABELS = ["cat", "dog", "bird"]
# Worked by hand: cat 2/3 right (one called dog), dog 1/2 right (one called bird), bird 3/3.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 2]
CONFUSION = [[2, 1, 0], [0, 1, 1], [0, 0, 3]]
EXPECTED = {
    # label: precision, recall, f1, support
    "cat": (1.0, 2 / 3, 0.8, 3),
    "dog": (0.5, 0.5, 0.5, 2),
    "bird": (0.75, 1.0, 6 / 7, 3),
}

LOG_HISTORY: list[dict[str, Any]] = [
    {"loss": 1.2, "grad_norm": 3.0, "learning_rate": 1e-4, "epoch": 0.5, "step": 5},
    {"loss": 0.9, "grad_norm": 2.0, "learning_rate": 5e-5, "epoch": 1.0, "step": 10},
    {"eval_loss": 1.0, "eval_accuracy": 0.5, "eval_runtime": 0.3, "epoch": 1.0, "step": 10},
    {"loss": 0.6, "grad_norm": 1.0, "learning_rate": 1e-5, "epoch": 1.5, "step": 15},
    {"eval_loss": 0.7, "eval_accuracy": 0.8, "eval_runtime": 0.3, "epoch": 2.0, "step": 20},
    {"train_runtime": 12.0, "train_loss": 0.8, "epoch": 2.0, "step": 20},
]


@pytest.fixture
def report() -> Report:
    return evaluate_predictions(Y_TRUE, Y_PRED, LABELS)


def _names(folder: Path) -> set[str]:
    return set(os.listdir(folder))


def test_metrics_match_hand_computed_example(report: Report) -> None:
    assert report.accuracy == pytest.approx(6 / 8)
    assert report.count == 8
    assert report.labels == tuple(LABELS)
    assert report.confusion.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert report.confusion[i, j] == CONFUSION[i][j], (i, j)
    assert [m.label for m in report.per_class] == LABELS
    for m in report.per_class:
        precision, recall, f1, support = EXPECTED[m.label]
        assert m.precision == pytest.approx(precision), m.label
        assert m.recall == pytest.approx(recall), m.label
        assert m.f1 == pytest.approx(f1), m.label
        assert m.support == support
        assert type(m.support) is int
        assert type(m.precision) is float


def test_macro_averages_in_dict(report: Report) -> None:
    d = report.to_dict()
    assert d["macro_avg"]["precision"] == pytest.approx((1.0 + 0.5 + 0.75) / 3)
    assert d["macro_avg"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert d["macro_avg"]["f1"] == pytest.approx((0.8 + 0.5 + 6 / 7) / 3)
    assert d["confusion"] == CONFUSION
    assert d["labels"] == LABELS
    assert d["count"] == 8
    # Every value must survive a JSON round trip unchanged (no numpy scalars).
    assert json.loads(json.dumps(d)) == d


def test_undefined_metrics_are_zero_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # "c" is never predicted (precision 0/0); "d" is neither present nor predicted.
        r = evaluate_predictions([0, 1, 2, 2], [0, 1, 0, 1], ["a", "b", "c", "d"])
    by_label = {m.label: m for m in r.per_class}
    assert by_label["c"] == ClassMetrics("c", 0.0, 0.0, 0.0, 2)
    assert by_label["d"] == ClassMetrics("d", 0.0, 0.0, 0.0, 0)
    for m in r.per_class:
        assert not any(np.isnan([m.precision, m.recall, m.f1]))


def test_class_without_support_has_zero_recall() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate_predictions([0, 0], [0, 1], ["a", "b"])
    b = r.per_class[1]
    assert (b.precision, b.recall, b.f1, b.support) == (0.0, 0.0, 0.0, 0)


def test_empty_input() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate_predictions([], [], LABELS)
    assert r.accuracy == 0.0
    assert r.count == 0
    assert r.confusion.tolist() == [[0] * 3] * 3
    assert all(m.f1 == 0.0 and m.support == 0 for m in r.per_class)


def test_numpy_inputs_accepted(report: Report) -> None:
    r = evaluate_predictions(np.array(Y_TRUE), np.array(Y_PRED, dtype=np.int32), LABELS)
    assert r.confusion.tolist() == CONFUSION
    assert r.accuracy == report.accuracy


def test_length_mismatch_raises() -> None:
    with pytest.raises(TaggerError, match="3 true labels but 2 predictions"):
        evaluate_predictions([0, 1, 2], [0, 1], LABELS)


@pytest.mark.parametrize("bad", [3, -1])
def test_index_out_of_range_raises(bad: int) -> None:
    with pytest.raises(TaggerError, match="outside"):
        evaluate_predictions([0, 1, 2], [0, 1, bad], LABELS)


def test_non_integer_or_bad_labels_raise() -> None:
    with pytest.raises(TaggerError):
        evaluate_predictions([0.0, 1.5], [0, 1], LABELS)  # type: ignore[list-item]
    with pytest.raises(TaggerError, match="duplicate"):
        evaluate_predictions([0], [0], ["a", "a"])
    with pytest.raises(TaggerError):
        evaluate_predictions([], [], [])


def test_confusion_is_read_only(report: Report) -> None:
    with pytest.raises(ValueError):
        report.confusion[0, 0] = 99


def test_format_report(report: Report) -> None:
    text = format_report(report)
    lines = text.splitlines()
    assert "0.750" in lines[0]
    assert "accuracy" in lines[0]
    for label in LABELS:
        assert any(line.startswith(label) for line in lines), label
    bird = next(line for line in lines if line.startswith("bird"))
    assert bird.split() == ["bird", "0.750", "1.000", "0.857", "3"]
    cat = next(line for line in lines if line.startswith("cat"))
    assert cat.split() == ["cat", "1.000", "0.667", "0.800", "3"]
    table = [line for line in lines[2:] if line]
    assert len({len(line) for line in table}) == 1, "columns are not aligned"


def test_write_report_files(report: Report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path, prefix="val")
    assert [p.name for p in paths] == [
        "val_report.json",
        "val_per_class.csv",
        "val_confusion.csv",
        "val_confusion.png",
    ]
    assert _names(tmp_path) == {p.name for p in paths}

    doc = json.loads((tmp_path / "val_report.json").read_text(encoding="utf-8"))
    assert doc == json.loads(json.dumps(report.to_dict()))
    assert doc["accuracy"] == report.accuracy

    with open(tmp_path / "val_per_class.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == LABELS
    for row, m in zip(rows, report.per_class, strict=True):
        assert float(row["precision"]) == m.precision
        assert float(row["recall"]) == m.recall
        assert float(row["f1"]) == m.f1
        assert int(row["support"]) == m.support

    with open(tmp_path / "val_confusion.csv", newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["true\\pred", *LABELS]
    assert [r[0] for r in table[1:]] == LABELS
    assert [[int(v) for v in r[1:]] for r in table[1:]] == CONFUSION

    with Image.open(tmp_path / "val_confusion.png") as img:
        assert img.format == "PNG"
        assert img.width > 100 and img.height > 100
        # A blank canvas would mean nothing got drawn.
        assert len(img.convert("L").getcolors(maxcolors=1 << 16) or [0, 0]) > 2


def test_write_report_default_prefix_and_empty_report(tmp_path: Path) -> None:
    r = evaluate_predictions([], [], LABELS)
    paths = write_report(r, tmp_path)
    assert paths[0].name == "test_report.json"
    with Image.open(tmp_path / "test_confusion.png") as img:
        assert img.width > 100 and img.height > 100


def test_training_curve_written(report: Report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path, log_history=LOG_HISTORY)
    curve = tmp_path / "training_curve.png"
    assert paths[-1] == curve
    assert len(paths) == 5
    with Image.open(curve) as img:
        assert img.format == "PNG"
        assert img.width > 100 and img.height > 100


@pytest.mark.parametrize(
    "history",
    [
        None,
        [],
        [{"train_runtime": 12.0, "train_loss": 0.8, "epoch": 2.0, "step": 20}],
        [{"loss": float("nan"), "epoch": 1.0}, {"learning_rate": 1e-4, "step": 3}],
    ],
)
def test_no_training_curve_without_points(
    report: Report, tmp_path: Path, history: list[dict[str, Any]] | None
) -> None:
    paths = write_report(report, tmp_path, log_history=history)
    assert len(paths) == 4
    assert not (tmp_path / "training_curve.png").exists()


def test_curve_points_use_epoch_else_step() -> None:
    x_key, series = _curve_points(LOG_HISTORY)
    assert x_key == "epoch"
    assert series["train loss"] == [(0.5, 1.2), (1.0, 0.9), (1.5, 0.6)]
    assert series["eval loss"] == [(1.0, 1.0), (2.0, 0.7)]
    assert series["eval accuracy"] == [(1.0, 0.5), (2.0, 0.8)]

    no_epochs = [{k: v for k, v in e.items() if k != "epoch"} for e in LOG_HISTORY]
    x_key, series = _curve_points(no_epochs)
    assert x_key == "step"
    assert series["train loss"] == [(5.0, 1.2), (10.0, 0.9), (15.0, 0.6)]
    assert series["eval accuracy"] == [(10.0, 0.5), (20.0, 0.8)]


def test_missing_out_dir_is_made_and_a_file_in_the_way_raises(report: Report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "new" / "report")
    assert paths and all(p.parent == tmp_path / "new" / "report" and p.is_file() for p in paths)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot make the report folder"):
        write_report(report, tmp_path / "file")


def _break_png_rendering(monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[str]:
    """Make PNG rendering write half a file and then fail; returns where it wrote."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    real_print_png = FigureCanvasAgg.print_png
    written_to: list[str] = []

    def broken_print_png(self: Any, fobj: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(fobj, io.BytesIO):
            # matplotlib's in-memory dry run for the layout; only the real write should fail.
            return real_print_png(self, fobj)
        fobj.write(b"\x89PNG\r\n\x1a\n half an image")
        fobj.flush()
        # The half-written bytes really are on disk, just under a temporary name.
        partial = [
            name
            for name in os.listdir(folder)
            if name.endswith(".tmp") and os.path.samefile(folder / name, fobj.fileno())
        ]
        assert len(partial) == 1 and os.path.getsize(folder / partial[0]) > 0
        written_to.append(partial[0])
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", broken_print_png)
    return written_to


def test_failed_png_leaves_no_partial_or_temp_file(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written_to = _break_png_rendering(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match="renderer exploded"):
        write_report(report, tmp_path, prefix="val")
    assert written_to, "the PNG renderer was never called"
    assert not (tmp_path / "val_confusion.png").exists()
    # Files finished before the failure stay; nothing else (no temp files) is left.
    assert _names(tmp_path) == {"val_report.json", "val_per_class.csv", "val_confusion.csv"}


def test_failed_png_keeps_previous_file_intact(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_report(report, tmp_path, prefix="val")
    before = (tmp_path / "val_confusion.png").read_bytes()
    names_before = _names(tmp_path)
    _break_png_rendering(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError):
        write_report(report, tmp_path, prefix="val")
    assert (tmp_path / "val_confusion.png").read_bytes() == before
    assert _names(tmp_path) == names_before
