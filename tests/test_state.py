"""Tests for tagger.state: skip unchanged files, retry errors, survive a kill."""

from __future__ import annotations

import signal
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


def ok_result(path: str, label: str = "juggling") -> VideoResult:
    # Scores with at most 6 decimals and durations with at most 3 survive the row format exactly.
    return VideoResult(
        path=path,
        tags=(Tag(label, 0.625), Tag("dancing", 0.25)),
        clips=4,
        duration_s=12.5,
        model=MODEL,
    )


def test_lookup_after_record_returns_equal_result() -> None:
    file = VideoFile("/videos/a.mp4", size=1000, mtime_ns=1_700_000_000_123_456_789)
    result = ok_result(file.path)
    with StateStore() as store:
        assert store.lookup(file, MODEL) is None
        store.record(file, MODEL, result)
        assert store.lookup(file, MODEL) == result


def test_unicode_path_and_no_duration_round_trip() -> None:
    file = VideoFile('/vidéos/日本語, "x".mkv', size=1, mtime_ns=2)
    result = VideoResult(path=file.path, tags=(Tag("café", 0.5),), clips=1, model=MODEL)
    with StateStore() as store:
        store.record(file, MODEL, result)
        assert store.lookup(file, MODEL) == result


@pytest.mark.parametrize(
    "changed",
    [
        VideoFile("/videos/a.mp4", size=1001, mtime_ns=5),
        VideoFile("/videos/a.mp4", size=1000, mtime_ns=6),
        VideoFile("/videos/other.mp4", size=1000, mtime_ns=5),
    ],
    ids=["size", "mtime_ns", "path"],
)
def test_changed_file_is_not_found(changed: VideoFile) -> None:
    file = VideoFile("/videos/a.mp4", size=1000, mtime_ns=5)
    with StateStore() as store:
        store.record(file, MODEL, ok_result(file.path))
        assert store.lookup(changed, MODEL) is None
        assert list(store.results([changed], MODEL)) == []
        assert store.lookup(file, MODEL) is not None


def test_other_model_is_not_found() -> None:
    file = VideoFile("/videos/a.mp4", size=1000, mtime_ns=5)
    with StateStore() as store:
        store.record(file, MODEL, ok_result(file.path))
        assert store.lookup(file, "another-model") is None
        assert list(store.results([file], "another-model")) == []


def test_paths_are_stored_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = VideoFile("videos/a.mp4", size=1, mtime_ns=1)
    absolute = VideoFile(str(tmp_path / "videos/a.mp4"), size=1, mtime_ns=1)
    with StateStore() as store:
        store.record(relative, MODEL, ok_result(relative.path))
        assert store.lookup(absolute, MODEL) is None
        assert store.lookup(relative, MODEL) is not None


def test_error_rows_are_retried_but_listed() -> None:
    file = VideoFile("/videos/bad.mp4", size=10, mtime_ns=20)
    failed = VideoResult.failed(file.path, 'cannot decode: "moov atom", not found\nat all', MODEL)
    with StateStore() as store:
        store.record(file, MODEL, failed)
        assert store.lookup(file, MODEL) is None
        assert list(store.results([file], MODEL)) == [failed]


def test_record_replaces_earlier_result() -> None:
    file = VideoFile("/videos/a.mp4", size=1, mtime_ns=1)
    with StateStore() as store:
        store.record(file, MODEL, VideoResult.failed(file.path, "boom", MODEL))
        assert store.lookup(file, MODEL) is None
        fixed = ok_result(file.path, label="surfing")
        store.record(file, MODEL, fixed)
        assert store.lookup(file, MODEL) == fixed
        assert list(store.results([file], MODEL)) == [fixed]


