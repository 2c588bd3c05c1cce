"""Distributed fine-tuning on CPU: ``torchrun`` with two gloo processes trains one model, saved
and reported once, that tags the test split as well as a one-process run of the same recipe."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tagger.demo.synth import make_dataset
from tagger.training.evaluate import evaluate, labeled_videos

from .conftest import ROOT

pytestmark = pytest.mark.slow

CLASSES = ("BlueDown", "RedUp")
PER_SPLIT = {"train": 8, "val": 4, "test": 6}
EPOCHS = 6
# Both runs take optimizer steps over the same number of videos: one process with batches of 4,
# two with 2 each (DDP averages their gradients), so the recipe is the same and only the data
# order and the random crops differ.
GLOBAL_BATCH = 4
PROCESSES = 2
# A run takes seconds; the limit only turns a hang (a rank stuck at a barrier) into a failure.
TIMEOUT_S = 300


def _env() -> dict[str, str]:
    # One thread per process: two processes on a small CI machine must not fight over cores.
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")


def _run(args: list[str], cwd: Path) -> tuple[int, str]:
    """Exit status and output (stdout and stderr together) of ``args``, killed with all its
    children if it outlasts the limit."""
    # A session of its own, so that a timeout takes down the worker processes too, not only
    # the launcher.
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=30)
            pytest.fail(f"{args[0]} did not finish within {TIMEOUT_S} s:\n{output}")
    return proc.returncode, output


def _finetune(launcher: list[str], data: Path, out: Path, batch_size: int) -> tuple[int, str]:
    settings = ["--init", "small", "--epochs", str(EPOCHS), "--batch-size", str(batch_size)]
    return _run([*launcher, str(ROOT / "finetune.py"), str(data), "--out", str(out), *settings], out.parent)


def _steps(out: Path) -> int:
    """Optimizer steps of a run, from its last checkpoint."""
    states = [
        json.loads(p.read_text()) for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
    ]
    assert states, f"no checkpoint in {out / 'checkpoints'}"
    return max(state["global_step"] for state in states)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The same data and recipe trained by one process and by ``torchrun`` with two."""
    root = tmp_path_factory.mktemp("distributed")
    data = make_dataset(root / "data", per_split=PER_SPLIT, classes=CLASSES, seconds=2.5, size=(64, 48))
    one, two = root / "one", root / "two"
    rc, one_log = _finetune([sys.executable], data, one, GLOBAL_BATCH)
    assert rc == 0, one_log
    # --standalone: a free port of its own, so parallel runs on one machine do not collide.
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={PROCESSES}",
    ]
    rc, two_log = _finetune(torchrun, data, two, GLOBAL_BATCH // PROCESSES)
    # torchrun exits 0 only when every rank did.
    assert rc == 0, two_log
    return {"data": (data, ""), "one": (one, one_log), "two": (two, two_log)}


def test_two_processes_train_one_model_and_save_it_once(runs):
    (one, _), (two, log) = runs["one"], runs["two"]
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "vidtag.json",
        "split.json",
        "test_report.json",
        "test_per_class.csv",
        "training_curve.png",
    ):
        assert (two / name).is_file(), name
    # Only process 0 checks out loud, saves and reports.
    assert log.count("dataset check:") == 1, log
    assert log.count("test split:") == 1, log
    # The ranks shared the data (DDP): as many steps as one process with the same total batch,
    # where ranks each training alone on all of it would take twice as many.
    expected = math.ceil(PER_SPLIT["train"] * len(CLASSES) / GLOBAL_BATCH) * EPOCHS
    assert _steps(one) == expected
    assert _steps(two) == expected
    assert json.loads((two / "vidtag.json").read_text())["classes"] == list(CLASSES)


def test_two_process_model_tags_as_well_as_one_process_model(runs):
    (data, _), (one, _), (two, _) = runs["data"], runs["one"], runs["two"]
    test = labeled_videos(data / "test")
    scores = {name: evaluate(test, str(model), device="cpu") for name, model in (("one", one), ("two", two))}
    assert all(score.count == len(test) for score in scores.values())
    # Two classes: chance is 0.5; colour alone separates them, so a working run is near 1.
    assert scores["one"].accuracy >= 0.8
    # The two runs differ only as two seeds of one recipe do (data order, crops); one test
    # video of slack. A model saved from an untrained or half-synchronised state falls far
    # below it.
    assert scores["two"].accuracy >= scores["one"].accuracy - 1 / len(test)
    # What the model says now is what its own report said when it was saved.
    report = json.loads((two / "test_report.json").read_text())
    assert report["accuracy"] == pytest.approx(scores["two"].accuracy)
