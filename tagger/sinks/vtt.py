"""The timeline as WebVTT beside each video: one cue per segment, "label score" as its text.

Players load it as a track (``<track kind="chapters">`` in a browser, or ``kind="metadata"``
with its mode set to "hidden"; a subtitle file in VLC or mpv). It is a hidden file beside the
video (``vtt_path``) so that media servers and players do not take it for subtitles on their
own: Jellyfin takes ``<base>.*.vtt`` and Kodi any ``<base>*.vtt`` as subtitles of ``<base>.mp4``.
vidtag writes the whole file itself: WebVTT is a line format with nothing to merge, and the
tests read it back with webvtt-py, an independent parser.
"""

from __future__ import annotations

import contextlib
import os
from typing import ClassVar

from tagger import __version__
from tagger.fsutil import atomic_open
from tagger.names import display
from tagger.records import LIVE_STATUSES, OutputError, VideoResult

#: Both the name and the first line say vidtag wrote the file: only such a file is replaced.
VTT_SUFFIX = ".vidtag.vtt"
_FIRST_LINE = "WEBVTT - vidtag timeline"


def vtt_path(video_path: str) -> str:
    """``.<video>.<ext>.vidtag.vtt`` in the video's folder (hidden: see the module docstring)."""
    folder, name = os.path.split(video_path)
    return os.path.join(folder, f".{name}{VTT_SUFFIX}")


def timestamp(seconds: float) -> str:
    """WebVTT's ``hh:mm:ss.ttt``."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def render(result: VideoResult) -> str:
    """The WebVTT text of ``result``'s timeline."""
    lines = [_FIRST_LINE, "", f"NOTE written by vidtag {__version__}; model {result.model}", ""]
    for number, segment in enumerate(result.segments, start=1):
        # "-->" cannot appear in a cue's text; a label never holds it, but a model could say so.
        label = segment.label.replace("-->", "->")
        lines += [
            str(number),
            f"{timestamp(segment.start_s)} --> {timestamp(segment.end_s)}",
            f"{label} {segment.score:.2f}",
            "",
        ]
    return "\n".join(lines)


def _ours(path: str) -> bool:
    """Whether the file at ``path`` is a vidtag timeline (or absent)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return first.rstrip(b"\r\n").lstrip(b"\xef\xbb\xbf") == _FIRST_LINE.encode()


class VttSidecar:
    """``.<video>.<ext>.vidtag.vtt``: the segments of a video tagged with a timeline."""

    name: ClassVar[str] = "vtt"
    per_file: ClassVar[bool] = True

    def write(self, result: VideoResult) -> None:
        """Write the timeline; a video without one (or that failed) gets no file."""
        if result.status not in LIVE_STATUSES or not result.timeline or not result.ok:
            return
        path = vtt_path(result.path)
        if not _ours(path):
            raise OutputError(
                f"{display(path)} already exists and was not written by vidtag; it is left as it is"
            )
        text = render(result)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    return  # unchanged: a rewrite would only touch its mtime
        except (OSError, UnicodeDecodeError):
            pass
        with atomic_open(path, "w") as f:
            f.write(text)

    def done(self, result: VideoResult) -> bool:
        try:
            with open(vtt_path(result.path), encoding="utf-8") as f:
                return f.read() == render(result)
        except (OSError, UnicodeDecodeError):
            return False

    def remove(self, video_path: str) -> None:
        path = vtt_path(video_path)
        if os.path.lexists(path) and _ours(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def close(self) -> None:
        pass
