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


def sidecar_files(video: Path) -> dict[str, Path]:
    return {
        "json": video.with_name(video.name + ".vidtag.json"),
        "vtt": video.with_name(f".{video.name}.vidtag.vtt"),
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
    with Watching(root, tmp_path / "state.db", classifier, ["json", "vtt"]):
        first = root / "party.mp4"
        shutil.copy(three_actions, first)
        files = sidecar_files(first)
        assert wait_for(lambda: all(p.exists() for p in files.values()), 60)
        assert timeline_of(files) == list(ACTIONS)

        moved = root / "sub" / "party-2024.mp4"
        first.rename(moved)
        new = sidecar_files(moved)
        assert wait_for(
            lambda: all(p.exists() for p in new.values()) and not any(p.exists() for p in files.values())
        )
        assert timeline_of(new) == list(ACTIONS)

        moved.unlink()
        assert wait_for(lambda: not any(p.exists() for p in new.values()))
    assert mine.read_text() == "the user's own file"
    assert sorted(p.name for p in root.rglob("*")) == ["notes.txt", "sub"]
