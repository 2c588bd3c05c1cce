"""Fine-tuning end to end on generated videos: data pipeline, a real short training run, and
the saved directory used three ways (vidtag scan, transformers.pipeline, --base)."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagger.cli import cli
from tagger.demo.synth import make_dataset
from tagger.training import datasets
from tagger.training.train import ClipDataset, random_crop
from tagger.transforms import Preprocessing

from .conftest import write_video

TWO_CLASSES = ("BlueDown", "RedUp")


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return make_dataset(root, per_split={"train": 10, "val": 3, "test": 5}, classes=TWO_CLASSES)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synth_data: Path) -> Path:
    out = tmp_path_factory.mktemp("models") / "two"
    result = CliRunner().invoke(
        cli,
        ["finetune", str(synth_data), "--out", str(out), "--init", "small", "--epochs", "12", "--lr", "2e-3"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out


MOTION_SPLITS = {"train": 16, "val": 12, "test": 12}


def _scrolling_bar(direction: int, rng: np.random.Generator) -> Callable[[int], np.ndarray | None]:
    """Frames of a grey bar scrolling down (``direction`` 1) or up (-1), wrapping round, from a
    random height: any single frame looks alike in both classes; only the motion differs."""
    width, height, count = 64, 48, 30  # 30 frames: one 8-frame clip at stride 4 fits
    bar, shade, background = int(rng.integers(8, 14)), int(rng.integers(170, 256)), int(rng.integers(0, 60))
    # At most 8 px between sampled frames: well under half the wrap-round, so no aliasing.
    start, speed = float(rng.uniform(0, height)), direction * float(rng.uniform(1.0, 2.0))

    def frame(i: int) -> np.ndarray | None:
        if i >= count:
            return None
        image = np.full((height, width, 3), background, dtype=np.uint8)
        image[(np.arange(height) - (start + speed * i)) % height < bar] = shade
        return image

    return frame


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of one look, told apart by motion alone: a bar scrolling down or up."""
    root = tmp_path_factory.mktemp("motion")
    rng = np.random.default_rng(0)
    group = 0
    for split, count in MOTION_SPLITS.items():
        for label, direction in (("Down", 1), ("Up", -1)):
            (root / split / label).mkdir(parents=True)
            for _ in range(count):
                group += 1
                name = root / split / label / f"v_{label}_g{group:02d}_c01.mp4"
                write_video(name, _scrolling_bar(direction, rng), fps=12, size=(64, 48))
    return root


def _prep() -> Preprocessing:
    return Preprocessing.from_config(
        {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}}, num_frames=8, image_size=64
    )


def test_clip_dataset_items_have_model_shapes_and_ranges(synth_data):
    data = datasets.load_dataset(synth_data)
    train = ClipDataset(data.splits["train"], data.classes, _prep(), stride=4, train=True)
    evaluation = ClipDataset(data.splits["val"], data.classes, _prep(), stride=4, train=False)
    item = train[0]
    assert item["pixel_values"].shape == (8, 3, 64, 64)
    assert item["pixel_values"].dtype == torch.float32
    # Normalized with ImageNet statistics: [0, 1] maps to about [-2.1, 2.6].
    assert -2.2 < float(item["pixel_values"].min()) < 0 < float(item["pixel_values"].max()) < 2.7
    assert item["labels"] == data.classes.index(data.splits["train"][0].label)

    first, again = evaluation[1], evaluation[1]
    assert torch.equal(first["pixel_values"], again["pixel_values"])  # evaluation is deterministic
    torch.manual_seed(1)
    a = train[1]["pixel_values"]
    torch.manual_seed(2)
    b = train[1]["pixel_values"]
    assert not torch.equal(a, b)  # training is augmented


def test_flip_can_be_turned_off(synth_data, monkeypatch):
    data = datasets.load_dataset(synth_data)
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(0.0))  # "always flip" if allowed
    torch.manual_seed(0)  # the same scale and crop for both
    flipped = ClipDataset(data.splits["train"][:1], data.classes, _prep(), 4, train=True, flip=True)[0]
    torch.manual_seed(0)
    kept = ClipDataset(data.splits["train"][:1], data.classes, _prep(), 4, train=True, flip=False)[0]
    assert torch.equal(flipped["pixel_values"], kept["pixel_values"].flip(-1))
    assert not torch.equal(flipped["pixel_values"], kept["pixel_values"])


