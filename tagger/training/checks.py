"""Checks of a labeled dataset before fine-tuning: empty classes, undecodable or short videos,
files leaking between splits, class imbalance; and the class tree, when classes nest."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tagger.clips.probe import probe as probe_video
from tagger.clips.sampling import clip_span
from tagger.records import DecodeError, VideoInfo
from tagger.training.datasets import LABEL_SEP, Dataset, LabeledVideo, named

__all__ = ["CheckResult", "check_dataset"]

_HASH_CHUNK = 1 << 20
_Folders = dict[str, "_Folders"]  # a folder's subfolders by name


@dataclass(frozen=True)
class CheckResult:
    """Problems found by :func:`check_dataset`: errors stop training, warnings do not. ``tree``
    shows nested classes with their videos per split (empty for a flat dataset)."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    tree: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """The class tree if any, then one line per problem, errors first."""
        lines = [f"error: {e}" for e in self.errors] + [f"warning: {w}" for w in self.warnings]
        return "\n".join([*self.tree, *(lines or ["dataset looks fine"])])


def check_dataset(
    dataset: Dataset,
    num_frames: int = 16,
    stride: int = 4,
    imbalance_ratio: float = 5.0,
    probe: Callable[[str], VideoInfo] = probe_video,
) -> CheckResult:
    """Probe every video and look for empty classes, leaks between splits, short videos, imbalance."""
    errors: list[str] = []
    warnings: list[str] = []
    counts = {
        split: {c: sum(v.label == c for v in videos) for c in dataset.classes}
        for split, videos in dataset.splits.items()
    }
    train = counts.get("train", dict.fromkeys(dataset.classes, 0))
    errors += [f"class {c} has no videos in train" for c in dataset.classes if not train[c]]
    for split in ("val", "test"):
        if split in counts:
            warnings += [
                f"class {c} has no videos in {split}" for c in dataset.classes if not counts[split][c]
            ]

    span = clip_span(num_frames, stride)
    short: list[str] = []
    for videos in dataset.splits.values():
        for v in videos:
            try:
                info = probe(v.path)
            except DecodeError as exc:
                errors.append(f"cannot decode {v.path}: {exc}")
                continue
            except Exception as exc:
                # Whatever one file does to the probe is that file's problem: report it and
                # go on, so a single odd file does not hide the rest of the report.
                errors.append(f"cannot decode {v.path}: {type(exc).__name__}: {exc}")
                continue
            if info.frames < span:
                short.append(v.path)
    if short:
        warnings.append(
            f"{len(short)} videos are shorter than one clip ({span} frames: {num_frames} every "
            f"{stride}) and are padded by repeating frames: {named(short)}"
        )

    errors += _leaks(dataset.splits)

    sizes = sorted((n, c) for c, n in train.items() if n)
    if sizes and sizes[-1][0] > imbalance_ratio * sizes[0][0]:
        (low, low_c), (high, high_c) = sizes[0], sizes[-1]
        warnings.append(
            f"train is imbalanced: {high_c} has {high} videos, {low_c} has {low} "
            f"(ratio {high / low:.1f} > {imbalance_ratio:g})"
        )
    nested = any(LABEL_SEP in c for c in dataset.classes)
    tree = tuple(_tree(dataset.classes, counts)) if nested else ()
    return CheckResult(errors=tuple(errors), warnings=tuple(warnings), tree=tree)


def _tree(classes: Sequence[str], counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    """``Sports/ (2 classes)`` over ``  Basketball: 12 train, 3 val``: a folder line, then its
    classes indented; a folder that holds videos itself is a class line of its own as well."""
    known = set(classes)
    folders: _Folders = {}
    for label in classes:
        node = folders
        for name in label.split(LABEL_SEP):
            node = node.setdefault(name, {})
    lines: list[str] = []

    def walk(node: _Folders, path: str, depth: int) -> None:
        for name, below in node.items():
            label, indent = f"{path}{name}", "  " * depth
            if label in known:
                per_split = ", ".join(f"{n[label]} {split}" for split, n in counts.items())
                lines.append(f"{indent}{name}: {per_split}")
            if below:
                n = sum(c.startswith(label + LABEL_SEP) for c in classes)
                lines.append(f"{indent}{name}/ ({n} class{'' if n == 1 else 'es'})")
                walk(below, label + LABEL_SEP, depth + 1)

    walk(folders, "", 0)
    return lines


def _leaks(splits: Mapping[str, Sequence[LabeledVideo]]) -> list[str]:
    """Identical files in different splits; only files of equal size are hashed."""
    by_size: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for split, videos in splits.items():
        for v in videos:
            try:
                size = os.stat(v.path).st_size
            except OSError:
                continue  # the probe already reported it
            # Empty files are all alike and already fail to decode.
            if size:
                by_size[size].append((split, v.path))
    errors = []
    for same_size in by_size.values():
        if len({split for split, _ in same_size}) < 2:
            continue
        by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for split, p in same_size:
            digest = _sha256(p)
            if digest is not None:
                by_hash[digest].append((split, p))
        for same in by_hash.values():
            if len({split for split, _ in same}) > 1:
                named = ", ".join(f"{p} ({split})" for split, p in same)
                errors.append(f"identical files in different splits leak into evaluation: {named}")
    return errors


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
