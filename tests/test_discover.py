"""Tests for tagger.sources.discover: order, filters, symlinks, special files and dedupe."""

from __future__ import annotations

import builtins
import logging
import os
import socket
from pathlib import Path

import pytest

from tagger.records import VideoFile
from tagger.sources.discover import VIDEO_SUFFIXES, discover, walk_folder, walk_order
from tagger.sources.filters import TEMP_PATTERNS, Confinement, VideoFilter


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative roots make the expected paths read exactly as a user would type them.
    monkeypatch.chdir(tmp_path)


def touch(path: str, data: bytes = b"") -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)


def found(*args: object, **kwargs: object) -> list[str]:
    return [v.path for v in discover(*args, **kwargs)]  # type: ignore[arg-type]


def skip_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tagger.sources.discover"]


def test_recursive_walk_sorted_by_name_with_folders_interleaved() -> None:
    # Created in reverse so filesystem order cannot pass for sorted order.
    for p in [
        "videos/c.mov",
        "videos/b.mp4",
        "videos/a/z.mkv",
        "videos/a/c/d.webm",
        "videos/0.avi",
    ]:
        touch(p)
    assert found(["videos"]) == [
        "videos/0.avi",
        "videos/a/c/d.webm",
        "videos/a/z.mkv",
        "videos/b.mp4",
        "videos/c.mov",
    ]


def test_roots_keep_the_order_given() -> None:
    touch("a/1.mp4")
    touch("b/2.mp4")
    assert found(["b", "a"]) == ["b/2.mp4", "a/1.mp4"]
    assert found(["a", "b"]) == ["a/1.mp4", "b/2.mp4"]


def test_walk_streams_instead_of_listing_the_whole_tree_first() -> None:
    touch("videos/a/1.mp4")
    os.mkdir("videos/b")
    it = discover(["videos"])
    assert next(it) == VideoFile("videos/a/1.mp4", 0, os.stat("videos/a/1.mp4").st_mtime_ns)
    # Only visible if folder b is read after the first result was handed out.
    touch("videos/b/2.mp4")
    assert [v.path for v in it] == ["videos/b/2.mp4"]


def test_path_keeps_root_as_given(tmp_path: Path) -> None:
    touch("store/a.mp4")
    os.symlink("store", "alias")
    assert found([Path("store")]) == ["store/a.mp4"]
    assert found(["store/"]) == ["store/a.mp4"]
    # A symlinked root is walked and its paths are not resolved to the target.
    assert found(["alias"]) == ["alias/a.mp4"]
    assert found([str(tmp_path / "store")]) == [str(tmp_path / "store" / "a.mp4")]


def test_suffix_match_is_case_insensitive() -> None:
    for p in ["v/a.MOV", "v/b.Mp4", "v/c.mkv", "v/d.WEBM"]:
        touch(p)
    assert found(["v"]) == ["v/a.MOV", "v/b.Mp4", "v/c.mkv", "v/d.WEBM"]


def test_non_video_files_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    for p in ["v/a.mp4", "v/notes.txt", "v/cover.jpg", "v/README", "v/b.mp4.part", "v/mp4"]:
        touch(p)
    assert found(["v"]) == ["v/a.mp4"]
    assert skip_messages(caplog) == []


def test_custom_suffixes_with_or_without_dot() -> None:
    for p in ["v/a.mp4", "v/b.TXT", "v/c.dat"]:
        touch(p)
    assert found(["v"], suffixes={".txt", "DAT"}) == ["v/b.TXT", "v/c.dat"]
    assert ".mp4" in VIDEO_SUFFIXES and ".MP4" not in VIDEO_SUFFIXES


def test_explicit_file_bypasses_name_filters() -> None:
    touch("v/clip.bin", b"xyz")
    touch("v/.hidden.part")
    assert found(["v/clip.bin"]) == ["v/clip.bin"]
    assert found(["v"]) == []
    assert found(["v/.hidden.part"], include=["nothing"], exclude=["*.part"]) == ["v/.hidden.part"]


def test_hidden_files_and_folders_skipped_unless_asked() -> None:
    for p in ["v/a.mp4", "v/.b.mp4", "v/.thumbnails/t.mp4", "v/sub/.syncthing.c.mp4.tmp.mp4"]:
        touch(p)
    assert found(["v"]) == ["v/a.mp4"]
    assert found(["v"], hidden=True) == [
        "v/.b.mp4",
        "v/.thumbnails/t.mp4",
        "v/a.mp4",
        "v/sub/.syncthing.c.mp4.tmp.mp4",
    ]


