"""Tests for tagger.sinks.Appender: whole rows only, through reopen, torn tails and kills."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tagger import sinks
from tagger.records import FIELDS, OutputError, VideoResult
from tagger.sinks import Appender, append

from .test_sinks import NASTY_ERROR, csv_cell
from .test_sinks import make_rows as table_rows

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def make_rows() -> list[dict[str, Any]]:
    """The table rows of the sinks tests, plus the rows only a daemon appends."""
    extra = [
        VideoResult(path="/videos/old.mp4", model="m", status="moved", error="moved to /videos/new.mp4"),
        VideoResult(path="/videos/gone.mp4", model="m", status="removed"),
    ]
    return table_rows() + [r.row() for r in extra]


def as_csv(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{k: csv_cell(row[k]) for k in FIELDS} for row in rows]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == FIELDS
        return list(reader)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]


def read_rows(path: Path) -> list[dict[str, Any]]:
    return read_csv(path) if path.suffix == ".csv" else read_jsonl(path)


def expected(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return as_csv(rows) if path.suffix == ".csv" else rows


# --- round trips -------------------------------------------------------------------------


def test_csv_rows_round_trip(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "out.csv"
    with Appender(str(target)) as out:
        for row in rows:
            out.write_row(row)
    back = read_csv(target)
    assert back == as_csv(rows)
    assert back[2]["error"] == NASTY_ERROR
    assert [r["status"] for r in back] == ["ok", "ok", "error", "moved", "removed"]


def test_a_table_with_the_older_columns_keeps_them(tmp_path: Path) -> None:
    from tagger.records import FIELDS_BEFORE_SEGMENTS

    target = tmp_path / "out.csv"
    old_row = ",".join(["/videos/a.mp4", "red", "0.9", "red", "0.900000", "2", "4.0", "m", "ok", ""])
    target.write_bytes((",".join(FIELDS_BEFORE_SEGMENTS) + "\r\n" + old_row + "\r\n").encode())
    with Appender(str(target)) as out:
        out.write(VideoResult(path="/videos/b.mp4", model="m", status="removed"))
    with open(target, newline="", encoding="utf-8") as f:
        back = list(csv.reader(f))
    assert back[0] == list(FIELDS_BEFORE_SEGMENTS) and "segment_labels" not in back[0]
    assert [len(r) for r in back] == [len(FIELDS_BEFORE_SEGMENTS)] * 3 and back[2][0] == "/videos/b.mp4"


@pytest.mark.parametrize("name", ["out.jsonl", "out.ndjson"])
def test_jsonl_rows_round_trip(tmp_path: Path, name: str) -> None:
    rows = make_rows()
    target = tmp_path / name
    with Appender(str(target)) as out:
        for row in rows:
            out.write_row(row)
    text = target.read_text(encoding="utf-8")
    assert "日本語" in text  # readable, not \u-escaped
    back = read_jsonl(target)
    assert back == rows
    assert [list(obj) for obj in back] == [list(FIELDS)] * len(rows)


def test_header_written_once_across_reopen(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "out.csv"
    for row in rows[:2]:
        with Appender(str(target)) as out:
            out.write_row(row)
    Appender(str(target)).close()  # opening a good file changes nothing
    with Appender(str(target)) as out:
        out.write_row(rows[2])
    data = target.read_bytes()
    assert data.count(",".join(FIELDS).encode()) == 1
    assert data.startswith(",".join(FIELDS).encode() + b"\r\n")
    assert read_csv(target) == as_csv(rows[:3])


def test_new_empty_csv_gets_header_and_jsonl_stays_empty(tmp_path: Path) -> None:
    Appender(str(tmp_path / "a.csv")).close()
    Appender(str(tmp_path / "a.jsonl")).close()
    assert (tmp_path / "a.csv").read_bytes() == ",".join(FIELDS).encode() + b"\r\n"
    assert (tmp_path / "a.jsonl").read_bytes() == b""


def test_appends_to_a_batch_table(tmp_path: Path) -> None:
    rows = make_rows()
    for name in ("out.csv", "out.jsonl"):
        target = tmp_path / name
        sinks.write_table(str(target), rows[:2])
        with Appender(str(target)) as out:
            out.write_row(rows[2])
        assert read_rows(target) == expected(target, rows[:3])


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_every_write_reaches_the_file_before_close(tmp_path: Path, name: str) -> None:
    rows = make_rows()
    target = tmp_path / name
    out = Appender(str(target))
    try:
        for i, row in enumerate(rows):
            out.write_row(row)
            # A second handle sees every row at once: nothing waits in a buffer.
            assert read_rows(target) == expected(target, rows[: i + 1])
    finally:
        out.close()


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_each_row_is_one_write_then_fsync(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, bytes]] = []
    real_write, real_fsync = os.write, os.fsync

    def spy_write(fd: int, data: Any) -> int:
        calls.append(("write", fd, bytes(data)))
        return real_write(fd, data)

    def spy_fsync(fd: Any) -> None:
        calls.append(("fsync", fd, b""))
        real_fsync(fd)

    target = tmp_path / name
    out = Appender(str(target))
    monkeypatch.setattr(append.os, "write", spy_write)
    monkeypatch.setattr(append.os, "fsync", spy_fsync)
    rows = make_rows()
    try:
        for row in rows:
            out.write_row(row)
    finally:
        monkeypatch.undo()
        out.close()
    assert [c[0] for c in calls] == ["write", "fsync"] * len(rows)
    assert len({c[1] for c in calls}) == 1
    lines = [c[2] for c in calls if c[0] == "write"]
    assert all(line.endswith(b"\n") for line in lines)
    assert b"".join(lines) == target.read_bytes()[-len(b"".join(lines)) :]


def test_write_after_close_raises(tmp_path: Path) -> None:
    out = Appender(str(tmp_path / "out.jsonl"))
    out.close()
    out.close()  # twice is harmless
    with pytest.raises(ValueError):
        out.write_row(make_rows()[0])


def test_non_utf8_path_still_writes_a_valid_jsonl_row(tmp_path: Path) -> None:
    weird = os.fsdecode(b"/videos/caf\xe9.mp4")  # a Latin-1 name: a lone surrogate in str
    target = tmp_path / "out.jsonl"
    with Appender(str(target)) as out:
        out.write_row(VideoResult(path=weird, model="m").row())
    (back,) = read_jsonl(target)
    assert back["path"] == weird


# --- torn tails ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "torn"),
    [
        ("out.csv", b"/videos/half.mp4,jugg"),
        # Cut inside a quoted field just after its newline: the file ends in \n yet the row
        # is open, and a csv reader would swallow every later row into it.
        ("out.csv", b'/videos/half.mp4,,,,,0,,m,error,"decode failed\n'),
        ("out.csv", b'/videos/half.mp4,,,,,0,,m,error,"say ""hi"""\r'),
        ("out.jsonl", b'{"path": "/videos/half.mp4", "lab'),
    ],
    ids=["csv-plain", "csv-open-quote", "csv-no-newline", "jsonl"],
)
def test_torn_tail_is_cut_off(
    tmp_path: Path, name: str, torn: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rows = make_rows()
    target = tmp_path / name
    with Appender(str(target)) as out:
        out.write_row(rows[2])  # the NASTY_ERROR row: quoted newlines in a whole CSV row
    with open(target, "ab") as f:
        f.write(torn)
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"), Appender(str(target)) as out:
        out.write_row(rows[0])
    assert read_rows(target) == expected(target, [rows[2], rows[0]])
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"dropped {len(torn)} bytes" in warning.getMessage()
    assert str(target) in warning.getMessage()


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_whole_file_no_warning(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / name
    with Appender(str(target)) as out:
        out.write_row(make_rows()[2])
    before = target.read_bytes()
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        Appender(str(target)).close()
    assert target.read_bytes() == before
    assert caplog.records == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("out.csv", b"path,lab"),
        ("out.csv", ",".join(FIELDS).encode() + b"\r"),
        ("out.jsonl", b'{"pa'),
    ],
)
def test_torn_first_write_is_started_again(tmp_path: Path, name: str, content: bytes) -> None:
    target = tmp_path / name
    target.write_bytes(content)
    with Appender(str(target)) as out:
        out.write_row(make_rows()[0])
    assert read_rows(target) == expected(target, make_rows()[:1])


