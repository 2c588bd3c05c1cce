"""Nested class folders (``DATA/train/Sports/Basketball/``): labels, splits, checks, evaluation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagger.cli import cli
from tagger.records import TaggerError, VideoInfo
from tagger.training.checks import check_dataset
from tagger.training.datasets import (
    SPLITS,
    LabeledVideo,
    fingerprint,
    load_dataset,
    load_split,
    save_split,
)
from tagger.training.evaluate import labeled_videos

from .conftest import write_video

#: Class folder -> the colour of its videos, so every file differs and none leaks between splits.
NESTED = {"Sports/Basketball": "red", "Sports/Tennis": "green", "Music": "blue"}


def videos(root: Path, *rels: str, frames: int = 8) -> None:
    """Tiny real videos at ``rels`` below ``root``; the colour and length differ per file."""
    for i, rel in enumerate(rels):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        color = NESTED.get(os.path.dirname(rel).split("/", 1)[-1], "red")
        write_video(path, [color] * (frames + i))


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """DATA/{train,val,test}/ of Sports/Basketball, Sports/Tennis and Music; two Basketball
    videos in train, from one UCF101 group."""
    root = tmp_path / "data"
    rels = [
        f"{split}/{c}/{c.split('/')[-1].lower()}{i}.mp4" for i, split in enumerate(SPLITS) for c in NESTED
    ]
    rels += [
        "train/Sports/Basketball/v_Basketball_g08_c01.mp4",
        "train/Sports/Basketball/v_Basketball_g08_c02.mp4",
    ]
    videos(root, *rels)
    return root


def rel_labels(root: Path, items: Iterable[LabeledVideo]) -> list[tuple[str, str]]:
    return [(Path(v.path).relative_to(root).as_posix(), v.label) for v in items]


def test_nested_split_folders_give_path_labels(nested: Path) -> None:
    ds = load_dataset(nested)
    assert ds.classes == ("Music", "Sports/Basketball", "Sports/Tennis")
    assert rel_labels(nested, ds.splits["train"]) == [
        ("train/Music/music0.mp4", "Music"),
        ("train/Sports/Basketball/basketball0.mp4", "Sports/Basketball"),
        ("train/Sports/Basketball/v_Basketball_g08_c01.mp4", "Sports/Basketball"),
        ("train/Sports/Basketball/v_Basketball_g08_c02.mp4", "Sports/Basketball"),
        ("train/Sports/Tennis/tennis0.mp4", "Sports/Tennis"),
    ]
    groups = [v.group for v in ds.splits["train"]]
    assert groups[1:4] == ["Sports/Basketball/basketball0", "Sports/Basketball/g08", "Sports/Basketball/g08"]
    assert rel_labels(nested, ds.splits["test"])[1] == (
        "test/Sports/Basketball/basketball2.mp4",
        "Sports/Basketball",
    )
    assert ds.label_index("Sports/Tennis") == 2


def test_mixed_folder_holds_a_class_and_its_subclasses(tmp_path: Path) -> None:
    # Unsplit layout: vidtag splits it, by UCF101 groups within each class.
    for g in range(1, 4):
        videos(
            tmp_path, f"Sports/v_Sports_g{g:02d}_c01.mp4", f"Sports/Basketball/v_Basketball_g{g:02d}_c01.mp4"
        )
    videos(tmp_path, "Music/Jazz/j.mp4", "Music/Rock/r.mp4")  # Music holds no videos itself
    videos(tmp_path, ".cache/Hidden/h.mp4")
    ds = load_dataset(tmp_path, val_fraction=0.34, test_fraction=0.34)
    assert ds.generated
    assert ds.classes == ("Music/Jazz", "Music/Rock", "Sports", "Sports/Basketball")
    by_label: dict[str, list[str]] = {}
    for split, items in ds.splits.items():
        for v in items:
            by_label.setdefault(v.label, []).append(split)
            assert v.group.startswith(v.label + "/") and v.group.count("/") == v.label.count("/") + 1
    # Three groups each: one to every split, whichever depth the class is at.
    assert sorted(by_label["Sports"]) == sorted(by_label["Sports/Basketball"]) == ["test", "train", "val"]
    assert by_label["Music/Jazz"] == by_label["Music/Rock"] == ["train"]


def test_val_and_test_need_the_same_nested_classes(nested: Path) -> None:
    for name in os.listdir(nested / "val/Sports/Tennis"):
        os.remove(nested / "val/Sports/Tennis" / name)
    os.rmdir(nested / "val/Sports/Tennis")
    videos(nested, "test/Sports/Golf/golf.mp4")
    with pytest.raises(TaggerError) as exc:
        load_dataset(nested)
    msg = str(exc.value)
    assert "train is missing: Sports/Golf" in msg
    assert "val is missing: Sports/Golf, Sports/Tennis" in msg
    assert "test is missing" not in msg


@pytest.mark.parametrize(
    "rel",
    ["train/Rock|Pop/a.mp4", "train/Music/Rock|Pop/a.mp4", "Music/Rock|Pop/a.mp4", "Rock|Pop/.keep"],
)
def test_a_bar_in_a_class_folder_is_refused_naming_it(tmp_path: Path, rel: str) -> None:
    videos(tmp_path, "train/Music/m.mp4" if rel.startswith("train") else "Music/m.mp4")
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith(".keep"):
        path.write_bytes(b"")
    else:
        write_video(path, ["red"] * 8)
    with pytest.raises(TaggerError, match=re.escape("'|' in its name")) as exc:
        load_dataset(tmp_path)
    assert repr(str(path.parent)) in str(exc.value)


def test_saved_split_and_fingerprint_keep_nested_labels(nested: Path, tmp_path: Path) -> None:
    ds = load_dataset(nested)
    saved = tmp_path / "split.json"
    save_split(ds, saved)
    doc = json.loads(saved.read_text())
    assert doc["classes"] == ["Music", "Sports/Basketball", "Sports/Tennis"]
    assert ["test/Sports/Tennis/tennis2.mp4", "Sports/Tennis"] in doc["splits"]["test"]
    assert load_split(saved) == ds
    before = fingerprint(ds)
    # A video moved up to its parent folder is in a new class, Sports, that only train has.
    os.rename(nested / "train/Sports/Tennis/tennis0.mp4", nested / "train/Sports/tennis0.mp4")
    with pytest.raises(TaggerError, match=r"val is missing: Sports; test is missing: Sports$"):
        load_dataset(nested)
    os.rename(nested / "train/Sports/tennis0.mp4", nested / "train/Sports/Tennis/tennis0.mp4")
    assert fingerprint(load_dataset(nested)) == before
    # Relabeled from one subclass to its sibling: same file, new label.
    os.rename(
        nested / "train/Sports/Basketball/basketball0.mp4", nested / "train/Sports/Tennis/basketball0.mp4"
    )
    assert fingerprint(load_dataset(nested)) != before
    doc["classes"][0] = "Music|Jazz"
    saved.write_text(json.dumps(doc))
    with pytest.raises(TaggerError, match=re.escape("'Music|Jazz' has '|'")):
        load_split(saved)


def test_check_shows_the_class_tree(nested: Path) -> None:
    result = check_dataset(load_dataset(nested), num_frames=4, stride=2)
    assert result.ok and not result.warnings
    assert result.format() == (
        "Music: 1 train, 1 val, 1 test\n"
        "Sports/ (2 classes)\n"
        "  Basketball: 3 train, 1 val, 1 test\n"
        "  Tennis: 1 train, 1 val, 1 test\n"
        "dataset looks fine"
    )


def test_check_tree_of_a_mixed_and_deeper_folder(tmp_path: Path) -> None:
    for rel in (
        "Sports/a.mp4",
        "Sports/Ball/Basketball/b.mp4",
        "Sports/Ball/Basketball/c.mp4",
        "Sports/Swim/s.mp4",
    ):
        (tmp_path / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / rel).write_bytes(b"")
    (tmp_path / "train/Empty").mkdir()

    def probe(path: str) -> VideoInfo:
        return VideoInfo(path=path, duration_s=10, fps=10.0, frames=100, width=64, height=48)

    result = check_dataset(load_dataset(tmp_path), probe=probe)
    assert result.errors == ("class Empty has no videos in train",)
    assert result.format() == (
        "Empty: 0 train\n"
        "Sports: 1 train\n"
        "Sports/ (2 classes)\n"
        "  Ball/ (1 class)\n"
        "    Basketball: 2 train\n"
        "  Swim: 1 train\n"
        "error: class Empty has no videos in train"
    )


def test_flat_dataset_check_has_no_tree(tmp_path: Path) -> None:
    videos(tmp_path, "train/A/a.mp4", "train/B/b.mp4")
    assert check_dataset(load_dataset(tmp_path), num_frames=4, stride=2).format() == "dataset looks fine"


def test_check_only_prints_the_tree(nested: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["finetune", str(nested), "--out", str(tmp_path / "m"), "--init", "small", "--check-only"]
    )
    assert result.exit_code == 0, result.output
    assert "3 classes" in result.output
    assert "\nSports/ (2 classes)\n  Basketball: 3 train, 1 val, 1 test\n" in result.output


def test_labeled_videos_reads_nested_test_folders(nested: Path) -> None:
    videos(nested, "test/Sports/s.mp4", "test/stray.mp4")
    assert rel_labels(nested / "test", labeled_videos(nested / "test")) == [
        ("Music/music2.mp4", "Music"),
        ("Sports/s.mp4", "Sports"),
        ("Sports/Basketball/basketball2.mp4", "Sports/Basketball"),
        ("Sports/Tennis/tennis2.mp4", "Sports/Tennis"),
    ]
    with pytest.raises(TaggerError, match="no class folders"):
        labeled_videos(nested / "test/Music")
