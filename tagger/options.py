"""Every default vidtag has, in one place: the CLI shows these and the library uses them."""

from __future__ import annotations

#: The model used when none is named (an alias in tagger/registry.toml).
DEFAULT_MODEL = "kinetics-400"
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: Seconds allowed to decode one file; a file over it is an error row.
DECODE_TIMEOUT_S = 120.0
#: 8K (7680x4320) and a little more: larger frames are refused before decoding.
MAX_PIXELS = 8192 * 4320
MAX_DURATION_S = 12 * 3600.0
TOP_K = 5
