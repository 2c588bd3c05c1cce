"""The XMP sidecar, read back by exiftool (what digiKam's and Immich's readers agree with) and lxml."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tagger.records import Segment, Tag, VideoResult
from tagger.sinks import xmlfiles
from tagger.sinks.xmp import NS_VIDTAG, XmpSidecar, xmp_path

from .conftest import ENTITY_BOMB, assert_nothing_read_from_passwd

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (CI installs it)")

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
USER_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <!-- written by hand; keep this comment -->
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmp:Rating="4">
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
     <rdf:li>red</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <my:Note xmlns:my="http://example.com/my/">keep me</my:Note>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def result(video: Path, *labels: str, model: str = "m") -> VideoResult:
    """A result whose keywords are ``labels``: the first is the top tag, each has a segment."""
    segments = tuple(
        Segment(label, start_s=10 * i - (0.2 if i else 0), end_s=10 * i + 10.3, score=0.9, peak_score=0.98)
        for i, label in enumerate(labels)
    )
    return VideoResult(
        path=str(video), tags=(Tag(labels[0], 0.9), Tag("rare", 0.2)), clips=3, model=model, segments=segments
    )


THREE = ("red", "green", "blue")


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not really a video")
    return path


def exiftool(path: Path) -> dict[str, Any]:
    assert EXIFTOOL is not None
    out = subprocess.run(
        [EXIFTOOL, "-j", "-struct", "-G1", "-XMP:all", str(path)], capture_output=True, check=True, timeout=60
    )
    tags: dict[str, Any] = json.loads(out.stdout)[0]
    return tags


def c14n(data: bytes) -> bytes:
    return etree.tostring(etree.fromstring(data).getroottree(), method="c14n")


def marker_seconds(value: Any, rate: str) -> float:
    assert rate.startswith("f")
    ticks, _, basis = rate[1:].partition("s")
    return float(value) * int(basis or 1) / int(ticks)


@needs_exiftool
def test_new_sidecar_read_by_exiftool(video: Path) -> None:
    res = VideoResult(
        path=str(video),
        tags=(Tag("red", 0.9), Tag("blue", 0.2)),
        clips=3,
        model="m",
        segments=(
            Segment("red", 0, 10, 0.9, 0.95),
            Segment("green", 9.8, 20.3, 0.94, 0.98),
            Segment("blue", 19.6, 30, 0.95, 0.98),
        ),
    )
    XmpSidecar().write(res)
    path = video.with_name("clip.mp4.xmp")
    tags = exiftool(path)
    assert tags["XMP-digiKam:TagsList"] == ["vidtag/red", "vidtag/green", "vidtag/blue"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["vidtag|red", "vidtag|green", "vidtag|blue"]
    assert tags["XMP-dc:Subject"] == ["red", "green", "blue"]
    (track,) = tags["XMP-xmpDM:Tracks"]
    assert track["TrackName"] == "vidtag"
    markers = track["Markers"]
    assert [m["Name"] for m in markers] == ["red", "green", "blue"]
    for marker, segment in zip(markers, res.segments, strict=True):
        start = marker_seconds(marker["StartTime"], track["FrameRate"])
        end = start + marker_seconds(marker["Duration"], track["FrameRate"])
        assert start == pytest.approx(segment.start_s, abs=0.001)
        assert end == pytest.approx(segment.end_s, abs=0.001)
    assert markers[1]["Comment"] == "score 0.94, peak 0.98"
    # A plain sidecar: the XML declaration, then x:xmpmeta > rdf:RDF > rdf:Description.
    data = path.read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(data)
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    (description,) = root.iterfind(f"{{{RDF}}}RDF/{{{RDF}}}Description")
    assert description.get(f"{{{RDF}}}about") == ""


@needs_exiftool
def test_user_xmp_survives_two_runs_and_remove(video: Path) -> None:
    path = video.with_name("clip.mp4.xmp")
    path.write_text(USER_XMP, encoding="utf-8")
    sink = XmpSidecar()

    sink.write(result(video, *THREE))
    tags = exiftool(path)
    assert tags["XMP-xmp:Rating"] == 4
    assert tags["XMP-my:Note"] == "keep me"
    # "red" is the user's already: not added again, and not taken as vidtag's.
    assert tags["XMP-dc:Subject"] == ["holiday", "red", "green", "blue"]
    assert tags["XMP-vidtag:AddedSubject"] == ["green", "blue"]
    assert tags["XMP-digiKam:TagsList"] == ["vidtag/red", "vidtag/green", "vidtag/blue"]

    sink.write(result(video, "red", "green", model="m2"))  # "blue" is gone
    tags = exiftool(path)
    assert tags["XMP-xmp:Rating"] == 4
    assert tags["XMP-my:Note"] == "keep me"
    assert tags["XMP-dc:Subject"] == ["holiday", "red", "green"]
    assert tags["XMP-digiKam:TagsList"] == ["vidtag/red", "vidtag/green"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["vidtag|red", "vidtag|green"]
    assert [m["Name"] for m in tags["XMP-xmpDM:Tracks"][0]["Markers"]] == ["red", "green"]
    assert tags["XMP-vidtag:Model"] == "m2"
    root = etree.fromstring(path.read_bytes())
    comments = [c.text for c in root.iter(etree.Comment)]
    assert comments == [" written by hand; keep this comment "]

    sink.remove(str(video))
    assert c14n(path.read_bytes()) == c14n(USER_XMP.encode())
    assert exiftool(path)["XMP-dc:Subject"] == ["holiday", "red"]


def test_second_write_leaves_the_file_alone(video: Path) -> None:
    path = video.with_name("clip.mp4.xmp")
    path.write_text(USER_XMP, encoding="utf-8")
    sink = XmpSidecar()
    res = result(video, *THREE)
    assert not sink.done(res)
    sink.write(res)
    before = os.stat(path)
    assert sink.done(res)
    sink.write(res)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not sink.done(result(video, "red"))


def test_bare_name_is_merged_when_only_it_exists(video: Path) -> None:
    bare = video.with_name("clip.xmp")
    bare.write_text(USER_XMP, encoding="utf-8")
    assert xmp_path(str(video)) == str(bare)
    XmpSidecar().write(result(video, *THREE))
    assert not video.with_name("clip.mp4.xmp").exists()
    subjects = etree.fromstring(bare.read_bytes()).findall(f".//{{{RDF}}}li")
    assert "green" in [li.text for li in subjects]
    # With both there, digiKam and Immich read clip.mp4.xmp, and so does vidtag.
    video.with_name("clip.mp4.xmp").write_text(USER_XMP, encoding="utf-8")
    assert xmp_path(str(video)) == str(video) + ".xmp"


def test_remove_deletes_a_sidecar_vidtag_made(video: Path) -> None:
    sink = XmpSidecar()
    sink.write(result(video, *THREE))
    path = video.with_name("clip.mp4.xmp")
    assert path.exists()
    sink.remove(str(video))
    assert not path.exists()
    sink.remove(str(video))  # nothing there: nothing to do


@pytest.mark.parametrize("status", ["error", "moved", "removed"])
def test_failed_and_gone_results_write_nothing(video: Path, status: str) -> None:
    res = VideoResult(path=str(video), tags=(Tag("red", 0.9),), status=status, error="x")
    sink = XmpSidecar()
    sink.write(res)
    assert not video.with_name("clip.mp4.xmp").exists()
    assert sink.done(res)


@needs_exiftool
def test_file_rewritten_by_exiftool_is_still_merged(video: Path) -> None:
    # exiftool regroups a file into one rdf:Description per namespace and drops comments.
    path = video.with_name("clip.mp4.xmp")
    path.write_text(USER_XMP, encoding="utf-8")
    sink = XmpSidecar()
    sink.write(result(video, *THREE))
    assert EXIFTOOL is not None
    subprocess.run(
        [EXIFTOOL, "-q", "-overwrite_original", "-XMP-xmp:Rating=5", str(path)], check=True, timeout=60
    )
    assert len(etree.fromstring(path.read_bytes()).findall(f".//{{{RDF}}}Description")) > 1
    sink.write(result(video, "green", "yellow"))
    tags = exiftool(path)
    assert tags["XMP-dc:Subject"] == ["holiday", "red", "green", "yellow"]
    assert tags["XMP-digiKam:TagsList"] == ["vidtag/green", "vidtag/yellow"]
    assert len(tags["XMP-xmpDM:Tracks"]) == 1
    sink.remove(str(video))
    tags = exiftool(path)
    assert tags["XMP-dc:Subject"] == ["holiday", "red"]
    assert tags["XMP-xmp:Rating"] == 5
    assert "XMP-digiKam:TagsList" not in tags
    assert "XMP-xmpDM:Tracks" not in tags
    assert not [k for k in tags if k.startswith("XMP-vidtag:")]


@needs_exiftool
def test_users_own_track_and_attribute_form_are_kept(video: Path) -> None:
    user = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmpDM="http://ns.adobe.com/xmp/1.0/DynamicMedia/">
<xmpDM:Tracks><rdf:Bag><rdf:li xmpDM:trackName="vidtag" xmpDM:frameRate="f25">
<xmpDM:markers><rdf:Seq><rdf:li xmpDM:name="Dog" xmpDM:startTime="375" xmpDM:duration="90"/></rdf:Seq>
</xmpDM:markers></rdf:li></rdf:Bag></xmpDM:Tracks></rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""
    path = video.with_name("clip.mp4.xmp")
    path.write_text(user, encoding="utf-8")
    sink = XmpSidecar()
    sink.write(result(video, *THREE))
    sink.write(result(video, "red"))
    tracks = exiftool(path)["XMP-xmpDM:Tracks"]
    assert [[m["Name"] for m in t["Markers"]] for t in tracks] == [["Dog"], ["red"]]
    assert path.read_bytes().startswith(b'<?xpacket begin="\xef\xbb\xbf"')
    sink.remove(str(video))
    assert c14n(path.read_bytes()) == c14n(user.encode())


def test_odd_labels_are_escaped(video: Path) -> None:
    label = 'rock & roll <"live">'
    XmpSidecar().write(result(video, label))
    root = etree.fromstring(video.with_name("clip.mp4.xmp").read_bytes())
    values = [li.text for li in root.iter(f"{{{RDF}}}li")]
    assert f"vidtag/{label}" in values
    assert root.find(f".//{{{NS_VIDTAG}}}Model") is not None


# Hostile sidecars: each is refused by the DTD rule before anything is declared or expanded.
HOSTILE = {
    "entity bomb": f"<!DOCTYPE x:xmpmeta [{ENTITY_BOMB}]>",
    "external entity": '<!DOCTYPE x:xmpmeta [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    "external dtd": '<!DOCTYPE x:xmpmeta SYSTEM "http://example.com/x.dtd">',
    "parameter entity": '<!DOCTYPE x:xmpmeta [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
}
_BODY = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{ref}</dc:title>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_xmp_is_refused(video: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    ref = {"entity bomb": "&lol9;", "external entity": "&xxe;"}.get(kind, "x")
    data = f'<?xml version="1.0"?>\n{HOSTILE[kind]}\n{_BODY.format(ref=ref)}'.encode()
    path = video.with_name("clip.mp4.xmp")
    path.write_bytes(data)
    sink = XmpSidecar()
    res = result(video, *THREE)
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        sink.write(res)
        sink.remove(str(video))
    assert path.read_bytes() == data
    assert not sink.done(res)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2
    assert all("clip.mp4.xmp" in s and "DTD" in s for s in said)
    assert sorted(p.name for p in video.parent.iterdir()) == ["clip.mp4", "clip.mp4.xmp"]
    assert_nothing_read_from_passwd(video.parent)


@pytest.mark.parametrize(
    "content",
    [
        b"not xml at all",
        b"<notxmp><dc:subject/></notxmp>",
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>',
        b"\xff\xfe<\x00a\x00/\x00>\x00",
        # dc:subject as an attribute is not an array: vidtag will not guess what was meant.
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" dc:subject="a"/></rdf:RDF>',
    ],
)
def test_unreadable_xmp_is_left_alone(video: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = video.with_name("clip.mp4.xmp")
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        XmpSidecar().write(result(video, *THREE))
    assert path.read_bytes() == content
    assert any("clip.mp4.xmp is left as it is" in r.getMessage() for r in caplog.records)


def test_oversized_and_special_files_are_left_alone(
    video: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = video.with_name("clip.mp4.xmp")
    path.write_text(USER_XMP, encoding="utf-8")
    monkeypatch.setattr(xmlfiles, "MAX_BYTES", 100)
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        XmpSidecar().write(result(video, *THREE))
        assert path.read_text(encoding="utf-8") == USER_XMP
        path.unlink()
        os.mkfifo(path)  # an open() of a FIFO would wait for a writer forever
        XmpSidecar().write(result(video, *THREE))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "larger than" in said
    assert "not a regular file" in said


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_lxml_alone_refuses_hostile_xmp_too(
    video: Path, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The second gate, should defusedxml ever let a document through: lxml expands nothing
    # (libxml2 stops a bomb at its amplification limit) and the DOCTYPE is still refused.
    monkeypatch.setattr(xmlfiles, "defused_fromstring", lambda data, forbid_dtd: None)
    ref = {"entity bomb": "&lol9;", "external entity": "&xxe;"}.get(kind, "x")
    data = f'<?xml version="1.0"?>\n{HOSTILE[kind]}\n{_BODY.format(ref=ref)}'.encode()
    path = video.with_name("clip.mp4.xmp")
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="tagger.sinks"):
        XmpSidecar().write(result(video, *THREE))
    assert path.read_bytes() == data
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "clip.mp4.xmp is left as it is" in said
    if kind != "entity bomb":
        assert "DTD" in said


# --- hierarchical labels (nested class folders) -------------------------------------------

NESTED = ("Sports/Basketball", "Sports/Tennis")
LISTS = {
    "TagsList": "{http://www.digikam.org/ns/1.0/}TagsList",
    "HierarchicalSubject": "{http://ns.adobe.com/lightroom/1.0/}hierarchicalSubject",
    "Subject": "{http://purl.org/dc/elements/1.1/}subject",
    "AddedTagsList": f"{{{NS_VIDTAG}}}AddedTagsList",
    "AddedHierarchicalSubject": f"{{{NS_VIDTAG}}}AddedHierarchicalSubject",
    "AddedSubject": f"{{{NS_VIDTAG}}}AddedSubject",
}


def keyword_lists(path: Path) -> dict[str, list[str]]:
    """Each keyword list of the sidecar (by its exiftool name) with its values, as lxml reads them."""
    root = etree.fromstring(path.read_bytes())
    return {
        name: [li.text or "" for li in prop.iter(f"{{{RDF}}}li")]
        for name, tag in LISTS.items()
        for prop in root.iter(tag)
    }


def test_hierarchical_labels_are_branches_and_words(video: Path) -> None:
    path = video.with_name("clip.mp4.xmp")
    path.write_text(USER_XMP.replace("<rdf:li>red</rdf:li>", "<rdf:li>Tennis</rdf:li>"), encoding="utf-8")
    original = path.read_bytes()
    sink = XmpSidecar()

    sink.write(result(video, *NESTED))
    lists = keyword_lists(path)
    assert lists["TagsList"] == ["vidtag/Sports/Basketball", "vidtag/Sports/Tennis"]
    assert lists["HierarchicalSubject"] == ["vidtag|Sports|Basketball", "vidtag|Sports|Tennis"]
    # The shared parent once; "Tennis" is the user's already: neither doubled nor recorded.
    assert lists["Subject"] == ["holiday", "Tennis", "Sports", "Basketball"]
    assert lists["AddedSubject"] == ["Sports", "Basketball"]
    assert lists["AddedTagsList"] == lists["TagsList"]
    assert lists["AddedHierarchicalSubject"] == lists["HierarchicalSubject"]

    sink.write(result(video, "Music", "Sports/Tennis"))
    lists = keyword_lists(path)
    assert lists["TagsList"] == ["vidtag/Sports/Tennis", "vidtag/Music"]
    assert lists["HierarchicalSubject"] == ["vidtag|Sports|Tennis", "vidtag|Music"]
    assert lists["Subject"] == ["holiday", "Tennis", "Sports", "Music"]
    assert lists["AddedSubject"] == ["Sports", "Music"]

    sink.write(result(video, "Music"))
    lists = keyword_lists(path)
    assert lists["Subject"] == ["holiday", "Tennis", "Music"]
    assert lists["AddedSubject"] == ["Music"]
    assert lists["HierarchicalSubject"] == ["vidtag|Music"]

    sink.remove(str(video))
    assert c14n(path.read_bytes()) == c14n(original)


def test_flat_and_nested_labels_share_words_once(video: Path) -> None:
    XmpSidecar().write(result(video, "Sports", "Sports/Basketball", "Basketball"))
    lists = keyword_lists(video.with_name("clip.mp4.xmp"))
    assert lists["Subject"] == lists["AddedSubject"] == ["Sports", "Basketball"]
    assert lists["HierarchicalSubject"] == ["vidtag|Sports", "vidtag|Sports|Basketball", "vidtag|Basketball"]
    assert lists["TagsList"] == ["vidtag/Sports", "vidtag/Sports/Basketball", "vidtag/Basketball"]


@needs_exiftool
def test_hierarchical_labels_read_by_exiftool(video: Path) -> None:
    path = video.with_name("clip.mp4.xmp")
    path.write_text(USER_XMP, encoding="utf-8")
    sink = XmpSidecar()
    sink.write(result(video, *NESTED))
    tags = exiftool(path)
    assert tags["XMP-lr:HierarchicalSubject"] == ["vidtag|Sports|Basketball", "vidtag|Sports|Tennis"]
    assert tags["XMP-digiKam:TagsList"] == ["vidtag/Sports/Basketball", "vidtag/Sports/Tennis"]
    assert tags["XMP-dc:Subject"] == ["holiday", "red", "Sports", "Basketball", "Tennis"]
    assert tags["XMP-vidtag:AddedSubject"] == ["Sports", "Basketball", "Tennis"]

    sink.write(result(video, "Music", "Jazz"))
    tags = exiftool(path)
    assert tags["XMP-dc:Subject"] == ["holiday", "red", "Music", "Jazz"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["vidtag|Music", "vidtag|Jazz"]
    assert tags["XMP-digiKam:TagsList"] == ["vidtag/Music", "vidtag/Jazz"]
    assert tags["XMP-vidtag:AddedSubject"] == ["Music", "Jazz"]
    sink.remove(str(video))
    assert exiftool(path)["XMP-dc:Subject"] == ["holiday", "red"]
