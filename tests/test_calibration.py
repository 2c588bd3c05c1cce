"""Tags a user can trust: per-class thresholds calibrated on val and stored with the model,
unknown videos, --keep-unsure, the threshold modes, segments, and label maps."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tagger.cli import cli
from tagger.labels import Labelling, load_label_map
from tagger.records import InputError
from tagger.training.calibrate import SCORE_NOISE, calibrate, fit_temperature, pick_threshold, store
from tests.conftest import scan_rows, write_video

CLASSES = ("red", "green", "blue")


def flat(rgb: tuple[int, int, int], frames: int = 40):
    """A video of one flat colour (no noise)."""
    return lambda i: np.full((48, 64, 3), rgb, dtype=np.uint8) if i < frames else None


# --- the threshold rule, on numbers ------------------------------------------------------------


def test_the_threshold_keeps_the_target_precision_with_the_most_recall():
    # Class 0's videos by score: three right (0.9, 0.8, 0.6), one wrong at 0.7.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    predicted = np.array([True, True, True, True, False])
    positive = np.array([True, True, False, True, False])
    threshold, precision, recall, reached = pick_threshold(scores, predicted, positive, 0.9)
    assert reached and precision == 1.0 and recall == pytest.approx(2 / 3)
    assert threshold == pytest.approx(0.8 - SCORE_NOISE)  # just under the last one kept: not 0.7
    # Out of reach (the best-scored video is wrong): the F1-best threshold, flagged.
    scores = np.array([0.95, 0.9, 0.8])
    threshold, precision, recall, reached = pick_threshold(
        scores, np.ones(3, bool), np.array([False, True, True]), 0.9
    )
    assert not reached and recall == 1.0 and threshold <= 0.8


def test_calibration_reaches_the_target_on_val_and_is_stored(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3)) + 2.5 * np.eye(3)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = calibrate(probs, truth, CLASSES, target_precision=0.9)
    assert all(c.reached and c.precision >= 0.9 for c in result.classes)
    # Each class's decisions at its threshold on these very videos give the stored figures.
    rule = Labelling(top_k=1, calibration=result.calibration)
    for c, figures in enumerate(result.classes):
        kept = np.array(
            [tags[0].label == CLASSES[c] if tags else False for tags, _ in map(rule_tags(rule), probs)]
        )
        hits = (kept & (truth == c)).sum()
        assert hits / kept.sum() == pytest.approx(figures.precision)
    (tmp_path / "vidtag.json").write_text(json.dumps({"frame_stride": 2}))
    store(tmp_path, result)
    plan = json.loads((tmp_path / "vidtag.json").read_text())
    assert plan["frame_stride"] == 2  # what else it held is kept
    assert set(plan["calibration"]["thresholds"]) == set(CLASSES)
    assert plan["calibration"]["validation"]["videos"] == 300


def rule_tags(rule: Labelling):
    return lambda p: rule.tags(CLASSES, p)


def test_temperature_softens_an_overconfident_model_and_leaves_a_separable_one():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 400)
    logits = rng.normal(0, 1, (400, 3)) + 1.0 * np.eye(3)[truth]
    sharp = np.exp(4 * logits) / np.exp(4 * logits).sum(axis=1, keepdims=True)  # 4x too sure
    assert fit_temperature(sharp, truth) == pytest.approx(4, rel=0.25)
    separable = np.eye(3)[truth] * 0.98 + 0.01
    assert fit_temperature(separable, truth) == 1.0


# --- a calibrated model through vidtag scan ----------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tiny_model, tmp_path_factory) -> Path:
    """The tiny red/green/blue model, copied and calibrated with ``vidtag calibrate``."""
    root = tmp_path_factory.mktemp("calibrated")
    model = root / "model"
    shutil.copytree(tiny_model, model)
    for colour in CLASSES:
        (root / "data" / "val" / colour).mkdir(parents=True)
        for k in range(3):
            write_video(root / "data" / "val" / colour / f"{colour}{k}.mp4", [colour] * (30 + 10 * k))
    result = CliRunner().invoke(cli, ["calibrate", str(root / "data"), "-m", str(model), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output
    return model


def thresholds_of(model: Path) -> dict[str, float]:
    return json.loads((model / "vidtag.json").read_text())["calibration"]["thresholds"]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Videos of the model's three classes, and one of none of them (white)."""
    folder = tmp_path_factory.mktemp("library")
    for colour, frames in (("red", 40), ("green", 50), ("blue", 60)):
        write_video(folder / f"{colour}.mp4", [colour] * frames)
    write_video(folder / "white.mp4", flat((240, 240, 240)))
    return folder


