"""Tests for tagger.training.datasets and .checks: folder layouts, the leak-free auto split, saved
splits, checks."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tagger.records import DecodeError, TaggerError, VideoInfo
from tagger.training.checks import CheckResult, check_dataset
from tagger.training.datasets import (
    SPLITS,
    Dataset,
    LabeledVideo,
    fingerprint,
    group_of,
    load_dataset,
    load_split,
    save_split,
)

from .conftest import write_video


def touch(root: Path, *rels: str, data: bytes = b"") -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def ucf(root: Path, classes: Iterable[str], groups: int = 8, clips: int = 3, prefix: str = "") -> None:
    """UCF101-style files: <prefix><Class>/v_<Class>_gNN_cMM.avi."""
    for c in classes:
        for g in range(1, groups + 1):
            for k in range(1, clips + 1):
                touch(root, f"{prefix}{c}/v_{c}_g{g:02d}_c{k:02d}.avi")


def all_videos(ds: Dataset) -> list[LabeledVideo]:
    return [v for videos in ds.splits.values() for v in videos]


def split_of(ds: Dataset) -> dict[str, str]:
    return {v.path: split for split, videos in ds.splits.items() for v in videos}


def fake_probe(frames: int = 100) -> Callable[[str], VideoInfo]:
    def probe(path: str) -> VideoInfo:
        return VideoInfo(path=path, duration_s=frames / 10, fps=10.0, frames=frames, width=64, height=48)

    return probe


# --- layout -----------------------------------------------------------------------------


def test_splits_from_folders(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "train/Biking/b2.mp4",
        "train/Biking/b1.mp4",
        "train/Archery/a1.mov",
        "train/Archery/v_Archery_g03_c01.avi",
        "val/Archery/a9.mp4",
        "val/Biking/b9.mp4",
        "test/Archery/a8.mp4",
        "test/Biking/.hidden.mp4",
        "test/Biking/notes.txt",
        "train/Biking/.DS_Store",
    )
    ds = load_dataset(tmp_path)
    assert ds.root == str(tmp_path)
    assert ds.classes == ("Archery", "Biking")
    assert not ds.generated
    assert list(ds.splits) == list(SPLITS)
    train = ds.splits["train"]
    assert [v.path for v in train] == sorted(v.path for v in train)
    assert [(os.path.relpath(v.path, tmp_path), v.label) for v in train] == [
        ("train/Archery/a1.mov", "Archery"),
        ("train/Archery/v_Archery_g03_c01.avi", "Archery"),
        ("train/Biking/b1.mp4", "Biking"),
        ("train/Biking/b2.mp4", "Biking"),
    ]
    assert [v.group for v in train] == ["Archery/a1", "Archery/g03", "Biking/b1", "Biking/b2"]
    assert [(v.label, Path(v.path).name) for v in ds.splits["val"]] == [
        ("Archery", "a9.mp4"),
        ("Biking", "b9.mp4"),
    ]
    # An empty class folder still counts as the class being present.
    assert [Path(v.path).name for v in ds.splits["test"]] == ["a8.mp4"]
    assert ds.label_index("Biking") == 1
    with pytest.raises(TaggerError, match="unknown class"):
        ds.label_index("Cooking")


def test_val_and_test_folders_are_optional(tmp_path: Path) -> None:
    touch(tmp_path, "train/A/1.mp4", "train/B/2.mp4", "val/A/3.mp4", "val/B/4.mp4")
    ds = load_dataset(tmp_path)
    assert list(ds.splits) == ["train", "val"]
    assert ds.classes == ("A", "B")


def test_class_mismatch_lists_what_each_split_misses(tmp_path: Path) -> None:
    touch(tmp_path, "train/Archery/1.mp4", "train/Biking/2.mp4", "train/Basketball/3.mp4")
    touch(tmp_path, "val/Archery/4.mp4", "val/Biking/5.mp4")
    touch(tmp_path, "test/Basketball/6.mp4", "test/Cooking/7.mp4")
    with pytest.raises(TaggerError) as exc:
        load_dataset(tmp_path)
    msg = str(exc.value)
    assert "train is missing: Cooking" in msg
    assert "val is missing: Basketball, Cooking" in msg
    assert "test is missing: Archery, Biking" in msg


def test_empty_class_folder_counts_for_the_class_check(tmp_path: Path) -> None:
    touch(tmp_path, "train/A/1.mp4", "train/B/2.mp4", "val/A/3.mp4")
    (tmp_path / "val" / "B").mkdir()
    assert load_dataset(tmp_path).classes == ("A", "B")


def test_video_directly_in_a_split_folder_is_named(tmp_path: Path) -> None:
    touch(tmp_path, "train/A/1.mp4", "train/stray.mp4")
    with pytest.raises(TaggerError, match=r"not in a class folder: .*train/stray\.mp4"):
        load_dataset(tmp_path)


def test_val_without_train_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "val/A/1.mp4", "test/A/2.mp4")
    with pytest.raises(TaggerError, match="val and test but no train folder"):
        load_dataset(tmp_path)


def test_non_layout_folders_get_a_helpful_error(tmp_path: Path) -> None:
    touch(tmp_path, "flat/a.mp4", "flat/b.mp4")
    with pytest.raises(TaggerError, match=r"no class folders with videos.*DATA/<Class>/<video>"):
        load_dataset(tmp_path / "flat")
    touch(tmp_path, "docs/A/readme.txt")
    with pytest.raises(TaggerError, match="no class folders with videos"):
        load_dataset(tmp_path / "docs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaggerError, match="expected class folders"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(TaggerError, match="not a folder"):
        load_dataset(tmp_path / "missing")
    touch(tmp_path, "emptysplits/train/A/readme.txt")
    with pytest.raises(TaggerError, match="no videos"):
        load_dataset(tmp_path / "emptysplits")


def test_loose_videos_beside_class_folders_are_named(tmp_path: Path) -> None:
    touch(tmp_path, "A/1.mp4", "stray.mp4")
    with pytest.raises(TaggerError, match=r"stray\.mp4"):
        load_dataset(tmp_path)


def test_group_names() -> None:
    assert group_of("ApplyEyeMakeup", "x/v_ApplyEyeMakeup_g07_c03.avi") == "ApplyEyeMakeup/g07"
    assert group_of("A", "x/V_A_G7_C1.AVI") == "A/g07"
    assert group_of("A", "x/holiday.clip.mp4") == "A/holiday.clip"


# --- the generated split ----------------------------------------------------------------


def test_auto_split_keeps_groups_together(tmp_path: Path) -> None:
    ucf(tmp_path, ["Archery", "Biking", "Cooking"])
    ds = load_dataset(tmp_path)
    assert ds.generated
    assert ds.classes == ("Archery", "Biking", "Cooking")
    assert list(ds.splits) == ["train", "val", "test"]
    videos = all_videos(ds)
    assert len(videos) == len({v.path for v in videos}) == 3 * 8 * 3
    where = split_of(ds)
    groups: dict[str, set[str]] = {}
    for v in videos:
        groups.setdefault(v.group, set()).add(where[v.path])
        assert v.label == Path(v.path).parent.name
    assert len(groups) == 24
    assert all(len(splits) == 1 for splits in groups.values())
    for split, videos_ in ds.splits.items():
        assert [v.path for v in videos_] == sorted(v.path for v in videos_)
        for c in ds.classes:
            n = sum(v.label == c for v in videos_)
            # 15% of 24 is 3.6: one group of 3 is the closest; train keeps the rest.
            assert n == (18 if split == "train" else 3), (split, c)


def test_auto_split_respects_fractions_roughly(tmp_path: Path) -> None:
    ucf(tmp_path, ["A"], groups=20, clips=2)
    ds = load_dataset(tmp_path, val_fraction=0.2, test_fraction=0.3)
    counts = {s: len(v) for s, v in ds.splits.items()}
    assert counts == {"train": 20, "val": 8, "test": 12}


def test_auto_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    ucf(tmp_path, ["A", "B"], groups=10)
    first = load_dataset(tmp_path, seed=3)
    assert load_dataset(tmp_path, seed=3) == first
    assert load_dataset(tmp_path, seed=4) != first


def test_files_without_group_ids_are_split_one_by_one(tmp_path: Path) -> None:
    touch(tmp_path, *(f"Dogs/clip{i:02d}.mp4" for i in range(20)))
    ds = load_dataset(tmp_path)
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 14, "val": 3, "test": 3}
    assert len({v.group for v in all_videos(ds)}) == 20


def test_a_class_with_two_groups_stays_in_train(tmp_path: Path) -> None:
    ucf(tmp_path, ["Big"], groups=8)
    ucf(tmp_path, ["Small"], groups=2)
    ds = load_dataset(tmp_path)
    small = [split for split, vs in ds.splits.items() for v in vs if v.label == "Small"]
    assert small == ["train"] * 6
    assert any(v.label == "Big" for v in ds.splits["test"])


def test_three_groups_give_one_to_each_split(tmp_path: Path) -> None:
    ucf(tmp_path, ["A"], groups=3, clips=1)
    ds = load_dataset(tmp_path, val_fraction=0.01, test_fraction=0.9)
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 1, "val": 1, "test": 1}


def test_zero_fraction_drops_the_split(tmp_path: Path) -> None:
    ucf(tmp_path, ["A"], groups=5)
    ds = load_dataset(tmp_path, val_fraction=0.0, test_fraction=0.2)
    assert list(ds.splits) == ["train", "test"]
    assert len(ds.splits["test"]) == 3


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions(tmp_path: Path, val: float, test: float) -> None:
    ucf(tmp_path, ["A"], groups=3)
    with pytest.raises(TaggerError, match="fraction"):
        load_dataset(tmp_path, val_fraction=val, test_fraction=test)


# --- saved splits and fingerprints ------------------------------------------------------


def test_save_and_load_split_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ucf(data, ["Archery", "Biking"], groups=5)
    ds = load_dataset(data)
    saved = tmp_path / "split.json"
    save_split(ds, saved)
    doc = json.loads(saved.read_text())
    assert doc["generated"] is True
    assert doc["classes"] == ["Archery", "Biking"]
    assert all(not os.path.isabs(rel) for rows in doc["splits"].values() for rel, _ in rows)
    assert load_split(saved) == ds
    before = fingerprint(ds)

    moved = tmp_path / "elsewhere"
    shutil.move(str(data), str(moved))
    with pytest.raises(TaggerError, match=r"30 files .* are missing.*give its new location"):
        load_split(saved)
    again = load_split(saved, root=moved)
    assert again.root == str(moved)
    assert again.classes == ds.classes
    assert {s: [(Path(v.path).name, v.label, v.group) for v in vs] for s, vs in again.splits.items()} == {
        s: [(Path(v.path).name, v.label, v.group) for v in vs] for s, vs in ds.splits.items()
    }
    assert fingerprint(again) == before
    # Splitting the moved folder afresh gives the same split: it depends on names, not places.
    assert again == load_dataset(moved)


def test_load_split_from_folders_round_trip(tmp_path: Path) -> None:
    touch(tmp_path, "data/train/A/1.mp4", "data/train/B/2.mp4", "data/test/A/3.mp4", "data/test/B/4.mp4")
    ds = load_dataset(tmp_path / "data")
    save_split(ds, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json") == ds


def test_load_split_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TaggerError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(TaggerError, match="not a vidtag split file"):
        load_split(tmp_path / "other.json")
    with pytest.raises(TaggerError, match="cannot read split file"):
        load_split(tmp_path / "absent.json")


def test_fingerprint_tracks_files_labels_and_splits(tmp_path: Path) -> None:
    touch(tmp_path, "train/A/1.mp4", "train/A/2.mp4", "train/B/3.mp4", "val/A/4.mp4", "val/B/5.mp4")
    base = fingerprint(load_dataset(tmp_path))
    assert len(base) == 16
    assert fingerprint(load_dataset(tmp_path)) == base

    touch(tmp_path, "train/B/6.mp4")
    added = fingerprint(load_dataset(tmp_path))
    assert added != base
    (tmp_path / "train/B/6.mp4").unlink()
    assert fingerprint(load_dataset(tmp_path)) == base

    (tmp_path / "train/A/2.mp4").rename(tmp_path / "train/B/2.mp4")
    relabeled = fingerprint(load_dataset(tmp_path))
    assert relabeled not in (base, added)
    (tmp_path / "train/B/2.mp4").rename(tmp_path / "train/A/2.mp4")

    (tmp_path / "train/A/2.mp4").rename(tmp_path / "val/A/2.mp4")
    moved = fingerprint(load_dataset(tmp_path))
    assert moved not in (base, added, relabeled)
    (tmp_path / "val/A/2.mp4").rename(tmp_path / "train/A/2.mp4")

    (tmp_path / "train/A/2.mp4").write_bytes(b"edited")
    assert fingerprint(load_dataset(tmp_path)) != base


# --- checks -----------------------------------------------------------------------------


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    """Real tiny videos, all different, in all three splits; clip span 7 at 4 frames every 2."""
    root = tmp_path / "clean"
    for i, split in enumerate(SPLITS):
        for label, color in (("Red", "red"), ("Blue", "blue")):
            folder = root / split / label
            folder.mkdir(parents=True)
            write_video(folder / f"{color}{i}.mp4", [color] * (10 + i))
    return root


def check_clean(root: Path) -> CheckResult:
    return check_dataset(load_dataset(root), num_frames=4, stride=2)


def test_a_clean_dataset_passes(clean: Path) -> None:
    result = check_clean(clean)
    assert result.ok
    assert result.errors == result.warnings == ()
    assert result.format() == "dataset looks fine"


def test_undecodable_file_is_an_error_naming_it(clean: Path) -> None:
    touch(clean, "train/Red/notes.mp4", data=b"this is not a video\n")
    result = check_clean(clean)
    assert not result.ok
    [error] = result.errors
    assert str(clean / "train/Red/notes.mp4") in error
    assert error.startswith("cannot decode")
    assert result.format().startswith("error: cannot decode")


def test_identical_files_in_two_splits_are_an_error_naming_both(clean: Path) -> None:
    shutil.copy(clean / "train/Red/red0.mp4", clean / "test/Red/copy.mp4")
    # The same file twice within one split is not a leak.
    shutil.copy(clean / "train/Blue/blue0.mp4", clean / "train/Blue/again.mp4")
    result = check_clean(clean)
    [error] = result.errors
    assert str(clean / "train/Red/red0.mp4") in error
    assert str(clean / "test/Red/copy.mp4") in error


def test_short_video_is_a_warning(clean: Path) -> None:
    write_video(clean / "train/Red/short.mp4", ["red"] * 3)
    result = check_clean(clean)
    assert result.ok
    [warning] = result.warnings
    assert "shorter than one clip" in warning
    assert str(clean / "train/Red/short.mp4") in warning
    assert result.format() == f"warning: {warning}"


def test_many_short_videos_are_counted_not_all_named(tmp_path: Path) -> None:
    touch(tmp_path, *(f"train/A/{i:02d}.mp4" for i in range(13)))
    result = check_dataset(load_dataset(tmp_path), probe=fake_probe(frames=5))
    [warning] = result.warnings
    assert warning.startswith("13 videos are shorter than one clip (61 frames")
    assert "09.mp4" in warning and "10.mp4" not in warning
    assert warning.endswith("and 3 more")


def test_empty_class_in_val_warns_and_in_train_errors(tmp_path: Path) -> None:
    touch(tmp_path, "train/A/1.mp4", "val/A/2.mp4", "test/A/3.mp4", "test/B/4.mp4")
    (tmp_path / "train/B").mkdir()
    (tmp_path / "val/B").mkdir()
    result = check_dataset(load_dataset(tmp_path), probe=fake_probe())
    assert result.errors == ("class B has no videos in train",)
    assert result.warnings == ("class B has no videos in val",)


def test_imbalance_warning_says_the_counts(tmp_path: Path) -> None:
    touch(tmp_path, *(f"train/Many/{i}.mp4" for i in range(12)), "train/Few/0.mp4", "train/Few/1.mp4")
    touch(tmp_path, "train/Empty/.keep")
    result = check_dataset(load_dataset(tmp_path), probe=fake_probe())
    assert result.errors == ("class Empty has no videos in train",)
    [warning] = result.warnings
    assert "Many has 12 videos" in warning and "Few has 2" in warning and "6.0 > 5" in warning
    balanced = check_dataset(load_dataset(tmp_path), imbalance_ratio=6.0, probe=fake_probe())
    assert balanced.warnings == ()


def test_probe_failures_of_any_kind_are_reported_per_file(tmp_path: Path) -> None:
    touch(tmp_path, "train/A/1.mp4", "train/A/2.mp4")

    def probe(path: str) -> VideoInfo:
        if path.endswith("1.mp4"):
            raise DecodeError("no video stream")
        raise RuntimeError("boom")

    result = check_dataset(load_dataset(tmp_path), probe=probe)
    assert result.errors == (
        f"cannot decode {tmp_path / 'train/A/1.mp4'}: no video stream",
        f"cannot decode {tmp_path / 'train/A/2.mp4'}: RuntimeError: boom",
    )


def test_check_result_format_lists_errors_then_warnings() -> None:
    result = CheckResult(errors=("e1",), warnings=("w1", "w2"))
    assert not result.ok
    assert result.format() == "error: e1\nwarning: w1\nwarning: w2"