def test_hidden_root_named_explicitly_is_walked() -> None:
    touch(".stash/a.mp4")
    touch(".stash/.b.mp4")
    assert found([".stash"]) == [".stash/a.mp4"]


def test_exclude_base_name_and_relative_path() -> None:
    for p in ["v/a.mp4", "v/a_draft.mp4", "v/sub/b_draft.mp4", "v/sub/c.mp4", "v/drafts/d.mp4"]:
        touch(p)
    assert found(["v"], exclude=["*_draft.mp4"]) == ["v/a.mp4", "v/drafts/d.mp4", "v/sub/c.mp4"]
    assert found(["v"], exclude=["drafts/*"]) == [
        "v/a.mp4",
        "v/a_draft.mp4",
        "v/sub/b_draft.mp4",
        "v/sub/c.mp4",
    ]
    # The path form matches relative to the root, not a base name anywhere.
    assert found(["v"], exclude=["sub/c.mp4"]) == [
        "v/a.mp4",
        "v/a_draft.mp4",
        "v/drafts/d.mp4",
        "v/sub/b_draft.mp4",
    ]
    assert found(["v"], exclude=["c.mp4/x"]) == found(["v"])
    # Globs are case-sensitive.
    assert "v/a.mp4" in found(["v"], exclude=["A.MP4"])


def test_excluded_folder_is_not_entered(monkeypatch: pytest.MonkeyPatch) -> None:
    for p in ["v/a.mp4", "v/skip/b.mp4", "v/sub/skip/c.mp4", "v/sub/keep/d.mp4"]:
        touch(p)
    scanned: list[str] = []
    real_scandir = os.scandir

    def spy(path: str) -> object:
        scanned.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert found(["v"], exclude=["skip"]) == ["v/a.mp4", "v/sub/keep/d.mp4"]
    assert scanned == ["v", "v/sub", "v/sub/keep"]
    scanned.clear()
    assert found(["v"], exclude=["sub/skip"]) == ["v/a.mp4", "v/skip/b.mp4", "v/sub/keep/d.mp4"]
    assert "v/sub/skip" not in scanned and "v/skip" in scanned


def test_include_matches_files_only() -> None:
    for p in ["v/a.mp4", "v/b.mkv", "v/sub/c.mp4", "v/sub/d.mkv", "v/other/e.mp4"]:
        touch(p)
    # "sub" does not match "*.mp4", yet it is entered: include filters files only.
    assert found(["v"], include=["*.mp4"]) == ["v/a.mp4", "v/other/e.mp4", "v/sub/c.mp4"]
    assert found(["v"], include=["sub/*"]) == ["v/sub/c.mp4", "v/sub/d.mkv"]
    assert found(["v"], include=["sub/*", "b.*"]) == ["v/b.mkv", "v/sub/c.mp4", "v/sub/d.mkv"]
    # Include does not widen the suffix filter.
    touch("v/notes.txt")
    assert found(["v"], include=["*.txt"]) == []
    assert found(["v"], include=["*.mp4"], exclude=["other"]) == ["v/a.mp4", "v/sub/c.mp4"]


def test_symlinks_inside_root_are_followed_with_paths_not_resolved() -> None:
    touch("v/.store/a.mp4", b"aaa")
    touch("v/.store/b.mp4", b"12345")
    os.symlink(".store", "v/show")
    os.symlink(".store/b.mp4", "v/clip.mp4")
    result = list(discover(["v"]))
    # show/b.mp4 is the file clip.mp4 already yielded.
    assert [v.path for v in result] == ["v/clip.mp4", "v/show/a.mp4"]
    assert result[0].size == 5
    assert result[0].mtime_ns == os.stat("v/.store/b.mp4").st_mtime_ns


def test_symlink_into_another_given_root_is_followed() -> None:
    touch("b/x.mp4")
    os.mkdir("a")
    os.symlink("../b/x.mp4", "a/link.mp4")
    assert found(["a", "b"]) == ["a/link.mp4"]
    assert found(["a"]) == []


