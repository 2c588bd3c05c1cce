"""XMP sidecars for digiKam, Immich and PhotoPrism, merged into the user's own.

Keywords go three ways. ``digiKam:TagsList`` as ``vidtag/<label>`` and ``lr:hierarchicalSubject``
as ``vidtag|<label>``: digiKam and Immich take their tag tree from the first of these that is not
empty (TagsList first), so the ``vidtag`` parent keeps machine tags on a branch of their own,
apart from the user's tags and easy to hide or delete as one. ``dc:subject`` gets the plain
``<label>``: it has no hierarchy, digiKam writes leaf names there, and PhotoPrism and generic
readers search it. A hierarchical label (``Sports/Basketball``, from nested class folders) is a
deeper branch in both trees, each with its own separator: ``vidtag/Sports/Basketball`` in
TagsList, ``vidtag|Sports|Basketball`` in hierarchicalSubject; in ``dc:subject`` each of its
names is a keyword of its own (``Sports``, ``Basketball``), once however many labels share it.
The timeline is an ``xmpDM:Tracks`` track named "vidtag" with one marker per segment; its
``frameRate`` is ``f1000``, so times are milliseconds whatever the video's rate, and its
``trackType`` (an open choice: the default type of its markers) is "Comment", for markers that
annotate; the spec's predefined types (Chapter, Cue, Index, Speech, Track) name other things.
Each marker's comment holds the scores.

Everything of the user's stays as it was (see ``xmlfiles``). What vidtag added is recorded in
its own namespace, ``NS_VIDTAG``: ``vidtag:AddedTagsList``, ``vidtag:AddedHierarchicalSubject``
and ``vidtag:AddedSubject`` list the values it put in each list (for ``dc:subject``, each name
it added), ``vidtag:Model`` names the model, and vidtag's track carries a ``vidtag:Model`` field
of its own (exiftool keeps both when it rewrites a file). A later run takes out exactly that
before it adds the new set, so a label that is gone goes, and a keyword the user has too (a
shared parent name like ``Sports`` included) is never duplicated, recorded or removed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from lxml import etree

from tagger import __version__
from tagger.records import LABEL_SEP, VideoResult
from tagger.sinks import xmlfiles
from tagger.sinks.sidecars import keywords
from tagger.sinks.xmlfiles import ForeignSidecarError, MergedSidecar, XmlDoc

#: vidtag's namespace. A name, not a web page: the ``.invalid`` domain (RFC 2606) can never
#: belong to anyone, so no other software's properties can share it. Never change it: files
#: written with it must stay readable by later versions.
NS_VIDTAG = "https://vidtag.invalid/ns/1.0/"
NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmpDM": "http://ns.adobe.com/xmp/1.0/DynamicMedia/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "vidtag": NS_VIDTAG,
}
TRACK_NAME = "vidtag"
FRAME_RATE = "f1000"  # ticks per second: marker times are in milliseconds
_UNIT = " "  # indentation per level, as exiftool writes XMP


def _q(name: str) -> str:
    """``"dc:subject"`` as lxml spells it: ``"{http://purl.org/dc/elements/1.1/}subject"``."""
    prefix, local = name.split(":")
    return f"{{{NAMESPACES[prefix]}}}{local}"


DESCRIPTION, LI, ABOUT = _q("rdf:Description"), _q("rdf:li"), _q("rdf:about")
ARRAYS = {_q("rdf:Bag"), _q("rdf:Seq"), _q("rdf:Alt")}
MODEL = _q("vidtag:Model")


@dataclass(frozen=True)
class _List:
    prop: str  # the keyword list
    kind: str  # its RDF array
    record: str  # vidtag's list of the values it added there
    form: Callable[[str], tuple[str, ...]]  # a label as values of the list


def _levels(label: str) -> list[str]:
    """The names of a hierarchical label, root first (a flat label is one)."""
    return [name for name in label.split(LABEL_SEP) if name] or [label]


LISTS = (
    # digiKam's separator is "/" too, so a label is its path as it stands.
    _List("digiKam:TagsList", "rdf:Seq", "vidtag:AddedTagsList", lambda label: (f"vidtag/{label}",)),
    _List(
        "lr:hierarchicalSubject",
        "rdf:Bag",
        "vidtag:AddedHierarchicalSubject",
        lambda label: ("|".join(["vidtag", *_levels(label)]),),
    ),
    _List("dc:subject", "rdf:Bag", "vidtag:AddedSubject", lambda label: tuple(_levels(label))),
)


def xmp_path(video_path: str) -> str:
    """``clip.mp4.xmp``, or ``clip.xmp`` when only that one exists: digiKam and Immich read
    both, ``clip.mp4.xmp`` first (Lightroom and Capture One name sidecars ``clip.xmp``)."""
    with_ext = video_path + ".xmp"
    bare = os.path.splitext(video_path)[0] + ".xmp"
    if bare != with_ext and not os.path.lexists(with_ext) and os.path.lexists(bare):
        return bare
    return with_ext


def _element(name: str, value: str | None = None, ns: Sequence[str] = (), **attrib: str) -> etree._Element:
    """A new element declaring what it and its children use (lxml drops what the parent has)."""
    nsmap = {p: NAMESPACES[p] for p in dict.fromkeys((name.split(":")[0], "rdf", *ns))}
    element = etree.Element(_q(name), {_q(k.replace("_", ":")): v for k, v in attrib.items()}, nsmap=nsmap)
    element.text = value
    return element


def _sub(parent: etree._Element, name: str, value: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _q(name))
    child.text = value
    return child


def _array(name: str, kind: str, items: Sequence[str | etree._Element]) -> etree._Element:
    prop = _element(name)
    array = _sub(prop, kind)
    for item in items:
        array.append(_element("rdf:li", item) if isinstance(item, str) else item)
    return prop


def _rdf(doc: XmlDoc) -> etree._Element:
    root = doc.root
    if root.tag == _q("rdf:RDF"):
        return root  # a bare rdf:RDF, without x:xmpmeta, is still XMP
    rdf = root.find(_q("rdf:RDF")) if root.tag in (_q("x:xmpmeta"), _q("x:xapmeta")) else None
    if rdf is None:
        raise ForeignSidecarError(doc.path, "it is not XMP (no x:xmpmeta with an rdf:RDF)")
    return rdf


def _home(rdf: etree._Element) -> etree._Element:
    """The rdf:Description new properties go in: the first (made if there is none)."""
    home = rdf.find(DESCRIPTION)
    if home is None:
        home = _element("rdf:Description", rdf_about="")
        xmlfiles.append(rdf, home, _UNIT)
    return home


def _find(doc: XmlDoc, rdf: etree._Element, name: str) -> etree._Element | None:
    """Property ``name`` in any rdf:Description (exiftool writes one per namespace). vidtag's
    are all elements; one given as an attribute is not what vidtag would guess at."""
    for description in rdf.iterfind(DESCRIPTION):
        if description.get(_q(name)) is not None:
            raise ForeignSidecarError(doc.path, f"its {name} is an attribute, not an array")
        found = description.find(_q(name))
        if found is not None:
            return found
    return None


def _array_of(
    doc: XmlDoc, rdf: etree._Element, name: str
) -> tuple[etree._Element | None, etree._Element | None]:
    """Array property ``name`` and the RDF array holding its items (None, None if absent)."""
    prop = _find(doc, rdf, name)
    if prop is None:
        return None, None
    children = [c for c in prop if isinstance(c.tag, str)]
    if len(children) != 1 or children[0].tag not in ARRAYS:
        raise ForeignSidecarError(doc.path, f"its {name} is not an RDF array")
    return prop, children[0]


def _values(array: etree._Element | None) -> list[str]:
    values = [] if array is None else [xmlfiles.text(li) for li in array.iterfind(LI)]
    return [v for v in values if v]


def _merge_list(doc: XmlDoc, rdf: etree._Element, spec: _List, labels: Sequence[str]) -> list[str]:
    """Make the list hold ``labels`` (in vidtag's form) as well as the user's keywords; returns
    the values vidtag added, which are now in it."""
    # Labels that share a parent share its dc:subject word: each value is wanted once.
    wanted = list(dict.fromkeys(value for label in labels for value in spec.form(label)))
    prop, array = _array_of(doc, rdf, spec.prop)
    ours, took = [], False
    for value in dict.fromkeys(_values(_array_of(doc, rdf, spec.record)[1])):
        matches = [] if array is None else [li for li in array.iterfind(LI) if xmlfiles.text(li) == value]
        if not matches:
            continue  # the user took it out: re-added below if still wanted
        if value in wanted and len(matches) == 1:
            ours.append(value)
        else:  # gone from the result, or the user has it too: take back vidtag's copy
            xmlfiles.detach(matches[-1])
            took = True
    if took and prop is not None and array is not None and array.find(LI) is None:
        xmlfiles.detach(prop)  # vidtag's were the last: no empty list is left behind
        prop = array = None
    present = set() if array is None else {xmlfiles.text(li) for li in array.iterfind(LI)}
    missing = [value for value in wanted if value not in present]
    if missing and array is None:
        xmlfiles.append(_home(rdf), _array(spec.prop, spec.kind, missing), _UNIT)
    elif array is not None:
        for value in missing:
            xmlfiles.append(array, _element("rdf:li", value), _UNIT)
    return ours + missing


def _track(result: VideoResult) -> etree._Element:
    """vidtag's track: one marker per segment, times in ``FRAME_RATE`` ticks (milliseconds)."""
    track = _element("rdf:li", ns=("xmpDM", "vidtag"), rdf_parseType="Resource")
    _sub(track, "xmpDM:trackName", TRACK_NAME)
    _sub(track, "xmpDM:trackType", "Comment")
    _sub(track, "xmpDM:frameRate", FRAME_RATE)
    _sub(track, "vidtag:Model", result.model)
    markers = _sub(_sub(track, "xmpDM:markers"), "rdf:Seq")
    for segment in result.segments:
        start = max(0, round(segment.start_s * 1000))
        marker = _sub(markers, "rdf:li")
        marker.set(_q("rdf:parseType"), "Resource")
        _sub(marker, "xmpDM:name", segment.label)
        _sub(marker, "xmpDM:startTime", str(start))
        _sub(marker, "xmpDM:duration", str(max(0, round(segment.end_s * 1000) - start)))
        _sub(marker, "xmpDM:comment", f"score {segment.score:.2f}, peak {segment.peak_score:.2f}")
    return track


def _is_ours(track: etree._Element) -> bool:
    # A track is a resource: fields as children, inside an rdf:Description, or as attributes.
    description = track.find(DESCRIPTION)
    return any(
        t.find(MODEL) is not None or t.get(MODEL) is not None for t in (track, description) if t is not None
    )


def _merge_track(doc: XmlDoc, rdf: etree._Element, result: VideoResult | None) -> bool:
    """Put vidtag's track in place of the one before (or take it out); True if there is one."""
    prop, array = _array_of(doc, rdf, "xmpDM:Tracks")
    old = [] if array is None else [t for t in array.iterfind(LI) if _is_ours(t)]
    new = _track(result) if result is not None and result.segments else None
    if new is not None and old:
        xmlfiles.replace(old[0], new, _UNIT)  # in its place: an unchanged timeline is no change
    elif new is not None and array is not None:
        xmlfiles.append(array, new, _UNIT)
    elif new is not None:
        xmlfiles.append(_home(rdf), _array("xmpDM:Tracks", "rdf:Bag", [new]), _UNIT)
    for track in old[1:] if new is not None else old:
        xmlfiles.detach(track)
    if old and prop is not None and array is not None and array.find(LI) is None:
        xmlfiles.detach(prop)  # vidtag's was the only track
    return new is not None


def _put(doc: XmlDoc, rdf: etree._Element, name: str, new: etree._Element | None) -> None:
    """Set vidtag's property ``name`` to ``new`` in its place (None: take it out)."""
    prop = _find(doc, rdf, name)
    if prop is not None and new is not None:
        xmlfiles.replace(prop, new, _UNIT)
    elif prop is not None:
        xmlfiles.detach(prop)
    elif new is not None:
        xmlfiles.append(_home(rdf), new, _UNIT)


def merge(doc: XmlDoc, result: VideoResult | None) -> None:
    """Make ``doc`` hold vidtag's keywords and timeline of ``result`` and the user's own
    metadata; with None, take vidtag's out and leave only the user's."""
    rdf = _rdf(doc)
    labels = keywords(result) if result is not None else ()
    ours = {spec.record: _merge_list(doc, rdf, spec, labels) for spec in LISTS}
    for record, values in ours.items():
        _put(doc, rdf, record, _array(record, "rdf:Bag", values) if values else None)
    added = _merge_track(doc, rdf, result) or any(ours.values())
    model = result.model if result is not None and added else None
    _put(doc, rdf, "vidtag:Model", None if model is None else _element("vidtag:Model", model))


def _skeleton(path: str) -> XmlDoc:
    """A new sidecar: x:xmpmeta > rdf:RDF > one empty rdf:Description; no xpacket wrapper,
    which is for XMP embedded in media files."""
    root = etree.Element(
        _q("x:xmpmeta"), {_q("x:xmptk"): f"vidtag {__version__}"}, nsmap={"x": NAMESPACES["x"]}
    )
    rdf = etree.SubElement(root, _q("rdf:RDF"), nsmap={"rdf": NAMESPACES["rdf"]})
    others = {p: u for p, u in NAMESPACES.items() if p not in ("x", "rdf")}
    etree.SubElement(rdf, DESCRIPTION, {ABOUT: ""}, nsmap=others)
    return xmlfiles.create(path, root, '<?xml version="1.0" encoding="UTF-8"?>', _UNIT)


def _empty(doc: XmlDoc) -> bool:
    """Whether nothing is left in the file but the XMP skeleton."""
    rdf = _rdf(doc)
    if xmlfiles.top_level_extras(doc, keep_pis=True) or (rdf is not doc.root and len(doc.root) != 1):
        return False
    return all(
        d.tag == DESCRIPTION and not len(d) and set(d.attrib) <= {ABOUT} and not (d.text or "").strip()
        for d in rdf
    )


class XmpSidecar(MergedSidecar):
    """``<video>.<ext>.xmp`` (or ``<video>.xmp``): keywords and timeline for photo managers."""

    name: ClassVar[str] = "xmp"

    def path(self, video_path: str) -> str:
        return xmp_path(video_path)

    def has_content(self, result: VideoResult) -> bool:
        return bool(keywords(result) or result.segments)

    def new(self, path: str) -> XmlDoc:
        return _skeleton(path)

    def merge(self, doc: XmlDoc, result: VideoResult | None) -> None:
        merge(doc, result)

    def empty(self, doc: XmlDoc) -> bool:
        return _empty(doc)
