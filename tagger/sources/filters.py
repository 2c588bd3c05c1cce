"""Which paths under a root are videos, and where symlinks may lead: the one rule that scans
(``discover``) and the daemon (``watch``) share, so both take the same files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

__all__ = ["TEMP_PATTERNS", "VIDEO_SUFFIXES", "Confinement", "VideoFilter", "is_temporary"]

#: Lower-case suffixes, with the dot, of the files a folder walk yields.
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {
        ".mp4",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".ts",
        ".flv",
        ".3gp",
        ".wmv",
        ".ogv",
        ".gif",
    }
)

#: Base-name globs (any case) of files still being written; they count once renamed.
TEMP_PATTERNS: tuple[str, ...] = (
    "*.part",
    "*.crdownload",
    "*.tmp",
    "*.partial",
    "*.download",
    "*.!qb",
    ".*",  # rsync's ".name.XXXXXX", ".syncthing.*", and every other dot-file
)


@dataclass(frozen=True)
class VideoFilter:
    """Which entries a walk of a root looks at, enters and takes as videos.

    ``rel`` is a path relative to its root, with ``/`` between names (``""`` is the root).
    Globs containing ``/`` match ``rel``, others the base name, both case-sensitively;
    suffixes and ``temporary`` (base-name globs of files still being written) ignore case.
    Dot-names are skipped unless ``hidden``; ``exclude`` prunes files and folders alike,
    ``include`` narrows files only.
    """

    suffixes: frozenset[str] = VIDEO_SUFFIXES
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    temporary: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("suffixes", "include", "exclude", "temporary"):
            value = getattr(self, name)
            # A bare string is a collection of strings too: "*.mp4" would become "*", ".", ...
            if isinstance(value, (str, bytes, os.PathLike)):
                raise TypeError(f"{name} must be a sequence, not a single {type(value).__name__}")
        object.__setattr__(self, "suffixes", frozenset(_normalise_suffix(s) for s in self.suffixes))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "temporary", tuple(p.lower() for p in self.temporary))

    def visible(self, rel: str) -> bool:
        """Whether a walk looks at the entry ``rel`` at all, file or folder: the last name only."""
        name = rel.rpartition("/")[2]
        if name.startswith(".") and not self.hidden:
            return False
        return not _matches(self.exclude, rel, name)

    def is_video_name(self, rel: str) -> bool:
        """Whether a visible file ``rel`` is a video: its suffix, not temporary, included."""
        name = rel.rpartition("/")[2]
        if os.path.splitext(name)[1].lower() not in self.suffixes or self.is_temporary(name):
            return False
        return not self.include or _matches(self.include, rel, name)

    def wants_dir(self, rel: str) -> bool:
        """Whether a walk enters the folder ``rel``: it and every folder above it visible."""
        if not rel:
            return True
        parts = rel.split("/")
        return all(self.visible("/".join(parts[: i + 1])) for i in range(len(parts)))

    def wants_file(self, rel: str) -> bool:
        """Whether a walk yields a regular file at ``rel``."""
        if not rel:
            return False
        return self.wants_dir(rel.rpartition("/")[0]) and self.visible(rel) and self.is_video_name(rel)

    def is_temporary(self, name: str) -> bool:
        """Whether the base name ``name`` matches one of ``temporary``, in any case."""
        name = name.lower()
        return any(fnmatchcase(name, pattern) for pattern in self.temporary)


@dataclass(frozen=True)
class Confinement:
    """The real folders that symlinks may lead into: the roots, every symlink in them resolved.

    Made from the roots as they are now; a root that is replaced or remounted needs a new one.
    """

    roots: tuple[str, ...]
    prefixes: tuple[str, ...]

    @classmethod
    def of(cls, roots: Iterable[str]) -> Confinement:
        """The confinement of ``roots``, resolving their symlinks now."""
        roots = tuple(roots)
        return cls(roots, tuple(_dir_prefix(os.path.realpath(r)) for r in roots))

    def holds(self, real: str) -> bool:
        """Whether the real path ``real`` is one of the roots or lies below one."""
        return _dir_prefix(real).startswith(self.prefixes)

    def locate(self, real: str) -> tuple[int, str] | None:
        """The first root (by index, in the order given) whose real folder holds the real path
        ``real``, and ``real`` relative to it (``""`` for the root itself); ``None`` if none does."""
        inner = _dir_prefix(real)
        for index, prefix in enumerate(self.prefixes):
            if inner.startswith(prefix):
                return index, inner[len(prefix) :].rstrip(os.sep)
        return None


def is_temporary(path: str) -> bool:
    """Whether the base name of ``path`` is a download or sync in progress (see ``TEMP_PATTERNS``)."""
    return _TEMPORARY.is_temporary(os.path.basename(path.rstrip(os.sep)))


def _matches(patterns: tuple[str, ...], rel: str, name: str) -> bool:
    return any(fnmatchcase(rel if "/" in p else name, p) for p in patterns)


def _dir_prefix(real: str) -> str:
    # The trailing separator keeps /videos2 from counting as inside /videos.
    return real.rstrip(os.sep) + os.sep


def _normalise_suffix(suffix: str) -> str:
    suffix = suffix.lower()
    return suffix if suffix.startswith(".") else f".{suffix}"


_TEMPORARY = VideoFilter(temporary=TEMP_PATTERNS)