def test_results_follow_given_order_and_skip_unknown() -> None:
    files = [VideoFile(f"/videos/{name}.mp4", size=i + 1, mtime_ns=i) for i, name in enumerate("abcd")]
    stored = {
        files[0].path: ok_result(files[0].path, "alpha"),
        files[1].path: VideoResult.failed(files[1].path, "broken", MODEL),
        files[3].path: ok_result(files[3].path, "delta"),
    }
    with StateStore() as store:
        # Recorded in a different order from the one asked for.
        for file in reversed(files):
            if file.path in stored:
                store.record(file, MODEL, stored[file.path])
        order = [files[3], files[2], files[0], files[1]]
        assert list(store.results(order, MODEL)) == [
            stored[files[3].path],
            stored[files[0].path],
            stored[files[1].path],
        ]
        assert list(store.results(files, MODEL)) == [
            stored[files[0].path],
            stored[files[1].path],
            stored[files[3].path],
        ]


def test_file_database_persists_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    file = VideoFile("/videos/a.mp4", size=1000, mtime_ns=5)
    result = ok_result(file.path)
    store = StateStore(db)
    store.record(file, MODEL, result)
    store.close()
    store.close()  # twice is harmless

    with StateStore(str(db)) as reopened:
        assert reopened.lookup(file, MODEL) == result

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_missing_parent_folder_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(TaggerError, match="missing"):
        StateStore(tmp_path / "missing" / "state.db")
    assert list(tmp_path.iterdir()) == []


def test_record_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from tagger.records import Tag, VideoFile, VideoResult
        from tagger.state import StateStore

        store = StateStore({str(db)!r})
        file = VideoFile("/videos/killed.mp4", size=123, mtime_ns=456)
        result = VideoResult(
            path=file.path, tags=(Tag("juggling", 0.625),), clips=2, duration_s=3.5, model="m"
        )
        store.record(file, "m", result)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()

    with StateStore(db) as store:
        found = store.lookup(VideoFile("/videos/killed.mp4", size=123, mtime_ns=456), "m")
    assert found == VideoResult(
        path="/videos/killed.mp4",
        tags=(Tag("juggling", 0.625),),
        clips=2,
        duration_s=3.5,
        model="m",
    )


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database, just some text that is long enough\n" * 100,
        b"\x00" * 4096,
    ],
    ids=["text", "zeros"],
)
def test_non_database_file_raises_tagger_error(tmp_path: Path, content: bytes) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_bytes(content)
    with pytest.raises(TaggerError) as info:
        StateStore(bogus)
    assert str(bogus) in str(info.value)
    assert bogus.read_bytes() == content


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(TaggerError, match="not a vidtag state database"):
        StateStore(other)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    StateStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(TaggerError, match="newer"):
        StateStore(db)


# --- result documents (format 3) -----------------------------------------------------------

#: Written by vidtag's format-2 store (the output row as JSON in ``row``): an ok, an error, a
#: removed, an unemitted row, a name that is not UTF-8 (a BLOB key) and a torn row.
V2_FILE = Path(__file__).parent / "data" / "state-v2.db"
V2_MODEL = "tiny@0123456789ab"


def _clip_scored(path: str) -> VideoResult:
    from tagger.records import ClipScore

    return VideoResult(
        path=path,
        tags=(Tag("red", 0.7), Tag("blue", 0.3)),
        clips=2,
        duration_s=9.5,
        model=V2_MODEL,
        classes=("red", "blue"),
        clip_scores=(ClipScore(0.0, 2.1, (0.9, 0.1)), ClipScore(6.0, 8.1, (0.5, 0.5))),
    )


