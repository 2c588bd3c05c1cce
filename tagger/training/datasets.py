"""Labeled video folders for fine-tuning (UCF101 layout): load, split without leakage, save.

``DATA/{train,val,test}/<Class>/*.mp4`` is used as it is; a bare ``DATA/<Class>/*.mp4`` is split here.
Class folders may nest: ``DATA/train/Sports/Basketball/*.mp4`` is class ``Sports/Basketball``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tagger.fsutil import atomic_open
from tagger.records import LABEL_SEP, TaggerError
from tagger.sources.discover import discover

__all__ = [
    "LABEL_SEP",
    "SPLITS",
    "Dataset",
    "LabeledVideo",
    "class_videos",
    "fingerprint",
    "group_of",
    "load_dataset",
    "load_split",
    "save_split",
]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Separates labels in our CSV rows, so no class may hold it.
_FORBIDDEN = "|"

#: UCF101 names its clips v_<Class>_g<group>_c<clip>; the clips of one group share a source video.
_GROUP_RE = re.compile(r"_g(\d+)_", re.IGNORECASE)
_SPLIT_FORMAT = "vidtag-split"
_SPLIT_VERSION = 1
#: How many files a message names before it only counts the rest.
_MAX_NAMED = 10

_LAYOUT_HELP = (
    "expected class folders of videos, either DATA/<Class>/<video> (vidtag makes the "
    "train/val/test split) or DATA/train/<Class>/<video> with optional DATA/val and DATA/test "
    "holding the same class folders; class folders may nest (DATA/train/Sports/Basketball/<video> "
    "is class Sports/Basketball)"
)


@dataclass(frozen=True)
class LabeledVideo:
    """One video of the dataset; ``group`` keeps clips of the same source video together."""

    path: str
    label: str
    group: str


@dataclass(frozen=True)
class Dataset:
    """Classes and the videos of each split; ``generated`` when vidtag made the split."""

    root: str
    classes: tuple[str, ...]
    splits: dict[str, tuple[LabeledVideo, ...]]
    generated: bool

    def label_index(self, label: str) -> int:
        """Index of ``label`` in ``classes`` (the model's class id)."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise TaggerError(
                f"unknown class {label!r}; the dataset has: {', '.join(self.classes)}"
            ) from None


def group_of(label: str, path: str) -> str:
    """Scene group of a video: ``<label>/gNN`` for UCF101 names, else ``<label>/<file stem>``."""
    name = os.path.basename(path)
    match = _GROUP_RE.search(name)
    if match:
        return f"{label}/g{int(match.group(1)):02d}"
    return f"{label}/{os.path.splitext(name)[0]}"


