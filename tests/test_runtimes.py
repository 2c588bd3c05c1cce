"""CPU runtimes: the model exported once (cached, rebuilt when stale or corrupt) and run by ONNX
Runtime or OpenVINO, with torch's labels; dynamic int8; a missing runtime is a usage error."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from click.testing import CliRunner

from tagger.cli import cli
from tests.conftest import scan_rows, write_video

ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra (pip install -e '.[dev]' installs it)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "vidtag" / "exports"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime-library")
    for colour, frames in (("red", 40), ("green", 60), ("blue", 80)):
        write_video(folder / f"{colour}.mp4", [colour] * frames)
    write_video(folder / "red-green.mp4", ["red"] * 30 + ["green"] * 30)
    return folder


def scores(row: dict[str, str]) -> dict[str, float]:
    return dict(zip(row["labels"].split("|"), map(float, row["scores"].split("|")), strict=True))


NO_OPENVINO = importlib.util.find_spec("openvino") is None
RUNTIMES = [
    "onnx",
    pytest.param("openvino", marks=pytest.mark.skipif(NO_OPENVINO, reason="needs the openvino extra")),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_each_runtime_gives_torch_labels_and_scores(runtime, library, tiny_model, tmp_path, cache):
    torch_rows = scan_rows(library, tiny_model, tmp_path / "torch.csv")
    rows = scan_rows(library, tiny_model, tmp_path / f"{runtime}.csv", "--runtime", runtime)
    assert rows.keys() == torch_rows.keys()
    for path, row in rows.items():
        assert row["label"] == torch_rows[path]["label"]
        assert row["model"] == torch_rows[path]["model"]  # fp32: the same scores, the same rows
        for label, score in scores(row).items():
            assert abs(score - scores(torch_rows[path])[label]) <= 1e-3, (path, label)
    assert len(list(cache.glob("*-fp32-*.onnx"))) == 1


def test_int8_keeps_top1_and_says_so_in_the_model_column(library, tiny_model, tmp_path, cache, caplog):
    fp32 = scan_rows(library, tiny_model, tmp_path / "fp32.csv")
    with caplog.at_level("WARNING"):
        int8 = scan_rows(
            library, tiny_model, tmp_path / "int8.csv", "--runtime", "onnx", "--precision", "int8"
        )
    assert "pre-processing" not in caplog.text  # the quantizer's advice stays off the terminal
    assert {p: r["label"] for p, r in int8.items()} == {p: r["label"] for p, r in fp32.items()}
    assert all(
        r["model"].endswith("+int8") and r["model"].startswith(fp32[p]["model"]) for p, r in int8.items()
    )
    assert len(list(cache.glob("*-int8-*.onnx"))) == 1


def test_the_export_is_reused_remade_for_a_changed_model_and_rebuilt_when_corrupt(
    tiny_model, tmp_path, cache
):
    import shutil

    import numpy as np

    from tagger import runtimes
    from tagger.classify import load_classifier

    clips = np.random.default_rng(0).integers(0, 256, size=(2, 4, 32, 32, 3), dtype=np.uint8)
    first = load_classifier(str(tiny_model), "cpu", "fp32", runtime="onnx")
    (export,) = cache.glob("*.onnx")
    made = export.stat().st_mtime_ns
    expected = first.predict(clips)

    import torch

    threads = first.model._session.get_session_options().intra_op_num_threads
    assert threads == torch.get_num_threads()
    again = load_classifier(str(tiny_model), "cpu", "fp32", runtime="onnx")
    assert export.stat().st_mtime_ns == made, "a cached export was made again"
    assert np.allclose(again.predict(clips), expected)

    export.write_bytes(export.read_bytes()[:1000])  # cut short, as by a crash mid-write
    rebuilt = load_classifier(str(tiny_model), "cpu", "fp32", runtime="onnx")
    assert np.allclose(rebuilt.predict(clips), expected, atol=1e-6)
    assert export.stat().st_size > 1000

    changed = tmp_path / "changed"
    shutil.copytree(tiny_model, changed)
    config = (changed / "config.json").read_text()
    (changed / "config.json").write_text(config.replace('"red"', '"crimson"'))
    load_classifier(str(changed), "cpu", "fp32", runtime="onnx")
    assert len(list(cache.glob("*.onnx"))) == 2
    assert not list(cache.glob(".*.tmp")), "a partial export was left behind"
    assert runtimes.export_path(first.fingerprint, "onnx", "fp32", (4, 32, 32)) == export


def test_auto_picks_an_installed_cpu_runtime_and_torch_on_a_gpu(caplog):
    from tagger.runtimes import installed, resolve_runtime

    with caplog.at_level("INFO", logger="tagger.runtimes"):
        chosen = resolve_runtime("auto", "cpu", "fp32")
    assert chosen == ("openvino" if installed("openvino") else "onnx")
    assert f"runtime auto: {chosen}" in caplog.text
    assert resolve_runtime("auto", "cuda", "auto") == "torch"
    assert resolve_runtime("auto", "cpu", "int8") == "onnx"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "int8"], "--precision int8 needs --runtime onnx"),
        (["--runtime", "onnx", "--compile"], "--compile is for --runtime torch"),
    ],
)
def test_unusable_combinations_are_usage_errors(flags, message, library, tiny_model, tmp_path, cache):
    result = CliRunner().invoke(cli, ["scan", str(library), "-m", str(tiny_model), "--device", "cpu", *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_missing_runtime_names_its_extra(library, tiny_model, monkeypatch, cache):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    result = CliRunner().invoke(cli, ["scan", str(library), "-m", str(tiny_model), "--runtime", "onnx"])
    assert result.exit_code == 2, result.output
    assert 'pip install "vidtag[onnx]"' in result.output


def test_evaluate_takes_the_runtime_too(library, tiny_model, tmp_path, cache):
    split = tmp_path / "test"
    for colour in ("red", "green", "blue"):
        (split / colour).mkdir(parents=True)
        (split / colour / "a.mp4").write_bytes((library / f"{colour}.mp4").read_bytes())
    result = CliRunner().invoke(cli, ["evaluate", str(split), "-m", str(tiny_model), "--runtime", "onnx"])
    assert result.exit_code == 0, result.output
    assert "accuracy: 1.000 (3 examples)" in result.output, result.output
    assert list(cache.glob("*.onnx"))


def test_a_cached_export_needs_no_torch_weights(tiny_model, cache, monkeypatch):
    import transformers

    from tagger.classify import load_classifier

    load_classifier(str(tiny_model), "cpu", "fp32", runtime="onnx")

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the torch weights were loaded for a cached export")

    monkeypatch.setattr(transformers.AutoModelForVideoClassification, "from_pretrained", refuse)
    assert load_classifier(str(tiny_model), "cpu", "fp32", runtime="onnx").labels == ["red", "green", "blue"]


def test_a_cache_folder_that_takes_no_file_is_one_line(library, tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    result = CliRunner().invoke(cli, ["scan", str(library), "-m", str(tiny_model), "--runtime", "onnx"])
    assert result.exit_code == 1, result.output
    assert "cannot write" in result.output and "Traceback" not in result.output