def by_stem(rows: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {Path(p).stem: r for p, r in rows.items()}


def test_calibrated_model_tags_its_classes_and_leaves_the_rest_unknown(calibrated, library, tmp_path):
    rows = by_stem(scan_rows(library, calibrated, tmp_path / "out.csv"))
    assert {k: rows[k]["label"] for k in CLASSES} == {c: c for c in CLASSES}
    white = rows["white"]
    assert white["status"] == "ok" and white["label"] == "" and white["labels"] == "" and white["error"] == ""
    # Every label kept reaches its own class's threshold.
    limits = thresholds_of(calibrated)
    for row in rows.values():
        for label, score in zip(row["labels"].split("|"), row["scores"].split("|"), strict=False):
            if label:
                assert float(score) >= limits[label]


def test_keep_unsure_and_the_threshold_modes(calibrated, library, tmp_path):
    unsure = by_stem(scan_rows(library, calibrated, tmp_path / "a.csv", "--keep-unsure"))["white"]
    assert unsure["label"] == "" and len(unsure["labels"].split("|")) == 3
    top_k = by_stem(scan_rows(library, calibrated, tmp_path / "b.csv", "--threshold", "0"))
    assert top_k["white"]["label"] in CLASSES  # 0: the top-k, as an uncalibrated model
    strict = by_stem(scan_rows(library, calibrated, tmp_path / "c.csv", "--threshold", "0.999999"))
    assert all(r["label"] == "" for r in strict.values())  # a number overrides every class
    result = CliRunner().invoke(cli, ["scan", str(library), "-m", str(calibrated), "--threshold", "high"])
    assert result.exit_code == 2 and "neither auto nor a number" in result.output


def test_segments_open_at_each_class_threshold(calibrated, tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    write_video(
        folder / "red-white.mp4",
        lambda i: flat((220, 30, 30) if i < 60 else (240, 240, 240))(0) if i < 120 else None,
    )
    out = tmp_path / "segments.csv"
    args = ["scan", str(folder), "-m", str(calibrated), "--segments", str(out), "--segment-min", "0"]
    result = CliRunner().invoke(
        cli, [*args, "--device", "cpu", "--segment-enter", "0.2", "--segment-leave", "0.1"]
    )
    assert result.exit_code == 0, result.output
    segments = list(csv.DictReader(out.open()))
    limits = thresholds_of(calibrated)
    # --segment-enter 0.2 would open segments on the white half's spread scores; the
    # calibrated thresholds do not.
    assert segments and {s["label"] for s in segments} == {"red"}
    assert all(float(s["peak_score"]) >= limits[s["label"]] for s in segments)


def test_a_stale_calibration_is_refused(calibrated, library, tmp_path):
    model = tmp_path / "stale"
    shutil.copytree(calibrated, model)
    plan = json.loads((model / "vidtag.json").read_text())
    plan["calibration"]["thresholds"]["purple"] = plan["calibration"]["thresholds"].pop("red")
    (model / "vidtag.json").write_text(json.dumps(plan))
    result = CliRunner().invoke(cli, ["scan", str(library), "-m", str(model), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "vidtag calibrate again" in result.output


def test_calibrate_needs_a_local_model_and_labelled_videos(calibrated, tmp_path):
    result = CliRunner().invoke(cli, ["calibrate", str(tmp_path), "-m", "some-org/some-model"])
    assert result.exit_code == 2 and "not a local model directory" in result.output
    result = CliRunner().invoke(cli, ["calibrate", str(tmp_path), "-m", str(calibrated), "--device", "cpu"])
    assert result.exit_code != 0 and "class folders" in result.output and "Traceback" not in result.output


# --- label maps -------------------------------------------------------------------------------


def write_map(path: Path, body: str) -> Path:
    path.write_text("[labels]\n" + body, encoding="utf-8")
    return path


def test_a_label_map_renames_merges_and_hides(tiny_model, library, tmp_path):
    names = write_map(tmp_path / "names.toml", '"red" = "Warm/Red"\n"green" = "Cool"\n"blue" = "Cool"\n')
    plain = by_stem(scan_rows(library, tiny_model, tmp_path / "plain.csv", "--threshold", "0"))
    rows = by_stem(
        scan_rows(library, tiny_model, tmp_path / "named.csv", "--threshold", "0", "--labels", str(names))
    )
    assert rows["red"]["label"] == "Warm/Red"
    assert rows["green"]["label"] == rows["blue"]["label"] == "Cool"
    # A merged label scores the chance of any of its classes.
    plain_scores = dict(
        zip(plain["green"]["labels"].split("|"), map(float, plain["green"]["scores"].split("|")), strict=True)
    )
    assert float(rows["green"]["score"]) == pytest.approx(
        plain_scores["green"] + plain_scores["blue"], abs=2e-6
    )
    digest = load_label_map(names, CLASSES).digest
    assert rows["red"]["model"] == plain["red"]["model"] + f";labels={digest}"
    hide = write_map(tmp_path / "hide.toml", '"blue" = false\n')
    hidden = by_stem(
        scan_rows(library, tiny_model, tmp_path / "hidden.csv", "--threshold", "0", "--labels", str(hide))
    )
    assert all("blue" not in r["labels"].split("|") for r in hidden.values())
    assert hidden["red"]["label"] == "red"


def test_a_new_label_map_relabels_stored_results_without_the_model(tiny_model, library, tmp_path):
    from tagger.options import TagOptions
    from tagger.scan import run

    out = tmp_path / "out.csv"
    state = tmp_path / "state.db"
    first = run(
        [str(library)], str(out), model=str(tiny_model), device="cpu", precision="fp32", state=str(state)
    )
    assert first.tagged == 4
    names = load_label_map(write_map(tmp_path / "n.toml", '"red" = "Rot"\n'), CLASSES)
    options = TagOptions(label_map=names)
    second = run(
        [str(library)],
        str(out),
        model=str(tiny_model),
        device="cpu",
        precision="fp32",
        state=str(state),
        options=options,
    )
    assert second.tagged == 0 and second.skipped == 4
    rows = {Path(r["path"]).stem: r for r in csv.DictReader(out.open())}
    assert rows["red"]["label"] == "Rot" and rows["red"]["model"].endswith(f";labels={names.digest}")


def test_a_map_that_hides_every_label_tags_nothing():
    everything = load_label_map_from_text('"red" = false\n"green" = false\n"blue" = false\n')
    rule = Labelling(top_k=3, label_map=everything)
    assert rule.tags(CLASSES, np.array([0.7, 0.2, 0.1])) == ((), False)


def load_label_map_from_text(body: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return load_label_map(write_map(Path(folder) / "map.toml", body), CLASSES)


def test_bad_label_maps_are_usage_errors(tiny_model, library, tmp_path):
    cases = {
        "unknown.toml": ('[labels]\n"purple" = "x"\n', "has no label 'purple'"),
        "case.toml": ('[labels]\n"Red" = "x"\n', "did you mean 'red'"),
        "bar.toml": ('[labels]\n"red" = "a|b"\n', "without '|'"),
        "table.toml": ('"red" = "x"\n', "[labels] table"),
        "broken.toml": ("[labels\n", "not valid TOML"),
    }
    for name, (body, message) in cases.items():
        path = tmp_path / name
        path.write_text(body)
        result = CliRunner().invoke(cli, ["scan", str(library), "-m", str(tiny_model), "--labels", str(path)])
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output, (name, result.output)
    with pytest.raises(InputError):
        load_label_map(tmp_path / "missing.toml", CLASSES)


def test_a_class_out_of_reach_is_said_so_in_the_report():
    from tagger.training.report import calibrated_report, evaluate_predictions, format_report

    # Class 2's best-scored video is wrong, and half the rest too: precision 0.9 is out of reach.
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.8, 0.1, 0.1],
            [0.05, 0.9, 0.05],
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
            [0.1, 0.1, 0.7],
            [0.1, 0.2, 0.7],
            [0.2, 0.1, 0.7],
        ]
    )
    truth = [0, 0, 1, 1, 0, 2, 1, 2]
    result = calibrate(probs, truth, CLASSES, temperature=False)
    assert [c.reached for c in result.classes] == [True, True, False]
    assert result.calibration.fallback == ("blue",)
    assert "target out of reach" in result.format()
    rule = Labelling(top_k=1, calibration=result.calibration)
    report = evaluate_predictions(truth, [int(i) for i in probs.argmax(axis=1)], CLASSES)
    from dataclasses import replace

    text = format_report(replace(report, calibrated=calibrated_report(probs, truth, rule, CLASSES)))
    assert text.count("out of reach") == 1 and "blue" in text.splitlines()[-1]


def test_calibrating_relabels_stored_results_without_the_model(tiny_model, library, tmp_path):
    """Thresholds change which labels stored scores give, not the scores: after calibrating,
    a scan tags nothing again, and its rows carry the thresholds that kept their labels."""
    from tagger.models import fingerprint, load_spec
    from tagger.scan import run

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    plan = model / "vidtag.json"
    plan.write_text(json.dumps(json.loads(plan.read_text()), indent=2))  # as finetune writes it
    before = fingerprint(load_spec(str(model)).ref, None)
    out, state = tmp_path / "out.csv", tmp_path / "state.db"
    kw = {"model": str(model), "device": "cpu", "precision": "fp32", "state": str(state)}
    assert run([str(library)], str(out), **kw).tagged == 4
    assert by_stem({r["path"]: r for r in csv.DictReader(out.open())})["white"]["label"] != ""
    for colour in CLASSES:
        (tmp_path / "data" / colour).mkdir(parents=True)
        write_video(tmp_path / "data" / colour / "a.mp4", [colour] * 40)
    result = CliRunner().invoke(
        cli, ["calibrate", str(tmp_path / "data"), "-m", str(model), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert fingerprint(load_spec(str(model)).ref, None) == before
    again = run([str(library)], str(out), **kw)
    assert again.tagged == 0 and again.skipped == 4
    rows = by_stem({r["path"]: r for r in csv.DictReader(out.open())})
    assert rows["white"]["label"] == "" and rows["red"]["label"] == "red"
    digest = load_spec(str(model)).calibration.digest  # type: ignore[union-attr]
    assert rows["red"]["model"].endswith(f";thresholds={digest}")
