"""Fine-tune vidtag's VideoMAE on your own labeled folders, so tags follow your taxonomy.

    python finetune.py DATA_DIR --out models/NAME [--base MCG-NJU/videomae-base | --init small]

DATA_DIR is UCF101 layout: train/, val/ and test/, each with one folder per class (or just
class folders, which are split for you, keeping UCF101 groups `_gNN_` together). The steps,
in tagger/training/train.py `finetune`, read top to bottom:

  1. data     class names from the folders; the split written to OUT/split.json; a dataset
              check (undecodable, too short, empty classes, imbalance, files in two splits)
  2. model    the base checkpoint with a new head sized to your classes (or --init small)
  3. train    transformers.Trainer with the guide's recipe: lr 5e-5, 10 % warmup, evaluation
              and a checkpoint each epoch, the best epoch by validation accuracy
  4. save     OUT holds safetensors weights, config and preprocessor config, and vidtag.json
              (frame stride, clip plan, classes, data fingerprint) so `vidtag scan -m OUT`
              cuts the clips the model was trained on
  5. calibrate  a threshold per class picked on val/ for --target-precision (default 0.9),
              after temperature scaling, stored in vidtag.json: scan then tags a video of
              none of the classes as unknown instead of forcing one on it
  6. report   accuracy, per-class precision/recall/F1 and the confusion matrix on test/, as
              CSV and PNG next to the model, the training curve, and precision and recall at
              the thresholds with the share left unknown and a reliability diagram

Same options as `vidtag finetune --help`. Several GPUs or nodes: run this script with
`torchrun --nproc_per_node N finetune.py ...` or `accelerate launch finetune.py ...` (with an
`accelerate config`, or `--multi_gpu --num_processes N`; on a CPU-only machine the processes
talk over gloo). Each process trains on its share of train/ with --batch-size videos per step;
only the first one writes OUT, reports on test/ and pushes to the hub.
"""

from tagger.cli import finetune

if __name__ == "__main__":
    finetune(prog_name="finetune.py")
