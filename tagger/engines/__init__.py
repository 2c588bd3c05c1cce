"""Engines: the seam between "paths in" and "results out".

An engine decodes each path's clips, runs them through a model in batches and yields one
``VideoResult`` per path (clip scores included), in completion order; the runs (scan, daemon)
only see this protocol. ``local`` is decode processes on this machine feeding one model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from tagger.records import Quiet, VideoResult

if TYPE_CHECKING:
    from tagger.labels import Labelling


class Engine(Protocol):
    @property
    def model(self) -> str:
        """The model's name and fingerprint, as written in the ``model`` column."""
        ...

    @property
    def labelling(self) -> Labelling:
        """How results' tags are made from their scores: applied again to stored results."""
        ...

    def tag(self, paths: Iterable[str | Quiet], stop: threading.Event | None = None) -> Iterator[VideoResult]:
        """One result per path, errors as ``status="error"`` results.

        ``paths`` may be endless and may yield ``Quiet`` when it has nothing new: clips waiting
        for a full batch then run. Once ``stop`` is set no new forward pass starts, and paths not
        finished by then yield nothing.
        """
        ...

    def close(self) -> None: ...
