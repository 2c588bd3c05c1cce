"""A hostile library, through the CLI as a user runs it: names that are not UTF-8, newlines,
formula and markup prefixes, FFmpeg protocol names, names near NAME_MAX, special files, links
that loop or lead out, and files that are not videos at all.

Every video file gets exactly one row, every row leads back to its file, nothing prints a
traceback, and the run exits 1 (some files are bad).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import ROOT, write_video
from .test_daemon import wait_for

# Names as bytes: what a share written by other machines can hold.
GOOD = [
    b"caf\xe9.mp4",  # Latin-1
    b"d\xe9j\xe0/vu.mp4",  # a Latin-1 folder
    b"two\nlines.mp4",
    b"=HYPERLINK(1).mp4",
    b"+1.mp4",
    b"@SUM(1).mp4",
    b"-dash.mp4",
    b"[bold]not markup[/bold].mp4",
    b"concat:x.mp4",  # an FFmpeg protocol name
    b"x.mp4/inner.mp4",  # a folder named like a video
    b"n" * 236 + b".mp4",  # 240 bytes: its sidecar still fits in NAME_MAX
    b"L" * 246 + b".mp4",  # 250 bytes: its sidecar would not
]
BAD = [b"empty.mp4", b"truncated.mp4", b"noise.mkv"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, set[bytes]]:
    """The library's root (bytes) and the set of its video files (absolute bytes paths)."""
    base = os.fsencode(tmp_path_factory.mktemp("hostile"))
    root = os.path.join(base, b"lib")
    outside = os.path.join(base, b"outside")
    os.makedirs(outside)
    sample = Path(os.fsdecode(outside)) / "sample.mp4"
    write_video(sample, ["red"] * 40)
    data = sample.read_bytes()
    for name in GOOD:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    with open(os.path.join(root, b"empty.mp4"), "wb"):
        pass
    with open(os.path.join(root, b"truncated.mp4"), "wb") as f:
        f.write(data[: len(data) // 3])
    with open(os.path.join(root, b"noise.mkv"), "wb") as f:
        f.write(os.urandom(20_000))
    os.mkfifo(os.path.join(root, b"pipe.mp4"))
    os.symlink(b".", os.path.join(root, b"loop"))  # a folder link back to the root
    os.symlink(os.fsencode(sample), os.path.join(root, b"out.mp4"))  # a link out of the root
    videos = {os.path.join(root, n) for n in GOOD + BAD}
    return root, videos


def _scan(root: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "tagger", "scan", os.fsdecode(root), "--workers", "1", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, timeout=300)


def _check(paths: list[bytes], videos: set[bytes]) -> None:
    assert len(paths) == len(set(paths)), "a video has two rows"
    assert set(paths) == videos
    assert all(os.path.isfile(p) for p in paths)


def _check_statuses(statuses: dict[bytes, str], root: bytes) -> None:
    bad = {os.path.join(root, n) for n in BAD}
    assert {p for p, s in statuses.items() if s == "error"} == bad
    assert all(s == "ok" for p, s in statuses.items() if p not in bad)


def test_scan_to_csv_jsonl_and_parquet(
    hostile: tuple[bytes, set[bytes]], tiny_model: Path, tmp_path: Path
) -> None:
    root, videos = hostile
    outs = {fmt: tmp_path / f"labels.{fmt}" for fmt in ("csv", "jsonl", "parquet")}
    for fmt, out in outs.items():
        done = _scan(root, "-m", str(tiny_model), "-o", str(out), "--state", str(tmp_path / f"{fmt}.db"))
        assert done.returncode == 1, done.stderr.decode(errors="replace")
        assert b"Traceback" not in done.stderr
    # CSV: the name's own bytes, read back with surrogateescape.
    with outs["csv"].open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    _check([os.fsencode(r["path"]) for r in rows], videos)
    _check_statuses({os.fsencode(r["path"]): r["status"] for r in rows}, root)
    # JSONL: valid UTF-8 with \udcXX escapes.
    lines = outs["jsonl"].read_bytes().decode("utf-8").splitlines()
    docs = [json.loads(line) for line in lines]
    _check([os.fsencode(d["path"]) for d in docs], videos)
    # Parquet: the raw bytes where the name is not UTF-8.
    table = pq.read_table(outs["parquet"]).to_pylist()
    _check([r["path_bytes"] or r["path"].encode("utf-8") for r in table], videos)
    _check_statuses({r["path_bytes"] or r["path"].encode("utf-8"): r["status"] for r in table}, root)


def test_scan_with_sidecars(hostile: tuple[bytes, set[bytes]], tiny_model: Path, tmp_path: Path) -> None:
    root, videos = hostile
    done = _scan(root, "-m", str(tiny_model), "--sidecar", "--state", str(tmp_path / "s.db"))
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    too_long = os.path.join(root, b"L" * 246 + b".mp4")
    for video in videos:
        sidecar = video + b".vidtag.json"
        if video == too_long:
            assert not os.path.lexists(sidecar)
            continue
        with open(sidecar, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        assert os.fsencode(doc["path"]) == video
    # The one sidecar that cannot exist is said, by name, as an error of that file only.
    assert b"L" * 40 in done.stderr and b"longer than the file system allows" in done.stderr
    for video in videos:
        if os.path.exists(video + b".vidtag.json"):
            os.remove(video + b".vidtag.json")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_watch_to_jsonl(
    hostile: tuple[bytes, set[bytes]], tiny_model: Path, tmp_path: Path, processes: list
) -> None:
    root, videos = hostile
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "tagger", "watch", os.fsdecode(root), "-o", str(out), "-m", str(tiny_model)]
    cmd += ["--settle", "0.2", "--retries", "0", "--workers", "1"]
    daemon = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes.append(daemon)

    def docs() -> list[dict[str, str]]:
        if not out.exists():
            return []
        return [json.loads(line) for line in out.read_bytes().decode("utf-8").splitlines()]

    arrived = wait_for(lambda: len(docs()) >= len(videos) or daemon.poll() is not None, 120)
    daemon.send_signal(signal.SIGTERM)
    _, log = daemon.communicate(timeout=30)
    assert arrived and daemon.returncode == 0, log.decode(errors="replace")
    assert b"Traceback" not in log
    paths = [os.fsencode(d["path"]) for d in docs()]
    _check(paths, videos)
    _check_statuses({os.fsencode(d["path"]): d["status"] for d in docs()}, root)
