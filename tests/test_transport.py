"""Frames through shared memory: same pixels as the plain way, and no block left behind."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tagger.clips import transport
from tagger.clips.decode import make_job, run_job
from tagger.clips.pool import DecodePool
from tagger.engines.local import tag
from tagger.options import TagOptions
from tagger.records import Clip, VideoInfo

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs POSIX shared memory in /dev/shm")


def blocks() -> set[str]:
    """vidtag's blocks in shared memory (not multiprocessing's semaphores)."""
    return {p.name for p in SHM.iterdir() if p.name.startswith("vidtag-")}


def decoded(clips: int = 3) -> tuple[VideoInfo, list[Clip]]:
    rng = np.random.default_rng(0)
    info = VideoInfo(path="v.mp4", duration_s=10.0, fps=25.0, frames=250, width=8, height=6)
    made = [
        Clip("v.mp4", i, float(i), i + 0.6, rng.integers(0, 255, (4, 6, 8, 3), dtype=np.uint8))
        for i in range(clips)
    ]
    return info, made


def test_pack_and_unpack_give_the_same_clips_and_free_the_block():
    before = blocks()
    info, clips = decoded()
    packed = transport.pack((info, clips))
    assert isinstance(packed, transport.Packed)
    assert packed.name.lstrip("/") in blocks() - before  # the frames wait in shared memory
    assert all(c.frames.size == 0 for c in packed.clips)  # and not in the pickled result

    got_info, got = transport.unpack(packed)
    assert got_info == info
    for a, b in zip(got, clips, strict=True):
        assert (a.index, a.start_s, a.end_s) == (b.index, b.start_s, b.end_s)
        assert np.array_equal(a.frames, b.frames)
    assert not blocks() - before


def test_no_room_in_shared_memory_falls_back_to_the_plain_way(monkeypatch):
    real_write = os.write
    written = []

    def full(fd: int, data: bytes) -> int:
        if len(data) < 512:  # not frames (the resource tracker's messages)
            return real_write(fd, data)
        if written:  # the first clip fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(transport.os, "write", full)
    before = blocks()
    result = decoded()
    assert transport.pack(result) is result
    assert not blocks() - before


def test_tagging_through_shared_memory_matches_the_pipe(video_factory, classifier):
    paths = [str(video_factory([c] * 30, name=f"{c}.mp4")) for c in ("red", "green", "blue")]
    before = blocks()
    scores = {}
    for shared in (True, False):
        with DecodePool(1, shared_memory=shared) as decoder:
            results = tag(paths, classifier, TagOptions(top_k=3), decoder=decoder)
            scores[shared] = {r.path: [(t.label, round(t.score, 6)) for t in r.tags] for r in results}
    assert scores[True] == scores[False] and len(scores[True]) == 3
    assert not blocks() - before


def test_results_nobody_read_are_freed_on_close(video_factory, classifier):
    paths = [str(video_factory(["red"] * 20, name=f"v{i}.mp4")) for i in range(4)]
    jobs = [make_job(p, classifier.prep, classifier.stride, TagOptions()) for p in paths]
    before = blocks()
    decoder = DecodePool(2)
    stream = decoder.run(jobs)
    first = next(stream)
    assert first is not None and not isinstance(first[1], str)
    deadline = time.monotonic() + 30
    while not all(f.done() for f in decoder._running) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(blocks() - before) >= 1  # finished files wait in shared memory ...
    decoder.close()
    assert not blocks() - before  # ... and are freed when the decoder closes


def test_decoded_frames_equal_the_in_process_decode(video_factory):
    from tagger.transforms import Preprocessing

    path = str(video_factory(["red"] * 10 + ["blue"] * 30))
    prep = Preprocessing(num_frames=4, short_side=32, crop=(32, 32))
    job = make_job(path, prep, 2, TagOptions(clips=2))
    with DecodePool(1) as decoder:
        [(_, outcome)] = [item for item in decoder.run([job]) if item is not None]
    assert not isinstance(outcome, str)
    _, local = run_job(job)
    assert [c.frames.tobytes() for c in outcome[1]] == [c.frames.tobytes() for c in local]
    assert outcome[0].path == path


def test_sweep_removes_blocks_of_taggers_that_are_gone():
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60
    )
    dead_pid = int(gone.stdout)
    stale = SHM / f"vidtag-{dead_pid}-0123456789abcdef"
    live = SHM / f"vidtag-{os.getpid()}-0123456789abcdef"
    other = SHM / "not-vidtag-1"
    for path in (stale, live, other):
        path.write_bytes(b"x")
    try:
        assert transport.sweep() >= 1
        assert not stale.exists()
        assert live.exists() and other.exists()  # a running tagger's blocks, and others', stay
    finally:
        for path in (stale, live, other):
            path.unlink(missing_ok=True)


def test_a_decoder_reused_after_an_abandoned_run_yields_only_the_new_files(video_factory, classifier):
    old = [str(video_factory(["red"] * 20, name=f"old{i}.mp4")) for i in range(4)]
    new = [str(video_factory(["blue"] * 20, name=f"new{i}.mp4")) for i in range(2)]
    options = TagOptions()
    before = blocks()
    with DecodePool(2) as decoder:
        stream = decoder.run(make_job(p, classifier.prep, classifier.stride, options) for p in old)
        next(stream)  # the caller stops listening after one file
        stream.close()
        got = [
            item[0]
            for item in decoder.run([make_job(p, classifier.prep, classifier.stride, options) for p in new])
            if item
        ]
        assert sorted(got) == sorted(new)
        deadline = time.monotonic() + 30
        while blocks() - before and time.monotonic() < deadline:
            time.sleep(0.05)  # the abandoned files finish and free their frames
        assert not blocks() - before