def test_random_crop_is_one_window_for_all_frames():
    frames = torch.arange(4 * 10 * 12 * 3).reshape(4, 10, 12, 3)
    crop = random_crop(frames, (6, 5))
    assert crop.shape == (4, 6, 5, 3)
    top = int((crop[0, 0, 0, 0] - frames[0, 0, 0, 0]) // (12 * 3))
    left = int((crop[0, 0, 0, 0] - frames[0, top, 0, 0]) // 3)
    assert torch.equal(crop, frames[:, top : top + 6, left : left + 5])


def test_training_learns_and_saves_a_usable_model(trained, synth_data):
    report = json.loads((trained / "test_report.json").read_text())
    # Two classes: chance is 0.5, a broken pipeline (shuffled labels, wrong frames) stays near it.
    assert report["accuracy"] >= 0.9
    for name in (
        "test_per_class.csv",
        "test_confusion.csv",
        "test_confusion.png",
        "test_reliability.png",
        "training_curve.png",
    ):
        assert (trained / name).is_file()
    plan = json.loads((trained / "vidtag.json").read_text())
    # Thresholds calibrated on val, and the test report at them.
    calibration = plan["calibration"]
    assert set(calibration["thresholds"]) == set(TWO_CLASSES) and calibration["target_precision"] == 0.9
    assert calibration["validation"]["videos"] == 6
    at_thresholds = report["calibrated"]
    assert 0 <= at_thresholds["unknown_share"] <= 1
    assert {m["label"] for m in at_thresholds["per_class"]} == set(TWO_CLASSES)
    assert sum(at_thresholds["reliability"]["counts"]) == report["count"]
    assert plan["frame_stride"] == 4
    assert plan["classes"] == list(TWO_CLASSES)
    assert plan["data_fingerprint"] == datasets.fingerprint(datasets.load_dataset(synth_data))
    assert (trained / "model.safetensors").is_file() and not (trained / "pytorch_model.bin").exists()


@pytest.mark.slow
def test_training_learns_motion_when_the_look_is_the_same(motion_data, tmp_path):
    out = tmp_path / "motion"
    result = CliRunner().invoke(
        cli,
        ["finetune", str(motion_data), "--out", str(out), "--init", "small", "--epochs", "20"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "test_report.json").read_text())
    assert report["count"] == 2 * MOTION_SPLITS["test"]
    # Chance is 0.5; a model that sees one frame, frames out of order or the same frames in
    # every clip cannot beat it. 20 of 24 by chance: under 0.1 %.
    assert report["accuracy"] >= 0.8


def test_saved_model_tags_with_vidtag_scan(trained, synth_data, tmp_path):
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(cli, ["scan", str(synth_data / "test"), "-m", str(trained), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10
    right = sum(r["label"] == Path(r["path"]).parent.name for r in rows)
    # Calibrated on val, the model may leave a video unknown, but tags none wrong.
    wrong = [r for r in rows if r["label"] not in ("", Path(r["path"]).parent.name)]
    assert right >= 8 and not wrong


def test_saved_model_loads_in_the_transformers_pipeline(trained, synth_data):
    from transformers import pipeline

    classify = pipeline("video-classification", model=str(trained))
    videos = sorted((synth_data / "test").glob("*/*.mp4"))
    # Top-1 only: with top_k as large as the class count every label is always listed.
    top = [classify(str(v), top_k=1) for v in videos]
    assert all(len(t) == 1 and 0.5 <= t[0]["score"] <= 1 for t in top)
    right = sum(t[0]["label"] == v.parent.name for t, v in zip(top, videos, strict=True))
    assert len(videos) == 10 and right >= 9


def test_saved_model_is_a_base_for_another_run(trained, synth_data, tmp_path):
    out = tmp_path / "again"
    result = CliRunner().invoke(
        cli, ["finetune", str(synth_data), "--out", str(out), "--base", str(trained), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == list(TWO_CLASSES)
    assert json.loads((out / "vidtag.json").read_text())["settings"]["base"] == str(trained)


def test_evaluate_multi_view(trained, synth_data, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(synth_data / "test"),
            "-m",
            str(trained),
            "--clips",
            "2",
            "--three-crop",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.stdout
    report = json.loads((tmp_path / "test_report.json").read_text())
    assert report["count"] == 10 and report["accuracy"] >= 0.9


def test_check_only_reports_problems(tmp_path, synth_data):
    bad = tmp_path / "bad"
    for split in ("train", "val", "test"):
        for label in TWO_CLASSES:
            (bad / split / label).mkdir(parents=True)
    source = next((synth_data / "train" / "RedUp").iterdir())
    (bad / "train" / "RedUp" / "a.mp4").write_bytes(source.read_bytes())
    (bad / "test" / "RedUp" / "copy.mp4").write_bytes(source.read_bytes())
    (bad / "train" / "BlueDown" / "broken.mp4").write_text("not a video")
    result = CliRunner().invoke(
        cli, ["finetune", str(bad), "--out", str(tmp_path / "m"), "--init", "small", "--check-only"]
    )
    assert result.exit_code == 1
    assert "broken.mp4" in result.output and "copy.mp4" in result.output
    assert not (tmp_path / "m").exists()

    good = CliRunner().invoke(
        cli, ["finetune", str(synth_data), "--out", str(tmp_path / "m"), "--init", "small", "--check-only"]
    )
    assert good.exit_code == 0, good.output
    assert "2 classes" in good.output


def test_resume_continues_from_the_last_checkpoint(synth_data, tmp_path):
    out = tmp_path / "m"
    base = ["finetune", str(synth_data), "--out", str(out), "--init", "small"]
    assert CliRunner().invoke(cli, [*base, "--epochs", "1"]).exit_code == 0
    first = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    resumed = CliRunner().invoke(cli, [*base, "--epochs", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert len(first) == 1 and first[0] in checkpoints and len(checkpoints) == 2
    assert (
        max(json.loads(p.read_text())["epoch"] for p in (out / "checkpoints").glob("*/trainer_state.json"))
        == 2
    )

    fresh = CliRunner().invoke(
        cli, ["finetune", str(synth_data), "--out", str(tmp_path / "new"), "--resume", "--init", "small"]
    )
    assert fresh.exit_code == 1 and "no checkpoint" in fresh.output


def test_unreachable_base_model_is_a_clear_error(synth_data, tmp_path):
    result = CliRunner().invoke(
        cli, ["finetune", str(synth_data), "--out", str(tmp_path / "m"), "--base", "some-org/not-cached"]
    )
    assert result.exit_code == 2
    assert "some-org/not-cached" in result.output and "--model DIR" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed (CI installs it)")
def test_a_nested_dataset_trains_into_hierarchical_labels_that_reach_xmp(tmp_path):
    from tests.test_xmp import exiftool

    flat = make_dataset(tmp_path / "flat", per_split={"train": 8, "val": 3, "test": 2}, classes=TWO_CLASSES)
    data = tmp_path / "nested"
    for split in ("train", "val", "test"):
        for name in TWO_CLASSES:
            shutil.copytree(flat / split / name, data / split / "Moves" / name)
    out = tmp_path / "model"
    result = CliRunner().invoke(
        cli,
        ["finetune", str(data), "--out", str(out), "--init", "small", "--epochs", "8", "--lr", "2e-3"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    labels = {f"Moves/{name}" for name in TWO_CLASSES}
    assert set(json.loads((out / "config.json").read_text())["id2label"].values()) == labels
    videos = tmp_path / "videos"
    shutil.copytree(data / "test" / "Moves" / "RedUp", videos)
    args = ["scan", str(videos), "-m", str(out), "--sidecar", "xmp", "--threshold", "0", "--top-k", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    sidecars = sorted(videos.glob("*.xmp"))
    assert sidecars
    for sidecar in sidecars:
        tags = exiftool(sidecar)
        hierarchy = tags["XMP-lr:HierarchicalSubject"]
        hierarchy = hierarchy if isinstance(hierarchy, list) else [hierarchy]
        assert len(hierarchy) == 1 and hierarchy[0].startswith("vidtag|Moves|")
        assert hierarchy[0].removeprefix("vidtag|").replace("|", "/") in labels
        assert "Moves" in tags["XMP-dc:Subject"]
