"""Faults as a user meets them: a full disk, a read-only folder, a locked or damaged state,
a state on a network share. Each is one clear line, never a traceback, and loses nothing.

A full disk is a small tmpfs filled up when the tests may mount (root); elsewhere the same
fault is injected where it surfaces (``os.fsync``, the SQLite connection).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tagger import classify, fsutil
from tagger import state as state_module
from tagger.cli import cli
from tagger.records import VideoFile, VideoResult
from tagger.state import paths as state_paths


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    # A traceback would be an exception other than the exit Click makes.
    assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
        traceback.format_exception(*result.exc_info)  # type: ignore[misc]
    )
    assert "Traceback" not in result.output
    return result


def _mount(folder: Path, *options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


@dataclass
class Disk:
    """A folder on a disk that is full until ``free()``."""

    folder: Path
    real: bool
    monkeypatch: pytest.MonkeyPatch

    def free(self) -> None:
        if self.real:
            (self.folder / "filler").unlink()
        else:
            self.monkeypatch.undo()


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, video_factory: Any) -> Iterator[Disk]:
    """``folder`` holds three videos (a.mp4 red, b.mp4 green, c.mp4 blue); then its disk fills."""
    folder = tmp_path / "full"
    folder.mkdir()
    real = _mount(folder, "size=2m")
    for name, color in (("a.mp4", "red"), ("b.mp4", "green"), ("c.mp4", "blue")):
        shutil.copy(video_factory([color] * 30), folder / name)
    if real:
        with (folder / "filler").open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
    else:
        inner = os.fsync
        prefix = str(folder) + os.sep

        def fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(prefix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            inner(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        flush = logging.StreamHandler.flush

        def log_flush(self: logging.StreamHandler) -> None:  # type: ignore[type-arg]
            if str(getattr(self.stream, "name", "")).startswith(prefix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            flush(self)

        monkeypatch.setattr(logging.StreamHandler, "flush", log_flush)
    try:
        yield Disk(folder, real, monkeypatch)
    finally:
        if real:
            _umount(folder)


def one_video(tmp_path: Path, video_factory: Any) -> Path:
    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(video_factory(["red"] * 30), videos / "a.mp4")
    return videos


def _count(output: str, what: str) -> int:
    found = re.search(rf"^{what}\s+(\d+)$", output, re.MULTILINE)
    assert found, output
    return int(found.group(1))


def test_full_disk_while_writing_the_table_says_so_and_a_rerun_finishes_fast(
    tmp_path: Path, full_disk: Disk, tiny_model: Path
) -> None:
    out = full_disk.folder / "labels.csv"
    state = tmp_path / "state.db"
    args = ["scan", str(full_disk.folder), "-m", str(tiny_model), "-o", str(out), "--state", str(state)]
    failed = invoke(*args)
    assert failed.exit_code == 1
    assert "labels.csv" in failed.output and "disk is full" in failed.output
    # Nothing half-written: no table, no temp file beside it.
    assert not out.exists() and not list(full_disk.folder.glob(".labels.csv.*"))
    full_disk.free()
    rerun = invoke(*args)
    assert rerun.exit_code == 0, rerun.output
    assert _count(rerun.stderr, "tagged") == 0 and _count(rerun.stderr, "already tagged") == 3
    assert len(out.read_text().splitlines()) == 4


def test_full_disk_for_sidecars_stops_at_the_first(tmp_path: Path, full_disk: Disk, tiny_model: Path) -> None:
    done = invoke(
        "scan", str(full_disk.folder), "-m", str(tiny_model), "--sidecar", "--state", str(tmp_path / "s.db")
    )
    assert done.exit_code == 1
    assert done.output.count("disk is full") == 1 and ".vidtag.json" in done.output
    assert not list(full_disk.folder.glob("*.vidtag.json")) and not list(full_disk.folder.glob(".*.tmp"))
    with sqlite3.connect(tmp_path / "s.db") as db:  # what was tagged is kept
        assert db.execute("select count(*) from results").fetchone()[0] >= 1


def test_full_disk_for_the_daemon_output_exits_with_the_message_and_loses_nothing(
    tmp_path: Path, full_disk: Disk, tiny_model: Path
) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    shutil.copy(full_disk.folder / "a.mp4", root / "a.mp4")
    out, state = full_disk.folder / "out.jsonl", tmp_path / "s.db"
    args = ["watch", str(root), "-o", str(out), "--state", str(state), "-m", str(tiny_model)]
    failed = invoke(*args, "--settle", "0.1", "--workers", "1")
    assert failed.exit_code == 1
    assert "out.jsonl" in failed.output and "disk is full" in failed.output
    with sqlite3.connect(state) as db:  # recorded, waiting to be appended
        assert db.execute("select count(*) from results where emitted = 0").fetchone()[0] == 1
    assert out.read_bytes() == b""


def test_full_disk_under_the_daemon_log_stops_it_with_the_message(
    tmp_path: Path, full_disk: Disk, tiny_model: Path
) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    log = full_disk.folder / "vidtag.log"
    done = invoke(
        "watch", str(root), "-o", str(tmp_path / "out.csv"), "-m", str(tiny_model), "--log", str(log)
    )
    assert done.exit_code == 1
    assert "vidtag.log" in done.output and "disk is full" in done.output


@pytest.mark.skipif(os.geteuid() != 0, reason="a full tmpfs needs root to mount")
def test_full_disk_under_the_state_database(tmp_path: Path, tiny_model: Path, video_factory: Any) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    if not _mount(folder, "size=64k"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        (folder / "filler").write_bytes(b"\0" * 60_000)
        videos = one_video(tmp_path, video_factory)
        done = invoke(
            "scan", str(videos), "-m", str(tiny_model), "-o", "-", "--state", str(folder / "state.db")
        )
        assert done.exit_code == 1
        assert "state database" in done.output and "disk is full" in done.output
    finally:
        _umount(folder)


# --- SQLite errors, injected --------------------------------------------------------------


class _Failing:
    """A connection whose writes fail as SQLite does; everything else is the real one."""

    def __init__(self, conn: sqlite3.Connection, message: str, code: str) -> None:
        self.conn, self.message, self.code = conn, message, code

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT"):
            error = sqlite3.OperationalError(self.message)
            error.sqlite_errorname = self.code  # type: ignore[attr-defined]
            raise error
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@pytest.mark.parametrize(
    ("message", "code", "said"),
    [
        ("database is locked", "SQLITE_BUSY", "another process kept it locked for over 30 s"),
        ("database or disk is full", "SQLITE_FULL", "the disk is full"),
        ("database disk image is malformed", "SQLITE_CORRUPT", "it is damaged; move it away"),
    ],
)
def test_sqlite_errors_are_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, video_factory: Any, tiny_model: Path, message, code, said
) -> None:
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _Failing(real_connect(*a, **k), message, code))
    videos = one_video(tmp_path, video_factory)
    state = tmp_path / "state.db"
    done = invoke(
        "scan", str(videos), "-m", str(tiny_model), "-o", str(tmp_path / "o.csv"), "--state", str(state)
    )
    assert done.exit_code == 1
    assert f"state database {state}: {said}" in done.output and message in done.output


def test_a_file_that_is_not_a_state_database_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not sqlite" * 100)
    done = invoke("scan", str(tmp_path), "-m", str(tiny_model), "-o", "-", "--state", str(state))
    assert done.exit_code == 1 and "not an SQLite database" in done.output
    assert state.read_bytes() == b"this is not sqlite" * 100  # left as it was


# --- folders that take no files -------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A read-only folder: a tmpfs remounted read-only (root), else file creation refused."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = _mount(folder, "size=1m")
    if real:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, timeout=30)
    else:
        inner = fsutil.tempfile.mkstemp

        def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
            if dir is not None and Path(dir) == folder:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return inner(*args, dir=dir, **kwargs)

        monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)
    try:
        yield folder
    finally:
        if real:
            _umount(folder)


def _no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the usage error")

    monkeypatch.setattr(classify, "load_classifier", refuse)


def test_read_only_output_folder_is_a_usage_error_before_the_model_loads(
    tmp_path: Path, read_only: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_model_load(monkeypatch)
    for args in (
        ["scan", str(tmp_path), "-o", str(read_only / "labels.csv")],
        ["scan", str(tmp_path), "-o", "-", "--state", str(read_only / "s.db")],
        ["watch", str(tmp_path), "-o", str(read_only / "labels.csv")],
        ["watch", str(tmp_path), "-o", str(tmp_path / "x.csv"), "--log", str(read_only / "v.log")],
    ):
        done = invoke(*args, "-m", str(tiny_model))
        assert done.exit_code == 2, (args, done.output)
        assert "cannot write in" in done.output and "Read-only file system" in done.output


# --- where the state lives -------------------------------------------------------------------


@pytest.fixture
def nfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that vidtag takes for an NFS mount."""
    share = tmp_path / "share"
    share.mkdir()
    monkeypatch.setattr(
        state_paths,
        "network_filesystem",
        lambda path: "nfs4" if os.path.realpath(path).startswith(str(share)) else None,
    )
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return share


