"""Find the video files under the paths given on the command line, in a stable order.

Only ``stat``/``scandir`` are used, never ``open``, so FIFOs and devices cannot block the walk.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterator, Sequence
from fnmatch import fnmatchcase

from tagger.records import VideoFile

__all__ = ["VIDEO_SUFFIXES", "discover"]

log = logging.getLogger(__name__)

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

_Key = tuple[int, int]

_SPECIAL_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def discover(
    paths: Sequence[str | os.PathLike[str]],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    suffixes: Collection[str] = VIDEO_SUFFIXES,
    hidden: bool = False,
) -> Iterator[VideoFile]:
    """Yield each video file under ``paths`` once: roots in the order given, names sorted.

    Files named in ``paths`` are yielded whatever their name; ``include``, ``exclude``,
    ``suffixes`` and ``hidden`` only filter what a folder walk finds. Globs containing
    ``/`` match the path relative to its root, others the base name.
    Raises ``FileNotFoundError`` on the call, before anything is yielded, if a root is missing.
    """
    for name, value in (("paths", paths), ("include", include), ("exclude", exclude)):
        # A bare string is a Sequence[str] too: iterating it would walk "v", "i", "d", ...
        if isinstance(value, (str, bytes, os.PathLike)):
            raise TypeError(f"{name} must be a sequence, not a single {type(value).__name__}")
    # Stat the roots now rather than lazily, so a typo fails before the first result.
    roots = [(os.fspath(p), os.stat(p)) for p in paths]
    walker = _Walker(
        prefixes=tuple(_dir_prefix(os.path.realpath(root)) for root, _ in roots),
        include=tuple(include),
        exclude=tuple(exclude),
        suffixes=frozenset(_normalise_suffix(s) for s in suffixes),
        hidden=hidden,
    )
    return walker.run(roots)


class _Walker:
    """The state one ``discover`` call shares across its roots, so duplicates meet."""

    def __init__(
        self,
        prefixes: tuple[str, ...],
        include: tuple[str, ...],
        exclude: tuple[str, ...],
        suffixes: frozenset[str],
        hidden: bool,
    ) -> None:
        self.prefixes = prefixes
        self.include = include
        self.exclude = exclude
        self.suffixes = suffixes
        self.hidden = hidden
        self.seen_files: set[_Key] = set()
        self.walked_dirs: set[_Key] = set()

    def run(self, roots: list[tuple[str, os.stat_result]]) -> Iterator[VideoFile]:
        for root, st in roots:
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk(root, st)
            elif stat.S_ISREG(st.st_mode):
                # Named explicitly: the user asked for it, so no name filter applies.
                video = self._once(root, st)
                if video is not None:
                    yield video
            else:
                _skip(root, _special_kind(st.st_mode))

    def _walk(self, root: str, root_st: os.stat_result) -> Iterator[VideoFile]:
        # An explicit stack, not recursion: a deep tree must not hit the recursion limit.
        stack: list[tuple[Iterator[os.DirEntry[str]], str, _Key]] = []
        self._enter(stack, root, "", root_st)
        while stack:
            entries, rel_dir, _ = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name = entry.name
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name.startswith(".") and not self.hidden:
                continue
            if _matches(self.exclude, rel, name):
                continue
            st = self._stat(entry)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                self._enter(stack, entry.path, rel, st)
            elif stat.S_ISREG(st.st_mode):
                if self._wanted(rel, name):
                    video = self._once(entry.path, st)
                    if video is not None:
                        yield video
            else:
                _skip(entry.path, _special_kind(st.st_mode))

    def _enter(
        self,
        stack: list[tuple[Iterator[os.DirEntry[str]], str, _Key]],
        path: str,
        rel: str,
        st: os.stat_result,
    ) -> None:
        key = (st.st_dev, st.st_ino)
        if key in self.walked_dirs:
            if any(k == key for _, _, k in stack):
                _skip(path, "symlink loop back to an enclosing folder")
            else:
                _skip(path, "folder already walked")
            return
        self.walked_dirs.add(key)
        try:
            with os.scandir(path) as it:
                # Sorting one folder at a time keeps the order stable while still streaming.
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            _skip(path, f"unreadable folder ({exc.strerror or exc})")
            return
        stack.append((iter(entries), rel, key))

    def _stat(self, entry: os.DirEntry[str]) -> os.stat_result | None:
        """Stat an entry, following a symlink only when it lands inside a root."""
        try:
            if not entry.is_symlink():
                return entry.stat(follow_symlinks=False)
        except OSError as exc:
            _skip(entry.path, f"cannot stat ({exc.strerror or exc})")
            return None
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            _skip(entry.path, f"broken symlink ({exc.strerror or exc})")
            return None
        real = os.path.realpath(entry.path)
        if not _dir_prefix(real).startswith(self.prefixes):
            _skip(entry.path, f"symlink to {real}, outside the given roots")
            return None
        return st

    def _wanted(self, rel: str, name: str) -> bool:
        if os.path.splitext(name)[1].lower() not in self.suffixes:
            return False
        return not self.include or _matches(self.include, rel, name)

    def _once(self, path: str, st: os.stat_result) -> VideoFile | None:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_files:
            log.debug("skipping %s: same file already yielded", path)
            return None
        self.seen_files.add(key)
        return VideoFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _matches(patterns: tuple[str, ...], rel: str, name: str) -> bool:
    return any(fnmatchcase(rel if "/" in p else name, p) for p in patterns)


def _dir_prefix(real: str) -> str:
    # The trailing separator keeps /videos2 from counting as inside /videos.
    return real.rstrip(os.sep) + os.sep


def _normalise_suffix(suffix: str) -> str:
    suffix = suffix.lower()
    return suffix if suffix.startswith(".") else f".{suffix}"


def _special_kind(mode: int) -> str:
    return _SPECIAL_KINDS.get(stat.S_IFMT(mode), "not a regular file or folder")


def _skip(path: str, reason: str) -> None:
    log.info("skipping %s: %s", path, reason)
