"""Tests for tagger.sources.watch: settling, temp names, moves, deletions, rescans, symlinks, unavailable
and remounted roots, and files that never open.

Each test drives a real observer (inotify, and polling) by consuming ``events()`` in the test
thread; nothing sleeps for a fixed time except the writer thread that simulates a slow copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.polling import PollingObserverVFS

from tagger.records import VideoFile
from tagger.sources import observe, settle, watch
from tagger.sources import roots as watched_roots
from tagger.sources.discover import discover
from tagger.sources.watch import Deleted, Event, Moved, Settled, Watcher, is_temporary, network_filesystem

SETTLE = 0.3
TICK = 0.05

Predicate = Callable[[list[Event]], bool]


class Store:
    """A caller's state store: tagged paths with the size and mtime they were tagged at."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, int]] = {}

    def add(self, path: Path) -> None:
        st = path.stat()
        self.rows[str(path)] = (st.st_size, st.st_mtime_ns)

    def is_done(self, file: VideoFile) -> bool:
        return self.rows.get(file.path) == (file.size, file.mtime_ns)

    def known(self) -> list[str]:
        return list(self.rows)

    def apply(self, event: Event) -> None:
        if isinstance(event, Settled):
            self.rows[event.file.path] = (event.file.size, event.file.mtime_ns)
        elif isinstance(event, Moved):
            if self.rows.get(event.src) == (event.dst.size, event.dst.mtime_ns):
                self.rows[event.dst.path] = self.rows.pop(event.src)
        else:
            self.rows.pop(event.path, None)


class Stream:
    """Consumes ``events()`` in the test thread, recording what it yields into ``got``."""

    def __init__(self, watcher: Watcher, store: Store) -> None:
        self.stop = threading.Event()
        self.store = store
        self.got: list[Event] = []
        self.ticks = 0
        self._events = watcher.events(self.stop)

    def until(self, predicate: Predicate, timeout: float = 15.0) -> list[Event]:
        """Consume until ``predicate(got)`` holds; fail after ``timeout`` seconds."""
        if not self._pump(predicate, time.monotonic() + timeout):
            raise AssertionError(f"timed out after {timeout} s; got {self.got}")
        return self.got

    def started(self) -> None:
        """Consume up to the first quiet tick: the observer runs and the first scan is done."""
        ticks = self.ticks
        self.until(lambda got: self.ticks > ticks)

    def run_for(self, seconds: float) -> list[Event]:
        """Consume for ``seconds`` more, to show that nothing else comes."""
        self._pump(lambda got: False, time.monotonic() + seconds)
        return self.got

    def close(self) -> None:
        self.stop.set()
        for _ in self._events:
            pass

    def _pump(self, predicate: Predicate, deadline: float) -> bool:
        for event in self._events:
            if event is None:
                self.ticks += 1
            else:
                self.got.append(event)
                self.store.apply(event)
            if predicate(self.got):
                return True
            if time.monotonic() > deadline:
                return False
        raise AssertionError("events() ended before the stop event was set")


def collect(
    watcher: Watcher, until: Predicate, timeout: float = 15.0, store: Store | None = None
) -> list[Event]:
    """Every non-None event up to the one that makes ``until`` hold (or the deadline)."""
    stream = Stream(watcher, store or Store())
    try:
        stream._pump(until, time.monotonic() + timeout)
    finally:
        stream.close()
    return stream.got


@pytest.fixture(params=["native", "poll"])
def mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "poll":
        return {"poll": True, "poll_interval_s": 0.1}
    return {"poll": False}


@pytest.fixture
def streams(mode: dict[str, Any]) -> Iterator[Callable[..., Stream]]:
    """Starts streams over Watchers with the test's observer kind; closes them afterwards."""
    opened: list[Stream] = []

    def start(roots: list[Path], store: Store | None = None, **kwargs: Any) -> Stream:
        store = store or Store()
        options: dict[str, Any] = {
            "settle_s": SETTLE,
            "tick_s": TICK,
            "is_done": store.is_done,
            "known_paths": store.known,
            **mode,
            **kwargs,
        }
        stream = Stream(Watcher([str(r) for r in roots], **options), store)
        opened.append(stream)
        return stream

    yield start
    for stream in opened:
        stream.close()


