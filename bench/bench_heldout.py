"""What calibration buys on videos of a class the model never saw: the held-out experiment.

    python bench/bench_heldout.py [--dataset motion|colour] [--held-out CLASS] [--epochs 12]

A generated dataset is made with one class left out of it (its test videos kept aside): the
demo's (``motion``: RedUp, RedDown, BlueUp, BlueDown; BlueDown held out), or flat colours under
noise (``colour``: Red, Green, Blue, Yellow; Yellow held out). ``finetune.py --init small``
trains on the rest and calibrates on val/ (precision 0.9). The test videos of every class, the
held-out one included, are then tagged twice: at ``--threshold 0`` (the top label, as before
calibration) and at ``--threshold auto`` (the calibrated thresholds). For each: the share of the
held-out class's videos tagged unknown, the precision of the tags given (a held-out video
tagged as a known class is a wrong tag), and the recall on the known classes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

#: The colour dataset: flat colours under per-pixel noise, one class each.
COLOURS = {"Red": (220, 30, 30), "Green": (30, 200, 40), "Blue": (30, 40, 220), "Yellow": (220, 210, 40)}


def colour_dataset(root: Path, per_split: dict[str, int], seed: int) -> Path:
    """``root/{split}/<Colour>/*.mp4``: 3 s at 12 fps, 96x72, each frame its class's colour,
    shifted per video in brightness and per pixel by noise."""
    import numpy as np

    from tagger.demo.synth import write_video

    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                base = np.array(rgb) * rng.uniform(0.7, 1.1)
                noisy = (np.clip(base + rng.integers(-40, 41, (72, 96, 3)), 0, 255) for _ in range(36))
                write_video(folder / f"{name}_{k:02d}.mp4", (f.astype(np.uint8) for f in noisy), 12, (96, 72))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("motion", "colour"), default="motion")
    parser.add_argument("--held-out", default=None, help="[default: BlueDown, or Yellow for colour]")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=16, help="training videos per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from click.testing import CliRunner

    from tagger.classify import load_classifier
    from tagger.cli import cli
    from tagger.demo.synth import CLASSES, make_dataset
    from tagger.engines.local import tag
    from tagger.options import TagOptions

    classes = tuple(COLOURS) if args.dataset == "colour" else CLASSES
    held_out = args.held_out or ("Yellow" if args.dataset == "colour" else "BlueDown")
    known = tuple(c for c in classes if c != held_out)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = {"train": args.per_class, "val": 6, "test": 8}
        if args.dataset == "colour":
            data = colour_dataset(root / "data", splits, args.seed)
        else:
            data = make_dataset(root / "data", per_split=splits, seed=args.seed)
        for split in ("train", "val"):
            shutil.rmtree(data / split / held_out)
        # Its test videos wait outside the dataset, whose splits must hold the same classes.
        unseen = root / "unseen" / held_out
        shutil.move(data / "test" / held_out, unseen)
        model = root / "model"
        flags = ["--init", "small", "--epochs", str(args.epochs), "--lr", "2e-3", "--seed", str(args.seed)]
        result = CliRunner().invoke(cli, ["finetune", str(data), "--out", str(model), *flags])
        if result.exit_code != 0:
            raise SystemExit(result.output)
        classifier = load_classifier(str(model), device="cpu", precision="fp32")
        assert classifier.calibration is not None
        folders = [data / "test" / c for c in known] + [unseen]
        truth = {str(p): p.parent.name for folder in folders for p in sorted(folder.iterdir())}
        pairs = zip(classifier.labels, classifier.calibration.thresholds, strict=True)
        print(f"known classes: {', '.join(known)}; held out: {held_out}; {len(truth)} test videos")
        print(
            f"thresholds: {', '.join(f'{c} {t:.3f}' for c, t in pairs)};"
            f" temperature {classifier.calibration.temperature:.3f}"
        )
        print(f"{'rule':<28} {'held-out unknown':>16} {'precision':>9} {'known recall':>12}")
        for name, threshold in (("top label (--threshold 0)", 0.0), ("calibrated (auto)", None)):
            options = TagOptions(clips=1, threshold=threshold, top_k=1)
            results = {r.path: r for r in tag(list(truth), classifier, options)}
            labels = {p: (r.tags[0].label if r.tags and not r.unsure else "") for p, r in results.items()}
            held = [p for p, c in truth.items() if c == held_out]
            unknown = sum(labels[p] == "" for p in held) / len(held)
            given = [p for p, label in labels.items() if label]
            right = sum(labels[p] == truth[p] for p in given)
            known_videos = [p for p, c in truth.items() if c != held_out]
            recall = sum(labels[p] == truth[p] for p in known_videos) / len(known_videos)
            precision = right / len(given) if given else 0.0
            print(f"{name:<28} {unknown:>16.2f} {precision:>9.3f} {recall:>12.3f}")
            if threshold == 0:
                best = sorted(round(results[p].tags[0].score, 3) for p in held)
                print(f"  held-out videos' best scores: {best}")


if __name__ == "__main__":
    main()
