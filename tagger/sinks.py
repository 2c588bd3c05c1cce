"""Writers for vidtag's outputs: CSV, JSONL and Parquet tables and per-video JSON sidecars.

Every file write goes through :func:`atomic_open`, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tagger.records import FIELDS, OutputError, VideoResult

TABLE_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
SIDECAR_SUFFIX = ".vidtag.json"

_SUFFIXES = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_GENERATOR = "vidtag"
# A sidecar is a few hundred bytes; anything far larger at that path is not one of ours,
# and reading it whole just to refuse it would be wasteful.
_SIDECAR_MAX_BYTES = 4 * 1024 * 1024

_STRING_COLUMNS = ("path", "label", "labels", "scores", "model", "status", "error")
_PARQUET_DTYPES: dict[str, str] = {
    **dict.fromkeys(_STRING_COLUMNS, "string"),
    "score": "float64",
    "duration_s": "float64",
    "clips": "int64",
}


def table_format(path: str) -> str:
    """The table format for an output path: ``-`` is CSV on stdout, else from the suffix."""
    if path == "-":
        return "csv"
    fmt = _SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise OutputError(
            f"cannot tell the output format of {path!r}: use a .csv, .jsonl (or .ndjson) "
            "or .parquet suffix, or '-' for CSV on stdout"
        )
    return fmt


def _current_umask() -> int:
    # /proc avoids the os.umask() set-and-restore dance, which races with other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o644 & ~_current_umask()


def _cannot_write(target: Path, error: OSError) -> OutputError:
    return OutputError(f"cannot write {str(target)!r}: {error.strerror or error}")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform or filesystem allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it replaces ``path``, on error it vanishes.

    ``mode`` must be a write mode ("w" or "wb"); text mode defaults to UTF-8. An existing
    target keeps its permissions, a new one gets 0o644 minus the umask.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open needs a write mode, not {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    target = Path(path)
    folder = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _cannot_write(target, e) from e
    tmp = Path(tmp_name)
    try:
        # mkstemp makes 0o600 files; the output should be as readable as a normal write.
        os.fchmod(fd, _target_mode(target))
        f = os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with f:
            yield f
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise _cannot_write(target, e) from e
        try:
            os.replace(tmp, target)
        except OSError as e:
            raise _cannot_write(target, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in FIELDS}


def _write_csv(f: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    writer = csv.writer(f)
    writer.writerow(FIELDS)
    n = 0
    for row in rows:
        # csv writes None as an empty cell.
        writer.writerow([row[name] for name in FIELDS])
        n += 1
    return n


def _write_jsonl(f: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    for row in rows:
        f.write(json.dumps(_ordered(row), ensure_ascii=False))
        f.write("\n")
        n += 1
    return n


def _write_parquet(path: str, rows: Iterable[dict[str, Any]]) -> int:
    import pandas as pd

    # Parquet is written in one piece, so the rows are collected here (and only here).
    frame = pd.DataFrame([_ordered(row) for row in rows], columns=list(FIELDS))
    # Explicit dtypes: without them an all-error table (score all None) has object columns
    # that pyarrow cannot type.
    frame = frame.astype(_PARQUET_DTYPES)
    with atomic_open(path, "wb") as f:
        frame.to_parquet(f, engine="pyarrow", index=False)
    return len(frame)


def write_table(path: str, rows: Iterable[dict[str, Any]], stdout: IO[str] | None = None) -> int:
    """Write rows in ``FIELDS`` order to ``path`` (``-``: CSV on stdout); return the count."""
    fmt = table_format(path)
    if path == "-":
        out = sys.stdout if stdout is None else stdout
        n = _write_csv(out, rows)
        out.flush()
        return n
    if fmt == "parquet":
        return _write_parquet(path, rows)
    if fmt == "csv":
        with atomic_open(path, "w", newline="") as f:
            return _write_csv(f, rows)
    with atomic_open(path, "w") as f:
        return _write_jsonl(f, rows)


def sidecar_path(video_path: str) -> str:
    """Where the sidecar of ``video_path`` goes: ``<video>.<ext>.vidtag.json``."""
    return video_path + SIDECAR_SUFFIX


def _foreign_reason(path: str) -> str | None:
    """Why the file at ``path`` is not a vidtag sidecar, or None if it is one (or is absent)."""
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(_SIDECAR_MAX_BYTES + 1)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if len(data) > _SIDECAR_MAX_BYTES:
        return "it is too large to be a vidtag sidecar"
    try:
        doc = json.loads(data)
    except ValueError:
        return "it is not JSON"
    if not isinstance(doc, dict) or doc.get("generator") != _GENERATOR:
        return f'it has no "generator": "{_GENERATOR}"'
    return None


def write_sidecar(result: VideoResult, extra: dict[str, Any] | None = None) -> str:
    """Write the JSON sidecar beside ``result.path`` and return its path.

    Refuses (``OutputError``) to replace a file at that path that vidtag did not write.
    """
    path = sidecar_path(result.path)
    reason = _foreign_reason(path)
    if reason is not None:
        raise OutputError(
            f"{path!r} already exists and {reason}; vidtag will not overwrite a file it did not write"
        )
    doc: dict[str, Any] = {"generator": _GENERATOR, **result.row()}
    doc["tags"] = [{"label": t.label, "score": round(t.score, 6)} for t in result.tags]
    for key, value in (extra or {}).items():
        if key in doc:
            raise ValueError(f"sidecar extra key {key!r} clashes with a result field")
        doc[key] = value
    with atomic_open(path, "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return path
