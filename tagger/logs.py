"""Where vidtag's log goes: warnings for one-off commands, timestamped lines for the daemon.

A daemon whose log cannot be written (its disk full) is stopped, and says why on the way out,
instead of printing logging's traceback and running on unheard.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import suppress
from logging.handlers import WatchedFileHandler

from tagger.fsutil import cannot_write
from tagger.records import InputError, TaggerError

DAEMON_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup(verbose: int, daemon: bool = False) -> None:
    """Log to stderr: warnings for one-off commands; for the daemon, info lines with timestamps."""
    level = (logging.INFO if daemon else logging.WARNING) - 10 * verbose
    handler: logging.Handler
    if daemon and sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, log_time_format="%Y-%m-%d %H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(DAEMON_FORMAT if daemon else "%(levelname)s %(name)s: %(message)s")
        )
    install(handler, level)


def install(handler: logging.Handler, level: int) -> None:
    """Make ``handler`` the only one; an old one that cannot flush (its disk full) goes quietly."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        with suppress(OSError, ValueError):
            old.close()
    root.addHandler(handler)
    root.setLevel(level)


def to_file(path: str, level: int) -> None:
    """Send the log to ``path``, reopened when logrotate moves it; a usage error if it cannot be."""
    try:
        handler = WatchedFileHandler(path, encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        raise InputError(str(cannot_write(path, e))) from None
    handler.setFormatter(logging.Formatter(DAEMON_FORMAT))
    install(handler, level)


def stop_on_fault(stop: threading.Event, name: str) -> list[TaggerError]:
    """Set ``stop`` at the first write the log's handlers cannot make; returns the list the
    fault lands in (``name`` is how the message calls the log)."""
    faults: list[TaggerError] = []

    def guard(handler: logging.Handler) -> None:
        original = handler.handleError

        def handle_error(record: logging.LogRecord) -> None:
            exc = sys.exc_info()[1]
            if not isinstance(exc, OSError):
                original(record)
            elif not faults:
                faults.append(cannot_write(name, exc))
                stop.set()

        handler.handleError = handle_error  # type: ignore[method-assign]

    for each in logging.getLogger().handlers:
        guard(each)
    return faults
