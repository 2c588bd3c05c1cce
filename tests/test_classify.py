"""Model loading (aliases, hub ids, directories; safetensors only), device, precision, outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tagger import classify, models
from tagger.classify import load_classifier, resolve_precision
from tagger.models import resolve_model
from tagger.records import ModelLoadError, TaggerError

from .conftest import TINY_FRAMES, TINY_SIZE, TINY_STRIDE


def test_alias_resolves_to_the_registry_checkpoint():
    ref = resolve_model("kinetics-400")
    assert ref.source == "MCG-NJU/videomae-base-finetuned-kinetics" and not ref.local
    assert resolve_model("ucf101-subset").source == "sayakpaul/videomae-base-finetuned-ucf101-subset"
    assert resolve_model("org/some-model").source == "org/some-model"


def test_local_directory_and_bad_directories(tiny_model, tmp_path):
    ref = resolve_model(str(tiny_model))
    assert ref.local and ref.source == str(tiny_model)
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "missing" / "model"))


def test_offline_hub_error_says_how_to_fix_it():
    with pytest.raises(ModelLoadError) as err:
        load_classifier("some-org/not-cached-model", device="cpu")
    message = str(err.value)
    assert "some-org/not-cached-model" in message
    assert "--model DIR" in message and "hf download" in message


def test_loaded_model_reads_its_checkpoint(classifier, tiny_model):
    assert classifier.labels == ["red", "green", "blue"]
    assert classifier.prep.num_frames == TINY_FRAMES
    assert classifier.prep.crop == (TINY_SIZE, TINY_SIZE)
    assert classifier.prep.mean == (0.45, 0.45, 0.45)
    assert classifier.stride == TINY_STRIDE
    assert classifier.model.config._attn_implementation == "sdpa"
    assert classifier.id.startswith(f"{tiny_model}@")


def test_stride_defaults_to_the_guide_value_without_vidtag_json(tiny_model, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    (copy / "vidtag.json").unlink()
    assert load_classifier(str(copy), device="cpu").stride == 4


def test_fingerprint_changes_with_the_weights(tiny_model, tmp_path, classifier):
    from transformers import VideoMAEForVideoClassification

    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    assert load_classifier(str(copy), device="cpu").fingerprint == classifier.fingerprint
    model = VideoMAEForVideoClassification.from_pretrained(copy)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(copy)
    assert load_classifier(str(copy), device="cpu").fingerprint != classifier.fingerprint


def test_pickle_weights_are_refused(tiny_model, tmp_path):
    from safetensors.torch import load_file

    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    state = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(state, copy / "pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        load_classifier(str(copy), device="cpu")


def test_predict_gives_probabilities(classifier):
    clips = np.zeros((3, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    clips[0, ..., 0] = 220
    clips[1, ..., 1] = 200
    clips[2, ..., 2] = 220
    probs = classifier.predict(clips)
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs.argmax(axis=1).tolist() == [0, 1, 2]


def test_batches_are_stacked_into_one_reused_array(classifier):
    rng = np.random.default_rng(5)
    clips = list(rng.integers(0, 255, size=(4, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8))
    first = classifier.stack(clips)
    assert np.array_equal(first, np.stack(clips))
    assert np.allclose(classifier.predict(first), classifier.predict(np.stack(clips)), atol=1e-6)

    again = classifier.stack(clips[::-1])
    assert np.shares_memory(first, again)  # no new array (and no new pages) per batch
    assert np.array_equal(again, np.stack(clips[::-1]))
    part = classifier.stack(clips[:2])  # a last, smaller batch is a view of the same array
    assert part.shape[0] == 2 and np.shares_memory(part, again) and np.array_equal(part, np.stack(clips[:2]))

    other = [c[:, :8] for c in clips]  # another clip shape gets its own array
    assert np.array_equal(classifier.stack(other), np.stack(other))


def test_multi_label_models_use_sigmoid(tiny_model, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    config = json.loads((copy / "config.json").read_text())
    config["problem_type"] = "multi_label_classification"
    (copy / "config.json").write_text(json.dumps(config))
    multi = load_classifier(str(copy), device="cpu", precision="fp32")
    assert multi.multi_label
    clips = np.full((1, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), 128, np.uint8)
    probs = multi.predict(clips)[0]
    from tagger.transforms import to_model_input

    with torch.no_grad():
        logits = multi.model(pixel_values=to_model_input(torch.from_numpy(clips), multi.prep)).logits[0]
    assert np.allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-5)
    assert not np.isclose(probs.sum(), 1.0, atol=1e-3)


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(classify, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == torch.float32
    monkeypatch.setattr(classify, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == torch.bfloat16
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("fp16", cpu) == torch.float16


def test_bf16_model_agrees_with_fp32(tiny_model, classifier):
    bf16 = load_classifier(str(tiny_model), device="cpu", precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 255, size=(4, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    assert np.abs(bf16.predict(clips) - classifier.predict(clips)).max() < 0.05


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TaggerError, match="CUDA is not available"):
        classify.resolve_device("cuda")
    assert classify.resolve_device("auto") == torch.device("cpu")


def test_batch_out_of_gpu_memory_is_split_and_remembered(classifier, monkeypatch):
    rng = np.random.default_rng(2)
    clips = rng.integers(0, 255, size=(8, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    expected = np.concatenate([classifier.predict(clips[i : i + 1]) for i in range(8)])
    forward = classifier._forward
    sizes: list[int] = []

    def small_card(batch, planes=None):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return forward(batch, planes)

    monkeypatch.setattr(classifier, "_forward", small_card)
    monkeypatch.setattr(classifier, "max_batch", None)
    got = classifier.predict(clips)
    assert np.allclose(got, expected, atol=1e-5)
    assert sizes[:3] == [8, 4, 2] and classifier.max_batch == 2
    sizes.clear()
    classifier.predict(clips)
    assert sizes == [2, 2, 2, 2]  # the size that fitted is kept


def test_a_single_clip_out_of_memory_is_raised(classifier, monkeypatch):
    def no_memory(batch, planes=None):  # type: ignore[no-untyped-def]
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(classifier, "_forward", no_memory)
    monkeypatch.setattr(classifier, "max_batch", None)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        classifier.predict(np.zeros((1, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), np.uint8))


@pytest.mark.slow
def test_compiled_model_gives_the_same_probabilities(tiny_model, classifier):
    compiled = load_classifier(str(tiny_model), device="cpu", precision="fp32", compile=True)
    assert type(compiled.model).__name__ == "OptimizedModule"
    clips = np.random.default_rng(4).integers(
        0, 255, size=(2, TINY_FRAMES, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8
    )
    assert np.allclose(compiled.predict(clips), classifier.predict(clips), atol=1e-5)


def test_the_alias_registry_ships_inside_the_wheel(tmp_path):
    """A plain ``pip install .`` (not editable) must still know the aliases."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # build a copy: the checkout gets no build/ folder
    shutil.copytree(root / "tagger", src / "tagger", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    build = ["pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", *build],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("vidtag-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "tagger/registry.toml" in zf.namelist()
        shipped = zf.read("tagger/registry.toml").decode()
    assert "kinetics-400" in shipped and models.REGISTRY.read_text() == shipped


def test_a_model_without_its_preprocessor_and_clip_plan_says_which_defaults_it_uses(
    tiny_model, tmp_path, caplog
):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    (copy / "vidtag.json").unlink()
    (copy / "preprocessor_config.json").unlink()
    with caplog.at_level("WARNING", logger="tagger.classify"):
        spec = models.load_spec(str(copy))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "preprocessor_config.json" in said and "ImageNet normalisation" in said
    assert "vidtag.json" in said and "frame stride 4" in said
    assert spec.stride == 4
    caplog.clear()
    with caplog.at_level("WARNING", logger="tagger.classify"):
        models.load_spec(str(tiny_model))  # a complete model directory says nothing
    assert not caplog.records