def write(path: Path, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def settled(got: list[Event]) -> list[str]:
    return [e.file.path for e in got if isinstance(e, Settled)]


def deleted(got: list[Event]) -> list[str]:
    return [e.path for e in got if isinstance(e, Deleted)]


def moved(got: list[Event]) -> list[Moved]:
    return [e for e in got if isinstance(e, Moved)]


def has_settled(*paths: Path) -> Predicate:
    wanted = {str(p) for p in paths}
    return lambda got: wanted <= set(settled(got))


# -- settling ----------------------------------------------------------------------------


def test_slow_write_settles_once_after_the_last_write(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    stream = streams([tmp_path], settle_s=0.5)
    stream.started()
    target = tmp_path / "slow.mp4"
    chunk = os.urandom(4096)

    def writer() -> None:
        with open(target, "ab") as f:
            for _ in range(10):
                f.write(chunk)
                f.flush()
                time.sleep(0.1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        stream.until(has_settled(target))
    finally:
        thread.join(timeout=30)
    stream.run_for(1.0)
    events = [e for e in stream.got if isinstance(e, Settled)]
    st = target.stat()
    assert events == [Settled(VideoFile(str(target), 10 * 4096, st.st_mtime_ns))]


def test_burst_of_files_each_settle_exactly_once(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    stream = streams([tmp_path])
    stream.started()
    paths = [write(tmp_path / f"clip{i:03d}.mp4", 10 + i) for i in range(200)]
    stream.until(has_settled(*paths), timeout=30)
    stream.run_for(2 * SETTLE)
    names = settled(stream.got)
    assert sorted(names) == sorted(str(p) for p in paths)
    assert {e.file.size for e in stream.got if isinstance(e, Settled)} == set(range(10, 210))


def test_partial_download_settles_once_renamed(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    stream = streams([tmp_path])
    stream.started()
    part = write(tmp_path / "x.mp4.part", 500)
    rsync_temp = write(tmp_path / ".x.mp4.AbC123", 300)
    stream.run_for(3 * SETTLE)
    assert stream.got == []
    part.rename(tmp_path / "x.mp4")
    stream.until(has_settled(tmp_path / "x.mp4"))
    stream.run_for(2 * SETTLE)
    assert stream.got == [
        Settled(VideoFile(str(tmp_path / "x.mp4"), 500, (tmp_path / "x.mp4").stat().st_mtime_ns))
    ]
    assert rsync_temp.exists()


def test_empty_file_that_gets_content_settles_with_it(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    stream = streams([tmp_path])
    stream.started()
    empty = tmp_path / "empty.mp4"
    empty.touch()
    write(empty, 10)
    stream.until(has_settled(empty))
    assert [e.file.size for e in stream.got if isinstance(e, Settled)] == [10]


def test_empty_file_that_stays_empty_is_handed_on_to_fail(
    tmp_path: Path, streams: Callable[..., Stream], caplog: pytest.LogCaptureFixture
) -> None:
    stream = streams([tmp_path])
    stream.started()
    empty = tmp_path / "empty.mp4"
    with caplog.at_level(logging.INFO, logger="tagger.sources.watch"):
        empty.touch()
        stream.until(has_settled(empty))
    assert [e.file.size for e in stream.got if isinstance(e, Settled)] == [0]
    assert any("stays empty" in r.getMessage() for r in caplog.records)


# -- moves and deletions -----------------------------------------------------------------


def test_rename_yields_moved_and_no_second_settle(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    a = write(tmp_path / "a.mp4", 1234)
    mtime = a.stat().st_mtime_ns
    stream = streams([tmp_path])
    stream.until(has_settled(a))
    b = a.rename(tmp_path / "b.mp4")
    stream.until(lambda got: len(moved(got)) == 1)
    # Into a folder made just before: inotify sees a deletion and a creation (the folder's
    # watch comes too late for the rename); the store's record pairs them into a move.
    c = tmp_path / "sub" / "c.mkv"
    c.parent.mkdir()
    b.rename(c)
    stream.until(lambda got: len(moved(got)) == 2)
    stream.run_for(3 * SETTLE)
    assert moved(stream.got) == [
        Moved(str(a), VideoFile(str(b), 1234, mtime)),
        Moved(str(b), VideoFile(str(c), 1234, mtime)),
    ]
    # The store moved its result each time, so the destination is done when it settles.
    assert settled(stream.got) == [str(a)]
    assert deleted(stream.got) == []
    assert stream.store.known() == [str(c)]


@pytest.mark.usefixtures("deaf")
def test_a_rename_a_poll_saw_as_a_deletion_then_an_arrival_is_a_move(tmp_path: Path) -> None:
    # A polling snapshot that walks the folder while a file is renamed sees neither name; the
    # next one sees only the new name: a deletion, then an arrival. What settled is paired.
    from watchdog.events import FileCreatedEvent, FileDeletedEvent

    from tagger.sources.session import WatchSession

    a = write(tmp_path / "a.mp4", 77)
    session = WatchSession(Watcher([str(tmp_path)], settle_s=0, tick_s=TICK, poll=True))
    session.start()
    try:
        session.tick(time.monotonic())
        assert list(session.out) == [Settled(VideoFile(str(a), 77, a.stat().st_mtime_ns))]
        session.out.clear()
        b = a.rename(tmp_path / "b.mp4")
        session.handle(FileDeletedEvent(str(a)))
        session.handle(FileCreatedEvent(str(b)))
        session.flush()
        session.tick(time.monotonic())
        assert list(session.out) == [Moved(str(a), VideoFile(str(b), 77, b.stat().st_mtime_ns))]
    finally:
        session.close()


def test_rename_without_a_store_moves_then_settles(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    a = write(tmp_path / "a.mp4", 77)
    stream = streams([tmp_path], is_done=lambda f: False, known_paths=lambda: ())
    stream.until(has_settled(a))
    b = a.rename(tmp_path / "b.mp4")
    stream.until(has_settled(b))
    assert [type(e).__name__ for e in stream.got] == ["Settled", "Moved", "Settled"]
    assert moved(stream.got)[0].src == str(a)


def test_video_renamed_to_a_temp_name_is_deleted(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    src = write(tmp_path / "a.mp4")
    stream = streams([tmp_path])
    stream.until(has_settled(src))
    src.rename(tmp_path / "a.mp4.tmp")
    stream.until(lambda got: deleted(got) == [str(src)])


def test_delete_yields_deleted(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    keep, gone = write(tmp_path / "keep.mp4"), write(tmp_path / "gone.mp4")
    stream = streams([tmp_path])
    stream.until(has_settled(keep, gone))
    gone.unlink()
    stream.until(lambda got: bool(deleted(got)))
    stream.run_for(2 * SETTLE)
    assert deleted(stream.got) == [str(gone)]
    assert sorted(stream.store.known()) == [str(keep)]


def test_new_folders_are_picked_up(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    staging = tmp_path / "staging"
    staged = [write(staging / "deep" / "s1.mp4"), write(staging / "s2.webm")]
    stream = streams([root])
    stream.started()
    made = [write(root / "new" / "a.mp4"), write(root / "new" / "b" / "c.mov")]
    staging.rename(root / "moved-in")
    moved_in = [root / "moved-in" / "deep" / "s1.mp4", root / "moved-in" / "s2.webm"]
    stream.until(has_settled(*made, *moved_in))
    stream.run_for(2 * SETTLE)
    assert sorted(settled(stream.got)) == sorted(str(p) for p in made + moved_in)
    assert [p.exists() for p in staged] == [False, False]


def test_folder_moved_inside_the_tree_moves_each_video_once(
    tmp_path: Path, streams: Callable[..., Stream]
) -> None:
    videos = [write(tmp_path / "old" / "a.mp4", 10), write(tmp_path / "old" / "in" / "b.mp4", 20)]
    stream = streams([tmp_path])
    stream.until(has_settled(*videos))
    (tmp_path / "old").rename(tmp_path / "new")
    expected = {
        (str(tmp_path / "old" / "a.mp4"), str(tmp_path / "new" / "a.mp4")),
        (str(tmp_path / "old" / "in" / "b.mp4"), str(tmp_path / "new" / "in" / "b.mp4")),
    }
    stream.until(lambda got: {(m.src, m.dst.path) for m in moved(got)} == expected)
    stream.run_for(3 * SETTLE)
    assert len(moved(stream.got)) == 2
    assert deleted(stream.got) == []
    assert sorted(settled(stream.got)) == sorted(str(p) for p in videos)
    assert sorted(stream.store.known()) == sorted(dst for _, dst in expected)


def test_a_video_that_vanishes_and_arrives_elsewhere_a_moment_later_is_moved(
    tmp_path: Path, streams: Callable[..., Stream]
) -> None:
    # What polling sees when a folder is renamed between two snapshots of its sub-folders:
    # the file gone in one poll, its new copy only in the next.
    root, outside = tmp_path / "lib", tmp_path / "outside"
    video = write(root / "a.mp4")
    outside.mkdir()
    stream = streams([root])
    stream.until(has_settled(video))
    video.rename(outside / "a.mp4")
    time.sleep(0.3)  # longer than a poll: the vanishing is seen first
    (outside / "a.mp4").rename(root / "b.mp4")
    stream.until(lambda got: bool(moved(got)))
    stream.run_for(3 * SETTLE)
    assert [(m.src, m.dst.path) for m in moved(stream.got)] == [(str(video), str(root / "b.mp4"))]
    assert deleted(stream.got) == [] and settled(stream.got) == [str(video)]


def test_deleted_folder_reports_its_known_videos(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    videos = [write(tmp_path / "sub" / "a.mp4"), write(tmp_path / "sub" / "deep" / "b.mp4")]
    other = write(tmp_path / "other.mp4")
    stream = streams([tmp_path])
    stream.until(has_settled(*videos, other))
    shutil.rmtree(tmp_path / "sub")
    stream.until(lambda got: set(deleted(got)) == {str(v) for v in videos})
    stream.run_for(2 * SETTLE)
    assert sorted(deleted(stream.got)) == sorted(str(v) for v in videos)


# -- rescans -------------------------------------------------------------------------------


@pytest.fixture
def deaf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every observer event, as an inotify overflow would: only scans can find files."""
    monkeypatch.setattr(observe._Enqueue, "dispatch", lambda self, event: None)


@pytest.mark.usefixtures("deaf")
def test_files_present_before_iterating_are_found(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    stream = streams([tmp_path])
    early = [write(tmp_path / "early.mp4"), write(tmp_path / "sub" / "early.mkv")]
    stream.until(has_settled(*early))


@pytest.mark.usefixtures("deaf")
def test_rescan_finds_what_the_observer_missed(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    gone = write(tmp_path / "gone.mp4")
    stream = streams([tmp_path], rescan_s=0.3)
    stream.until(has_settled(gone))
    # Made while events() is suspended, with the observer's events dropped.
    late = write(tmp_path / "late" / "late.mp4")
    gone.unlink()
    stream.until(lambda got: str(late) in settled(got) and str(gone) in deleted(got))


def test_done_files_are_not_yielded_at_start(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    done, todo = write(tmp_path / "done.mp4"), write(tmp_path / "todo.mp4")
    store = Store()
    store.add(done)
    stream = streams([tmp_path], store=store)
    stream.until(has_settled(todo))
    stream.run_for(2 * SETTLE)
    assert settled(stream.got) == [str(todo)]


def test_include_and_exclude_apply_to_events_as_to_scans(
    tmp_path: Path, streams: Callable[..., Stream]
) -> None:
    stream = streams([tmp_path], include=["*.mp4"], exclude=["skip", "keep/no-*"])
    stream.started()
    wanted = write(tmp_path / "keep" / "a.mp4")
    for path in ("keep/b.mkv", "skip/c.mp4", "keep/no-d.mp4", ".hidden/e.mp4", "keep/.f.mp4"):
        write(tmp_path / path)
    stream.until(has_settled(wanted))
    stream.run_for(2 * SETTLE)
    assert settled(stream.got) == [str(wanted)]


# Names that exercise every part of the rule: suffix case, temporary and hidden names, hidden
# and excluded folders at any depth, exclude and include by base name and by path under the root.
AGREE_NAMES = [
    "a.mp4",
    "B.MKV",
    "c.Mp4",
    "notes.txt",
    "x.mp4.part",
    "y.mkv.crdownload",
    "z.mp4.tmp",
    ".hidden.mp4",
    ".sync/a.mp4",
    "sub/.rsync.mp4.AbC123",
    "skip/d.mp4",
    "deep/er/skip/e.mp4",
    "deep/er/f.mp4",
    "keep/no-g.mp4",
    "other/keep/no-h.mp4",
    "drafts/i.mp4",
    "j_draft.mp4",
    "sub/k.webm",
    "sub/deeper/l.avi",
    "x.tmp/m.mp4",
]
AGREE_TAKEN = [
    "a.mp4",
    "c.Mp4",
    "deep/er/f.mp4",
    "other/keep/no-h.mp4",
    "sub/deeper/l.avi",
    "sub/k.webm",
    "x.tmp/m.mp4",
]


def test_discover_and_watch_take_the_same_names(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    # Globs are case-sensitive, suffixes are not; "*" in a path glob spans folders too.
    include = ["*.mp4", "*.Mp4", "sub/*"]
    exclude = ["skip", "keep/no-*", "*_draft.mp4", "drafts"]
    before, after = tmp_path / "before", tmp_path / "after"
    for name in AGREE_NAMES:
        write(before / name)
    scanned = [v.path for v in discover([str(before)], include=include, exclude=exclude)]
    assert scanned == [str(before / name) for name in AGREE_TAKEN]
    after.mkdir()
    # "before" is found by the first scan, "after" by events as each file lands.
    stream = streams([before, after], include=include, exclude=exclude)
    stream.started()
    for name in AGREE_NAMES:
        write(after / name)
    expected = [before / n for n in AGREE_TAKEN] + [after / n for n in AGREE_TAKEN]
    stream.until(has_settled(*expected))
    stream.run_for(3 * SETTLE)
    assert sorted(settled(stream.got)) == sorted(map(str, expected))


# -- symlinks ------------------------------------------------------------------------------


def test_symlinks_leading_outside_the_roots_are_not_followed(
    tmp_path: Path, streams: Callable[..., Stream], caplog: pytest.LogCaptureFixture
) -> None:
    root, outside, staging = tmp_path / "lib", tmp_path / "outside", tmp_path / "staging"
    secret = write(outside / "secret.mp4")
    write(outside / "deep" / "more.mp4")
    root.mkdir()
    staging.mkdir()
    # Short rescans: the periodic scan must not follow them either.
    stream = streams([root], rescan_s=0.2)
    stream.started()
    with caplog.at_level(logging.INFO, logger="tagger.sources.watch"):
        (root / "leak.mp4").symlink_to(secret)
        (root / "leakdir").symlink_to(outside)
        (staging / "moved.mp4").symlink_to(secret)
        (staging / "moveddir").symlink_to(outside)
        (staging / "moved.mp4").rename(root / "moved.mp4")
        (staging / "moveddir").rename(root / "moveddir")
        # Inside the watched tree: a rename of a link still leads outside.
        (root / "leak.mp4").rename(root / "renamed.mp4")
        # A real folder that holds a link leading outside.
        write(staging / "real" / "inner.mp4")
        (staging / "real" / "inner-leak.mp4").symlink_to(secret)
        (staging / "real").rename(root / "real")
        # Written into the linked folder once it is linked in: its events must not count either.
        write(outside / "later.mp4")
        sentinel = write(root / "ok.mp4")
        stream.until(has_settled(sentinel, root / "real" / "inner.mp4"))
        stream.run_for(5 * SETTLE)
    assert sorted(settled(stream.got)) == sorted([str(sentinel), str(root / "real" / "inner.mp4")])
    assert moved(stream.got) == []
    notes = " ".join(r.getMessage() for r in caplog.records)
    assert str(root / "moved.mp4") in notes and "outside" in notes


def test_symlinks_inside_the_roots_are_taken_as_a_scan_takes_them(
    tmp_path: Path, streams: Callable[..., Stream]
) -> None:
    root, staging = tmp_path / "lib", tmp_path / "staging"
    clip = write(root / ".clips" / "a.mp4", 10)
    write(root / ".clips" / "c.mp4", 11)
    write(root / ".shows" / "b.mp4", 12)
    write(root / ".reels" / "r.mp4", 13)
    visible = write(root / "real" / "v.mp4", 14)
    staging.mkdir()
    stream = streams([root])
    stream.until(has_settled(visible))
    # The only ways to hidden files: followed, under the link's name.
    (root / "clip.mp4").symlink_to(".clips/a.mp4")
    (root / "show").symlink_to(".shows")
    (staging / "moved.mp4").symlink_to(root / ".clips" / "c.mp4")
    (staging / "moved.mp4").rename(root / "moved.mp4")
    (staging / "reels").symlink_to(root / ".reels")
    (staging / "reels").rename(root / "reels")
    # Second ways to a file that a scan meets first by another path: not taken again.
    (root / "zz-again.mp4").symlink_to(clip)
    (root / "zz-visible.mp4").symlink_to("real/v.mp4")
    (root / "zz-show").symlink_to(".shows")
    taken = [
        root / "clip.mp4",
        root / "moved.mp4",
        root / "show" / "b.mp4",
        root / "reels" / "r.mp4",
        visible,
    ]
    stream.until(has_settled(*taken))
    stream.run_for(3 * SETTLE)
    assert sorted(settled(stream.got)) == sorted(map(str, taken))
    # The same set a scan of the root gives.
    assert sorted(v.path for v in discover([str(root)])) == sorted(map(str, taken))
    assert {e.file.size for e in stream.got if isinstance(e, Settled)} == {10, 11, 12, 13, 14}


# -- unavailable roots ---------------------------------------------------------------------


def test_removed_root_reports_nothing_deleted(
    tmp_path: Path, streams: Callable[..., Stream], caplog: pytest.LogCaptureFixture
) -> None:
    share, local = tmp_path / "share", tmp_path / "local"
    a, b = write(share / "a.mp4"), write(local / "b.mp4")
    store = Store()
    store.add(a)
    store.add(b)
    stream = streams([share, local], store=store, rescan_s=0.2)
    stream.started()
    with caplog.at_level(logging.INFO, logger="tagger.sources.watch"):
        shutil.rmtree(share)
        b.unlink()
        stream.until(lambda got: deleted(got) == [str(b)])
        stream.run_for(5 * 0.2)
        assert deleted(stream.got) == [str(b)]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and str(share) in warnings[0].getMessage()

        # Back again, without a.mp4: now its absence is real.
        c = write(share / "c.mp4")
        stream.until(lambda got: str(c) in settled(got) and str(a) in deleted(got))
        assert any(r.levelno == logging.INFO and str(share) in r.getMessage() for r in caplog.records)


def test_empty_root_with_known_videos_is_held_until_it_has_content(
    tmp_path: Path, streams: Callable[..., Stream], caplog: pytest.LogCaptureFixture
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    store = Store()
    store.rows[str(share / "a.mp4")] = (1, 1)
    with caplog.at_level(logging.WARNING, logger="tagger.sources.watch"):
        stream = streams([share], store=store, rescan_s=0.2)
        stream.run_for(1.0)
    assert stream.got == []
    assert any("not available" in r.getMessage() for r in caplog.records)
    c = write(share / "c.mp4")
    stream.until(lambda got: str(c) in settled(got) and str(share / "a.mp4") in deleted(got))


def test_missing_root_is_watched_once_it_appears(tmp_path: Path, streams: Callable[..., Stream]) -> None:
    later = tmp_path / "later"
    stream = streams([later])
    stream.started()
    video = write(later / "v.mp4")
    stream.until(has_settled(video))
    # No rescan is due for minutes: only the watch added when the root appeared sees this.
    second = write(later / "w.mp4")
    stream.until(has_settled(second))


@pytest.fixture
def devices(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[int, str]]:
    """Fake (device, mount point) per root path, as an unmount or a remount would change them."""
    fake: dict[str, tuple[int, str]] = {}
    real_device, real_mount = watched_roots._device, watched_roots.mount_point
    monkeypatch.setattr(watched_roots, "_device", lambda p: fake[p][0] if p in fake else real_device(p))
    monkeypatch.setattr(watched_roots, "mount_point", lambda p: fake[p][1] if p in fake else real_mount(p))
    return fake


def logged(caplog: pytest.LogCaptureFixture, *words: str) -> Predicate:
    return lambda got: any(all(w in r.getMessage() for w in words) for r in caplog.records)


def test_root_remounted_on_another_device_is_back(
    tmp_path: Path,
    streams: Callable[..., Stream],
    devices: dict[str, tuple[int, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    share = tmp_path / "share"
    a = write(share / "a.mp4")
    dev = os.stat(share).st_dev
    devices[str(share)] = (dev, str(share))  # a mount point of its own
    stream = streams([share], rescan_s=600)
    stream.until(has_settled(a))
    with caplog.at_level(logging.INFO, logger="tagger.sources.watch"):
        # Unmounted: the folder beneath shows, on the parent's device and mount, and even
        # what was written into it meanwhile does not make it the root.
        devices[str(share)] = (dev + 1, str(tmp_path))
        stream.until(logged(caplog, str(share), "went away"))
        a.unlink()
        stray = write(share / "stray.mp4")
        stream.run_for(3 * SETTLE)
        assert settled(stream.got) == [str(a)] and deleted(stream.got) == []

        # Mounted again on a new device, but empty: where results are expected, it waits.
        stray.unlink()
        devices[str(share)] = (dev + 2, str(share))
        stream.run_for(3 * SETTLE)
        assert settled(stream.got) == [str(a)] and deleted(stream.got) == []

        # With content it is back: rescanned, so what it lacks is deleted and what is new settles.
        b = write(share / "b.mp4")
        stream.until(lambda got: str(b) in settled(got) and str(a) in deleted(got))
        assert logged(caplog, str(share), "another device")([])
    stream.run_for(2 * SETTLE)
    assert settled(stream.got) == [str(a), str(b)] and deleted(stream.got) == [str(a)]


@pytest.mark.usefixtures("deaf")
def test_device_change_while_up_watches_again_and_rescans(
    tmp_path: Path,
    streams: Callable[..., Stream],
    devices: dict[str, tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    share = tmp_path / "share"
    a = write(share / "a.mp4")
    dev = os.stat(share).st_dev
    devices[str(share)] = (dev, str(share))
    watched: list[str] = []
    schedule = observe.Observers.watch

    def spy(self: Any, root: str) -> None:
        watched.append(root)
        schedule(self, root)

    monkeypatch.setattr(observe.Observers, "watch", spy)
    stream = streams([share], rescan_s=600)
    stream.until(has_settled(a))
    # Unmounted and mounted again between two looks. With every event dropped and no rescan
    # due for minutes, only the rescan for the new device finds b.
    b = write(share / "b.mp4")
    with caplog.at_level(logging.INFO, logger="tagger.sources.watch"):
        devices[str(share)] = (dev + 1, str(share))
        stream.until(has_settled(b))
    assert watched == [str(share), str(share)]
    assert logged(caplog, str(share), "changed device")([])


def test_late_mount_over_a_folder_taken_as_it_was_is_the_root(
    tmp_path: Path, streams: Callable[..., Stream], devices: dict[str, tuple[int, str]]
) -> None:
    # No results expected yet, so the empty mount point was taken: the share mounted over it
    # later is deeper, not the mount gone.
    share = tmp_path / "share"
    share.mkdir()
    devices[str(share)] = (os.stat(tmp_path).st_dev, str(tmp_path))
    stream = streams([share], rescan_s=600)
    stream.started()
    a = write(share / "a.mp4")
    stream.until(has_settled(a))
    devices[str(share)] = (os.stat(tmp_path).st_dev + 1, str(share))
    b = write(share / "b.mp4")
    stream.until(has_settled(b))
    assert deleted(stream.got) == []


def test_periodic_rescans_repeat_no_discover_notes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.mkfifo(tmp_path / "pipe.mp4")
    video = write(tmp_path / "v.mp4")
    watcher = Watcher([str(tmp_path)], settle_s=SETTLE, tick_s=TICK, rescan_s=0.05, poll=False)
    with caplog.at_level(logging.INFO):
        stream = Stream(watcher, Store())
        try:
            stream.until(has_settled(video))
            stream.run_for(0.5)
        finally:
            stream.close()
    notes = [r for r in caplog.records if "pipe.mp4" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


# -- unreadable files ------------------------------------------------------------------------


def test_settled_file_that_stays_unreadable_is_handed_on_once(
    tmp_path: Path,
    streams: Callable[..., Stream],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    locked = tmp_path / "locked.mp4"
    real = settle._read_error
    # Injected: chmod 000 does not stop a test run as root.
    monkeypatch.setattr(settle, "_read_error", lambda p: "Permission denied" if p == str(locked) else real(p))
    stream = streams([tmp_path])
    stream.started()
    with caplog.at_level(logging.DEBUG, logger="tagger.sources.watch"):
        write(locked)
        ok = write(tmp_path / "ok.mp4")
        stream.until(has_settled(locked, ok))
        stream.run_for(3 * SETTLE)
    assert sorted(settled(stream.got)) == sorted([str(locked), str(ok)])
    notes = [r for r in caplog.records if str(locked) in r.getMessage() and r.levelno == logging.INFO]
    assert len(notes) == 1 and "unreadable" in notes[0].getMessage()


def test_a_lock_that_lifts_settles_without_a_note(
    tmp_path: Path,
    streams: Callable[..., Stream],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = tmp_path / "copying.mp4"
    real = settle._read_error
    refusals = iter(["Resource busy"])
    monkeypatch.setattr(
        settle, "_read_error", lambda p: next(refusals, None) if p == str(target) else real(p)
    )
    stream = streams([tmp_path])
    stream.started()
    with caplog.at_level(logging.INFO, logger="tagger.sources.watch"):
        write(target)
        stream.until(has_settled(target))
    assert next(refusals, "used") == "used"  # it was refused once
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]


# -- names, filesystems and setup ----------------------------------------------------------


def test_is_temporary() -> None:
    for name in ("a.mp4.part", "a.mp4.crdownload", "x.TMP", "a.partial", "a.download", "a.mkv.!qb"):
        assert is_temporary(f"/v/{name}"), name
    assert is_temporary("/v/.a.mp4.AbC123")
    assert is_temporary(".syncthing.a.mp4.tmp")
    assert not is_temporary("/v/.hidden/a.mp4")
    assert not is_temporary("/v/a.mp4")


MOUNTS = r"""/dev/vda1 / ext4 rw,relatime 0 0
server:/export /mnt/nfs nfs4 rw,vers=4.2 0 0
/dev/sdb1 /mnt/nfs/local ext4 rw 0 0
//nas/media /mnt/my\040share cifs rw 0 0
user@host:/srv /mnt/ssh fuse.sshfs rw 0 0
/dev/sdc1 /media/usb fuseblk rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/mnt/nfs", "nfs4"),
        ("/mnt/nfs/movies/a", "nfs4"),
        ("/mnt/nfs/local/movies", None),
        ("/mnt/nfsx", None),
        ("/mnt/my share/tv", "cifs"),
        ("/mnt/ssh/videos", "fuse.sshfs"),
        ("/media/usb/videos", None),
        ("/home/user/videos", None),
    ],
)
def test_network_filesystem(tmp_path: Path, path: str, fstype: str | None) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert network_filesystem(path, mounts_file=str(mounts)) == fstype


def test_network_filesystem_follows_symlinks_and_survives_no_mounts(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    (tmp_path / "link").symlink_to("/mnt/nfs/movies")
    assert network_filesystem(str(tmp_path / "link"), mounts_file=str(mounts)) == "nfs4"
    assert network_filesystem("/mnt/nfs", mounts_file=str(tmp_path / "missing")) is None


def test_network_root_is_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nas, disk = tmp_path / "nas", tmp_path / "disk"
    nas.mkdir()
    disk.mkdir()
    monkeypatch.setattr(watch, "network_filesystem", lambda p: "nfs4" if p == str(nas) else None)
    polling: list[PollingObserverVFS] = []

    class Recorded(PollingObserverVFS):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            polling.append(self)

    monkeypatch.setattr(observe, "PollingObserverVFS", Recorded)
    with caplog.at_level(logging.WARNING, logger="tagger.sources.watch"):
        watcher = Watcher([str(nas), str(disk)], settle_s=SETTLE, tick_s=TICK, poll_interval_s=0.1)
    assert watcher.polled_roots == (str(nas),)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert str(nas) in record.getMessage() and "nfs4" in record.getMessage()
    assert "polling" in record.getMessage()

    stream = Stream(watcher, Store())
    try:
        stream.started()
        videos = [write(nas / "a.mp4"), write(disk / "b.mp4")]
        stream.until(has_settled(*videos))
    finally:
        stream.close()
    assert len(polling) == 1


def test_stopping_ends_the_stream_and_the_observer(tmp_path: Path) -> None:
    before = threading.active_count()
    got = collect(Watcher([str(tmp_path)], tick_s=TICK), until=lambda got: True, timeout=0.5)
    assert got == []
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        Watcher("videos")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Watcher([])
    with pytest.raises(ValueError):
        Watcher(["videos"], tick_s=0)
