"""Names that are not UTF-8, and other hostile names, through the state store and every sink.

Each output is read back by an independent reader (csv and json of the standard library,
pyarrow), never by vidtag's own code.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tagger.fsutil import atomic_open
from tagger.names import display, is_utf8, json_text
from tagger.records import OutputError, Tag, VideoFile, VideoResult
from tagger.sinks import Appender, sidecar_path, write_sidecar, write_table
from tagger.state import StateStore

LATIN1 = os.fsdecode(b"caf\xe9.mp4")  # what os.listdir gives for a Latin-1 name
MODEL = "m@1234"


def result(path: str, label: str = "juggling") -> VideoResult:
    return VideoResult(path=path, tags=(Tag(label, 0.75),), clips=2, duration_s=3.0, model=MODEL)


def test_names_helpers() -> None:
    assert not is_utf8(LATIN1) and is_utf8("café.mp4")
    assert display(LATIN1) == "caf\\xe9.mp4" and display("café.mp4") == "café.mp4"
    text = json_text({"path": LATIN1})
    text.encode("utf-8")  # valid UTF-8 whatever the name holds
    assert "\\udce9" in text and json.loads(text)["path"] == LATIN1
    assert json_text({"path": "café"}) == '{"path": "café"}'  # readable names stay readable


# --- state store ----------------------------------------------------------------------------


def test_state_store_keys_names_that_are_not_utf8(tmp_path: Path) -> None:
    folder = os.fsdecode(b"/lib/d\xe9j\xe0")
    name = f"{folder}/{LATIN1}"
    twin = f"{folder}/caf\\udce9.mp4"  # the same letters spelled out: another name
    db = tmp_path / "state.db"
    with StateStore(db) as store:
        store.record(VideoFile(name, 10, 1), MODEL, result(name), emitted=False)
        store.record(VideoFile(twin, 10, 1), MODEL, result(twin, "dancing"))
        store.record(VideoFile("/lib/plain.mp4", 10, 1), MODEL, result("/lib/plain.mp4"))
    with StateStore(db) as store:  # survives a reopen
        found = store.lookup(VideoFile(name, 10, 1), MODEL)
        assert found is not None and found.path == name and found.tags[0].label == "juggling"
        assert store.lookup(VideoFile(twin, 10, 1), MODEL).tags[0].label == "dancing"  # type: ignore[union-attr]
        assert [f.path for f, _ in store.unemitted(MODEL)] == [name]
        assert store.paths_under(folder, MODEL) == sorted([name, twin])
        assert store.paths_under("/lib", MODEL) == sorted([name, twin, "/lib/plain.mp4"])
        moved = os.fsdecode(b"/lib/\xff.mp4")
        assert store.move(name, VideoFile(moved, 10, 1), MODEL) is not None
        assert store.find(name, MODEL) is None and store.find(moved, MODEL) is not None
        assert store.remove(moved, MODEL, keep=False) is not None
        assert store.find(moved, MODEL) is None
        results = list(store.results([VideoFile(twin, 10, 1), VideoFile("/lib/plain.mp4", 10, 1)], MODEL))
        assert [r.path for r in results] == [twin, "/lib/plain.mp4"]


def test_state_database_in_a_folder_that_is_not_utf8(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"\xe9t\xe9")))
    folder.mkdir()
    with StateStore(folder / "s.db") as store:
        store.record(VideoFile(LATIN1, 1, 1), MODEL, result(LATIN1))
    assert os.path.exists(os.path.join(os.fsencode(tmp_path), b"\xe9t\xe9", b"s.db"))


# --- tables, read back by other readers -----------------------------------------------------

HOSTILE = [
    f"/v/{LATIN1}",
    "/v/two\nlines.mp4",
    "/v/=cmd|' /C calc'!A0.mp4",
    "/v/+1.mp4",
    "/v/@SUM(1).mp4",
    "/v/[bold]not markup[/bold].mp4",
]


def rows() -> list[dict[str, object]]:
    return [result(p).row() for p in HOSTILE] + [
        VideoResult.failed(f"/v/{LATIN1}.mkv", f"cannot open {LATIN1}").row()
    ]


def test_csv_gives_the_real_bytes_back(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    write_table(str(out), iter(rows()))
    with out.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        back = list(csv.DictReader(f))
    assert [r["path"] for r in back] == [*HOSTILE, f"/v/{LATIN1}.mkv"]
    assert b"caf\xe9.mp4" in out.read_bytes()  # the name's own bytes, not an escape


def test_jsonl_is_valid_utf8_and_gives_the_name_back(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    write_table(str(out), iter(rows()))
    text = out.read_bytes().decode("utf-8")  # strict: every line is valid UTF-8
    back = [json.loads(line) for line in text.splitlines()]
    assert [r["path"] for r in back] == [*HOSTILE, f"/v/{LATIN1}.mkv"]
    assert back[-1]["error"] == f"cannot open {LATIN1}"


def test_parquet_escapes_the_name_and_keeps_its_bytes(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    write_table(str(out), iter(rows()))
    table = pq.read_table(out).to_pylist()
    assert table[0]["path"] == "/v/caf\\xe9.mp4"
    assert table[0]["path_bytes"] == b"/v/caf\xe9.mp4"
    assert os.fsdecode(table[0]["path_bytes"]) == HOSTILE[0]
    assert [r["path"] for r in table[1:-1]] == HOSTILE[1:]
    assert all(r["path_bytes"] is None for r in table[1:-1])
    assert table[-1]["error"] == "cannot open caf\\xe9.mp4"


def test_appended_csv_and_jsonl_rows_give_the_name_back(tmp_path: Path) -> None:
    for name in ("a.csv", "a.jsonl"):
        with Appender(str(tmp_path / name)) as out:
            for row in rows():
                out.write_row(row)
    with (tmp_path / "a.csv").open(newline="", errors="surrogateescape") as f:
        assert [r["path"] for r in csv.DictReader(f)][: len(HOSTILE)] == HOSTILE
    lines = (tmp_path / "a.jsonl").read_bytes().decode("utf-8").splitlines()
    assert [json.loads(line)["path"] for line in lines][: len(HOSTILE)] == HOSTILE


# --- sidecars -------------------------------------------------------------------------------


def test_sidecar_of_a_latin1_name(tmp_path: Path) -> None:
    video = os.path.join(os.fsdecode(os.fsencode(tmp_path)), LATIN1)
    Path(video).write_bytes(b"x")
    written = write_sidecar(result(video))
    assert os.fsencode(written).endswith(b"caf\xe9.mp4.vidtag.json")
    doc = json.loads(Path(written).read_bytes().decode("utf-8"))
    assert doc["path"] == video and doc["generator"] == "vidtag"


def test_sidecar_name_too_long_is_an_error_of_that_file(tmp_path: Path) -> None:
    fits = tmp_path / ("a" * 240 + ".mp4")  # 244 bytes: its sidecar would be 256, over NAME_MAX
    fits.write_bytes(b"x")
    with pytest.raises(OutputError, match="longer than the file system allows"):
        write_sidecar(result(str(fits)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [fits.name]  # no temp file left behind
    short = tmp_path / ("b" * 230 + ".mp4")  # 234 + 12 = 246 bytes: fits, and so must its temp
    short.write_bytes(b"x")
    assert Path(write_sidecar(result(str(short)))).name == short.name + ".vidtag.json"
    assert Path(sidecar_path(str(short))).is_file()


def test_atomic_open_temp_name_stays_short(tmp_path: Path) -> None:
    target = tmp_path / ("c" * 250)
    seen = []
    with atomic_open(target) as f:
        seen.extend(p.name for p in tmp_path.iterdir())
        f.write("x")
    (temp,) = seen
    assert len(os.fsencode(temp)) < 100
    assert target.read_text() == "x"


def test_a_model_folder_whose_name_is_not_utf8_is_a_clear_usage_error(
    tiny_model: Path, tmp_path: Path
) -> None:
    import shutil

    from click.testing import CliRunner

    from tagger.cli import cli

    model = os.path.join(os.fsencode(tmp_path), b"mod\xe8le")
    shutil.copytree(tiny_model, os.fsdecode(model))
    done = CliRunner().invoke(cli, ["scan", str(tmp_path), "-m", os.fsdecode(model), "-o", "-"])
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit)
    assert "mod\\xe8le" in done.output and "not valid UTF-8" in done.output and "rename it" in done.output
