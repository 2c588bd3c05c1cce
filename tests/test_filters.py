"""Tests for tagger.sources.filters: which relative paths are videos, and where symlinks may lead."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tagger.sources.filters import TEMP_PATTERNS, VIDEO_SUFFIXES, Confinement, VideoFilter, is_temporary


def test_default_filter_takes_video_suffixes_in_any_case_and_skips_dot_names() -> None:
    f = VideoFilter()
    for rel in ("a.mp4", "A.MOV", "sub/b.Mkv", "deep/er/c.webm", "x.tmp/d.mp4"):
        assert f.wants_file(rel), rel
    for rel in ("", "notes.txt", "mp4", "a.mp4.part", ".a.mp4", ".thumbs/a.mp4", "sub/.cache/a.mp4"):
        assert not f.wants_file(rel), rel
    assert f.wants_dir("") and f.wants_dir("a/b")
    assert not f.wants_dir(".thumbs") and not f.wants_dir("a/.thumbs/b")


def test_hidden_takes_dot_names() -> None:
    f = VideoFilter(hidden=True)
    assert f.wants_file(".a.mp4") and f.wants_file(".thumbs/.b.mp4")
    assert f.wants_dir(".thumbs/x")


def test_exclude_prunes_folders_and_files_by_name_or_by_path_under_the_root() -> None:
    f = VideoFilter(exclude=("skip", "keep/no-*", "*_draft.mp4"))
    # A base-name glob matches at any depth, folders included, so their contents never count.
    assert not f.visible("skip") and not f.visible("a/skip")
    assert not f.wants_dir("a/skip/b") and not f.wants_file("a/skip/b/c.mp4")
    assert not f.wants_file("sub/x_draft.mp4")
    # A glob with "/" matches the path relative to the root, not a tail of it.
    assert not f.wants_file("keep/no-d.mp4")
    assert f.wants_file("other/keep/no-d.mp4")
    # Globs are case-sensitive.
    assert f.wants_file("SKIP/a.mp4")


def test_include_narrows_files_only_and_never_widens_the_suffixes() -> None:
    f = VideoFilter(include=("*.mp4", "sub/*"))
    assert f.wants_dir("other") and f.wants_file("other/a.mp4")
    assert not f.wants_file("b.mkv") and f.wants_file("sub/b.mkv")
    assert not VideoFilter(include=("*.txt",)).wants_file("a.txt")


def test_temporary_names_are_files_being_written_in_any_case() -> None:
    f = VideoFilter(temporary=TEMP_PATTERNS)
    for name in ("a.mp4.part", "a.mp4.crdownload", "x.TMP", "a.partial", "a.download", "a.mkv.!qb"):
        assert f.is_temporary(name), name
    assert f.is_temporary(".a.mp4.AbC123") and not f.is_temporary("a.mp4")
    # Even with dot-names wanted, a sync's temporary name is not a video while it is written...
    assert not VideoFilter(hidden=True, temporary=TEMP_PATTERNS).wants_file(".syncthing.a.mp4")
    # ...while a scan's filter (no temporary patterns) takes it, as --hidden always did.
    assert VideoFilter(hidden=True).wants_file(".syncthing.a.mp4")
    # The patterns name files: a folder with such a name is walked.
    assert f.wants_file("x.tmp/a.mp4")
    assert is_temporary("/v/a.mp4.part") and is_temporary("/v/.a.mp4.x") and not is_temporary("/v/.h/a.mp4")


def test_suffixes_are_normalised() -> None:
    f = VideoFilter(suffixes=frozenset({"TXT", ".Dat"}))
    assert f.suffixes == {".txt", ".dat"}
    assert f.wants_file("a.TXT") and f.wants_file("b.dat") and not f.wants_file("c.mp4")
    assert ".mp4" in VIDEO_SUFFIXES and all(s == s.lower() and s.startswith(".") for s in VIDEO_SUFFIXES)


def test_filter_is_a_frozen_value_and_refuses_bare_strings() -> None:
    assert VideoFilter(include=("*.mp4",)) == VideoFilter(include=("*.mp4",))
    assert hash(VideoFilter()) == hash(VideoFilter())
    with pytest.raises(dataclasses.FrozenInstanceError):
        VideoFilter().hidden = True  # type: ignore[misc]
    for field in ("include", "exclude", "suffixes", "temporary"):
        with pytest.raises(TypeError, match=field):
            VideoFilter(**{field: "*.mp4"})  # type: ignore[arg-type]


def test_confinement_holds_the_real_roots_and_nothing_beside_them(tmp_path: Path) -> None:
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "lib2").mkdir()
    os.symlink("lib", tmp_path / "alias")
    c = Confinement.of([str(tmp_path / "alias"), str(tmp_path / "missing")])
    real = os.path.realpath(tmp_path / "lib")
    assert c.holds(real) and c.holds(os.path.join(real, "sub", "a.mp4"))
    # Shares the prefix "lib" with the root but is not inside it.
    assert not c.holds(os.path.realpath(tmp_path / "lib2"))
    assert not c.holds(os.path.realpath(tmp_path))
    assert c.locate(os.path.join(real, "sub", "a.mp4")) == (0, "sub/a.mp4")
    assert c.locate(real) == (0, "")
    assert c.locate(os.path.realpath(tmp_path / "lib2")) is None


def test_confinement_locates_in_the_first_root_given(tmp_path: Path) -> None:
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    lib, sub = os.path.realpath(tmp_path / "lib"), os.path.realpath(tmp_path / "lib" / "sub")
    assert Confinement.of([lib, sub]).locate(os.path.join(sub, "x.mp4")) == (0, "sub/x.mp4")
    assert Confinement.of([sub, lib]).locate(os.path.join(sub, "x.mp4")) == (0, "x.mp4")
