"""vidtag watch writes the same sidecars as a scan, moves them with their video and, with
``--on-delete remove``, takes back only what it wrote."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import webvtt
from lxml import etree

from tagger import sinks
from tagger.clips.pool import InlineDecoder
from tagger.daemon import Daemon, WatchOptions
from tagger.engines.local import LocalEngine
from tagger.options import TagOptions, TimelineOptions
from tagger.sinks import Outputs
from tagger.state import StateStore

from .test_daemon import wait_for
from .test_timeline import ACTIONS, FPS

TIMELINE = TimelineOptions(min_s=0)


@pytest.fixture(scope="module")
def three_actions(video_factory) -> Path:  # type: ignore[no-untyped-def]
    return video_factory([c for c in ACTIONS for _ in range(10 * FPS)], fps=FPS)


class Watching:
    """A daemon with sidecars only (no table), in a thread."""

    def __init__(self, root: Path, state: Path, classifier, kinds: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
        self.store = StateStore(state)
        engine = LocalEngine(classifier, TagOptions(timeline=TIMELINE), InlineDecoder())
        outputs = Outputs(sinks.sidecars(kinds), timeline=TIMELINE)
        watch = WatchOptions(settle_s=0.3, rescan_s=60.0, on_delete="remove")
        self.daemon = Daemon([str(root)], engine, self.store, outputs, watch)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Watching:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.store.close()
        assert not self.thread.is_alive(), "the daemon did not stop"


USER_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">
   <dc:subject><rdf:Bag><rdf:li>birthday</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def canonical(path: Path) -> bytes:
    return etree.tostring(etree.parse(str(path)), method="c14n")


def subjects(path: Path) -> list[str]:
    ns = {"dc": "http://purl.org/dc/elements/1.1/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}
    return [li.text or "" for li in etree.parse(str(path)).iterfind(".//dc:subject/rdf:Bag/rdf:li", ns)]


def sidecar_files(video: Path) -> dict[str, Path]:
    return {
        "json": video.with_name(video.name + ".vidtag.json"),
        "vtt": video.with_name(f".{video.name}.vidtag.vtt"),
        "nfo": video.with_suffix(".nfo"),
    }


def timeline_of(files: dict[str, Path]) -> list[str]:
    """The labels of the JSON sidecar's segments, and those of the WebVTT cues (webvtt-py)."""
    cues = [c.text.split()[0] for c in webvtt.read(str(files["vtt"]))]
    segments = [s["label"] for s in json.loads(files["json"].read_text())["segments"]]
    assert cues == segments
    return segments


def test_sidecars_follow_the_video_and_go_with_it(tmp_path: Path, classifier, three_actions: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "lib"
    (root / "sub").mkdir(parents=True)
    mine = root / "notes.txt"
    mine.write_text("the user's own file")
    # The user's own XMP, in the <video>.xmp form digiKam also reads: merged, then given back.
    user_xmp = root / "party.xmp"
    user_xmp.write_text(USER_XMP)
    original = canonical(user_xmp)
    with Watching(root, tmp_path / "state.db", classifier, ["json", "vtt", "xmp", "nfo"]):
        first = root / "party.mp4"
        shutil.copy(three_actions, first)
        files = sidecar_files(first)
        assert wait_for(lambda: all(p.exists() for p in files.values()) and len(subjects(user_xmp)) == 4, 60)
        assert timeline_of(files) == list(ACTIONS)
        said = subjects(user_xmp)
        assert said[0] == "birthday" and sorted(said[1:]) == sorted(ACTIONS)

        moved = root / "sub" / "party-2024.mp4"
        first.rename(moved)
        new = {**sidecar_files(moved), "xmp": moved.with_name(moved.name + ".xmp")}

        def followed() -> bool:
            gone = not any(p.exists() for p in files.values()) and canonical(user_xmp) == original
            return gone and all(p.exists() for p in new.values())

        # What vidtag added to the user's XMP left with the video; the user's part stays.
        assert wait_for(followed)
        assert timeline_of(new) == list(ACTIONS) and sorted(subjects(new["xmp"])) == sorted(ACTIONS)

        moved.unlink()
        assert wait_for(lambda: not any(p.exists() for p in new.values()))
    assert mine.read_text() == "the user's own file" and canonical(user_xmp) == original
    assert sorted(p.name for p in root.rglob("*")) == ["notes.txt", "party.xmp", "sub"]
