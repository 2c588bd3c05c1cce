"""The watched roots: which one a path is under, and whether that root can be trusted now.

A root can vanish (a share unmounted), come back on another device (remounted) or show the
empty folder beneath its mount point. A file missing from a root counts as deleted only while
the root is up and on the device it was taken on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from tagger.sources.discover import walk_order
from tagger.sources.mounts import mount_point

# One logger for the watcher, whichever of its modules speaks.
log = logging.getLogger("tagger.sources.watch")


class Roots:
    """The roots of one watch, with what is known of each: up or not, device and mount."""

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.paths = roots
        self.dev: dict[str, int | None] = dict.fromkeys(roots)
        # Where each root's filesystem was mounted when its device was taken, to tell a remount
        # (a new device there) from the mount gone (the folder beneath it, on a higher mount).
        self.mount: dict[str, str] = {}
        self.up: dict[str, bool] = dict.fromkeys(roots, False)
        #: Roots under which the caller holds results: an empty folder there is not trusted.
        self.held: set[str] = set()
        # Longest first, so a root nested in another owns its own files.
        self.prefixes = sorted(((r, os.path.join(r, "")) for r in roots), key=lambda p: -len(p[1]))

    def root_of(self, path: str) -> str | None:
        for root, prefix in self.prefixes:
            if path == root or path.startswith(prefix):
                return root
        return None

    def is_up(self, path: str) -> bool:
        """Whether ``path`` is under a root that is up."""
        root = self.root_of(path)
        return root is not None and self.up[root]

    def order(self, path: str) -> tuple[int, tuple[str, ...]]:
        """Where a scan of all roots reaches ``path``: the first root holding it, in order."""
        for index, root in enumerate(self.paths):
            if path == root or path.startswith(os.path.join(root, "")):
                return walk_order(index, rel(root, path))
        return walk_order(len(self.paths), path)

    def hold(self, path: str) -> None:
        """Expect results under the root of ``path`` from now on, as the caller will hold one."""
        root = self.root_of(path)
        if root is not None:
            self.held.add(root)

    def hold_only(self, paths: Iterable[str]) -> None:
        """Expect results under the roots of ``paths``, and nowhere else."""
        self.held = {root for root in map(self.root_of, paths) if root is not None}

    def probe(self, root: str) -> tuple[bool, bool]:
        """Whether ``root`` can be trusted now, and whether it came to be on a new device.

        A root seen for the first time, or on another device, is taken unless it is an empty
        folder where results are expected (most likely the placeholder of a share not mounted
        yet: trusting it would report the whole library deleted) or, after a device change, its
        filesystem is mounted higher up than before (the mount went away and the folder beneath
        it shows). A new device mounted where the old one was, or deeper (a mount arriving over
        a folder first taken as it was), is the root back: remounted, or mounted late.
        """
        try:
            dev = _device(root)
        except OSError:
            return False, False
        known = self.dev[root]
        if dev == known:
            return True, False
        if root in self.held and _empty(root):
            return False, False
        mount = mount_point(root)
        if known is not None and len(mount) < len(self.mount[root]):
            return False, False
        self.dev[root], self.mount[root] = dev, mount
        return True, known is not None

    def trusted(self, root: str) -> bool:
        """Whether ``root`` is up and still on the device it was taken on: only then is a file
        missing from it deleted (a device change waits for ``changes``)."""
        if not self.up[root]:
            return False
        try:
            return _device(root) == self.dev[root]
        except OSError:
            return False

    def changes(self) -> Iterator[tuple[str, bool]]:
        """Look at every root again; yield ``(root, up)`` for each that went away or came
        (back), remounted on another device included: its old watch died with it."""
        for root in self.paths:
            up, new_device = self.probe(root)
            if up == self.up[root] and not new_device:
                continue
            was_up, self.up[root] = self.up[root], up
            if not up:
                log.warning("%s went away (removed or unmounted): ignoring it until it is back", root)
            elif was_up:
                log.info("%s changed device (remounted): watching it again and rescanning it", root)
            elif new_device:
                log.info("%s is back on another device (remounted): rescanning it", root)
            else:
                log.info("%s is available again: rescanning it", root)
            yield root, up


def rel(root: str, path: str) -> str:
    """``path`` relative to ``root``, which holds it; ``""`` for the root itself."""
    return path[len(os.path.join(root, "")) :] if path != root else ""


def _device(path: str) -> int:
    """The device ``path`` is on; raises ``OSError`` when it cannot be stat'ed."""
    return os.stat(path).st_dev


def _empty(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return next(it, None) is None
    except OSError:
        return True
