"""Fine-tuning on a UCF101-layout folder: the clip dataset and the ``transformers.Trainer`` wiring.

Training decodes with the same decoder, clip plan and preprocessing as tagging, so a saved
model sees at ``vidtag scan`` time exactly the kind of clips it learned from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tagger.clips import sampling
from tagger.clips.decode import DecodeJob, make_job, run_job
from tagger.fsutil import atomic_open
from tagger.models import CLIP_PLAN_FILE, load_spec, model_load_error
from tagger.options import TARGET_PRECISION, TagOptions
from tagger.records import TaggerError
from tagger.training import checks, datasets
from tagger.transforms import Preprocessing, to_model_input

log = logging.getLogger(__name__)

#: The guide's learning rate, for a pretrained base; a small model from scratch needs more.
PRETRAINED_LR = 5e-5
SCRATCH_LR = 1e-3
#: Training rescales the short side to a random size in [256, 320] for a 224 crop (the guide).
TRAIN_SCALE = (256 / 224, 320 / 224)


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything ``finetune.py`` takes; defaults follow the Hugging Face guide."""

    data_dir: str
    out: str
    base: str = "MCG-NJU/videomae-base"
    init: str = "pretrained"  # or "small": a small VideoMAE with random weights
    epochs: int = 4
    batch_size: int = 8
    lr: float | None = None
    stride: int = sampling.DEFAULT_STRIDE
    flip: bool = True
    workers: int = 0
    seed: int = 0
    resume: bool = False
    push_to_hub: bool = False
    #: Thresholds are calibrated on val for this precision after training (``calibrate``).
    target_precision: float = TARGET_PRECISION
    temperature: bool = True


def small_config(labels: Sequence[str]) -> Any:
    """A VideoMAE small enough to train on a laptop CPU in minutes (64 px, 8 frames)."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=64,
        patch_size=16,
        num_frames=8,
        tubelet_size=2,
        # Small enough to learn motion from a few dozen videos within minutes on a CPU: a
        # 128-wide, 4-layer model needed several times the steps on the synthetic set.
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


class ClipDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """One clip per video per item: random position, scale, crop and flip when training;
    the centre clip resized and centre-cropped for evaluation (deterministic)."""

    def __init__(
        self,
        videos: Sequence[datasets.LabeledVideo],
        classes: Sequence[str],
        prep: Preprocessing,
        stride: int,
        train: bool,
        flip: bool = True,
    ) -> None:
        self.videos = list(videos)
        self.index = {name: i for i, name in enumerate(classes)}
        self.prep, self.stride, self.train, self.flip = prep, stride, train, flip

    def __len__(self) -> int:
        return len(self.videos)

    def job(self, video: datasets.LabeledVideo) -> DecodeJob:
        prep = self.prep
        if not self.train:
            return make_job(video.path, prep, self.stride, TagOptions(clips=1))
        height, width = prep.input_size
        low, high = (round(min(height, width) * s) for s in TRAIN_SCALE)
        return DecodeJob(
            video.path,
            prep.num_frames,
            self.stride,
            start_fraction=float(torch.rand(())),
            short_side=int(torch.randint(low, high + 1, ())),
        )

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = self.videos[i]
        _, clips = run_job(self.job(video))
        frames = torch.from_numpy(clips[0].frames)
        if self.train:
            frames = random_crop(frames, self.prep.input_size)
            if self.flip and bool(torch.rand(()) < 0.5):
                frames = frames.flip(-2)
        return {"pixel_values": to_model_input(frames, self.prep), "labels": self.index[video.label]}


def random_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The same random ``size`` window from every frame of ``(T, H, W, 3)``."""
    height, width = frames.shape[1:3]
    ch, cw = size
    top = int(torch.randint(0, height - ch + 1, ()))
    left = int(torch.randint(0, width - cw + 1, ()))
    return frames[:, top : top + ch, left : left + cw]


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "labels": torch.tensor([item["labels"] for item in items]),
    }


