"""Which filesystem a path lives on: network and FUSE mounts need polling, and no SQLite state."""

from __future__ import annotations

import os
import re

__all__ = ["mount_point", "network_filesystem"]

# Filesystems whose changes made by other machines never reach this kernel's inotify.
_NETWORK_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "afs",
        "coda",
        "beegfs",
        "ocfs2",
        "gfs2",
        "orangefs",
        "virtiofs",
        "vboxsf",
        "davfs",
        "fuse",
    }
)

_MOUNT_ESCAPE = re.compile(rb"\\([0-7]{3})")


def network_filesystem(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The fstype when ``path`` lives on a network or FUSE filesystem, else ``None``.

    The mount is the longest mount point containing the real path; ``None`` as well when
    ``mounts_file`` cannot be read.
    """
    real = os.path.realpath(path)
    try:
        # Bytes: a mount point need not be UTF-8; it is decoded as the path's own name was.
        with open(mounts_file, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best_len, best_type = -1, ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = os.fsdecode(_MOUNT_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[1]))
        prefix = point.rstrip("/") + "/"
        # ">=": a later mount over the same point hides the earlier one.
        if (real == point or real.startswith(prefix)) and len(point) >= best_len:
            best_len, best_type = len(point), os.fsdecode(fields[2])
    if best_type in _NETWORK_FSTYPES or best_type.startswith("fuse."):
        return best_type
    return None


def mount_point(path: str) -> str:
    """Where the filesystem holding ``path`` is mounted: its highest ancestor on that device."""
    current = os.path.realpath(path)
    try:
        dev = os.stat(current).st_dev
        while True:
            parent = os.path.dirname(current)
            if parent == current or os.stat(parent).st_dev != dev:
                return current
            current = parent
    except OSError:
        return current
