"""Find the video files under the paths given on the command line, in a stable order.

Only ``stat``/``scandir`` are used, never ``open``, so FIFOs and devices cannot block the walk.
Which names count, and where symlinks may lead, is ``tagger.sources.filters``' rule.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterator, Sequence

from tagger.records import VideoFile
from tagger.sources.filters import VIDEO_SUFFIXES, Confinement, VideoFilter

__all__ = ["VIDEO_SUFFIXES", "discover", "walk_folder", "walk_order"]

log = logging.getLogger(__name__)

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
    *,
    filter: VideoFilter | None = None,
    quiet: bool = False,
) -> Iterator[VideoFile]:
    """Yield each video file under ``paths`` once: roots in the order given, names sorted.

    Files named in ``paths`` are yielded whatever their name; ``include``, ``exclude``,
    ``suffixes`` and ``hidden`` (or a ready ``filter`` instead of them) only filter what a
    folder walk finds. Globs containing ``/`` match the path relative to its root, others the
    base name. Symlinks are followed only while they lead inside the roots. ``quiet`` logs what
    is skipped at DEBUG rather than INFO (a periodic rescan repeats what the first walk said).
    Raises ``FileNotFoundError`` on the call, before anything is yielded, if a root is missing.
    """
    for name, value in (("paths", paths), ("include", include), ("exclude", exclude)):
        # A bare string is a Sequence[str] too: iterating it would walk "v", "i", "d", ...
        if isinstance(value, (str, bytes, os.PathLike)):
            raise TypeError(f"{name} must be a sequence, not a single {type(value).__name__}")
    if filter is None:
        filter = VideoFilter(frozenset(suffixes), tuple(include), tuple(exclude), hidden)
    elif include or exclude or hidden or suffixes is not VIDEO_SUFFIXES:
        raise TypeError("give either filter= or include/exclude/suffixes/hidden, not both")
    # Stat the roots now rather than lazily, so a typo fails before the first result.
    roots = [(os.fspath(p), os.stat(p)) for p in paths]
    walker = _Walker(filter, Confinement.of(root for root, _ in roots), quiet)
    return walker.run(roots)


def walk_folder(folder: str, rel: str, filter: VideoFilter, confinement: Confinement) -> Iterator[VideoFile]:
    """Yield the videos under ``folder``, which is ``rel`` below its root, as a walk of that
    root would: globs match paths relative to the root, symlinks are followed only into
    ``confinement``. Whether ``folder`` itself is wanted is the caller's to say.
    Raises ``OSError`` on the call if ``folder`` cannot be stat'ed.
    """
    st = os.stat(folder)
    if not stat.S_ISDIR(st.st_mode):
        return iter(())
    return _Walker(filter, confinement)._walk(folder, st, rel)


def walk_order(root_index: int, rel: str) -> tuple[int, tuple[str, ...]]:
    """Where a walk reaches ``rel`` below the root at ``root_index``: one key sorts paths in
    the order ``discover`` yields them (roots in the order given, then depth first with the
    names of each folder sorted, which is the order of the names' tuples)."""
    return root_index, (tuple(rel.split("/")) if rel else ())


class _Walker:
    """The state one ``discover`` call shares across its roots, so duplicates meet."""

    def __init__(self, filter: VideoFilter, confinement: Confinement, quiet: bool = False) -> None:
        self.filter = filter
        self.confinement = confinement
        self.skip_level = logging.DEBUG if quiet else logging.INFO
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
                self._skip(root, _special_kind(st.st_mode))

    def _walk(self, top: str, top_st: os.stat_result, top_rel: str = "") -> Iterator[VideoFile]:
        # An explicit stack, not recursion: a deep tree must not hit the recursion limit.
        stack: list[tuple[Iterator[os.DirEntry[str]], str, _Key]] = []
        self._enter(stack, top, top_rel, top_st)
        while stack:
            entries, rel_dir, _ = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not self.filter.visible(rel):
                continue
            st = self._stat(entry)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                self._enter(stack, entry.path, rel, st)
            elif stat.S_ISREG(st.st_mode):
                if self.filter.is_video_name(rel):
                    video = self._once(entry.path, st)
                    if video is not None:
                        yield video
            else:
                self._skip(entry.path, _special_kind(st.st_mode))

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
                self._skip(path, "symlink loop back to an enclosing folder")
            else:
                self._skip(path, "folder already walked")
            return
        self.walked_dirs.add(key)
        try:
            with os.scandir(path) as it:
                # Sorting one folder at a time keeps the order stable while still streaming.
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._skip(path, f"unreadable folder ({exc.strerror or exc})")
            return
        stack.append((iter(entries), rel, key))

    def _stat(self, entry: os.DirEntry[str]) -> os.stat_result | None:
        """Stat an entry, following a symlink only when it lands inside a root."""
        try:
            if not entry.is_symlink():
                return entry.stat(follow_symlinks=False)
        except OSError as exc:
            self._skip(entry.path, f"cannot stat ({exc.strerror or exc})")
            return None
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            self._skip(entry.path, f"broken symlink ({exc.strerror or exc})")
            return None
        real = os.path.realpath(entry.path)
        if not self.confinement.holds(real):
            self._skip(entry.path, f"symlink to {real}, outside the given roots")
            return None
        return st

    def _skip(self, path: str, reason: str) -> None:
        log.log(self.skip_level, "skipping %s: %s", path, reason)

    def _once(self, path: str, st: os.stat_result) -> VideoFile | None:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_files:
            log.debug("skipping %s: same file already yielded", path)
            return None
        self.seen_files.add(key)
        return VideoFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _special_kind(mode: int) -> str:
    return _SPECIAL_KINDS.get(stat.S_IFMT(mode), "not a regular file or folder")