def accuracy(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _base_model(settings: FinetuneSettings, classes: Sequence[str]) -> tuple[Any, Preprocessing]:
    """The model to start from and its preprocessing."""
    from transformers import AutoModelForVideoClassification, VideoMAEForVideoClassification

    if settings.init == "small":
        config = small_config(classes)
        size = config.image_size
        prep = Preprocessing(num_frames=config.num_frames, short_side=size, crop=(size, size))
        return VideoMAEForVideoClassification(config), prep
    spec = load_spec(settings.base)
    try:
        model = AutoModelForVideoClassification.from_pretrained(
            spec.ref.source,
            label2id={name: i for i, name in enumerate(classes)},
            id2label=dict(enumerate(classes)),
            ignore_mismatched_sizes=True,  # a new head sized to the user's classes
            use_safetensors=True,
        )
    except (OSError, ValueError) as exc:
        raise model_load_error(spec.ref, exc) from None
    return model, spec.prep


def check(settings: FinetuneSettings) -> tuple[datasets.Dataset, checks.CheckResult]:
    """Load and check the dataset the way ``finetune`` would, without building a model."""
    data = datasets.load_dataset(settings.data_dir, seed=settings.seed)
    num_frames = (
        small_config(data.classes).num_frames
        if settings.init == "small"
        else load_spec(settings.base).prep.num_frames
    )
    return data, checks.check_dataset(data, num_frames, settings.stride)


def _mixed_precision() -> tuple[bool, bool]:
    """(bf16, fp16) for Trainer: mixed precision on CUDA; CPUs train in fp32."""
    if not torch.cuda.is_available():
        return False, False
    bf16 = torch.cuda.is_bf16_supported()
    return bf16, not bf16


def _training_args(settings: FinetuneSettings, out: Path) -> Any:
    """The guide's recipe as ``TrainingArguments``; building them joins the distributed run
    (``torchrun``, ``accelerate launch``) when there is one."""
    from transformers import TrainingArguments

    bf16, fp16 = _mixed_precision()
    # Without an accelerator, Trainer must be told it is on CPU: otherwise, under torchrun,
    # accelerate opens a process group but reports "not distributed", and every rank trains
    # alone on the whole dataset and believes it is process 0. Told, it runs DDP over gloo.
    cpu = not torch.accelerator.is_available()
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        learning_rate=settings.lr or (SCRATCH_LR if settings.init == "small" else PRETRAINED_LR),
        warmup_steps=0.1,
        # From scratch, the small model learns motion late and abruptly; a decaying rate
        # often stalled it short of that point on the synthetic set, a constant one did not.
        lr_scheduler_type="constant_with_warmup" if settings.init == "small" else "linear",
        weight_decay=0.01,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        # The best epoch is reloaded in `finetune` with from_pretrained: Trainer's own reload
        # (load_best_model_at_end) skips VideoMAE's renamed q/v biases in transformers 5.
        metric_for_best_model="accuracy",
        save_total_limit=2,
        remove_unused_columns=False,
        dataloader_num_workers=settings.workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=settings.seed,
        report_to="none",
        disable_tqdm=True,
        bf16=bf16,
        fp16=fp16,
        use_cpu=cpu,
        # VideoMAE's classifier uses every weight in each forward pass; looking for unused
        # ones would cost DDP an extra walk of the autograd graph every step.
        ddp_find_unused_parameters=False,
    )