def load_dataset(
    data_dir: str | os.PathLike[str],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Dataset:
    """Read a labeled folder; split folders are used as they are, else a group-aware split is made."""
    root = os.fspath(data_dir)
    if not os.path.isdir(root):
        raise TaggerError(f"{root!r} is not a folder; {_LAYOUT_HELP}")
    top = _subfolders(root)
    if "train" in top:
        return _load_split_folders(root)
    present = [s for s in SPLITS if s in top]
    if present:
        raise TaggerError(f"{root!r} has {' and '.join(present)} but no train folder; {_LAYOUT_HELP}")
    return _load_and_split(root, val_fraction, test_fraction, seed)


def _subfolders(folder: str) -> list[str]:
    """Sorted names of the non-hidden folders in ``folder``."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError as exc:
        raise TaggerError(f"cannot read folder {folder!r}: {exc.strerror or exc}") from None


def _rel_parts(root: str, path: str) -> list[str]:
    return os.path.relpath(path, root).split(os.sep)


def _join(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/"))


def _rel(parts: Sequence[str]) -> str:
    return "/".join(parts)


def named(paths: Sequence[str]) -> str:
    """``paths`` for a message: the first few by name, then how many more (the checks use it too)."""
    shown = ", ".join(paths[:_MAX_NAMED])
    rest = len(paths) - _MAX_NAMED
    return f"{shown} and {rest} more" if rest > 0 else shown


def _video_paths(root: str) -> list[list[str]]:
    """Path parts, relative to ``root``, of every video under it."""
    try:
        return [_rel_parts(root, v.path) for v in discover([root])]
    except OSError as exc:
        raise TaggerError(f"cannot read {root!r}: {exc.strerror or exc}") from None


def _tree_key(label: str) -> list[str]:
    # By folder names, so a class's subclasses follow it: Sports, Sports/Ball, Sports-Extra.
    return label.split(LABEL_SEP)


def _label(base: str, folders: Sequence[str]) -> str:
    for i, name in enumerate(folders):
        if _FORBIDDEN in name:
            raise TaggerError(
                f"class folder {os.path.join(base, *folders[: i + 1])!r} has {_FORBIDDEN!r} in its "
                "name, which separates labels in vidtag's output; rename the folder"
            )
    return LABEL_SEP.join(folders)


def _classes(base: str, videos: Sequence[list[str]]) -> tuple[dict[str, list[list[str]]], list[list[str]]]:
    """The one rule of which folders are classes, for ``videos`` (path parts below ``base``).

    Every folder that directly holds videos is a class, named by its folders below ``base``
    joined with ``LABEL_SEP``. A top folder with no videos anywhere under it is a class too, an
    empty one, so the checks report it instead of it silently going missing. Returns each class
    with its videos, subclasses after their parent, and the videos directly in ``base``.
    """
    by_class: dict[str, list[list[str]]] = {}
    loose: list[list[str]] = []
    for parts in videos:
        if len(parts) < 2:
            loose.append(parts)
        else:
            by_class.setdefault(_label(base, parts[:-1]), []).append(parts)
    tops = {label.split(LABEL_SEP, 1)[0] for label in by_class}
    for name in _subfolders(base):
        if name not in tops:
            by_class[_label(base, [name])] = []
    return {c: by_class[c] for c in sorted(by_class, key=_tree_key)}, loose


def class_videos(folder: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The classes of one split folder (``<folder>/<Class>/...``, nested or not) with the paths
    of their videos, by :func:`load_dataset`'s rule; videos directly in ``folder`` are left out."""
    base = os.fspath(folder)
    if not os.path.isdir(base):
        raise TaggerError(f"{base!r} is not a folder; expected {base}/<Class>/<video>")
    classes, loose = _classes(base, _video_paths(base))
    if loose:
        log.warning("ignoring videos not in a class folder: %s", named([_join(base, _rel(p)) for p in loose]))
    return {label: [_join(base, _rel(p)) for p in videos] for label, videos in classes.items()}


def _loose_error(root: str, loose: list[str], where: str) -> TaggerError:
    return TaggerError(
        f"videos directly in {where} are not in a class folder: "
        f"{named([_join(root, r) for r in loose])}; {_LAYOUT_HELP}"
    )


def _load_split_folders(root: str) -> Dataset:
    present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    below: dict[str, list[list[str]]] = {s: [] for s in present}
    for parts in _video_paths(root):
        if parts[0] in below and len(parts) > 1:
            below[parts[0]].append(parts[1:])
        else:
            # Folders beside the split folders are not part of the dataset.
            log.info("ignoring %s: not under a split folder", _join(root, _rel(parts)))
    sorted_ = {s: _classes(os.path.join(root, s), below[s]) for s in present}
    class_sets = {s: set(classes) for s, (classes, _) in sorted_.items()}
    if not class_sets["train"]:
        raise TaggerError(f"{os.path.join(root, 'train')!r} has no class folders; {_LAYOUT_HELP}")
    union = sorted(set().union(*class_sets.values()), key=_tree_key)
    missing = [
        f"{s} is missing: {', '.join(c for c in union if c not in class_sets[s])}"
        for s in present
        if len(class_sets[s]) != len(union)
    ]
    if missing:
        raise TaggerError("class folders differ between splits: " + "; ".join(missing))
    loose = [f"{s}/{_rel(p)}" for s, (_, stray) in sorted_.items() for p in stray]
    if loose:
        raise _loose_error(root, loose, "a split folder")

    found: dict[str, list[LabeledVideo]] = {s: [] for s in present}
    for split, (classes, _) in sorted_.items():
        for label, videos in classes.items():
            for parts in videos:
                path = _join(root, f"{split}/{_rel(parts)}")
                found[split].append(LabeledVideo(path=path, label=label, group=group_of(label, path)))
    if not any(found.values()):
        raise TaggerError(f"no videos in the split folders of {root!r}; {_LAYOUT_HELP}")
    return Dataset(
        root=root,
        classes=tuple(union),
        splits={s: tuple(sorted(found[s], key=lambda v: v.path)) for s in present},
        generated=False,
    )


def _load_and_split(root: str, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise TaggerError(f"{name} must be in [0, 1), not {value}")
    if val_fraction + test_fraction >= 1.0:
        raise TaggerError(
            f"val_fraction + test_fraction must leave videos for training, not {val_fraction} + "
            f"{test_fraction}"
        )
    classes, loose = _classes(root, _video_paths(root))
    if not any(classes.values()):
        raise TaggerError(f"no class folders with videos in {root!r}; {_LAYOUT_HELP}")
    if loose:
        raise _loose_error(root, [_rel(p) for p in loose], root)
    by_class: dict[str, list[LabeledVideo]] = {}
    for label, videos in classes.items():
        paths = [_join(root, _rel(parts)) for parts in videos]
        by_class[label] = [LabeledVideo(path=p, label=label, group=group_of(label, p)) for p in paths]

    names = ["train"] + [s for s, f in (("val", val_fraction), ("test", test_fraction)) if f > 0]
    found: dict[str, list[LabeledVideo]] = {s: [] for s in names}
    for label, labeled in by_class.items():
        for split, part in _split_class(labeled, label, val_fraction, test_fraction, seed):
            found[split].extend(part)
    return Dataset(
        root=root,
        classes=tuple(by_class),
        splits={s: tuple(sorted(found[s], key=lambda v: v.path)) for s in names},
        generated=True,
    )


def _split_class(
    videos: list[LabeledVideo], label: str, val_fraction: float, test_fraction: float, seed: int
) -> list[tuple[str, list[LabeledVideo]]]:
    """Whole groups of one class to test, val and train, by the fractions of videos."""
    members: dict[str, list[LabeledVideo]] = defaultdict(list)
    for v in videos:
        members[v.group].append(v)
    groups = sorted(members)
    # Seeded per class, so adding a class leaves the split of the others unchanged.
    random.Random(f"{seed}:{label}").shuffle(groups)
    total = len(videos)
    if len(groups) < 3:
        # Too few groups to hold one out without leaving training short of scenes.
        return [("train", videos)]
    out: list[tuple[str, list[LabeledVideo]]] = []
    start = 0
    # Test first, so a seed's test set does not move when only val_fraction changes.
    for split, fraction, later in (("test", test_fraction, val_fraction), ("val", val_fraction, 0.0)):
        if fraction <= 0:
            continue
        # Keep a group for train, and one for val when val comes after and is wanted.
        reserve = 1 + (1 if later > 0 else 0)
        take = _groups_to_take(
            [len(members[g]) for g in groups[start:]],
            target=round(fraction * total),
            most=len(groups) - start - reserve,
        )
        out.append((split, [v for g in groups[start : start + take] for v in members[g]]))
        start += take
    out.append(("train", [v for g in groups[start:] for v in members[g]]))
    return out


def _groups_to_take(sizes: list[int], target: int, most: int) -> int:
    """How many leading groups (at least one, at most ``most``) come closest to ``target`` videos."""
    best, best_gap, count = 1, abs(sizes[0] - target), sizes[0]
    for k in range(2, most + 1):
        count += sizes[k - 1]
        gap = abs(count - target)
        if gap < best_gap:
            best, best_gap = k, gap
    return best


def _relpath(dataset: Dataset, video: LabeledVideo) -> str:
    # "/" on every platform, so a saved split and a fingerprint survive a move between systems.
    return "/".join(_rel_parts(dataset.root, video.path))


def save_split(dataset: Dataset, path: str | os.PathLike[str]) -> None:
    """Write the split as JSON, with paths relative to the root so the folder can move."""
    doc: dict[str, Any] = {
        "format": _SPLIT_FORMAT,
        "version": _SPLIT_VERSION,
        "root": os.path.abspath(dataset.root),
        "classes": list(dataset.classes),
        "generated": dataset.generated,
        "splits": {
            split: [[_relpath(dataset, v), v.label] for v in videos]
            for split, videos in dataset.splits.items()
        },
    }
    with atomic_open(os.fspath(path), "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


def load_split(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Dataset:
    """Read a split written by :func:`save_split`; ``root`` overrides the saved data folder."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise TaggerError(f"cannot read split file {name!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TaggerError(f"split file {name!r} is not valid JSON: {exc}") from None
    try:
        if doc.get("format") != _SPLIT_FORMAT:
            raise ValueError(f'no "format": "{_SPLIT_FORMAT}"')
        if doc.get("version") != _SPLIT_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        base = os.fspath(root) if root is not None else str(doc["root"])
        classes = tuple(str(c) for c in doc["classes"])
        for c in classes:
            if _FORBIDDEN in c:
                raise ValueError(f"class {c!r} has {_FORBIDDEN!r} in it, which separates labels")
        splits: dict[str, tuple[LabeledVideo, ...]] = {}
        for split, rows in doc["splits"].items():
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}")
            videos = []
            for rel, label in rows:
                if label not in classes:
                    raise ValueError(f"{rel!r} has label {label!r}, which is not a listed class")
                p = _join(base, str(rel))
                videos.append(LabeledVideo(path=p, label=str(label), group=group_of(label, p)))
            splits[split] = tuple(sorted(videos, key=lambda v: v.path))
        generated = bool(doc["generated"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TaggerError(f"{name!r} is not a vidtag split file: {exc}") from None
    missing = [v.path for videos in splits.values() for v in videos if not os.path.isfile(v.path)]
    if missing:
        raise TaggerError(
            f"{len(missing)} files of split {name!r} are missing under {base!r}: {named(missing)}"
            + ("" if root is not None else "; if the data folder moved, give its new location")
        )
    return Dataset(root=base, classes=classes, splits=splits, generated=generated)


def fingerprint(dataset: Dataset) -> str:
    """Short sha256 over each video's split, relative path, label and size."""
    h = hashlib.sha256()
    for split in sorted(dataset.splits):
        for v in dataset.splits[split]:
            try:
                size = os.stat(v.path).st_size
            except OSError as exc:
                raise TaggerError(f"cannot read {v.path!r}: {exc.strerror or exc}") from None
            # JSON per entry: no separator inside a name can make two listings collide.
            h.update(json.dumps([split, _relpath(dataset, v), v.label, size]).encode())
            h.update(b"\n")
    return h.hexdigest()[:16]
