"""The XML sidecars of other software (XMP, NFO): read without harm, edited in place, written back
only when they change.

A file from elsewhere passes two gates before vidtag edits it. defusedxml (expat) refuses any
DOCTYPE at its first byte, so no entity is ever declared, let alone expanded: an entity bomb or an
external entity (``<!ENTITY x SYSTEM "file:///etc/passwd">``) costs nothing. lxml then parses it
with entities, DTDs and the network off, and is asked again for a DOCTYPE. Neither XMP nor NFO
has any use for one. lxml keeps what a round trip must keep: prefixes and where each namespace is
declared, comments, processing instructions (an XMP's ``<?xpacket?>`` pair) and order. What it
does not keep (quote style and line breaks inside tags) has no meaning, and vidtag compares the
document it would write with the one it read, not with the bytes, so the file is not rewritten
for that alone.

``MergedSidecar`` is the sink both share: it leaves a file it will not edit as it is, with a
warning, writes only what changed, and takes back only what vidtag added.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from abc import ABC, abstractmethod
from typing import ClassVar
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring
from lxml import etree

from tagger.fsutil import atomic_open
from tagger.names import display
from tagger.records import LIVE_STATUSES, OutputError, StorageError, VideoResult

#: A sidecar is a few KB. Lightroom's can reach a few MB (masks); beyond this it is not one.
MAX_BYTES = 8 * 1024 * 1024

log = logging.getLogger("tagger.sinks")

# The XML declaration (and a UTF-8 BOM) as the file spells it: written back byte for byte.
_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?:<\?xml\s[^>]*\?>)?")


class ForeignSidecarError(OutputError):
    """A file where a sidecar goes that vidtag will not edit: it cannot be read, is not XML or
    not the expected kind, has a DTD, or is too large. It is left as it is."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{display(path)} is left as it is: {reason}")
        self.path = path
        self.reason = reason


def _parser() -> etree.XMLParser:
    # One per parse: an lxml parser is not to be shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
        remove_pis=False,
    )


def _read(path: str) -> bytes | None:
    """The bytes of ``path`` (None if there is nothing there), at most ``MAX_BYTES``."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the run in open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ForeignSidecarError(path, "it is a dangling symbolic link") from None
        return None
    except OSError as e:
        raise ForeignSidecarError(path, f"it cannot be read ({e.strerror or e})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ForeignSidecarError(path, "it is not a regular file")
        try:
            data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise ForeignSidecarError(path, f"it cannot be read ({e.strerror or e})") from e
    if len(data) > MAX_BYTES:
        raise ForeignSidecarError(path, f"it is larger than {MAX_BYTES // (1024 * 1024)} MB")
    return data


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "<?xml".encode(encoding) == b"<?xml"
    except LookupError:
        return False


def _parse(path: str, data: bytes) -> etree._ElementTree:
    try:
        defused_fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        raise ForeignSidecarError(path, "it has a DTD (<!DOCTYPE>), which vidtag never reads") from None
    except (ParseError, ValueError, LookupError) as e:
        raise ForeignSidecarError(path, f"it is not well-formed XML ({e})") from None
    try:
        tree = etree.fromstring(data, _parser()).getroottree()
    except (etree.LxmlError, ValueError) as e:
        raise ForeignSidecarError(path, f"it is not well-formed XML ({e})") from None
    # The second gate, should the two parsers ever disagree on where a document starts.
    # (libxml2 gives any DOCTYPE, even one with no subset, an internalDTD.)
    if tree.docinfo.internalDTD is not None or next(tree.iter(etree.Entity), None) is not None:
        raise ForeignSidecarError(path, "it has a DTD (<!DOCTYPE>), which vidtag never reads")
    encoding = tree.docinfo.encoding or "UTF-8"
    if not _ascii_compatible(encoding):
        raise ForeignSidecarError(path, f"it is encoded as {encoding}; vidtag edits UTF-8 XML")
    return tree


class XmlDoc:
    """An XML file as read (or about to be made), edited in memory, saved if it changed."""

    def __init__(self, path: str, tree: etree._ElementTree, prolog: bytes, new: bool) -> None:
        self.path = path
        self.tree = tree
        self.prolog = prolog
        self.new = new
        self.encoding = tree.docinfo.encoding or "UTF-8"
        self._read = b"" if new else self.render()

    @property
    def root(self) -> etree._Element:
        return self.tree.getroot()

    def render(self) -> bytes:
        """The file's bytes: its own declaration, then each top-level node on a line."""
        root = self.root
        nodes = [*reversed(list(root.itersiblings(preceding=True))), root, *root.itersiblings()]
        parts = []
        for node in nodes:
            part = etree.tostring(node, encoding=self.encoding, xml_declaration=False, with_tail=False)
            assert isinstance(part, bytes)  # an encoding given: bytes, not str
            parts.append(part)
        body = b"\n".join(parts)
        head = self.prolog + b"\n" if self.prolog.endswith(b"?>") else self.prolog
        return head + body + b"\n"

    @property
    def changed(self) -> bool:
        """Whether the document differs from the file (a new one always does)."""
        return self.new or self.render() != self._read

    def save(self) -> bool:
        """Replace the file atomically if the document changed; True when it was written."""
        if not self.changed:
            return False  # a rewrite would only bump its mtime and make media servers re-read it
        data = self.render()
        with atomic_open(self.path, "wb") as f:
            f.write(data)
        self._read, self.new = data, False
        return True


