"""The README's demo, offline and on a CPU: make a labeled dataset, train a small model on it
with finetune.py, tag its test split with ``vidtag scan``, and print the accuracy and the CSV.

    python -m tagger.demo [--out demo-output] [--epochs 60]
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tagger.demo.synth import make_dataset

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> None:
    print("$", shlex.join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="Folder for the dataset and the labels.")
    parser.add_argument("--model", default="models/demo", help="Where the trained model goes.")
    parser.add_argument("--epochs", type=int, default=80)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out, data = ROOT / args.out, ROOT / args.out / "data"

    if not (data / "test").is_dir():
        make_dataset(data, per_split={"train": 16, "val": 8, "test": 6})
    classes = ", ".join(p.name for p in sorted((data / "test").iterdir()))
    print(f"dataset: {data} (train/val/test of {classes})")

    _run("finetune.py", str(data), "--out", args.model, "--init", "small", "--epochs", str(args.epochs))
    labels = out / "labels.csv"
    _run("-m", "tagger", "scan", str(data / "test"), "-m", args.model, "-o", str(labels), "--force")

    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    right = sum(row["label"] == Path(row["path"]).parent.name for row in rows)
    unknown = sum(row["label"] == "" for row in rows)
    print()
    print(labels.read_text(), end="")
    print()
    print(f"test accuracy of `vidtag scan`: {right}/{len(rows)} = {right / len(rows):.1%} (chance: 25%)")
    # finetune.py calibrated a threshold per class on val: a video under it is tagged unknown.
    wrong = len(rows) - right - unknown
    print(f"tagged unknown (best label under its class's threshold): {unknown}; wrong: {wrong}")
    print(f"demo run time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
