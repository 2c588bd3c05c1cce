"""How a file name that is not valid UTF-8 is written, in one place.

POSIX names are bytes. Python hands them over as ``str`` with each undecodable byte as a lone
surrogate (``os.fsdecode``: b"caf\\xe9" is "caf\\udce9"), and ``os.fsencode`` gives the bytes
back. Each output keeps that round trip:

- CSV: the raw bytes (read with ``errors="surrogateescape"`` to get the same ``str`` back);
- JSON (JSONL rows, sidecars, the state store's rows): ``\\udcXX`` escapes, so the file stays
  valid UTF-8 and ``json.loads`` gives the same ``str``;
- Parquet, whose strings must be UTF-8: ``path`` with ``\\xNN`` escapes (:func:`display`) and the
  raw name in the ``path_bytes`` column;
- logs and messages: :func:`display`.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["display", "is_utf8", "json_text"]


def is_utf8(name: str) -> bool:
    """Whether ``name`` came from valid UTF-8 bytes (holds no lone surrogate)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(name: str) -> str:
    """``name`` as valid UTF-8 text for people and UTF-8-only formats: bad bytes as ``\\xNN``."""
    if is_utf8(name):
        return name
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always encodes as UTF-8: lone surrogates become ``\\udcXX`` escapes.

    Readable names stay as they are (``ensure_ascii=False``); only a document holding a name
    that is not UTF-8 is written with ASCII escapes throughout.
    """
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return text if is_utf8(text) else json.dumps(value, ensure_ascii=True, **kwargs)
