"""vidtag watch as a process over a real mount that goes away and comes back on another device,
as a share that is remounted or a disk mounted late does; needs permission to mount a tmpfs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from .test_daemon import _daemon, rows_for, wait_for


def _mount(target: Path) -> None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"mount exited {done.returncode}")


def _umount(target: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(["umount", str(target)], capture_output=True, text=True, timeout=30)
        # Busy while something still has a file open there; that ends when its read does.
        if done.returncode == 0 or time.monotonic() > deadline or "busy" not in done.stderr:
            break
        time.sleep(0.1)
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"umount exited {done.returncode}")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Mounts a fresh tmpfs on a folder; whatever is still mounted is unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount commands here")
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        _mount(probe)
    except OSError as exc:
        if "permission denied" in str(exc).lower() or "not permitted" in str(exc).lower():
            pytest.skip(f"mounting is not permitted here: {exc}")
        raise
    _umount(probe)
    mounted: list[Path] = []

    def mount(target: Path) -> None:
        _mount(target)
        mounted.append(target)

    yield mount
    for target in reversed(mounted):
        # Lazy: a daemon killed in the middle of a read must not leave the mount behind.
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def test_root_remounted_on_another_device_is_watched_again(
    tmp_path: Path, tiny_model: Path, video_factory: Callable[..., Path], mounts: Callable[[Path], None]
) -> None:
    root, hold, out = tmp_path / "lib", tmp_path / "hold", tmp_path / "out.csv"
    root.mkdir()
    hold.mkdir()
    sample = video_factory(["red"] * 40)
    mounts(root)
    first_dev = os.stat(root).st_dev
    shutil.copy(sample, root / "first.mp4")
    daemon = _daemon(root, out, tiny_model)
    log = _Log(daemon)
    try:
        assert wait_for(lambda: len(rows_for(out, "first.mp4")) == 1, 90), log.text()
        _umount(root)
        # Seen unmounted: the empty folder beneath, where results are expected, is not the root.
        assert wait_for(lambda: "went away" in log.text(), 30), log.text()
        # The kernel hands a freed device number to the next mount: this mount takes the old
        # one, so that the root comes back on another device, as a share remounted later does.
        mounts(hold)
        mounts(root)
        assert os.stat(root).st_dev != first_dev
        shutil.copy(sample, root / "second.mp4")
        assert wait_for(lambda: len(rows_for(out, "second.mp4")) == 1, 60), log.text()
        # Rescanned when it came back: what the new mount lacks is gone for real.
        assert wait_for(lambda: [r["status"] for r in rows_for(out, "first.mp4")] == ["ok", "removed"], 30)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)
        log.close()
    [second] = rows_for(out, "second.mp4")
    assert second["status"] == "ok" and second["label"] == "red"
    assert daemon.returncode == 0, log.text()
    assert "back on another device" in log.text(), log.text()


class _Log:
    """The daemon's stderr, read as it comes, so a test can wait for a line."""

    def __init__(self, daemon: subprocess.Popen[str]) -> None:
        assert daemon.stderr is not None
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(daemon.stderr,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def close(self) -> None:
        self.thread.join(timeout=10)
