"""vidtag watch end to end: the real observer on temporary folders, the tiny model, the output
file and the state store; the daemon is driven by a stop event (and by signals in a process)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tagger.clips.pool import InlineDecoder
from tagger.daemon import Daemon, WatchOptions
from tagger.engines.local import LocalEngine
from tagger.options import TagOptions
from tagger.sinks import Appender, Outputs
from tagger.state import StateStore

from .conftest import ROOT


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def rows_for(path: Path, name: str) -> list[dict[str, str]]:
    return [r for r in rows(path) if Path(r["path"]).name == name]


class Running:
    """A Daemon in a thread, with a counter of model calls."""

    def __init__(self, root: Path, out: Path, classifier, poll: bool, **watch: object) -> None:  # type: ignore[no-untyped-def]
        self.calls = 0
        self.classifier = classifier
        original = classifier.predict

        def counted(clips):  # type: ignore[no-untyped-def]
            self.calls += len(clips)
            return original(clips)

        self.original = original
        classifier.predict = counted
        self.store = StateStore(str(out) + ".vidtag.db")
        self.appender = Appender(str(out))
        settings: dict[str, object] = {"settle_s": 0.4, "rescan_s": 60.0, "poll": poll, **watch}
        options = WatchOptions(**settings)  # type: ignore[arg-type]
        # Decoding in the daemon's thread: what is under test is everything around it.
        engine = LocalEngine(classifier, TagOptions(top_k=1), InlineDecoder())
        self.daemon = Daemon([str(root)], engine, self.store, Outputs([self.appender]), options)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.classifier.predict = self.original
        self.appender.close()
        self.store.close()
        assert not self.thread.is_alive(), "the daemon did not stop"


@pytest.fixture(params=[False, True], ids=["inotify", "poll"])
def poll(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def sample(video_factory) -> Path:  # type: ignore[no-untyped-def]
    return video_factory(["red"] * 40)


def write_slowly(src: Path, dst: Path, chunks: int = 8, pause: float = 0.15) -> None:
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with dst.open("wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def test_slowly_written_file_is_tagged_once_after_it_completes(tmp_path, classifier, sample, poll):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    with Running(root, out, classifier, poll) as run:
        write_slowly(sample, root / "slow.mp4")
        finished = time.monotonic()
        assert wait_for(lambda: len(rows_for(out, "slow.mp4")) == 1)
        assert wait_for(lambda: time.monotonic() - finished > 1.5, 3)  # no second row comes later
    [row] = rows_for(out, "slow.mp4")
    assert row["status"] == "ok" and row["label"] == "red"
    assert run.calls == 1


def test_burst_of_files_all_tagged_once(tmp_path, classifier, sample, poll):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    names = [f"b{i:03d}.mp4" for i in range(40)]
    with Running(root, out, classifier, poll):
        for name in names:
            shutil.copy(sample, root / name)
        assert wait_for(lambda: len(rows(out)) >= len(names), 60)
    assert sorted(Path(r["path"]).name for r in rows(out)) == names
    assert all(r["status"] == "ok" for r in rows(out))


def test_temp_name_renamed_into_place_is_tagged_once(tmp_path, classifier, sample, poll):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    with Running(root, out, classifier, poll) as run:
        write_slowly(sample, root / "movie.mp4.part", chunks=4)
        os.rename(root / "movie.mp4.part", root / "movie.mp4")
        assert wait_for(lambda: len(rows_for(out, "movie.mp4")) == 1)
        time.sleep(1.0)
    assert [Path(r["path"]).name for r in rows(out)] == ["movie.mp4"]
    assert run.calls == 1


def test_rename_moves_the_result_without_running_the_model(tmp_path, classifier, sample, poll):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    (root / "sub").mkdir(parents=True)
    with Running(root, out, classifier, poll) as run:
        shutil.copy(sample, root / "a.mp4")
        assert wait_for(lambda: len(rows_for(out, "a.mp4")) == 1)
        calls = run.calls
        os.rename(root / "a.mp4", root / "sub" / "b.mp4")
        assert wait_for(lambda: len(rows_for(out, "b.mp4")) == 1)
        time.sleep(1.0)
        assert run.calls == calls
    moved = [r for r in rows_for(out, "a.mp4") if r["status"] == "moved"]
    assert len(moved) == 1 and "b.mp4" in moved[0]["error"]
    [b] = rows_for(out, "b.mp4")
    assert b["status"] == "ok" and b["label"] == "red"


def test_deleted_video_is_marked_removed(tmp_path, classifier, sample):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    with Running(root, out, classifier, poll=False) as run:
        shutil.copy(sample, root / "gone.mp4")
        assert wait_for(lambda: len(rows_for(out, "gone.mp4")) == 1)
        os.remove(root / "gone.mp4")
        assert wait_for(lambda: len(rows_for(out, "gone.mp4")) == 2)
        assert run.store.find(str(root / "gone.mp4"), run.daemon.model)[1].status == "removed"
    assert [r["status"] for r in rows_for(out, "gone.mp4")] == ["ok", "removed"]


def test_bad_file_is_retried_with_back_off_then_recorded_once(tmp_path, classifier, sample, caplog):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    with (
        caplog.at_level("WARNING", logger="tagger.daemon"),
        Running(root, out, classifier, poll=False, retries=2, retry_base_s=0.2, rescan_s=1.0),
    ):
        (root / "bad.mp4").write_bytes(b"\x00" * 4096)
        shutil.copy(sample, root / "good.mp4")
        assert wait_for(lambda: len(rows_for(out, "bad.mp4")) == 1)
        time.sleep(2.5)  # two more rescans: an error already recorded is not tried again
    [bad] = rows_for(out, "bad.mp4")
    assert bad["status"] == "error" and bad["error"]
    assert [r["status"] for r in rows_for(out, "good.mp4")] == ["ok"]
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "bad.mp4" in r.getMessage()]
    # Tried three times in all: two retries with back-off, then one error, and nothing after.
    retries = [m for level, m in said if level == "WARNING" and "(retry" in m]
    assert len(retries) == 2 and "(retry 1 of 2" in retries[0] and "(retry 2 of 2" in retries[1]
    assert sum(level == "ERROR" for level, _ in said) == 1


def _daemon(root: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "tagger",
        "watch",
        str(root),
        "-o",
        str(out),
        "-m",
        str(model),
        "--settle",
        "0.3",
        "--workers",
        "1",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_sigterm_stops_cleanly_and_a_restart_tags_nothing_twice(tmp_path, tiny_model, sample, processes):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    for i in range(6):
        shutil.copy(sample, root / f"v{i}.mp4")
    first = _daemon(root, out, tiny_model)
    processes.append(first)
    assert wait_for(lambda: len(rows(out)) == 6, 90), first.stderr.read() if first.poll() is not None else ""
    first.send_signal(signal.SIGTERM)
    _, log = first.communicate(timeout=15)
    assert first.returncode == 0, log
    assert "stopping" in log and "INFO" in log  # plain, timestamped log lines when not a terminal

    # A second daemon on the same state refuses to start while one runs.
    second = _daemon(root, out, tiny_model)
    processes.append(second)
    lock = Path(str(out) + ".vidtag.db.lock")
    assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(second.pid), 60)
    third = _daemon(root, out, tiny_model)
    processes.append(third)
    _, refusal = third.communicate(timeout=60)
    assert third.returncode != 0 and "in use by another vidtag process" in refusal

    shutil.copy(sample, root / "late.mp4")
    assert wait_for(lambda: len(rows_for(out, "late.mp4")) == 1, 60)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=15)
    assert sorted(Path(r["path"]).name for r in rows(out)) == sorted(
        [f"v{i}.mp4" for i in range(6)] + ["late.mp4"]
    )


def _scan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tagger", "scan", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_scan_aimed_at_a_running_daemon_is_refused_with_its_pid(tmp_path, tiny_model, sample, processes):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    shutil.copy(sample, root / "v.mp4")
    daemon = _daemon(root, out, tiny_model)
    processes.append(daemon)
    assert wait_for(lambda: len(rows(out)) == 1, 90)
    before = out.read_bytes()
    model = ["-m", str(tiny_model)]
    for args in (
        ["-o", str(out)],  # its output (and so its state)
        ["-o", str(out), "--state", str(tmp_path / "other.db")],  # its output, another state
        ["-o", str(tmp_path / "other.csv"), "--state", str(out) + ".vidtag.db"],  # its state
    ):
        refused = _scan(str(root), *model, *args)
        assert refused.returncode == 1, refused.stderr
        assert f"in use by another vidtag process (pid {daemon.pid})" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert out.read_bytes() == before  # the daemon's file was not replaced under it
    daemon.send_signal(signal.SIGTERM)
    daemon.communicate(timeout=30)
    assert _scan(str(root), *model, "-o", str(out)).returncode == 0  # its own once the daemon is gone


def test_sigterm_mid_work_drops_unscored_clips_and_a_restart_tags_them(
    tmp_path, tiny_model, sample, processes
):
    root, out = tmp_path / "lib", tmp_path / "out.csv"
    root.mkdir()
    names = [f"v{i:02d}.mp4" for i in range(12)]
    for name in names:
        shutil.copy(sample, root / name)
    busy = ["--clips", "8", "--batch-size", "1"]
    first = _daemon(root, out, tiny_model, *busy)
    processes.append(first)
    assert wait_for(lambda: len(rows(out)) >= 1, 90)
    first.send_signal(signal.SIGTERM)
    _, log = first.communicate(timeout=30)
    assert first.returncode == 0, log
    assert "Traceback" not in log
    second = _daemon(root, out, tiny_model, *busy)
    processes.append(second)
    assert wait_for(lambda: len(rows(out)) == len(names), 90)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=30)
    assert sorted(Path(r["path"]).name for r in rows(out)) == names  # each exactly once
    assert all(r["status"] == "ok" for r in rows(out))


def test_watch_usage_errors(tmp_path, tiny_model):
    from click.testing import CliRunner

    from tagger.cli import cli

    root = tmp_path / "lib"
    root.mkdir()
    parquet = CliRunner().invoke(
        cli, ["watch", str(root), "-o", str(tmp_path / "x.parquet"), "-m", str(tiny_model)]
    )
    assert parquet.exit_code == 2 and ".csv or .jsonl" in parquet.output
    nothing = CliRunner().invoke(cli, ["watch", str(root), "-m", str(tiny_model)])
    assert nothing.exit_code == 2 and "--output" in nothing.output


def test_watch_passes_the_inference_options_to_the_model(tmp_path, model_load_spy):
    from click.testing import CliRunner

    from tagger.cli import cli

    root = tmp_path / "lib"
    root.mkdir()
    args = ["watch", str(root), "-o", str(tmp_path / "out.csv"), "-m", "some-model"]
    done = CliRunner().invoke(
        cli, [*args, "--device", "cpu", "--precision", "fp32", "--compile", "--runtime", "onnx"]
    )
    assert done.exit_code == 2 and "stop here" in done.output
    assert model_load_spy == {
        "model": "some-model",
        "device": "cpu",
        "precision": "fp32",
        "compile": True,
        "runtime": "onnx",
    }
