"""The vidtag command as a user runs it (CliRunner, and real processes where it matters)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tagger.cli import cli
from tagger.records import FIELDS

from .conftest import ROOT


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def library(tmp_path_factory, video_factory) -> Path:  # type: ignore[no-untyped-def]
    """A folder like a user's: nested, mixed case suffixes, a non-video file."""
    root = tmp_path_factory.mktemp("library")
    (root / "sub").mkdir()
    for name, color in [("a_red.mp4", "red"), ("sub/b_green.MP4", "green"), ("sub/c_blue.mkv", "blue")]:
        src = video_factory([color] * 40)
        (root / name).write_bytes(src.read_bytes())
    (root / "notes.txt").write_text("not a video")
    return root


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_scan_writes_one_row_per_video_with_the_schema(tmp_path, library, tiny_model):
    out = tmp_path / "labels.csv"
    result = run("scan", str(library), "-m", str(tiny_model), "-o", str(out), "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = _rows(out.read_text())
    assert list(rows[0]) == list(FIELDS)
    assert [Path(r["path"]).name for r in rows] == ["a_red.mp4", "b_green.MP4", "c_blue.mkv"]
    assert [r["label"] for r in rows] == ["red", "green", "blue"]
    for r in rows:
        assert r["status"] == "ok" and r["error"] == ""
        assert len(r["labels"].split("|")) == 2 and len(r["scores"].split("|")) == 2
        assert float(r["score"]) == float(r["scores"].split("|")[0]) > 0.5
        assert r["clips"] == "1" and float(r["duration_s"]) == pytest.approx(4.0)
        assert r["model"].startswith(str(tiny_model) + "@")
    assert (tmp_path / "labels.csv.vidtag.db").is_file()
    assert "tagged" in result.stderr and "clips/s" in result.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_scan_other_formats_hold_the_same_rows(tmp_path, library, tiny_model, suffix):
    csv_out, other = tmp_path / "a.csv", tmp_path / f"a{suffix}"
    assert run("scan", str(library), "-m", str(tiny_model), "-o", str(csv_out)).exit_code == 0
    assert run("scan", str(library), "-m", str(tiny_model), "-o", str(other)).exit_code == 0
    expected = pd.read_csv(csv_out, keep_default_na=False)
    got = pd.read_json(other, lines=True) if suffix == ".jsonl" else pd.read_parquet(other)
    # Parquet adds the raw bytes of names that are not UTF-8 (none here).
    assert list(got.columns) == list(FIELDS) + (["path_bytes"] if suffix == ".parquet" else [])
    assert got["path"].tolist() == expected["path"].tolist()
    assert got["label"].tolist() == expected["label"].tolist()
    assert got["score"].tolist() == pytest.approx(expected["score"].tolist())


def test_scan_to_stdout(library, tiny_model):
    result = run("scan", str(library), "-m", str(tiny_model), "-o", "-")
    assert result.exit_code == 0
    rows = _rows(result.stdout)
    assert len(rows) == 3 and {r["label"] for r in rows} == {"red", "green", "blue"}


def test_bad_file_gives_error_row_and_exit_1(tmp_path, video_factory, tiny_model):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "good.mp4").write_bytes(video_factory(["red"] * 40).read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00" * 1000)
    out = tmp_path / "out.csv"
    result = run("scan", str(folder), "-m", str(tiny_model), "-o", str(out))
    assert result.exit_code == 1
    rows = {Path(r["path"]).name: r for r in _rows(out.read_text())}
    assert rows["good.mp4"]["status"] == "ok"
    assert rows["broken.mp4"]["status"] == "error"
    assert rows["broken.mp4"]["error"] and rows["broken.mp4"]["label"] == ""
    assert "broken.mp4" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "gpu0"], "not one of auto"),
        (["-o", "labels.xlsx"], ".csv"),
        (["--clips", "0"], "--clips"),
        (["--top-k", "0"], "--top-k"),
        (["--precision", "int4"], "--precision"),
    ],
)
def test_usage_errors_exit_2_before_loading_a_model(library, args, message):
    result = run("scan", str(library), "-m", "/nonexistent/model", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_path_and_missing_model_dir_exit_2(library, tiny_model):
    assert run("scan", "/no/such/folder", "-m", str(tiny_model)).exit_code == 2
    result = run("scan", str(library), "-m", "./no/such/model")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_offline_hub_model_names_the_model_and_the_fix(library):
    result = run("scan", str(library), "-m", "kinetics-400")
    assert result.exit_code == 2
    assert "MCG-NJU/videomae-base-finetuned-kinetics" in result.output
    assert "--model DIR" in result.output
    assert "Traceback" not in result.output


def test_rerun_skips_tagged_videos_and_force_retags(tmp_path, library, tiny_model):
    out = tmp_path / "labels.jsonl"
    args = ("scan", str(library), "-m", str(tiny_model), "-o", str(out))
    first = run(*args)
    assert first.exit_code == 0
    assert re.search(r"^tagged\s+3\b", first.stderr, re.M)
    before = out.read_text()

    second = run(*args)
    assert second.exit_code == 0
    assert out.read_text() == before
    assert re.search(r"already tagged\s+3\b", second.stderr)
    assert re.search(r"^tagged\s+0\b", second.stderr, re.M)

    forced = run(*args, "--force")
    assert forced.exit_code == 0
    assert re.search(r"^tagged\s+3\b", forced.stderr, re.M)
    assert out.read_text() == before


def test_sidecars_are_written_and_foreign_files_kept(tmp_path, video_factory, tiny_model):
    folder = tmp_path / "v"
    folder.mkdir()
    for name in ("one.mp4", "two.mp4"):
        (folder / name).write_bytes(video_factory(["blue"] * 40).read_bytes())
    foreign = folder / "two.mp4.vidtag.json"
    foreign.write_text('{"note": "someone else wrote this"}')

    result = run("scan", str(folder), "-m", str(tiny_model), "--sidecar")
    assert result.exit_code == 1
    assert result.stdout == ""
    sidecar = json.loads((folder / "one.mp4.vidtag.json").read_text())
    assert sidecar["generator"] == "vidtag" and sidecar["label"] == "blue"
    assert sidecar["tags"][0]["label"] == "blue"
    assert foreign.read_text() == '{"note": "someone else wrote this"}'
    assert "two.mp4.vidtag.json" in result.stderr


def test_labels_command(tiny_model):
    result = run("labels", "-m", str(tiny_model))
    assert result.exit_code == 0
    assert result.stdout.split() == ["red", "green", "blue"]


def test_preview_gif_shows_the_model_input(tmp_path, video_factory, tiny_model):
    from PIL import Image

    # Every frame differs (GIF writers merge identical frames), all of them reddish.
    def frame(i: int):  # type: ignore[no-untyped-def]
        if i >= 200:
            return None
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[..., 0] = 100 + (i * 37) % 150
        rgb[..., 1:] = 20
        return rgb

    video = video_factory(frame, fps=10)
    gif = tmp_path / "p.gif"
    result = run("preview", str(video), "--gif", str(gif), "-m", str(tiny_model))
    assert result.exit_code == 0, result.output
    with Image.open(gif) as im:
        assert im.size == (32, 32)
        assert im.n_frames == 4 * 2  # num_frames x clips (20 s -> 2 clips)
        r, g, b = im.convert("RGB").getpixel((16, 16))
        assert r > 90 and g < 60 and b < 60


def _python(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    kw.setdefault("timeout", 120)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, **kw)


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom tagger.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "cli_mods = ['torch', 'transformers', 'av', 'pandas']\n"
        "print([m for m in cli_mods if m in sys.modules])"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


def test_python_dash_m_runs_the_cli():
    done = _python("-m", "tagger", "--version")
    assert done.returncode == 0 and "vidtag" in done.stdout


def test_killed_run_resumes_with_every_video_exactly_once(tmp_path, video_factory, tiny_model):
    folder = tmp_path / "many"
    folder.mkdir()
    names = [f"v{i:02d}.mp4" for i in range(16)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(
            video_factory(["red", "green", "blue"][i % 3 : i % 3 + 1] * 300).read_bytes()
        )
    out = tmp_path / "out.csv"
    db = Path(str(out) + ".vidtag.db")
    cmd = [
        sys.executable,
        "-m",
        "tagger",
        "scan",
        str(folder),
        "-m",
        str(tiny_model),
        "-o",
        str(out),
        "--batch-size",
        "1",
        "--workers",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db) as con:
                        done = con.execute("select count(*) from results").fetchone()[0]
                except sqlite3.Error:
                    done = 0
                if done >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists()
    assert 2 <= done < len(names)

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = _rows(out.read_text())
    assert sorted(Path(r["path"]).name for r in rows) == names
    assert all(r["status"] == "ok" for r in rows)
    assert "already tagged" in rerun.stderr
    # Frames the killed run left in shared memory are gone too.
    if os.path.isdir("/dev/shm"):
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"vidtag-{proc.pid}-")]


