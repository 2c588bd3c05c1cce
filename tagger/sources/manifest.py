"""Inputs at scale: a manifest (Parquet or CSV with a ``path`` column) instead of a folder walk,
and videos on other file systems (``s3://``, ``gs://``, ``hdfs://``, ``file://``; any fsspec
protocol that is installed) read through pyarrow's file systems.

Listing a bucket of a million objects is not part of a tagging job: the user lists it once
(``aws s3 ls``, a data catalogue) and hands vidtag the list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tagger.names import display
from tagger.records import InputError, VideoFile

#: ``scheme://``: a URI, read through a file system library rather than opened as a local name.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MANIFEST_SUFFIXES = (".parquet", ".csv")


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def _filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's file system for ``uri`` (S3, GCS, HDFS, local), else fsspec's, if installed."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        try:
            import fsspec
        except ImportError:
            raise OSError(
                f"no file system for {uri.split('://')[0]}:// ({exc}; fsspec may have one)"
            ) from None
        fs, inner = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def open_input(uri: str) -> IO[bytes]:
    """A seekable binary file object for ``uri`` (closed when it is garbage collected)."""
    fs, inner = _filesystem(uri)
    return fs.open_input_file(inner)  # type: ignore[no-any-return]


def stat(path: str) -> VideoFile:
    """The state store's key of ``path``, local or a URI. A missing file gets size -1, so it
    becomes an error row (its decode fails) rather than stopping the run."""
    if is_uri(path):
        import pyarrow.fs as pafs

        try:
            fs, inner = _filesystem(path)
            info = fs.get_file_info(inner)
        except OSError:
            return VideoFile(path, -1, 0)
        if info.type != pafs.FileType.File:
            return VideoFile(path, -1, 0)
        return VideoFile(path, int(info.size), int(info.mtime_ns or 0))
    try:
        st = os.stat(path)
    except OSError:
        return VideoFile(path, -1, 0)
    return VideoFile(path, st.st_size, st.st_mtime_ns)


def read_manifest(manifest: str) -> list[str]:
    """The ``path`` column of a Parquet or CSV manifest, in order, each path once. Relative
    local paths are taken from the manifest's folder."""
    import pyarrow as pa

    suffix = Path(manifest).suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputError(f"manifest {display(manifest)}: use a .parquet or .csv file with a 'path' column")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = pq.read_schema(manifest).names
            table = pq.read_table(manifest, columns=["path"]) if "path" in columns else None
        else:
            import pyarrow.csv as pacsv

            options = pacsv.ConvertOptions(column_types={"path": pa.string()})
            table = pacsv.read_csv(manifest, convert_options=options)
            columns = table.column_names
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read manifest {display(manifest)}: {exc}") from None
    if table is None or "path" not in columns:
        raise InputError(
            f"manifest {display(manifest)} has no 'path' column (its columns: {', '.join(columns)})"
        )
    try:
        listed = table.column("path").cast(pa.string()).to_pylist()
    except pa.ArrowException as exc:
        raise InputError(f"manifest {display(manifest)}: its 'path' column is not text ({exc})") from None
    folder = os.path.dirname(os.path.abspath(manifest))
    paths = (p for p in listed if p)
    return list(dict.fromkeys(p if is_uri(p) or os.path.isabs(p) else os.path.join(folder, p) for p in paths))


def manifest_files(manifest: str) -> Iterator[VideoFile]:
    for path in read_manifest(manifest):
        yield stat(path)
