"""vidtag's own JSON sidecar beside each video, and what the media sidecars tag a video with.

A sidecar is replaced atomically, and a file at its path that vidtag did not write is never
overwritten or removed.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, ClassVar

from tagger import __version__
from tagger.fsutil import atomic_open
from tagger.names import display, json_text
from tagger.records import LIVE_STATUSES, OutputError, VideoResult

SIDECAR_SUFFIX = ".vidtag.json"
#: Besides the top label, a video tag becomes a keyword of the media sidecars at this score.
KEYWORD_MIN_SCORE = 0.5
_GENERATOR = "vidtag"
# A sidecar is a few hundred bytes; anything far larger at that path is not one of ours,
# and reading it whole just to refuse it would be wasteful.
_SIDECAR_MAX_BYTES = 4 * 1024 * 1024

log = logging.getLogger("tagger.sinks")


def keywords(result: VideoResult) -> tuple[str, ...]:
    """What the media sidecars (XMP, NFO) tag a video with: what a user would say is in it.

    The video's best label, its other labels scoring at least ``KEYWORD_MIN_SCORE``, and the
    label of every timeline segment; each once, best first. None for a video that failed, and
    only the segments' labels for one tagged unknown.
    """
    if not result.ok:
        return ()
    # An unknown video's labels (kept with --keep-unsure) are guesses, not what is in it.
    tags = () if result.unsure else result.tags
    video = [t.label for i, t in enumerate(tags) if i == 0 or t.score >= KEYWORD_MIN_SCORE]
    return tuple(dict.fromkeys([*video, *result.segment_labels()]))


def sidecar_path(video_path: str) -> str:
    """Where the JSON sidecar of ``video_path`` goes: ``<video>.<ext>.vidtag.json``."""
    return video_path + SIDECAR_SUFFIX


def _foreign_reason(path: str) -> str | None:
    """Why the file at ``path`` is not a vidtag sidecar, or None if it is one (or is absent)."""
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(_SIDECAR_MAX_BYTES + 1)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if len(data) > _SIDECAR_MAX_BYTES:
        return "it is too large to be a vidtag sidecar"
    try:
        doc = json.loads(data)
    except ValueError:
        return "it is not JSON"
    if not isinstance(doc, dict) or doc.get("generator") != _GENERATOR:
        return f'it has no "generator": "{_GENERATOR}"'
    return None


def render_sidecar(result: VideoResult, extra: dict[str, Any] | None = None) -> str:
    """The JSON sidecar's text for ``result`` (``extra``: more keys, e.g. the version)."""
    doc: dict[str, Any] = {"generator": _GENERATOR, **result.row()}
    doc["tags"] = [{"label": t.label, "score": round(t.score, 6)} for t in result.tags]
    if result.unsure:
        doc["unsure"] = True
    if result.timeline:
        doc["segments"] = [
            {k: v for k, v in s.row(result.path, result.model).items() if k not in ("path", "model")}
            for s in result.segments
        ]
    for key, value in (extra or {}).items():
        if key in doc:
            raise ValueError(f"sidecar extra key {key!r} clashes with a result field")
        doc[key] = value
    return json_text(doc, indent=2) + "\n"


def write_sidecar(result: VideoResult, extra: dict[str, Any] | None = None) -> str:
    """Write the JSON sidecar beside ``result.path`` and return its path; a sidecar that holds
    this already is left as it is (a new mtime makes media servers look again).

    Refuses (``OutputError``) to replace a file at that path that vidtag did not write.
    """
    path = sidecar_path(result.path)
    reason = _foreign_reason(path)
    if reason is not None:
        raise OutputError(
            f"{display(path)} already exists and {reason}; vidtag will not overwrite a file it did not write"
        )
    text = render_sidecar(result, extra)
    if _holds(path, text):
        return path
    with atomic_open(path, "w") as f:
        f.write(text)
    return path


def _holds(path: str, text: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read(len(text) + 1) == text
    except OSError:
        return False


def remove_sidecar(video_path: str) -> bool:
    """Delete the sidecar of ``video_path`` if vidtag wrote it; True when one was removed."""
    path = sidecar_path(video_path)
    if not os.path.lexists(path) or _foreign_reason(path) is not None:
        return False
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warning("cannot remove %s: %s", display(path), e.strerror or e)
        return False
    return True


class JsonSidecar:
    """``<video>.<ext>.vidtag.json``: the result of one video, with vidtag's version."""

    name: ClassVar[str] = "json"
    #: A failure is of one file (a foreign file in the way, a name too long): the run goes on.
    per_file: ClassVar[bool] = True

    def write(self, result: VideoResult) -> None:
        """Write the sidecar of a video that is there; moved and removed rows have none."""
        if result.status in LIVE_STATUSES:
            write_sidecar(result, {"version": __version__})

    def done(self, result: VideoResult) -> bool:
        """Whether the video's sidecar holds this result already (a scan skips rewriting it)."""
        return _holds(sidecar_path(result.path), render_sidecar(result, {"version": __version__}))

    def remove(self, video_path: str) -> None:
        remove_sidecar(video_path)

    def close(self) -> None:
        pass