def test_scan_of_the_real_sample_library(real_data, tiny_model, tmp_path):
    """Every real sample file gets a row; only the deliberately corrupted one is an error."""
    from tagger.sources.discover import discover

    expected = {f.path for f in discover([str(real_data)])}
    out = tmp_path / "real.csv"
    result = run("scan", str(real_data), "-m", str(tiny_model), "-o", str(out))
    rows = _rows(out.read_text())
    assert {r["path"] for r in rows} == expected and len(rows) == len(expected) >= 100
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["status"] != "ok"}
    assert list(errors) == ["corrupted.mp4"]
    assert "Invalid data" in errors["corrupted.mp4"]
    assert result.exit_code == 1


def test_missing_output_folder_is_a_usage_error(library, tmp_path, tiny_model, monkeypatch):
    from tagger import classify

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded before the usage error")

    monkeypatch.setattr(classify, "load_classifier", refuse)
    missing = tmp_path / "nope"
    result = run("scan", str(library), "-m", str(tiny_model), "-o", str(missing / "x.csv"))
    assert result.exit_code == 2 and f"folder {missing} does not exist" in result.output


def test_empty_folder_writes_an_empty_table_and_says_so(tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.csv"
    result = run("scan", str(empty), "-m", str(tiny_model), "-o", str(out))
    assert result.exit_code == 0
    assert "no video files" in result.stderr
    assert out.read_text().splitlines() == [",".join(FIELDS)]


def test_evaluate_takes_the_inference_options_scan_has(tmp_path, model_load_spy):
    (tmp_path / "split" / "red").mkdir(parents=True)
    (tmp_path / "split" / "red" / "a.mp4").write_bytes(b"x")
    args = ["evaluate", str(tmp_path / "split"), "-m", "some-model", "--device", "cpu"]
    done = CliRunner().invoke(cli, [*args, "--precision", "fp32", "--compile", "--runtime", "onnx"])
    assert done.exit_code == 2 and "stop here" in done.output
    assert model_load_spy == {
        "model": "some-model",
        "device": "cpu",
        "precision": "fp32",
        "compile": True,
        "runtime": "onnx",
    }
