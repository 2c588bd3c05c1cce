"""The front door: ``import tagger`` stays light, and the README's Python example runs."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def test_import_tagger_is_light_and_lists_its_names() -> None:
    code = "import sys, tagger; names = dir(tagger); print('torch' in sys.modules, names)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.startswith("False"), done.stderr
    for name in ("scan_videos", "watch_videos", "load_classifier", "tag", "TagOptions", "VideoResult"):
        assert name in done.stdout


def test_unknown_names_are_attribute_errors() -> None:
    import tagger

    with pytest.raises(AttributeError):
        tagger.no_such_name  # noqa: B018


def test_the_readme_python_example_runs(tmp_path, tiny_model, video_factory, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    readme = (ROOT / "README.md").read_text()
    (example,) = re.findall(r"<!-- python-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    (tmp_path / "videos").mkdir()
    shutil.copy(video_factory(["red"] * 40), tmp_path / "videos" / "a.mp4")
    shutil.copy(video_factory(["blue"] * 40), tmp_path / "videos" / "b.mp4")
    shutil.copytree(tiny_model, tmp_path / "models" / "my-tags")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    said = capsys.readouterr().out.splitlines()
    assert said[0] == "2 tagged, 0 already tagged, 0 failed"
    assert said[1].startswith("videos/a.mp4 [('red',")
    # One line per clip, with its span and its best class; then b's timeline: blue throughout.
    clips = [line for line in said[2:] if not line.startswith("segment")]
    assert clips and all(re.fullmatch(r"  +[\d.]+- *[\d.]+ s  red", line) for line in clips)
    (segment,) = [line for line in said[2:] if line.startswith("segment")]
    start, end = map(float, re.fullmatch(r"segment blue ([\d.]+)-([\d.]+) s", segment).groups())  # type: ignore[union-attr]
    assert start == 0.0 and end == pytest.approx(40 / 10, abs=0.2)
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = {Path(r["path"]).name: r["label"] for r in csv.DictReader(f)}
    assert rows == {"a.mp4": "red", "b.mp4": "blue"}