def test_symlinks_outside_roots_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    touch("v/ok.mp4")
    touch("outside/secret.mp4")
    touch("v2/near.mp4")
    os.symlink("../outside/secret.mp4", "v/leak.mp4")
    os.symlink("../outside", "v/leakdir")
    # Shares the prefix "v" with the root, but is not inside it.
    os.symlink("../v2/near.mp4", "v/prefix.mp4")
    assert found(["v"]) == ["v/ok.mp4"]
    messages = skip_messages(caplog)
    for name in ["v/leak.mp4", "v/leakdir", "v/prefix.mp4"]:
        assert any(name in m and "outside" in m for m in messages), messages


def test_symlink_loops_terminate_and_yield_each_file_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    touch("v/a.mp4")
    touch("v/sub/b.mp4")
    os.symlink("..", "v/sub/up")
    os.symlink(".", "v/sub/self")
    os.symlink("ouro.mp4", "v/ouro.mp4")
    assert found(["v"]) == ["v/a.mp4", "v/sub/b.mp4"]
    messages = skip_messages(caplog)
    assert any("v/sub/up" in m and "loop" in m for m in messages), messages
    assert any("v/sub/self" in m and "loop" in m for m in messages), messages
    assert any("v/ouro.mp4" in m for m in messages), messages


def test_symlink_to_sibling_folder_walked_once() -> None:
    touch("v/real/a.mp4")
    os.symlink("real", "v/zlink")
    os.symlink("real", "v/alink")
    assert found(["v"]) == ["v/alink/a.mp4"]


def test_broken_symlink_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    touch("v/a.mp4")
    os.symlink("missing.mp4", "v/dead.mp4")
    assert found(["v"]) == ["v/a.mp4"]
    assert any("v/dead.mp4" in m and "broken" in m for m in skip_messages(caplog))


def test_quiet_walk_says_what_it_skips_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    # The watcher's periodic rescans repeat what the first walk said at INFO.
    caplog.set_level(logging.DEBUG, logger="tagger.sources.discover")
    touch("v/a.mp4")
    os.symlink("missing.mp4", "v/dead.mp4")
    assert found(["v"], quiet=True) == ["v/a.mp4"]
    notes = [r for r in caplog.records if "v/dead.mp4" in r.getMessage()]
    assert [r.levelno for r in notes] == [logging.DEBUG]
    caplog.clear()
    assert found(["v"]) == ["v/a.mp4"]
    assert [r.levelno for r in caplog.records if "v/dead.mp4" in r.getMessage()] == [logging.INFO]


def test_unreadable_folder_skipped_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    touch("v/a.mp4")
    touch("v/locked/b.mp4")
    touch("v/z.mp4")
    real_scandir = os.scandir

    # Simulated, because chmod 000 does not stop a test run as root.
    def scandir(path: str) -> object:
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert found(["v"]) == ["v/a.mp4", "v/z.mp4"]
    assert any("v/locked" in m and "unreadable" in m for m in skip_messages(caplog))


