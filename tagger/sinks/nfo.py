"""Kodi/Jellyfin NFO sidecars (``clip.nfo`` beside ``clip.mp4``): keywords as ``<tag>`` elements,
merged into the user's own NFO.

vidtag marks its own tags with an attribute, ``<tag generator="vidtag">``, so a later run replaces
only those. Both readers take a tag's text and ignore attributes they do not know: Jellyfin's
``BaseNfoParser`` reads ``<tag>`` with ``ReadNormalizedString``, Kodi's ``GetStringArray`` reads
the text (its only attribute is ``clear``). A sibling marker would be an element both would
have to skip and a user could separate from its tag. When Jellyfin's own NFO saver is on, it
rewrites tags from its database without the attribute: they then count as the user's, and are
kept, never duplicated.

A new NFO is ``<movie>`` with the tags and nothing else: no ``<title>``, no ``<lockdata>``.
Jellyfin keeps the name it made from the file when an NFO has no title (``MergeBaseItemData``
assigns only a non-empty name) and takes the NFO's tags as the video's tags from then on. A
title of the file's base name would replace the cleaned name it made ("Film (2010)" for "Film")
and the name it looks metadata up by. Kodi takes any NFO it can parse as complete
(``CNfoFile::Create``): it no longer scrapes that video, and without a title adds it untitled.
So for a library Kodi scrapes online, let Kodi write the NFOs and vidtag merge into them.
A file that is not an XML NFO of a video (Kodi's URL-only NFO, a release's text NFO) is left as
it is, with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from lxml import etree

from tagger.records import VideoResult
from tagger.sinks import xmlfiles
from tagger.sinks.sidecars import keywords
from tagger.sinks.xmlfiles import ForeignSidecarError, MergedSidecar, XmlDoc

#: The attribute on vidtag's ``<tag>`` elements.
MARK = ("generator", "vidtag")
#: The roots of a video's NFO (a movie, an episode, a music video).
ROOTS = ("movie", "episodedetails", "musicvideo")
_UNIT = "  "  # indentation per level, as Kodi and Jellyfin write NFOs


def nfo_path(video_path: str) -> str:
    """``<video without its extension>.nfo``, the name Kodi and Jellyfin look for."""
    return os.path.splitext(video_path)[0] + ".nfo"


def _ours(tag: etree._Element) -> bool:
    return tag.get(MARK[0]) == MARK[1]


def merge(doc: XmlDoc, labels: Sequence[str]) -> None:
    """Make the NFO's tags the user's plus ``labels``, each once; vidtag's others go."""
    root = doc.root
    if root.tag not in ROOTS:
        raise ForeignSidecarError(doc.path, f"its root is not one of <{'>, <'.join(ROOTS)}>")
    tags = root.findall("tag")
    users = {xmlfiles.text(t) for t in tags if not _ours(t)}
    kept: set[str | None] = set()
    for tag in (t for t in tags if _ours(t)):
        value = xmlfiles.text(tag)
        if value in labels and value not in users and value not in kept:
            kept.add(value)
        else:  # gone from the result, the user has it too, or a copy
            xmlfiles.detach(tag)
    remaining = root.findall("tag")
    anchor = remaining[-1] if remaining else None
    for label in labels:
        if label in users or label in kept:
            continue
        new = etree.Element("tag", {MARK[0]: MARK[1]})
        new.text = label
        # Beside the other tags, as Kodi and Jellyfin write them; at the end when there are none.
        if anchor is None:
            xmlfiles.append(root, new, _UNIT)
        else:
            xmlfiles.insert_after(anchor, new, _UNIT)
        anchor = new


def _empty(doc: XmlDoc) -> bool:
    root = doc.root
    return not (
        len(root) or root.attrib or (root.text or "").strip() or xmlfiles.top_level_extras(doc, False)
    )


class NfoSidecar(MergedSidecar):
    """``<video>.nfo``: the video's keywords as tags for Jellyfin and Kodi."""

    name: ClassVar[str] = "nfo"

    def path(self, video_path: str) -> str:
        return nfo_path(video_path)

    def has_content(self, result: VideoResult) -> bool:
        return bool(keywords(result))

    def new(self, path: str) -> XmlDoc:
        declaration = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        return xmlfiles.create(path, etree.Element("movie"), declaration, _UNIT)

    def merge(self, doc: XmlDoc, result: VideoResult | None) -> None:
        merge(doc, keywords(result) if result is not None else ())

    def empty(self, doc: XmlDoc) -> bool:
        return _empty(doc)
