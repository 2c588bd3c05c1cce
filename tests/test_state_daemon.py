"""Tests for what tagger.state does for ``vidtag watch``: emitted rows, format migration,
renames, deletions, folder queries and the lock that keeps a second daemon out."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tagger.records import Tag, TaggerError, VideoFile, VideoResult
from tagger.state import SCHEMA_VERSION, StateStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL = "videomae-base"

# The table of format 1, as vidtag 0.1 created it.
V1_SCHEMA = """
CREATE TABLE results (
    path TEXT NOT NULL,
    model TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    row TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (path, model)
)
"""


def ok_result(path: str, label: str = "juggling") -> VideoResult:
    return VideoResult(
        path=path, tags=(Tag(label, 0.625), Tag("dancing", 0.25)), clips=4, duration_s=12.5, model=MODEL
    )


def video(path: str, size: int = 1000, mtime_ns: int = 5) -> VideoFile:
    return VideoFile(path, size=size, mtime_ns=mtime_ns)


# --- emitted -------------------------------------------------------------------------------


def test_record_is_emitted_by_default() -> None:
    file = video("/videos/a.mp4")
    with StateStore() as store:
        store.record(file, MODEL, ok_result(file.path))
        assert store.unemitted(MODEL) == []


def test_unemitted_until_marked() -> None:
    a, b, c = video("/videos/a.mp4"), video("/videos/b.mp4", size=7), video("/videos/c.mp4")
    failed = VideoResult.failed(b.path, 'boom, "quoted"\nline', MODEL)
    with StateStore() as store:
        store.record(a, MODEL, ok_result(a.path), emitted=False)
        store.record(b, MODEL, failed, emitted=False)
        store.record(c, MODEL, ok_result(c.path))
        assert store.unemitted(MODEL) == [(a, ok_result(a.path)), (b, failed)]
        assert store.unemitted("another-model") == []
        # Unemitted rows are still results: a batch run must not tag them again.
        assert store.lookup(a, MODEL) == ok_result(a.path)
        store.mark_emitted(a.path, MODEL)
        assert store.unemitted(MODEL) == [(b, failed)]
        store.mark_emitted(b.path, "another-model")  # another model's row: untouched
        assert store.unemitted(MODEL) == [(b, failed)]
        store.mark_emitted(b.path, MODEL)
        assert store.unemitted(MODEL) == []
        # Recording again (a re-tag) makes the row pending again.
        store.record(a, MODEL, ok_result(a.path, "surfing"), emitted=False)
        assert store.unemitted(MODEL) == [(a, ok_result(a.path, "surfing"))]


def test_unemitted_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    file = video("/videos/a.mp4")
    with StateStore(db) as store:
        store.record(file, MODEL, ok_result(file.path), emitted=False)
    with StateStore(db) as store:
        assert store.unemitted(MODEL) == [(file, ok_result(file.path))]


# --- migration -----------------------------------------------------------------------------


def make_v1_database(db: Path, rows: list[tuple[VideoFile, VideoResult]]) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(V1_SCHEMA)
        for file, result in rows:
            conn.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    file.path,
                    MODEL,
                    file.size,
                    file.mtime_ns,
                    result.status,
                    json.dumps(result.row()),
                    "2024-01-01T00:00:00+00:00",
                ),
            )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()


def test_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    a, b = video("/videos/a.mp4"), video("/videos/b.mp4")
    failed = VideoResult.failed(b.path, "broken", MODEL)
    make_v1_database(db, [(a, ok_result(a.path)), (b, failed)])

    with StateStore(db) as store:
        assert store.lookup(a, MODEL) == ok_result(a.path)
        assert list(store.results([a, b], MODEL)) == [ok_result(a.path), failed]
        # Rows of format 1 are in some output already: nothing to re-emit.
        assert store.unemitted(MODEL) == []
        store.record(b, MODEL, ok_result(b.path), emitted=False)
        assert store.unemitted(MODEL) == [(b, ok_result(b.path))]

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
        assert "emitted" in columns
    finally:
        conn.close()
    # Opening the migrated database again is a plain open.
    with StateStore(db) as store:
        assert store.lookup(a, MODEL) == ok_result(a.path)


def test_schema_version_was_bumped() -> None:
    assert SCHEMA_VERSION >= 2


# --- find ----------------------------------------------------------------------------------


def test_find_ignores_size_and_mtime() -> None:
    file = video("/videos/a.mp4", size=10, mtime_ns=20)
    with StateStore() as store:
        assert store.find(file.path, MODEL) is None
        store.record(file, MODEL, ok_result(file.path))
        assert store.find(file.path, MODEL) == (file, ok_result(file.path))
        assert store.find(file.path, "another-model") is None
        assert store.lookup(video(file.path, size=11, mtime_ns=20), MODEL) is None


# --- move ----------------------------------------------------------------------------------


def test_move_same_file_rekeys_the_row() -> None:
    src = video("/videos/old name.mp4", size=10, mtime_ns=20)
    dst = video("/archive/new name.mp4", size=10, mtime_ns=20)
    with StateStore() as store:
        store.record(src, MODEL, ok_result(src.path))
        moved = store.move(src.path, dst, MODEL)
        assert moved == ok_result(dst.path)
        assert store.lookup(dst, MODEL) == ok_result(dst.path)
        assert store.find(src.path, MODEL) is None
        assert store.lookup(src, MODEL) is None
        # Unemitted until the daemon has appended it, so a kill here loses nothing.
        assert store.unemitted(MODEL) == [(dst, ok_result(dst.path))]
        store.mark_emitted(dst.path, MODEL)
        assert store.unemitted(MODEL) == []


def test_move_error_row_and_replace_destination_row() -> None:
    src = video("/videos/a.mp4", size=10, mtime_ns=20)
    dst = video("/videos/b.mp4", size=10, mtime_ns=20)
    failed = VideoResult.failed(src.path, "broken", MODEL)
    with StateStore() as store:
        store.record(src, MODEL, failed)
        store.record(video(dst.path, size=99, mtime_ns=1), MODEL, ok_result(dst.path, "old"))
        assert store.move(src.path, dst, MODEL, emitted=True) == VideoResult.failed(dst.path, "broken", MODEL)
        assert store.find(dst.path, MODEL) == (dst, VideoResult.failed(dst.path, "broken", MODEL))
        assert store.find(src.path, MODEL) is None
        assert store.unemitted(MODEL) == []


@pytest.mark.parametrize(
    "dst",
    [video("/videos/b.mp4", size=11, mtime_ns=20), video("/videos/b.mp4", size=10, mtime_ns=21)],
    ids=["size", "mtime_ns"],
)
def test_move_of_a_changed_file_changes_nothing(dst: VideoFile) -> None:
    src = video("/videos/a.mp4", size=10, mtime_ns=20)
    with StateStore() as store:
        store.record(src, MODEL, ok_result(src.path))
        store.record(video(dst.path, 1, 1), MODEL, ok_result(dst.path, "other"))
        assert store.move(src.path, dst, MODEL) is None
        assert store.find(src.path, MODEL) == (src, ok_result(src.path))
        assert store.find(dst.path, MODEL) == (video(dst.path, 1, 1), ok_result(dst.path, "other"))
        assert store.unemitted(MODEL) == []


def test_move_of_unknown_removed_or_other_model_row_is_none() -> None:
    src = video("/videos/a.mp4", size=10, mtime_ns=20)
    dst = video("/videos/b.mp4", size=10, mtime_ns=20)
    with StateStore() as store:
        assert store.move(src.path, dst, MODEL) is None
        store.record(src, MODEL, ok_result(src.path))
        assert store.move(src.path, dst, "another-model") is None
        assert store.move(src.path, src, MODEL) is None
        store.remove(src.path, MODEL, keep=True)
        assert store.move(src.path, dst, MODEL) is None
        assert store.find(dst.path, MODEL) is None


def test_move_persists(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    src, dst = video("/videos/a.mp4"), video("/videos/b.mp4")
    with StateStore(db) as store:
        store.record(src, MODEL, ok_result(src.path))
        assert store.move(src.path, dst, MODEL) is not None
    with StateStore(db) as store:
        assert store.lookup(dst, MODEL) == ok_result(dst.path)
        assert store.find(src.path, MODEL) is None


# --- remove --------------------------------------------------------------------------------


def test_remove_keep_marks_the_row_removed() -> None:
    file = video("/videos/a.mp4")
    with StateStore() as store:
        store.record(file, MODEL, ok_result(file.path))
        assert store.remove(file.path, MODEL, keep=True) == ok_result(file.path)
        # Gone for every reader of live rows...
        assert store.lookup(file, MODEL) is None
        assert list(store.results([file], MODEL)) == []
        assert store.paths_under("/videos", MODEL) == []
        # ...but kept, tags and all, so it can come back.
        removed = VideoResult(
            path=file.path,
            tags=ok_result(file.path).tags,
            clips=4,
            duration_s=12.5,
            model=MODEL,
            status="removed",
        )
        assert store.find(file.path, MODEL) == (file, removed)
        assert store.unemitted(MODEL) == [(file, removed)]
        store.mark_emitted(file.path, MODEL)
        # Removing again changes nothing and re-emits nothing.
        assert store.remove(file.path, MODEL, keep=True) == removed
        assert store.unemitted(MODEL) == []
        # A file that comes back is recorded again and is live.
        store.record(file, MODEL, ok_result(file.path))
        assert store.lookup(file, MODEL) == ok_result(file.path)


def test_remove_drop_deletes_the_row() -> None:
    file = video("/videos/a.mp4")
    failed = VideoResult.failed(file.path, "broken", MODEL)
    with StateStore() as store:
        store.record(file, MODEL, failed)
        assert store.remove(file.path, MODEL, keep=False) == failed
        assert store.find(file.path, MODEL) is None
        assert store.unemitted(MODEL) == []
        assert store.remove(file.path, MODEL, keep=False) is None
        assert store.remove(file.path, MODEL, keep=True) is None


def test_remove_other_model_is_none() -> None:
    file = video("/videos/a.mp4")
    with StateStore() as store:
        store.record(file, MODEL, ok_result(file.path))
        assert store.remove(file.path, "another-model", keep=False) is None
        assert store.lookup(file, MODEL) == ok_result(file.path)


def test_lookup_and_results_skip_moved_rows() -> None:
    file = video("/videos/a.mp4")
    gone = VideoResult(path=file.path, model=MODEL, status="moved", error="moved to /videos/b.mp4")
    with StateStore() as store:
        store.record(file, MODEL, gone)
        assert store.lookup(file, MODEL) is None
        assert list(store.results([file], MODEL)) == []
        assert store.paths_under("/videos", MODEL) == []
        assert store.find(file.path, MODEL) == (file, gone)


# --- paths_under ---------------------------------------------------------------------------


def test_paths_under_matches_the_folder_only() -> None:
    root = "/media/my_100%_videos"
    inside = [
        root,
        f"{root}/a.mp4",
        f"{root}/sub/deep/b.mp4",
        f"{root}/x_%.mp4",
    ]
    outside = [
        "/media/my_100%_videos2/a.mp4",  # a sibling that shares the prefix
        "/media/my_100%_videos.mp4",
        "/media/myX100%Xvideos/a.mp4",  # what LIKE's _ would match
        "/media/my_100%_vid/a.mp4",
        "/media/my_100abc_videos/a.mp4",  # what LIKE's % would match
        "/media/a.mp4",
        "/media/my_100%_videos-old/a.mp4",
    ]
    with StateStore() as store:
        for i, path in enumerate(inside + outside):
            store.record(video(path, size=i + 1), MODEL, ok_result(path))
        store.record(video(f"{root}/removed.mp4"), MODEL, ok_result(f"{root}/removed.mp4"))
        store.remove(f"{root}/removed.mp4", MODEL, keep=True)
        store.record(video(f"{root}/failed.mp4"), MODEL, VideoResult.failed(f"{root}/failed.mp4", "x", MODEL))
        store.record(video(f"{root}/other.mp4"), "another-model", ok_result(f"{root}/other.mp4"))

        expected = sorted([*inside, f"{root}/failed.mp4"])
        assert store.paths_under(root, MODEL) == expected
        assert store.paths_under(root + "/", MODEL) == expected
        assert store.paths_under(f"{root}/sub", MODEL) == [f"{root}/sub/deep/b.mp4"]
        assert store.paths_under("/media/my_100%_videos2", MODEL) == ["/media/my_100%_videos2/a.mp4"]
        assert store.paths_under("/nowhere", MODEL) == []
        assert len(store.paths_under("/", MODEL)) == len(inside) + len(outside) + 1


def test_paths_under_unicode_folder() -> None:
    with StateStore() as store:
        for path in ["/vidéos/日本/a.mp4", "/vidéos/日本語/b.mp4", "/vidéos/日本/c/d.mp4"]:
            store.record(video(path), MODEL, ok_result(path))
        assert store.paths_under("/vidéos/日本", MODEL) == ["/vidéos/日本/a.mp4", "/vidéos/日本/c/d.mp4"]


# --- lock ----------------------------------------------------------------------------------


def try_lock_in_child(db: Path) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from tagger.records import TaggerError
        from tagger.state import StateStore

        store = StateStore({str(db)!r})
        try:
            store.lock()
        except TaggerError as e:
            print(e)
            sys.exit(3)
        print("locked")
        store.close()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lock_keeps_another_process_out_until_close(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = StateStore(db)
    try:
        store.lock()
        store.lock()  # already ours: no-op
        assert Path(f"{db}.lock").read_text().strip() == str(os.getpid())
        busy = try_lock_in_child(db)
        assert busy.returncode == 3, busy.stderr
        assert busy.stdout.strip() == f"{db} is in use by another vidtag process (pid {os.getpid()})"
        # The store still works while locked, and the refused process changed nothing.
        store.record(video("/videos/a.mp4"), MODEL, ok_result("/videos/a.mp4"))
    finally:
        store.close()
    store.close()  # twice is harmless
    free = try_lock_in_child(db)
    assert free.returncode == 0, free.stdout + free.stderr
    assert free.stdout.strip() == "locked"


def test_lock_second_store_in_same_process_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with StateStore(db) as first, StateStore(db) as second:
        first.lock()
        with pytest.raises(TaggerError, match=rf"in use by another vidtag process \(pid {os.getpid()}\)"):
            second.lock()
    with StateStore(db) as third:
        third.lock()


def test_lock_in_memory_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with StateStore() as a, StateStore() as b:
        a.lock()
        b.lock()
    assert list(tmp_path.iterdir()) == []
