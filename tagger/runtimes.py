"""CPU runtimes other than PyTorch: the model exported once to ONNX, then run by ONNX Runtime
(fp32, or int8 by dynamic quantization) or by OpenVINO.

A ViT runs faster on the CPU in these runtimes than in PyTorch's eager kernels (BENCHMARKS.md,
"Runtimes"); on CUDA PyTorch stays. The export is cached per model fingerprint, runtime
version, precision and clip shape, written atomically, and rebuilt when a cached file does
not load, so a changed model re-exports and a half-written file is never used.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tagger.fsutil import cannot_write
from tagger.records import InputError

log = logging.getLogger(__name__)

#: Runtime -> the module it needs and the extra that installs it.
PACKAGES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}
#: ``auto`` on a CPU takes the first of these that is installed (OpenVINO measured fastest).
CPU_PREFERENCE = ("openvino", "onnx")
OPSET = 17
#: vidtag's precision -> OpenVINO's inference precision hint (auto: OpenVINO's own choice).
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def installed(runtime: str) -> bool:
    if runtime == "torch":
        return True
    module, _ = PACKAGES[runtime]
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec("onnx") is not None


def resolve_runtime(runtime: str, device_type: str, precision: str) -> str:
    """The runtime ``runtime`` names for a model on ``device_type`` ("cpu" or "cuda")."""
    if runtime == "auto":
        if device_type != "cpu" or precision in ("bf16", "fp16"):
            return "torch"
        chosen = next((r for r in CPU_PREFERENCE if installed(r)), "torch")
        if precision == "int8" and chosen == "openvino":
            chosen = "onnx" if installed("onnx") else chosen
        log.info("runtime auto: %s (the fastest installed for the CPU)", chosen)
        return chosen
    if runtime != "torch":
        if not installed(runtime):
            _, extra = PACKAGES[runtime]
            raise InputError(f'--runtime {runtime} needs its packages: pip install "vidtag[{extra}]"')
        if device_type != "cpu":
            raise InputError(f"--runtime {runtime} runs on the CPU: use --device cpu, or --runtime torch")
    if precision == "int8" and runtime != "onnx":
        raise InputError("--precision int8 needs --runtime onnx (dynamic int8 quantization)")
    if runtime == "onnx" and precision in ("bf16", "fp16"):
        raise InputError("--runtime onnx runs fp32 or int8 on the CPU: use --precision fp32, auto or int8")
    return runtime


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidtag" / "exports"


def _version(package: str) -> str:
    return importlib.metadata.version(package)


def export_path(fingerprint: str, runtime: str, precision: str, shape: tuple[int, int, int]) -> Path:
    """Where the export of a model lives: a changed model, runtime, precision or shape is a new file."""
    import torch

    frames, height, width = shape
    module, _ = PACKAGES[runtime]
    name = (
        f"{fingerprint}-{runtime}{_version(module)}-torch{torch.__version__.split('+')[0]}-{precision}"
        f"-{frames}x{height}x{width}.onnx"
    )
    return cache_dir() / name


def _export(net: Any, shape: tuple[int, int, int], target: Path) -> None:
    """``net`` to ONNX at ``target`` (atomically), with a dynamic batch size."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=pixel_values).logits

    frames, height, width = shape
    example = torch.zeros(1, frames, 3, height, width)
    with _written_by_name(target) as partial, torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            Logits(net.float().eval()),
            (example,),
            str(partial),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8 (weights int8, activations quantized on the fly) of ``source`` at ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # The quantizer advises pre-processing through the root logger on every call.
    root.setLevel(max(level, logging.ERROR))
    try:
        with _written_by_name(target) as partial:
            quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


@contextmanager
def _written_by_name(target: Path) -> Iterator[Path]:
    """A temporary name beside ``target`` for a writer that takes a path; renamed onto
    ``target`` when the writer succeeds, removed otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


class ExportedModel:
    """Called like a transformers model: ``model(pixel_values=x).logits``, on the CPU."""

    def __init__(self, runtime: str, path: Path, threads: int, precision: str = "fp32") -> None:
        self.runtime = runtime
        self.path = path
        if runtime == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.log_severity_level = 3
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._run = lambda x: self._session.run(None, {"pixel_values": x})[0]
        else:
            import openvino as ov

            config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
            # OpenVINO computes in bf16 by itself where the CPU has bf16 units: that is what auto
            # means in vidtag too, but fp32 has to be asked for.
            if precision in OPENVINO_PRECISIONS:
                config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISIONS[precision]
            compiled = ov.Core().compile_model(str(path), "CPU", config)
            self._run = lambda x: compiled(x)[0]

    def __call__(self, pixel_values: Any) -> SimpleNamespace:
        import numpy as np
        import torch

        logits = self._run(np.ascontiguousarray(pixel_values.numpy(), dtype=np.float32))
        return SimpleNamespace(logits=torch.from_numpy(np.asarray(logits)))


def load_exported(
    load_net: Callable[[], Any],
    fingerprint: str,
    runtime: str,
    precision: str,
    shape: tuple[int, int, int],
    threads: int,
) -> ExportedModel:
    """The cached export for ``runtime`` (made now from ``load_net()``, the torch model, if
    missing), loaded. A cached file that does not load (cut short, corrupt) is made again, once;
    a cache folder that takes no file is one clear error."""
    fp32 = export_path(fingerprint, runtime, "fp32", shape)
    path = export_path(fingerprint, runtime, precision, shape) if precision == "int8" else fp32
    for attempt in (1, 2):
        try:
            if not fp32.is_file():
                log.info("exporting the model to %s (once per model)", fp32)
                _export(load_net(), shape, fp32)
            if precision == "int8" and not path.is_file():
                _quantize(fp32, path)
        except OSError as exc:
            raise cannot_write(fp32 if not fp32.is_file() else path, exc) from None
        try:
            return ExportedModel(runtime, path, threads, precision)
        except Exception as exc:  # each runtime has its own load errors
            if attempt == 2:
                raise InputError(f"cannot load the {runtime} export {path}: {exc}") from None
            log.warning("the cached export %s does not load (%s): making it again", path, exc)
            for stale in {fp32, path}:
                stale.unlink(missing_ok=True)
    raise AssertionError("unreachable")
