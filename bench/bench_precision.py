"""What the forward pass costs at each precision on this machine, and where its time goes.

    python bench/bench_precision.py [--model base|tiny] [--calls 4]

One process, the same random input, ``--calls`` timed calls after a warm-up each:

- fp32 with SDPA attention (what vidtag loads) and with eager attention;
- bf16 (native on CPUs with AMX or AVX512-BF16 and on GPUs, emulated elsewhere);
- fp32 with the linear layers dynamically quantized to int8
  (``torch.ao.quantization.quantize_dynamic``), for comparison only: vidtag does not use it.

Then a torch-profiler table of two fp32 SDPA calls: which operators the time goes to.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

from common import SHAPES, machine, make_model


def clips_per_s(model: Any, pixels: Any, calls: int) -> float:
    import torch

    with torch.inference_mode():
        model(pixel_values=pixels)
        started = time.perf_counter()
        for _ in range(calls):
            model(pixel_values=pixels)
    return calls * len(pixels) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--calls", type=int, default=4)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import VideoMAEForVideoClassification
    from transformers.utils import logging as hf_logging

    from tagger.classify import cpu_has_bf16

    hf_logging.disable_progress_bar()
    print(f"machine: {machine()}; bf16 matrix units: {'yes' if cpu_has_bf16() else 'no'}")
    model_dir = str(make_model(args.model))
    pixels = torch.randn(1, 16, 3, 224, 224)

    def load(**kwargs: Any) -> Any:
        return VideoMAEForVideoClassification.from_pretrained(model_dir, **kwargs).eval()

    fp32 = load(attn_implementation="sdpa")
    rows = [("fp32, SDPA attention (vidtag)", clips_per_s(fp32, pixels, args.calls))]
    rows.append(("fp32, eager attention", clips_per_s(load(attn_implementation="eager"), pixels, args.calls)))
    bf16 = load(attn_implementation="sdpa", dtype=torch.bfloat16)
    rows.append(("bf16, SDPA attention", clips_per_s(bf16, pixels.bfloat16(), max(1, args.calls // 2))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode quantization API is deprecated
        int8 = torch.ao.quantization.quantize_dynamic(load(attn_implementation="sdpa"), {torch.nn.Linear})
    rows.append(("int8 dynamic linear layers", clips_per_s(int8, pixels, args.calls)))

    base = rows[0][1]
    print(f"\n{'forward pass, batch 1':34} {'clips/s':>8}  vs fp32 SDPA")
    for name, rate in rows:
        print(f"{name:34} {rate:8.3f}  {rate / base:5.2f}x")

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fp32(pixel_values=pixels)
        fp32(pixel_values=pixels)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
