"""The NFO sidecar, read back with the standard library's ElementTree (an independent parser)."""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from tagger.records import Segment, Tag, VideoResult
from tagger.sinks.nfo import NfoSidecar, nfo_path

from .conftest import ENTITY_BOMB, assert_nothing_read_from_passwd

USER_NFO = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!-- made by hand -->
<movie>
    <title>Summer 2019</title>
    <plot>At the lake &amp; on the beach.</plot>
    <tag>walking</tag>
    <genre>Home video</genre>
    <uniqueid type="home" default="true">42</uniqueid>
</movie>
"""


def result(video: Path, *labels: str) -> VideoResult:
    """A result whose keywords are ``labels``: the first is the top tag, each has a segment."""
    segments = tuple(Segment(label, 10.0 * i, 10.0 * i + 9, 0.9, 0.95) for i, label in enumerate(labels))
    return VideoResult(
        path=str(video), tags=(Tag(labels[0], 0.9), Tag("rare", 0.1)), clips=3, model="m", segments=segments
    )


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "Summer 2019.mkv"
    path.write_bytes(b"not really a video")
    return path


def tags(path: Path) -> list[str]:
    return [t.text or "" for t in ET.parse(path).getroot().iter("tag")]


def c14n(data: bytes) -> bytes:
    return etree.tostring(etree.fromstring(data).getroottree(), method="c14n")


def test_new_nfo(video: Path) -> None:
    NfoSidecar().write(result(video, "red", "green", "blue"))
    path = video.with_name("Summer 2019.nfo")
    assert nfo_path(str(video)) == str(path)
    root = ET.parse(path).getroot()
    assert root.tag == "movie"
    assert tags(path) == ["red", "green", "blue"]
    # Tags only: no title, so Jellyfin keeps the name it made from the file.
    assert [child.tag for child in root] == ["tag", "tag", "tag"]
    assert path.read_bytes().startswith(
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<movie>\n  <tag'
    )


def test_user_nfo_survives_two_runs_and_remove(video: Path) -> None:
    path = video.with_name("Summer 2019.nfo")
    path.write_text(USER_NFO, encoding="utf-8")
    sink = NfoSidecar()

    sink.write(result(video, "walking", "swimming", "running"))
    root = ET.parse(path).getroot()
    assert root.findtext("title") == "Summer 2019"
    assert root.findtext("plot") == "At the lake & on the beach."
    assert root.findtext("genre") == "Home video"
    assert tags(path) == ["walking", "swimming", "running"]  # the user's "walking" once

    sink.write(result(video, "walking", "swimming"))  # "running" is gone
    root = ET.parse(path).getroot()
    assert root.findtext("title") == "Summer 2019"
    assert root.findtext("plot") == "At the lake & on the beach."
    assert root.find("uniqueid").attrib == {"type": "home", "default": "true"}  # type: ignore[union-attr]
    assert tags(path) == ["walking", "swimming"]
    assert [t.get("generator") for t in root.iter("tag")] == [None, "vidtag"]
    assert "<!-- made by hand -->" in path.read_text(encoding="utf-8")

    sink.remove(str(video))
    assert c14n(path.read_bytes()) == c14n(USER_NFO.encode())
    assert tags(path) == ["walking"]


def test_second_write_leaves_the_file_alone(video: Path) -> None:
    path = video.with_name("Summer 2019.nfo")
    path.write_text(USER_NFO, encoding="utf-8")
    sink = NfoSidecar()
    res = result(video, "red", "green")
    assert not sink.done(res)
    sink.write(res)
    before = os.stat(path)
    assert sink.done(res)
    sink.write(res)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_copy_of_a_users_tag_is_taken_back(video: Path) -> None:
    # The user tagged "red" by hand after vidtag had: vidtag's copy goes, the user's stays.
    path = video.with_name("Summer 2019.nfo")
    sink = NfoSidecar()
    sink.write(result(video, "red", "green"))
    path.write_text(path.read_text(encoding="utf-8").replace("<movie>", "<movie>\n  <tag>red</tag>"), "utf-8")
    sink.write(result(video, "red", "green"))
    assert tags(path) == ["red", "green"]
    sink.remove(str(video))
    assert tags(path) == ["red"]


def test_remove_deletes_an_nfo_vidtag_made(video: Path) -> None:
    sink = NfoSidecar()
    sink.write(result(video, "red"))
    path = video.with_name("Summer 2019.nfo")
    assert path.exists()
    sink.remove(str(video))
    assert not path.exists()


@pytest.mark.parametrize("status", ["error", "moved"])
def test_failed_and_gone_results_write_nothing(video: Path, status: str) -> None:
    NfoSidecar().write(VideoResult(path=str(video), tags=(Tag("red", 0.9),), status=status))
    assert not video.with_name("Summer 2019.nfo").exists()


HOSTILE = {
    "entity bomb": f"<!DOCTYPE movie [{ENTITY_BOMB}]>\n<movie><title>&lol9;</title></movie>",
    "external entity": '<!DOCTYPE movie [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<movie><title>&xxe;</title></movie>',
    "external dtd": '<!DOCTYPE movie SYSTEM "http://example.com/x.dtd">\n<movie><title>x</title></movie>',
    "bare doctype": "<!DOCTYPE movie>\n<movie><title>x</title></movie>",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_nfo_is_refused(video: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    data = f'<?xml version="1.0"?>\n{HOSTILE[kind]}\n'.encode()
    path = video.with_name("Summer 2019.nfo")
    path.write_bytes(data)
    sink = NfoSidecar()
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        sink.write(result(video, "red"))
        sink.remove(str(video))
    assert path.read_bytes() == data
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2
    assert all("Summer 2019.nfo" in s and "DTD" in s for s in said)
    assert_nothing_read_from_passwd(video.parent)


@pytest.mark.parametrize(
    "content",
    [
        b"https://www.imdb.com/title/tt0111161/\n",  # Kodi's URL-only NFO
        b"<movie><title>x</title></movie>\nhttps://www.themoviedb.org/movie/278\n",  # XML then a URL
        b"   ____  ___  __ \n  / __ \\/ _ \\/ / RELEASE NFO \xb0\xb1\xb2\n",  # a release's text NFO
        b"<tvshow><title>x</title></tvshow>",  # not a video's NFO
    ],
)
def test_other_nfos_are_left_alone(video: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = video.with_name("Summer 2019.nfo")
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        NfoSidecar().write(result(video, "red"))
    assert path.read_bytes() == content
    assert any("Summer 2019.nfo is left as it is" in r.getMessage() for r in caplog.records)


def test_outputs_send_results_to_both_sidecars(video: Path) -> None:
    from tagger.sinks import Outputs
    from tagger.sinks.xmp import XmpSidecar

    outputs = Outputs([XmpSidecar(), NfoSidecar()])
    res = result(video, "red", "green")
    assert outputs.emit(res) == []
    assert tags(video.with_name("Summer 2019.nfo")) == ["red", "green"]
    xmp = video.with_name("Summer 2019.mkv.xmp")
    before = os.stat(xmp).st_mtime_ns
    assert outputs.emit(res, skipped=True) == []
    assert os.stat(xmp).st_mtime_ns == before
    outputs.withdraw(str(video))
    outputs.close()
    assert sorted(p.name for p in video.parent.iterdir()) == ["Summer 2019.mkv"]
