"""Tests for tagger.sinks: table formats round-trip, atomic writes, sidecar ownership."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger.fsutil import atomic_open
from tagger.records import FIELDS, OutputError, Tag, VideoResult
from tagger.sinks import (
    SIDECAR_SUFFIX,
    TABLE_FORMATS,
    sidecar_path,
    table_format,
    write_sidecar,
    write_table,
)

NASTY_ERROR = 'decode failed: "bad, very bad"\nsecond line, with a comma'


def make_rows() -> list[dict[str, Any]]:
    results = [
        VideoResult(
            path="/videos/plain.mp4",
            tags=(Tag("juggling", 0.875), Tag("dancing", 0.125)),
            clips=4,
            duration_s=12.5,
            model="videomae-base",
        ),
        VideoResult(
            path='/vidéos/日本語 clip, "quoted".mkv',
            tags=(Tag("café ☕", 0.5),),
            clips=1,
            duration_s=None,
            model="videomae-base",
        ),
        VideoResult.failed("/videos/broken.avi", NASTY_ERROR, model="videomae-base"),
    ]
    return [r.row() for r in results]


def error_rows() -> list[dict[str, Any]]:
    return [
        VideoResult.failed(f"/videos/bad{i}.mp4", f'error {i}, "quoted"', model="m").row() for i in range(3)
    ]


def failing_rows(rows: list[dict[str, Any]], after: int) -> Iterator[dict[str, Any]]:
    for i, row in enumerate(rows):
        if i == after:
            raise RuntimeError("boom midway")
        yield row


def csv_cell(value: Any) -> str:
    return "" if value is None else str(value)


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_parquet(path)
    assert list(frame.columns) == [*FIELDS, "path_bytes"]
    assert frame["path_bytes"].isna().all()  # only names that are not UTF-8 fill it
    rows = []
    for record in frame.drop(columns=["path_bytes"]).to_dict("records"):
        rows.append(
            {
                k: None if (isinstance(v, float) and math.isnan(v)) or v is pd.NA else v
                for k, v in record.items()
            }
        )
    return rows


# --- table_format ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("-", "csv"),
        ("out.csv", "csv"),
        ("dir/out.CSV", "csv"),
        ("out.jsonl", "jsonl"),
        ("out.ndjson", "jsonl"),
        ("out.parquet", "parquet"),
    ],
)
def test_table_format_from_suffix(path: str, fmt: str) -> None:
    assert table_format(path) == fmt
    assert fmt in TABLE_FORMATS


@pytest.mark.parametrize("path", ["out.txt", "out", "out.json", "csv"])
def test_table_format_unknown_suffix_names_path_and_choices(path: str) -> None:
    with pytest.raises(OutputError) as info:
        table_format(path)
    message = str(info.value)
    assert path in message
    for suffix in (".csv", ".jsonl", ".parquet"):
        assert suffix in message


def test_write_table_unknown_suffix_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    with pytest.raises(OutputError):
        write_table(str(target), make_rows())
    assert list(tmp_path.iterdir()) == []


# --- round trips -------------------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "out.csv"
    assert write_table(str(target), iter(rows)) == len(rows)
    with open(target, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == FIELDS
        back = list(reader)
    assert back == [{k: csv_cell(row[k]) for k in FIELDS} for row in rows]
    assert back[2]["error"] == NASTY_ERROR
    assert back[2]["score"] == ""


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "out.jsonl"
    assert write_table(str(target), iter(rows)) == len(rows)
    text = target.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == len(rows)
    # ensure_ascii=False keeps unicode paths readable in the file.
    assert "日本語" in text
    back = [json.loads(line) for line in lines]
    assert back == rows
    assert [list(obj) for obj in back] == [list(FIELDS)] * len(rows)
    assert back[2]["score"] is None


def test_ndjson_is_jsonl(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "out.ndjson"
    write_table(str(target), rows)
    assert [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()] == rows


def test_parquet_round_trip(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "out.parquet"
    assert write_table(str(target), iter(rows)) == len(rows)
    assert read_parquet_rows(target) == rows


def test_parquet_all_error_rows(tmp_path: Path) -> None:
    import pandas as pd

    rows = error_rows()
    target = tmp_path / "errors.parquet"
    assert write_table(str(target), rows) == len(rows)
    frame = pd.read_parquet(target)
    assert str(frame["score"].dtype) == "float64"
    assert str(frame["duration_s"].dtype) == "float64"
    assert str(frame["clips"].dtype) == "int64"
    assert read_parquet_rows(target) == rows


def test_parquet_empty_table_keeps_columns(tmp_path: Path) -> None:
    import pandas as pd

    target = tmp_path / "empty.parquet"
    assert write_table(str(target), iter([])) == 0
    frame = pd.read_parquet(target)
    assert list(frame.columns) == [*FIELDS, "path_bytes"]
    assert len(frame) == 0


def test_dash_writes_csv_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = make_rows()
    out = io.StringIO()
    assert write_table("-", iter(rows), stdout=out) == len(rows)
    back = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert back == [{k: csv_cell(row[k]) for k in FIELDS} for row in rows]
    assert list(tmp_path.iterdir()) == []


def test_dash_defaults_to_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    write_table("-", make_rows()[:1])
    header = capsys.readouterr().out.splitlines()[0]
    assert header == ",".join(FIELDS)


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_csv_and_jsonl_stream_rows_into_the_temp_file(tmp_path: Path, name: str) -> None:
    seen_temps: list[list[str]] = []

    def rows() -> Iterator[dict[str, Any]]:
        for row in make_rows():
            yield row
            # The temp file is open while rows are still being produced.
            seen_temps.append([p.name for p in tmp_path.glob(f".{name}.*.tmp")])

    write_table(str(tmp_path / name), rows())
    assert len(seen_temps) == 3
    assert all(len(names) == 1 for names in seen_temps)
    assert [p.name for p in tmp_path.iterdir()] == [name]


# --- atomicity ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl", "out.parquet"])
def test_failed_write_leaves_target_and_folder_untouched(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    target.write_bytes(b"previous content\n")
    with pytest.raises(RuntimeError, match="boom midway"):
        write_table(str(target), failing_rows(make_rows(), after=2))
    assert target.read_bytes() == b"previous content\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl", "out.parquet"])
def test_failed_first_write_creates_nothing(tmp_path: Path, name: str) -> None:
    with pytest.raises(RuntimeError):
        write_table(str(tmp_path / name), failing_rows(make_rows(), after=1))
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")
    with atomic_open(target) as f:
        f.write("new ☕")
        # Until the block ends, readers still see the old content.
        assert target.read_text() == "old"
        temps = [p.name for p in tmp_path.iterdir() if p != target]
        assert len(temps) == 1
        assert temps[0].startswith(".file.txt") and temps[0].endswith(".tmp")
    assert target.read_text(encoding="utf-8") == "new ☕"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_atomic_open_binary(tmp_path: Path) -> None:
    target = tmp_path / "blob.bin"
    with atomic_open(target, "wb") as f:
        f.write(b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"


def test_atomic_open_rejects_non_write_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_open(tmp_path / "x", "a"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_missing_folder_is_output_error(tmp_path: Path) -> None:
    with (
        pytest.raises(OutputError, match="missing"),
        atomic_open(tmp_path / "missing" / "out.csv"),
    ):
        pass


def test_new_file_mode_follows_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "out.csv") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o640


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "private.jsonl"
    target.write_text("old")
    target.chmod(0o600)
    write_table(str(target), make_rows())
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text(encoding="utf-8").count("\n") == 3


# --- sidecars ----------------------------------------------------------------------------


def make_result(video: Path) -> VideoResult:
    return VideoResult(
        path=str(video),
        tags=(Tag("juggling", 0.75), Tag("dancing", 0.25)),
        clips=3,
        duration_s=9.5,
        model="videomae-base",
    )


def test_sidecar_path() -> None:
    assert sidecar_path("/v/a.mp4") == "/v/a.mp4.vidtag.json"
    assert SIDECAR_SUFFIX == ".vidtag.json"


def test_write_sidecar_content(tmp_path: Path) -> None:
    result = make_result(tmp_path / "clip é.mp4")
    written = write_sidecar(result, extra={"version": "0.1.0"})
    assert written == str(tmp_path / "clip é.mp4.vidtag.json")
    text = Path(written).read_text(encoding="utf-8")
    assert text.startswith("{\n  ")  # indent=2
    doc = json.loads(text)
    assert doc["generator"] == "vidtag"
    assert doc["version"] == "0.1.0"
    assert doc["tags"] == [
        {"label": "juggling", "score": 0.75},
        {"label": "dancing", "score": 0.25},
    ]
    for key, value in result.row().items():
        assert doc[key] == value
    assert [p.name for p in tmp_path.iterdir()] == ["clip é.mp4.vidtag.json"]


def test_write_sidecar_error_result(tmp_path: Path) -> None:
    result = VideoResult.failed(str(tmp_path / "bad.mp4"), NASTY_ERROR, model="m")
    doc = json.loads(Path(write_sidecar(result)).read_text(encoding="utf-8"))
    assert doc["status"] == "error"
    assert doc["error"] == NASTY_ERROR
    assert doc["score"] is None
    assert doc["tags"] == []


def test_write_sidecar_extra_cannot_clobber_fields(tmp_path: Path) -> None:
    result = make_result(tmp_path / "a.mp4")
    with pytest.raises(ValueError):
        write_sidecar(result, extra={"generator": "other"})
    assert list(tmp_path.iterdir()) == []


def test_write_sidecar_overwrites_its_own(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    write_sidecar(make_result(video))
    newer = VideoResult(path=str(video), tags=(Tag("surfing", 0.5),), clips=2, model="other")
    path = write_sidecar(newer)
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    assert doc["label"] == "surfing"
    assert doc["model"] == "other"
    assert doc["tags"] == [{"label": "surfing", "score": 0.5}]


@pytest.mark.parametrize(
    "foreign",
    [
        b'{"generator": "someone-else", "label": "mine"}\n',
        b'{"label": "no generator at all"}',
        b'["vidtag"]',
        b"not json at all, {",
        b"\xff\xfe\x00binary",
        b"",
    ],
)
def test_write_sidecar_refuses_foreign_file(tmp_path: Path, foreign: bytes) -> None:
    video = tmp_path / "a.mp4"
    existing = Path(sidecar_path(str(video)))
    existing.write_bytes(foreign)
    with pytest.raises(OutputError) as info:
        write_sidecar(make_result(video))
    message = str(info.value)
    assert str(existing) in message
    assert "will not overwrite" in message
    assert existing.read_bytes() == foreign
    assert [p.name for p in tmp_path.iterdir()] == [existing.name]


def test_write_sidecar_refuses_directory(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    Path(sidecar_path(str(video))).mkdir()
    with pytest.raises(OutputError, match="will not overwrite"):
        write_sidecar(make_result(video))
    assert Path(sidecar_path(str(video))).is_dir()


def test_remove_sidecar_only_removes_vidtag_files(tmp_path):
    from tagger.records import Tag, VideoResult
    from tagger.sinks import remove_sidecar, write_sidecar

    ours = str(tmp_path / "a.mp4")
    write_sidecar(VideoResult(path=ours, tags=(Tag("x", 0.9),), clips=1))
    assert remove_sidecar(ours) and not os.path.exists(ours + ".vidtag.json")
    assert not remove_sidecar(ours)
    theirs = tmp_path / "b.mp4.vidtag.json"
    theirs.write_text('{"someone": "else"}')
    assert not remove_sidecar(str(tmp_path / "b.mp4")) and theirs.exists()
