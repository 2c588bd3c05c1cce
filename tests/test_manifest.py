"""Inputs at scale: a manifest's path column instead of a folder walk, and URIs read through
pyarrow's file systems (here the local one, as file:// URIs, the same code path as s3://)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tagger.cli import cli
from tagger.records import InputError
from tagger.sources.manifest import is_uri, read_manifest, stat
from tests.conftest import write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("manifest-videos")
    return {c: write_video(folder / f"{c}.mp4", [c] * 30) for c in ("red", "green", "blue")}


def test_a_parquet_manifest_gives_its_paths_in_order_once_relative_to_its_folder(tmp_path):
    manifest = tmp_path / "list.parquet"
    rows = ["b.mp4", "/abs/a.mp4", "s3://bucket/c.mp4", "b.mp4", None, ""]
    pq.write_table(pa.table({"path": rows, "size": [1, 2, 3, 4, 5, 6]}), manifest)
    assert read_manifest(str(manifest)) == [str(tmp_path / "b.mp4"), "/abs/a.mp4", "s3://bucket/c.mp4"]


def test_a_csv_manifest_keeps_names_that_look_like_numbers(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("id,path\n1,/v/0012\n2,/v/x.mp4\n")
    assert read_manifest(str(manifest)) == ["/v/0012", "/v/x.mp4"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("list.csv", "file\n/a.mp4\n", "has no 'path' column (its columns: file)"),
        ("list.txt", "/a.mp4\n", "use a .parquet or .csv file"),
        ("list.parquet", "not parquet", "cannot read manifest"),
    ],
)
def test_a_bad_manifest_is_a_clear_error(tmp_path, name, content, message):
    manifest = tmp_path / name
    manifest.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(str(manifest))


def test_uris_are_told_from_local_names():
    assert is_uri("s3://bucket/a.mp4") and is_uri("gs://b/a.mp4") and is_uri("file:///tmp/a.mp4")
    assert not is_uri("/tmp/a.mp4") and not is_uri("concat:a.mp4") and not is_uri("http:/a.mp4")


def test_a_uri_is_stat_through_its_file_system(videos):
    local = videos["red"]
    assert stat(local.as_uri()).size == local.stat().st_size
    assert stat(local.as_uri()).mtime_ns == local.stat().st_mtime_ns
    assert stat((local.parent / "missing.mp4").as_uri()).size == -1


def test_scan_of_a_manifest_of_uris_tags_each_and_makes_a_missing_one_an_error_row(
    videos, tiny_model, tmp_path
):
    manifest = tmp_path / "list.csv"
    uris = [videos[c].as_uri() for c in ("red", "green", "blue")] + [(tmp_path / "gone.mp4").as_uri()]
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["path"], *[[u] for u in uris]])
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(
        cli, ["scan", "--manifest", str(manifest), "-m", str(tiny_model), "-o", str(out), "--workers", "1"]
    )
    assert result.exit_code == 1, result.output  # one file is missing
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(rows) == uris
    for colour in ("red", "green", "blue"):
        assert rows[videos[colour].as_uri()]["label"] == colour
    gone = rows[uris[-1]]
    assert gone["status"] == "error" and gone["error"]


def test_sidecars_for_uris_and_a_scan_of_nothing_are_usage_errors(videos, tiny_model, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{videos['red'].as_uri()}\n")
    args = ["scan", "--manifest", str(manifest), "-m", str(tiny_model), "--sidecar"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "next to local videos" in result.output
    result = CliRunner().invoke(cli, ["scan", "-m", str(tiny_model)])
    assert result.exit_code == 2 and "--manifest" in result.output
    assert not list(Path(videos["red"]).parent.glob("*.vidtag.json"))


def test_a_numeric_path_column_is_read_as_names(tmp_path):
    manifest = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [12, 7]}), manifest)
    assert read_manifest(str(manifest)) == [str(tmp_path / "12"), str(tmp_path / "7")]