def test_overlapping_roots_and_hard_links_yield_each_file_once() -> None:
    touch("v/a.mp4")
    touch("v/sub/b.mp4")
    assert found(["v", "v/sub"]) == ["v/a.mp4", "v/sub/b.mp4"]
    assert found(["v/sub", "v"]) == ["v/sub/b.mp4", "v/a.mp4"]
    assert found(["v", "v"]) == ["v/a.mp4", "v/sub/b.mp4"]
    assert found(["v/a.mp4", "v"]) == ["v/a.mp4", "v/sub/b.mp4"]
    os.link("v/a.mp4", "v/z_same.mp4")
    assert found(["v"]) == ["v/a.mp4", "v/sub/b.mp4"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_skipped_without_being_opened(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    touch("v/a.mp4")
    os.mkfifo("v/pipe.mp4")

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"discovery opened {args[0]!r}")

    # Opening a FIFO for reading would block forever; make any open fail loudly instead.
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", no_open)
        m.setattr(os, "open", no_open)
        walked = found(["v"])
        named = found(["v/pipe.mp4"])
    assert walked == ["v/a.mp4"]
    assert named == []
    messages = skip_messages(caplog)
    assert sum("v/pipe.mp4" in m and "FIFO" in m for m in messages) == 2, messages


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX sockets")
def test_unix_socket_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tagger.sources.discover")
    touch("v/a.mp4")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind("v/sock.mp4")
        except OSError as exc:
            pytest.skip(f"cannot bind an AF_UNIX socket here (path too long?): {exc}")
        assert found(["v"]) == ["v/a.mp4"]
        assert found(["v/sock.mp4"]) == []
    assert any("v/sock.mp4" in m and "socket" in m for m in skip_messages(caplog))


def test_size_and_mtime_ns_come_from_stat() -> None:
    touch("v/a.mp4", b"hello")
    touch("v/sub/b.mkv", b"hi")
    mtime_ns = 1_600_000_000_123_456_789
    os.utime("v/a.mp4", ns=(mtime_ns, mtime_ns))
    assert list(discover(["v"])) == [
        VideoFile("v/a.mp4", 5, os.stat("v/a.mp4").st_mtime_ns),
        VideoFile("v/sub/b.mkv", 2, os.stat("v/sub/b.mkv").st_mtime_ns),
    ]
    # Filesystems may round sub-second precision, but the seconds survive.
    assert next(iter(discover(["v"]))).mtime_ns // 10**9 == mtime_ns // 10**9


def test_missing_root_raises_on_the_call() -> None:
    touch("v/a.mp4")
    with pytest.raises(FileNotFoundError):
        discover(["v", "nope"])  # not iterated: the error must not wait for the walk
    os.symlink("missing", "dangling")
    with pytest.raises(FileNotFoundError):
        list(discover(["dangling"]))


def test_single_string_instead_of_sequence_is_rejected() -> None:
    touch("v/a.mp4")
    with pytest.raises(TypeError):
        discover("v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        discover(["v"], exclude="*.part")  # type: ignore[arg-type]


def test_a_ready_filter_replaces_the_separate_options() -> None:
    for p in ["v/a.mp4", "v/.b.mp4", "v/.c.mp4.part.mp4", "v/skip/d.mp4", "v/e.TXT"]:
        touch(p)
    f = VideoFilter(suffixes=frozenset({".mp4", "txt"}), exclude=("skip",), hidden=True)
    assert found(["v"], filter=f) == found(["v"], exclude=["skip"], suffixes={".mp4", "txt"}, hidden=True)
    assert found(["v"], filter=f) == ["v/.b.mp4", "v/.c.mp4.part.mp4", "v/a.mp4", "v/e.TXT"]
    # Temporary names count only where the filter names them, as the watcher's does.
    assert found(["v"], filter=VideoFilter(hidden=True, temporary=TEMP_PATTERNS)) == [
        "v/a.mp4",
        "v/skip/d.mp4",
    ]
    with pytest.raises(TypeError):
        discover(["v"], exclude=["skip"], filter=f)


def test_walk_order_sorts_paths_as_discover_yields_them() -> None:
    rels = ["c.mov", "b.mp4", "a/z.mkv", "a/c/d.webm", "0.avi", "a.mp4", "a-b/x.mp4", "A/y.mp4", "a/c.mp4"]
    for rel in rels:
        touch(f"v/{rel}")
    touch("w/first.mp4")
    walked = found(["w", "v"])
    keyed = sorted([f"v/{r}" for r in rels] + ["w/first.mp4"], key=lambda p: walk_order(p[0] == "v", p[2:]))
    assert walked == keyed
    assert walk_order(0, "") < walk_order(0, "a") < walk_order(0, "a/b") < walk_order(0, "a.mp4")


def test_walk_folder_walks_a_sub_folder_as_a_walk_of_its_root_would(tmp_path: Path) -> None:
    for p in ["v/new/a.mp4", "v/new/drafts/b.mp4", "v/new/.c.mp4", "v/old/d.mp4", "outside/e.mp4"]:
        touch(p)
    os.symlink("../old/d.mp4", "v/new/link.mp4")  # elsewhere in the root: followed
    os.symlink("../../outside/e.mp4", "v/new/leak.mp4")  # outside the root: not
    f = VideoFilter(exclude=("new/drafts",))
    got = [v.path for v in walk_folder("v/new", "new", f, Confinement.of(["v"]))]
    # "new/drafts" is a path under the root: it matches only because rel says where "new" is.
    assert got == ["v/new/a.mp4", "v/new/link.mp4"]
    assert list(walk_folder("v/new/a.mp4", "new/a.mp4", f, Confinement.of(["v"]))) == []
    with pytest.raises(FileNotFoundError):
        walk_folder("v/gone", "gone", f, Confinement.of(["v"]))
