"""Decoded clips cross from a decode process to the tagger through shared memory.

Returned the plain way, a clip (16 frames of 224x224 RGB: 2.4 MB) is pickled, written to a
pipe, read back in chunks and unpickled, which costs the tagger about 3 ms of CPU per clip and
caps one tagger near 330 clips/s however many decode processes feed it (bench_decode.py).
Here the worker writes a file's clips into one block in ``/dev/shm`` and returns only its
name and the clip layout; the tagger maps the block (all pages at once), unlinks its name,
and uses the frames in place until the batch is stacked: the tagger copies nothing first.

The worker writes the block with ``write()``, so a full ``/dev/shm`` (64 MB in a default
Docker container) is an error it sees, and the frames then go the plain way.
Blocks are registered with multiprocessing's resource tracker, which removes those the tagger
never read when it exits; after a ``kill -9`` of the whole process group (tracker included)
the next decoder to start removes blocks whose tagger is gone (``sweep``).
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker

import numpy as np

from tagger.clips.decode import DecodeJob
from tagger.records import Clip, VideoInfo

Decoded = tuple[VideoInfo, list[Clip]]
SHM_DIR = "/dev/shm"
_NO_FRAMES = np.empty((0,), dtype=np.uint8)
_RTYPE = "shared_memory"  # the tracker's name for POSIX shared memory (it shm_unlinks "/name")


@dataclass(frozen=True)
class Packed:
    """A decoded file whose frames wait in the shared-memory block ``name``."""

    info: VideoInfo
    clips: list[Clip]  # frames left empty
    shapes: list[tuple[int, ...]]
    name: str


def available() -> bool:
    """POSIX shared memory as files (Linux); elsewhere frames go the plain way."""
    return os.path.isdir(SHM_DIR) and hasattr(mmap, "MAP_POPULATE")


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, name.lstrip("/"))


def pack(decoded: Decoded) -> Decoded | Packed:
    """Worker side: move the frames into shared memory; unchanged if there is no room."""
    info, clips = decoded
    total = sum(c.frames.nbytes for c in clips)
    if total == 0 or not available():
        return decoded
    name = f"/vidtag-{os.getppid()}-{secrets.token_hex(8)}"
    try:
        fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:
        return decoded
    resource_tracker.register(name, _RTYPE)
    try:
        # write(), not a mapping: a full /dev/shm is an ENOSPC error here, not a SIGBUS.
        for clip in clips:
            data = memoryview(np.ascontiguousarray(clip.frames).data).cast("B")
            while data:
                data = data[os.write(fd, data) :]
    except OSError:
        os.unlink(_path(name))
        resource_tracker.unregister(name, _RTYPE)
        return decoded
    finally:
        os.close(fd)
    shapes = [c.frames.shape for c in clips]
    return Packed(info, [replace(c, frames=_NO_FRAMES) for c in clips], shapes, name)


def unpack(packed: Packed) -> Decoded:
    """Tagger side: map the block and free its name; the frames live until they are dropped.

    The mapping is read-only (so are the frames) and populated in one call, which costs far
    less than faulting in 600 pages per clip one by one.
    """
    fd = os.open(_path(packed.name), os.O_RDONLY)
    try:
        block = mmap.mmap(
            fd,
            sum(math.prod(shape) for shape in packed.shapes),
            flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
            prot=mmap.PROT_READ,
        )
    finally:
        os.close(fd)
        discard(packed)
    clips, offset = [], 0
    for clip, shape in zip(packed.clips, packed.shapes, strict=True):
        size = math.prod(shape)
        frames = np.frombuffer(block, dtype=np.uint8, count=size, offset=offset).reshape(shape)
        clips.append(replace(clip, frames=frames))
        offset += size
    return packed.info, clips


def discard(packed: Packed) -> None:
    """Remove the block's name (its memory goes when the last mapping does)."""
    try:
        os.unlink(_path(packed.name))
    except FileNotFoundError:
        return
    resource_tracker.unregister(packed.name, _RTYPE)


def sweep() -> int:
    """Remove blocks left by taggers that no longer run; returns how many."""
    if not available():
        return 0
    removed = 0
    for entry in os.scandir(SHM_DIR):
        parts = entry.name.split("-")
        if len(parts) != 3 or parts[0] != "vidtag" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # that tagger still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's, and running
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def run_packed(worker: Callable[[DecodeJob], Decoded], job: DecodeJob) -> Decoded | Packed:
    """What a decode process runs: ``worker(job)``, frames returned through shared memory."""
    return pack(worker(job))