def load(path: str) -> XmlDoc | None:
    """The XML file at ``path``, or None if there is none; ``ForeignSidecarError`` if vidtag
    will not edit it."""
    data = _read(path)
    if data is None:
        return None
    tree = _parse(path, data)
    prolog = _PROLOG.match(data)
    return XmlDoc(path, tree, prolog.group(0) if prolog else b"", new=False)


def create(path: str, root: etree._Element, declaration: str, unit: str) -> XmlDoc:
    """A new file at ``path`` holding ``root``, laid out with ``unit`` per level."""
    etree.indent(root, space=unit)
    return XmlDoc(path, etree.ElementTree(root), declaration.encode("ascii"), new=True)


def delete(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise OutputError(f"cannot remove {display(path)}: {e.strerror or e}") from e


# Editing that keeps the layout of the user's file: a node added is indented like its
# siblings, and a node taken out leaves the whitespace around it as it was before it came.


def text(element: etree._Element) -> str | None:
    """The text of an element holding only text, stripped; None if it holds other nodes."""
    return None if len(element) else (element.text or "").strip()


def _space_before(node: etree._Element) -> str | None:
    prev = node.getprevious()
    parent = node.getparent()
    return prev.tail if prev is not None else (parent.text if parent is not None else None)


def _margin(space: str | None) -> str | None:
    """The indentation a line starts with, from the whitespace before it (None: no layout)."""
    if not space or space.strip() or "\n" not in space:
        return None
    return space.rsplit("\n", 1)[1]


def _lay_out(element: etree._Element, margin: str | None, unit: str) -> None:
    """Indent the inside of a new ``element`` whose first line starts at ``margin``."""
    if margin is None or not len(element):
        return
    etree.indent(element, space=unit)
    for node in element.iter():
        if node.text and not node.text.strip():
            node.text = node.text.replace("\n", "\n" + margin)
        if node is not element and node.tail and not node.tail.strip():
            node.tail = node.tail.replace("\n", "\n" + margin)


def insert_after(anchor: etree._Element, new: etree._Element, unit: str) -> None:
    parent = anchor.getparent()
    assert parent is not None
    tail = anchor.tail
    if anchor.getnext() is None:  # the last child: its tail is the parent's closing indentation
        anchor.tail = _space_before(anchor)
    parent.insert(parent.index(anchor) + 1, new)
    new.tail = tail
    _lay_out(new, _margin(_space_before(new)), unit)


def append(parent: etree._Element, new: etree._Element, unit: str) -> None:
    """Add ``new`` as the last child of ``parent``."""
    if len(parent):
        insert_after(parent[-1], new, unit)
        return
    # The root element starts a line; any other takes the margin of its own line.
    margin = "" if parent.getparent() is None else _margin(_space_before(parent))
    parent.append(new)
    if margin is not None:
        parent.text = "\n" + margin + unit
        new.tail = "\n" + margin
    _lay_out(new, None if margin is None else margin + unit, unit)


def replace(old: etree._Element, new: etree._Element, unit: str) -> None:
    parent = old.getparent()
    assert parent is not None
    new.tail = old.tail
    parent.replace(old, new)
    _lay_out(new, _margin(_space_before(new)), unit)


def detach(node: etree._Element) -> None:
    """Take ``node`` out of its parent, and the indentation it brought with it."""
    parent = node.getparent()
    assert parent is not None
    if node.getnext() is None:
        prev = node.getprevious()
        if prev is not None:
            prev.tail = node.tail
        else:
            parent.text = node.tail
    parent.remove(node)


def top_level_extras(doc: XmlDoc, keep_pis: bool) -> bool:
    """Whether the file has comments (or processing instructions, unless ``keep_pis``) beside
    its root element: something of the user's that a file left empty would lose."""
    root = doc.root
    for node in [*root.itersiblings(preceding=True), *root.itersiblings()]:
        if not (keep_pis and isinstance(node, etree._ProcessingInstruction)):
            return True
    return False


class MergedSidecar(ABC):
    """A sidecar merged into the user's own file, per video; a kind says where it goes, what a
    new one holds and how vidtag's part is merged into it and taken out again."""

    #: A failure is of one file (a name too long, a folder not writable): the run goes on.
    per_file: ClassVar[bool] = True

    @abstractmethod
    def path(self, video_path: str) -> str: ...

    @abstractmethod
    def has_content(self, result: VideoResult) -> bool:
        """Whether ``result`` gives anything to write: a file is made only then."""

    @abstractmethod
    def new(self, path: str) -> XmlDoc:
        """The file made where there is none, before anything is merged into it."""

    @abstractmethod
    def merge(self, doc: XmlDoc, result: VideoResult | None) -> None:
        """Make ``doc`` hold vidtag's part of ``result`` and all of the user's; with None, take
        vidtag's part out. ``ForeignSidecarError`` if it is not the kind of file expected."""

    @abstractmethod
    def empty(self, doc: XmlDoc) -> bool:
        """Whether nothing of the user's is in ``doc`` (only the skeleton of a new one)."""

    def planned(self, result: VideoResult) -> XmlDoc | None:
        """The file as ``write`` would leave it (not saved), or None if it writes nothing."""
        if result.status not in LIVE_STATUSES or not result.ok:
            return None  # a moved or removed row, or a video that failed: nothing to say
        path = self.path(result.path)
        doc = load(path)
        if doc is None:
            if not self.has_content(result):
                return None
            doc = self.new(path)
        self.merge(doc, result)
        return doc

    def write(self, result: VideoResult) -> None:
        """Merge the result into the file; one vidtag will not edit is left alone (the video
        is no failure for it)."""
        try:
            doc = self.planned(result)
        except ForeignSidecarError as e:
            log.warning("%s", e)
            return
        if doc is not None:
            doc.save()

    def done(self, result: VideoResult) -> bool:
        """Whether the file holds what ``write`` would write: a skipped video's is not rewritten."""
        try:
            doc = self.planned(result)
        except ForeignSidecarError:
            return False  # so that write says again why it is left alone
        return doc is None or not doc.changed

    def remove(self, video_path: str) -> None:
        """Take vidtag's part out; a file left with nothing of the user's is deleted."""
        try:
            doc = load(self.path(video_path))
            if doc is None:
                return
            self.merge(doc, None)
            if doc.changed and self.empty(doc):
                delete(doc.path)
            else:
                doc.save()
        except StorageError:
            raise
        except OutputError as e:  # like the JSON sidecar's: a video that left is no failure
            log.warning("%s", e)

    def close(self) -> None:
        """Nothing is held open between videos."""
        return None