def test_state_on_a_network_share_is_refused_unless_allowed(
    tmp_path: Path, nfs: Path, video_factory: Any, tiny_model: Path
) -> None:
    videos = one_video(tmp_path, video_factory)
    state = nfs / "state.db"
    refused = invoke("scan", str(videos), "-m", str(tiny_model), "--state", str(state))
    assert refused.exit_code == 2
    assert "nfs4" in refused.output and "--allow-network-state" in refused.output
    assert not state.exists()
    allowed = invoke(
        "scan", str(videos), "-m", str(tiny_model), "--state", str(state), "--allow-network-state"
    )
    assert allowed.exit_code == 0 and state.is_file()


def test_output_on_a_network_share_keeps_its_state_on_the_local_disk(
    tmp_path: Path, nfs: Path, video_factory: Any, tiny_model: Path
) -> None:
    videos = one_video(tmp_path, video_factory)
    out = nfs / "labels.csv"
    assert invoke("scan", str(videos), "-m", str(tiny_model), "-o", str(out)).exit_code == 0
    assert sorted(p.name for p in nfs.iterdir() if not p.name.endswith(".lock")) == ["labels.csv"]
    (db,) = (tmp_path / "xdg" / "vidtag").glob("labels.csv-*.db")
    rerun = invoke("scan", str(videos), "-m", str(tiny_model), "-o", str(out))
    assert _count(rerun.stderr, "already tagged") == 1
    assert db.stat().st_size > 0


