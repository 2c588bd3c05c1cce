"""The Ray engine on a local Ray of 2 CPUs: the local engine's rows and segments, errors as
rows, the CLI, and a rerun after the driver is killed."""

from __future__ import annotations

import csv
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import write_video

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install -e '.[dev]' installs it)")

from tagger.cli import cli  # noqa: E402
from tagger.engines.ray import RaySettings, connect  # noqa: E402
from tagger.scan import run as scan_run  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the module, started the way vidtag starts one; its address."""
    ray.shutdown()
    connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Videos of each colour and length, one that turns from red to blue, and broken files."""
    folder = tmp_path_factory.mktemp("ray-library")
    write_video(folder / "red.mp4", ["red"] * 40)
    write_video(folder / "green.mp4", ["green"] * 70)
    write_video(folder / "blue.mkv", ["blue"] * 100, codec="libx264")
    write_video(folder / "red-then-blue.mp4", ["red"] * 60 + ["blue"] * 60)
    (folder / "noise.mp4").write_bytes(os.urandom(4096))
    (folder / "empty.mp4").write_bytes(b"")
    whole = (folder / "green.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    return folder


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len({r["path"] for r in rows}) == len(rows), "a video appears twice"
    return {r["path"]: r for r in rows}


def read_segments(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: (r["path"], r["label"], float(r["start_s"])))


def scan_with(engine: str, paths: list[str], model: Path, out: Path, timeline: bool = True, **kw):
    return scan_run(
        paths,
        str(out / f"{engine}.csv"),
        model=str(model),
        state=str(out / f"{engine}.db"),
        segments=str(out / f"{engine}-segments.csv") if timeline else None,
        engine=engine,
        ray=RaySettings() if engine == "ray" else None,
        **kw,
    )


def ray_scan(path: Path, model: Path, out: Path, *flags: str) -> list[str]:
    """The arguments of ``vidtag scan PATH -m MODEL -o OUT --engine ray FLAGS``."""
    return ["scan", str(path), "-m", str(model), "-o", str(out), "--engine", "ray", *flags]


def assert_same_rows(local: Path, remote: Path) -> None:
    """Labels, errors and clip counts equal; scores within 1e-4."""
    a, b = read_csv(local), read_csv(remote)
    assert a.keys() == b.keys()
    for path, row in a.items():
        other = b[path]
        for column in (
            "label",
            "labels",
            "status",
            "error",
            "clips",
            "duration_s",
            "model",
            "segment_labels",
        ):
            assert row[column] == other[column], (path, column)
        for x, y in zip(row["scores"].split("|"), other["scores"].split("|"), strict=True):
            assert x == y or abs(float(x) - float(y)) <= 1e-4, (path, x, y)


def assert_same_segments(local: Path, remote: Path) -> None:
    a, b = read_segments(local), read_segments(remote)
    assert [(r["path"], r["label"], r["start_s"], r["end_s"]) for r in a] == [
        (r["path"], r["label"], r["start_s"], r["end_s"]) for r in b
    ]
    for x, y in zip(a, b, strict=True):
        assert abs(float(x["score"]) - float(y["score"])) <= 1e-4
        assert abs(float(x["peak_score"]) - float(y["peak_score"])) <= 1e-4


def test_the_ray_engine_gives_the_local_engine_rows_segments_and_errors(
    local_ray, library, tiny_model, tmp_path
):
    local = scan_with("local", [str(library)], tiny_model, tmp_path)
    remote = scan_with("ray", [str(library)], tiny_model, tmp_path)
    assert (remote.tagged, len(remote.failed)) == (local.tagged, len(local.failed)) == (7, 3)
    assert_same_rows(tmp_path / "local.csv", tmp_path / "ray.csv")
    assert_same_segments(tmp_path / "local-segments.csv", tmp_path / "ray-segments.csv")

    rows = read_csv(tmp_path / "ray.csv")
    assert rows[str(library / "blue.mkv")]["label"] == "blue"
    assert rows[str(library / "red-then-blue.mp4")]["segment_labels"] == "red|blue"
    for name in ("noise.mp4", "empty.mp4", "truncated.mp4"):
        assert rows[str(library / name)]["status"] == "error"
        assert rows[str(library / name)]["error"]
    turning = {r["label"]: r for r in read_segments(tmp_path / "ray-segments.csv") if "red-then" in r["path"]}
    assert turning.keys() == {"red", "blue"}
    assert float(turning["red"]["start_s"]) == 0.0
    assert abs(float(turning["blue"]["start_s"]) - 6.0) <= 0.8  # the change at 6 s, within a clip


def test_three_crops_and_several_clips_agree_too(local_ray, library, tiny_model, tmp_path):
    from tagger.options import TagOptions

    options = TagOptions(crops=3, clips=3)
    paths = [str(library / n) for n in ("green.mp4", "noise.mp4", "red-then-blue.mp4")]
    scan_with("local", paths, tiny_model, tmp_path, timeline=False, options=options)
    scan_with("ray", paths, tiny_model, tmp_path, timeline=False, options=options)
    assert_same_rows(tmp_path / "local.csv", tmp_path / "ray.csv")
    assert [r["clips"] for r in read_csv(tmp_path / "ray.csv").values()] == ["3", "0", "3"]


def test_real_videos_get_the_same_rows(local_ray, real_data, tiny_model, tmp_path):
    files = sorted((real_data / "3dnet-visualization").iterdir())[:4]
    paths = [str(f) for f in files]
    scan_with("local", paths, tiny_model, tmp_path)
    scan_with("ray", paths, tiny_model, tmp_path)
    assert_same_rows(tmp_path / "local.csv", tmp_path / "ray.csv")
    assert {r["status"] for r in read_csv(tmp_path / "ray.csv").values()} == {"ok"}


def test_vidtag_scan_engine_ray_writes_rows_and_sidecars(local_ray, library, tiny_model, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for name in ("red.mp4", "red-then-blue.mp4"):
        (good / name).write_bytes((library / name).read_bytes())
    out = tmp_path / "labels.jsonl"
    args = ray_scan(good, tiny_model, out, "--sidecar", "json,vtt")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    assert (good / "red.mp4.vidtag.json").is_file()
    assert (good / ".red-then-blue.mp4.vidtag.vtt").read_text().startswith("WEBVTT")

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert re.search(r"already tagged\W+2", again.output), again.output
    assert out.read_text().splitlines() == lines


def test_ray_options_without_the_ray_engine_are_usage_errors(tiny_model, tmp_path):
    result = CliRunner().invoke(
        cli, ["scan", str(tmp_path), "-m", str(tiny_model), "--ray-address", "ray://head:10001"]
    )
    assert result.exit_code == 2
    assert "--ray-address is for --engine ray" in result.output


def test_engine_ray_without_ray_says_how_to_install_it(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(
        cli, ["scan", str(tmp_path), "-m", str(tiny_model), "-o", str(tmp_path / "x.csv"), "--engine", "ray"]
    )
    assert result.exit_code == 2, result.output
    assert 'pip install "vidtag[ray]"' in result.output
    assert not (tmp_path / "x.csv").exists()


def _recorded(state: Path) -> int:
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not made yet
        return 0


def test_a_rerun_after_the_driver_is_killed_tags_every_video_once(local_ray, tiny_model, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    colours = ["red", "green", "blue"]
    for i in range(8):
        write_video(videos / f"v{i}.mp4", [colours[i % 3]] * 150)
    out, state = tmp_path / "labels.csv", tmp_path / "state.db"
    command = [
        sys.executable, "-m", "tagger", "scan", str(videos), "-m", str(tiny_model), "-o", str(out),
        "--state", str(state), "--engine", "ray", "--ray-address", local_ray, "--timeline",
    ]  # fmt: skip
    # As the local Ray's own processes do: its token authentication is on (RAY_AUTH_MODE=token).
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while _recorded(state) == 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition, not waiting for one to happen by itself
    assert driver.poll() is None, driver.communicate(timeout=60)[1].decode(errors="replace")
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    before = _recorded(state)
    assert 1 <= before < 8, f"the driver was to be killed mid-job ({before} of 8 recorded)"
    assert not out.exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_csv(out)
    assert sorted(Path(p).name for p in rows) == [f"v{i}.mp4" for i in range(8)]
    assert {r["label"] for r in rows.values()} == set(colours)
    assert _recorded(state) == 8


def test_a_manifest_of_uris_through_ray_gives_the_local_rows(local_ray, library, tiny_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = tmp_path / "list.parquet"
    uris = [(library / n).as_uri() for n in ("red.mp4", "blue.mkv", "noise.mp4")]
    pq.write_table(pa.table({"path": uris}), manifest)
    for engine in ("local", "ray"):
        scan_with(engine, [], tiny_model, tmp_path, timeline=False, manifest=str(manifest))
    assert_same_rows(tmp_path / "local.csv", tmp_path / "ray.csv")
    rows = read_csv(tmp_path / "ray.csv")
    assert list(rows) == uris
    assert rows[uris[1]]["label"] == "blue" and rows[uris[2]]["status"] == "error"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus-per-worker", "1"], "the Ray cluster has 0 GPUs; --workers 1 --gpus-per-worker 1 need 1"),
        (["--workers", "2"], "the Ray cluster has 2 CPUs; 2 model actors (1 CPU each)"),
    ],
)
def test_a_job_the_cluster_cannot_schedule_is_refused(
    local_ray, library, tiny_model, tmp_path, flags, message
):
    out = tmp_path / "labels.csv"
    args = ray_scan(library / "red.mp4", tiny_model, out, *flags)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_a_decode_task_loses_only_the_file_whose_decoder_crashes_or_hangs(
    library, tiny_model, tmp_path, monkeypatch
):
    """What a Ray decode task runs, in this process: its child decoder dies or hangs on one
    file, and that file's rows say so while the next file decodes."""
    from tagger.clips.decode import make_job
    from tagger.clips.pool import DecodePool
    from tagger.engines import ray as ray_engine
    from tagger.models import load_spec
    from tagger.options import TagOptions
    from tests.test_pipeline import crashing_decoder

    for name in ("crash.mp4", "hang.mp4"):
        (tmp_path / name).write_bytes((library / "red.mp4").read_bytes())
    spec = load_spec(str(tiny_model))
    job = make_job("", spec.prep, spec.stride, TagOptions())
    with DecodePool(1, timeout_s=3, worker=crashing_decoder, shared_memory=False) as pool:
        monkeypatch.setattr(ray_engine, "_POOL", pool)
        rows = {}
        for path in (tmp_path / "crash.mp4", tmp_path / "hang.mp4", library / "green.mp4"):
            rows[path.name] = list(
                ray_engine.decode_rows({"path": str(path)}, job, spec.prep.crop, 1, 3.0, spec.clip_shape)
            )
    for name, reason in (("crash.mp4", "the decoder crashed"), ("hang.mp4", "longer than 3 s")):
        (row,) = rows[name]
        assert row["slot"] == -1 and row["total"] == 0 and reason in row["error"]
    green = rows["green.mp4"]
    assert [r["slot"] for r in green] == list(range(len(green))) and green[-1]["total"] == len(green)
    assert not green[-1]["error"] and all(r["frames"].shape == green[0]["frames"].shape for r in green)