def finetune(settings: FinetuneSettings) -> Path:
    """Train, keep the best epoch by validation accuracy, save and report; returns the model dir.

    Under ``torchrun`` or ``accelerate launch`` every process trains on its share of the data,
    and only the global main process saves, reports and pushes.
    """
    from transformers import Trainer, set_seed
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(settings.out)
    args = _training_args(settings, out)
    main = args.process_index == 0
    # 1. Data: the user's folders, split without leakage, checked before any training. Every
    # process checks on its own (the split is deterministic, so all reach the same verdict and
    # stop together on errors) rather than waiting on the main process, which for a large
    # dataset could outlast the process group's timeout.
    data, checked = check(settings)
    if main:
        log.warning("dataset check: %s", checked.format())
    if not checked.ok:
        raise TaggerError("the dataset check found errors (listed above); fix them and run again")
    if "val" not in data.splits:
        raise TaggerError(f"{settings.data_dir} has no val/ split: it is needed to pick the best epoch")
    # The new head (and, for --init small, every weight) is drawn before Trainer seeds anything.
    set_seed(settings.seed)
    model, prep = _base_model(settings, data.classes)
    train_set = ClipDataset(
        data.splits["train"], data.classes, prep, settings.stride, train=True, flip=settings.flip
    )
    val_set = ClipDataset(data.splits["val"], data.classes, prep, settings.stride, train=False)

    # 2. Trainer, with the guide's recipe.
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collate,
        compute_metrics=accuracy,
    )
    if settings.resume and not any((out / "checkpoints").glob("checkpoint-*")):
        raise TaggerError(f"--resume: no checkpoint in {out / 'checkpoints'} to resume from")
    trainer.train(resume_from_checkpoint=True if settings.resume else None)
    # Every process is through training, and the main one through writing its last
    # checkpoint, before that one reloads the best and the others close the process group.
    trainer.accelerator.wait_for_everyone()
    try:
        if trainer.is_world_process_zero():
            _save_and_report(settings, data, prep, model, trainer.state)
    finally:
        # After the barrier nothing else is collective, so the other processes leave now
        # instead of holding the process group open through the main one's test report.
        trainer.accelerator.end_training()
    return out


def _save_and_report(
    settings: FinetuneSettings,
    data: datasets.Dataset,
    prep: Preprocessing,
    model: Any,
    state: Any,
) -> None:
    """Save the best epoch with what tagging needs to cut the same clips, then report on test/."""
    from transformers import AutoModelForVideoClassification

    from tagger.classify import load_classifier
    from tagger.training import report as reporting
    from tagger.training.calibrate import calibrate_classifier
    from tagger.training.evaluate import evaluate

    out = Path(settings.out)
    # 3. Save the best epoch, not the last one that Trainer holds. It is reloaded here only:
    # checkpoints are written by the global main process, so on several machines without
    # shared storage they exist on its machine alone.
    if state.best_model_checkpoint:
        model = AutoModelForVideoClassification.from_pretrained(
            state.best_model_checkpoint, use_safetensors=True
        )
    model.save_pretrained(str(out))
    with atomic_open(out / "preprocessor_config.json") as f:
        json.dump(prep.to_config(), f, indent=2)
    datasets.save_split(data, out / "split.json")
    plan = {
        "frame_stride": settings.stride,
        "clip_plan": {"train": "one random clip", "eval": "uniform clips over the whole video"},
        "classes": list(data.classes),
        "data_fingerprint": datasets.fingerprint(data),
        "split": "split.json",
        "settings": asdict(settings),
    }
    with atomic_open(out / CLIP_PLAN_FILE) as f:
        json.dump(plan, f, indent=2)

    # 4. Thresholds per class, picked on val for the target precision.
    calibrated = calibrate_classifier(
        load_classifier(str(out)),
        data.splits["val"],
        out,
        settings.target_precision,
        settings.temperature,
    )
    log.warning("thresholds:\n%s", calibrated.format())

    # 5. Report on the test split, the way `vidtag scan` sees the videos.
    if "test" in data.splits:
        result = evaluate(data.splits["test"], str(out))
        reporting.write_report(result, out, prefix="test", log_history=state.log_history)
        log.warning("test split:\n%s", reporting.format_report(result))
    if settings.push_to_hub:
        # The best epoch, not the last one that Trainer holds.
        from huggingface_hub import HfApi

        api = HfApi()
        repo = api.create_repo(out.name, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo, folder_path=str(out), ignore_patterns=["checkpoints/*"])