def test_huge_unfinished_tail_is_refused_not_cut(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with Appender(str(target)) as out:
        out.write_row(make_rows()[0])
    with open(target, "ab") as f:
        f.write(b'{"path": "' + b"x" * (2 * 1024 * 1024))
    before = target.read_bytes()
    with pytest.raises(OutputError, match="whole row"):
        Appender(str(target))
    assert target.read_bytes() == before


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"name,size\nfoo,1\n",
        b"path,label\n/videos/a.mp4,x\n",
        b"PATH," + ",".join(FIELDS[1:]).encode() + b"\n",
        b",".join(f.encode() for f in FIELDS) + b",extra\n",
        b"\n",
    ],
    ids=["other", "fewer-columns", "case", "extra-column", "blank-line"],
)
def test_foreign_csv_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    target = tmp_path / "theirs.csv"
    target.write_bytes(content + b"half a line")
    with pytest.raises(OutputError) as info:
        Appender(str(target))
    assert str(target) in str(info.value)
    assert "did not write" in str(info.value)
    assert target.read_bytes() == content + b"half a line"


@pytest.mark.parametrize("content", [b'{"name": "x"}\n', b"[1, 2]\n", b"hello"])
def test_foreign_jsonl_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    target = tmp_path / "theirs.jsonl"
    target.write_bytes(content)
    with pytest.raises(OutputError, match="did not write"):
        Appender(str(target))
    assert target.read_bytes() == content


