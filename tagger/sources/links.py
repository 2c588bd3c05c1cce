"""Which way to a file a scan takes, applied to paths the watcher hears about one by one.

As ``discover`` does: a symlink leading outside the roots is not followed, and a path through a
symlink is not taken when a scan reaches the same file or folder by another path first (a file is
yielded once, by the first path a scan meets).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Container

from tagger.sources.discover import walk_order
from tagger.sources.filters import Confinement, VideoFilter
from tagger.sources.roots import Roots

log = logging.getLogger("tagger.sources.watch")

_Key = tuple[int, int]


class Links:
    """Admits the paths a scan would yield. ``displace(path)`` is called for a path taken
    earlier that a scan turns out to meet later than a new way to the same file."""

    def __init__(self, roots: Roots, filter: VideoFilter, displace: Callable[[str], object]) -> None:
        self.roots, self.filter, self.displace = roots, filter, displace
        self.confinement = Confinement.of(roots.paths)
        # The path by which each file reached through a symlink was taken.
        self.linked: dict[_Key, str] = {}

    def refresh(self) -> None:
        """Resolve the roots again: one may be a symlink, appear late or be remounted."""
        self.confinement = Confinement.of(self.roots.paths)

    def admit(self, path: str, folder: bool = False) -> bool:
        """Whether a scan reaches the file (or ``folder``) at ``path`` by that path."""
        real = os.path.realpath(path)
        found = self.confinement.locate(real)
        if found is None:
            log.info("skipping %s: symlink to %s, outside the watched folders", path, real)
            return False
        index, rel = found
        target = os.path.join(self.roots.paths[index], rel) if rel else self.roots.paths[index]
        if target == path:
            return True  # no symlink on the way
        wanted = self.filter.wants_dir if folder else self.filter.wants_file
        if wanted(rel) and os.path.exists(target) and walk_order(index, rel) < self.roots.order(path):
            log.debug("skipping %s: leads to %s, which a scan reaches first", path, target)
            return False
        return folder or self._first_link(path)

    def _first_link(self, path: str) -> bool:
        """Whether ``path``, a symlinked way to a file, is the first such way a scan meets."""
        key = file_key(path)
        if key is None:
            return False
        other = self.linked.get(key)
        if other is not None and other != path and file_key(other) == key:
            if self.roots.order(other) < self.roots.order(path):
                log.debug("skipping %s: same file as %s", path, other)
                return False
            self.displace(other)
        self.linked[key] = path
        return True

    def forget(self, present: Container[str], scanned_roots: Container[str | None]) -> None:
        """After a rescan of ``scanned_roots``: forget the links to files it did not find."""
        self.linked = {
            k: p for k, p in self.linked.items() if p in present or self.roots.root_of(p) not in scanned_roots
        }


def file_key(path: str) -> _Key | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