def test_a_format_2_state_file_is_migrated_in_place(tmp_path: Path) -> None:
    import os
    import shutil

    db = tmp_path / "state.db"
    shutil.copy(V2_FILE, db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2

    weird = os.fsdecode(b"/library/caf\xe9.mp4")
    with StateStore(db) as store:
        ok = store.lookup(VideoFile("/library/ok.mp4", 1000, 111), V2_MODEL)
        assert ok is not None
        assert ok.tags == (Tag("red", 0.75), Tag("blue", 0.25))
        assert (ok.clips, ok.duration_s, ok.clip_scores) == (2, 12.5, ())
        found = store.find("/library/bad.mp4", V2_MODEL)
        assert found is not None and found[1].error == "cannot decode: no video stream"
        gone = store.find("/library/gone.mp4", V2_MODEL)
        assert gone is not None and gone[1].status == "removed" and gone[1].tags[0].label == "blue"
        assert [f.path for f, _ in store.unemitted(V2_MODEL)] == ["/library/pending.mp4"]
        assert store.lookup(VideoFile(weird, 4000, 555), V2_MODEL) is not None
        # The torn row reads as missing: its video is tagged again.
        assert store.find("/library/torn.mp4", V2_MODEL) is None
        # New results keep their clip scores in the migrated file.
        store.record(VideoFile("/library/new.mp4", 7, 8), V2_MODEL, _clip_scored("/library/new.mp4"))

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
        assert "doc" in columns and "row" not in columns
        doc = conn.execute("SELECT doc FROM results WHERE path = '/library/ok.mp4'").fetchone()[0]
        assert '"format": 4' in doc
    with StateStore(db) as store:  # a second open is a plain open
        again = store.lookup(VideoFile("/library/new.mp4", 7, 8), V2_MODEL)
        assert again == _clip_scored("/library/new.mp4")


def test_clip_scores_and_classes_survive_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    file = VideoFile("/videos/a.mp4", 10, 20)
    with StateStore(db) as store:
        store.record(file, V2_MODEL, _clip_scored(file.path))
    with StateStore(db) as store:
        stored = store.lookup(file, V2_MODEL)
    assert stored is not None
    assert stored.classes == ("red", "blue")
    assert [(c.start_s, c.end_s, c.scores) for c in stored.clip_scores] == [
        (0.0, 2.1, (0.9, 0.1)),
        (6.0, 8.1, (0.5, 0.5)),
    ]
    # The classes are kept once per model, not in every document.
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT classes FROM models").fetchall() == [('["red", "blue"]',)]
        assert "classes" not in conn.execute("SELECT doc FROM results").fetchone()[0]


def test_clip_scores_are_stored_sparse_and_read_back_dense(tmp_path: Path) -> None:
    from tagger.records import SCORE_FLOOR, ClipScore

    db = tmp_path / "state.db"
    file = VideoFile("/videos/long.mp4", 10, 20)
    classes = tuple(f"c{i}" for i in range(400))
    scores = tuple(0.7 if i == 3 else (0.3 - 1e-6 if i == 9 else 1e-6) for i in range(400))
    result = VideoResult(
        path=file.path,
        tags=(Tag("c3", 0.7),),
        clips=1,
        model=V2_MODEL,
        classes=classes,
        clip_scores=(ClipScore(0.0, 2.0, scores),),
        timeline=True,
    )
    with StateStore(db) as store:
        store.record(file, V2_MODEL, result)
    with StateStore(db) as store:
        stored = store.lookup(file, V2_MODEL)
    assert stored is not None and stored.timeline
    (clip,) = stored.clip_scores
    assert len(clip.scores) == 400 and clip.scores[3] == 0.7 and clip.scores[9] == round(0.3 - 1e-6, 6)
    assert all(p == 0.0 for i, p in enumerate(clip.scores) if i not in (3, 9)) and SCORE_FLOOR > 1e-6
    with sqlite3.connect(db) as conn:
        doc = conn.execute("SELECT doc FROM results").fetchone()[0]
    assert '"scores": [[3, 0.7], [9, 0.299999]]' in doc


def test_a_format_3_document_still_reads() -> None:
    doc = {
        "format": 3,
        "path": "/v/a.mp4",
        "label": "red",
        "score": 0.9,
        "labels": "red",
        "scores": "0.9",
        "clips": 1,
        "duration_s": 2.0,
        "model": V2_MODEL,
        "status": "ok",
        "error": "",
        "tags": [["red", 0.9]],
        "clip_scores": [{"start_s": 0.0, "end_s": 2.0, "scores": [0.9, 0.1]}],
    }
    result = VideoResult.from_document(doc, ("red", "blue"))
    assert result.clip_scores[0].scores == (0.9, 0.1) and not result.timeline
