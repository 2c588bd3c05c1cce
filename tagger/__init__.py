"""vidtag: tag videos with what happens in them, using VideoMAE over the whole video.

The front door for Python users. Names load on first use, so ``import tagger`` stays light
(no torch): ``scan_videos`` and ``watch_videos`` run what ``vidtag scan`` and ``vidtag watch``
do; ``load_classifier`` and ``tag`` are the two steps under them, for a caller with its own loop.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# ``scan_videos``, not ``scan``: the submodule ``tagger.scan`` would shadow that name (and
# ``watch_videos`` to match).
_EXPORTS = {
    "scan_videos": ("tagger.scan", "run"),
    "ScanSummary": ("tagger.scan", "ScanSummary"),
    "load_classifier": ("tagger.classify", "load_classifier"),
    "watch_videos": ("tagger.daemon", "watch_videos"),
    "tag": ("tagger.engines.local", "tag"),
    "TagOptions": ("tagger.options", "TagOptions"),
    "TimelineOptions": ("tagger.options", "TimelineOptions"),
    "WatchOptions": ("tagger.options", "WatchOptions"),
    "VideoFilter": ("tagger.sources.filters", "VideoFilter"),
    "VideoResult": ("tagger.records", "VideoResult"),
    "TaggerError": ("tagger.records", "TaggerError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tagger' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