@pytest.mark.parametrize("name", ["out.parquet", "-"])
def test_parquet_and_stdout_are_refused(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError) as info:
        Appender(name)
    message = str(info.value)
    assert ".csv" in message and ".jsonl" in message
    assert "appends" in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_suffix_and_missing_folder_are_output_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        Appender(str(tmp_path / "out.txt"))
    with pytest.raises(OutputError, match="missing"):
        Appender(str(tmp_path / "missing" / "out.csv"))


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(OutputError):
        Appender(str(tmp_path / "out.csv"))


# --- kills ---------------------------------------------------------------------------------


def appender_child(target: Path, body: str) -> str:
    return textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from tagger.records import Tag, VideoResult
        from tagger.sinks import Appender

        out = Appender({str(target)!r})
        def row(i, pad=0):
            return VideoResult.failed(
                f"/videos/{{i}}.mp4", f'broken, "badly"\\nline two {{i}} ' + "x" * pad, model="m"
            ).row()
        """
    ) + textwrap.dedent(body)


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_sigkill_right_after_a_write_leaves_whole_rows(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    code = appender_child(
        target,
        """
        for i in range(50):
            out.write_row(row(i))
            if i == 20:
                os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=PROJECT_ROOT, capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    size = target.stat().st_size
    with Appender(str(target)):
        pass
    assert target.stat().st_size == size  # nothing was torn, so nothing was cut
    back = read_rows(target)
    assert [r["path"] for r in back] == [f"/videos/{i}.mp4" for i in range(21)]
    assert all(r["error"].startswith('broken, "badly"\nline two') for r in back)


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_sigkill_at_any_moment_leaves_parseable_file(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    # Large rows make a kill inside a write likely to land at many places across runs.
    code = appender_child(
        target,
        """
        i = 0
        while True:
            out.write_row(row(i, pad=100_000))
            i += 1
        """,
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if target.exists() and target.stat().st_size > 2_000_000:
                break
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stderr:
            child.stderr.close()
    with Appender(str(target)):
        pass
    back = read_rows(target)
    assert len(back) >= 10
    assert [r["path"] for r in back] == [f"/videos/{i}.mp4" for i in range(len(back))]
    assert all(r["status"] == "error" and len(r["error"]) > 100_000 for r in back)