def test_watch_with_sidecars_only_keeps_its_state_off_the_watched_share(
    tmp_path: Path, nfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An earlier vidtag kept it in ROOT/.vidtag.db: its rows are copied over, not lost.
    with state_module.StateStore(nfs / ".vidtag.db") as old:
        old.record(
            VideoFile(str(nfs / "a.mp4"), 1, 1),
            "m",
            VideoResult(str(nfs / "a.mp4")),
        )
    done = invoke("watch", str(nfs), "--sidecar", "-m", str(tmp_path / "no-such-model"))
    assert done.exit_code == 2  # stopped at the model, after the state was chosen
    (db,) = (tmp_path / "xdg" / "vidtag").glob("watch-*.db")
    with sqlite3.connect(db) as conn:
        assert conn.execute("select path from results").fetchall() == [(str(nfs / "a.mp4"),)]


def test_systemd_state_directory_wins_over_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'systemd'}:{tmp_path / 'other'}")
    assert state_module.state_dir() == tmp_path / "systemd"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert state_module.state_dir() == tmp_path / "xdg" / "vidtag"


def test_the_daemon_log_is_reopened_when_logrotate_moves_it(tmp_path: Path) -> None:
    import threading

    from tagger import logs

    log_file = tmp_path / "watch.log"
    stop = threading.Event()
    try:
        logs.to_file(str(log_file), logging.INFO)
        faults = logs.stop_on_fault(stop, str(log_file))
        logging.getLogger("tagger.daemon").info("before rotation")
        log_file.rename(tmp_path / "watch.log.1")  # what logrotate does
        logging.getLogger("tagger.daemon").info("after rotation")
    finally:
        logs.install(logging.StreamHandler(), logging.WARNING)
    assert "before rotation" in (tmp_path / "watch.log.1").read_text()
    assert "after rotation" in log_file.read_text() and "before" not in log_file.read_text()
    assert not faults and not stop.is_set()
