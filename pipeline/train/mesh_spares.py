"""Listeners opened ahead: a mesh segment's ranks start without the listener tasks' hop.

A segment's ranks connect to the listening sockets of the ranks below them, so those must be
open, and their addresses known, before the ranks start. :func:`~.mesh_epoch.run_segment`
gets them from a ``mesh_listen`` task per worker, on which the rank tasks depend: a hop through
the scheduler (~10 ms here) before every segment, as long as a small fit's whole rendezvous.
So every rank, as its task ends, opens one more listener on its worker for a later segment
(:func:`open_spare`) and returns its address; the client keeps one per worker (:class:`Spares`,
per scheduler, in this process) and the next segment on that worker claims it instead of
asking for a new one.

A spare is taken by one segment only (popped under a lock: two fits of one client at once
never share one). A spare too old to be trusted (its worker closes a listener nobody claimed
after ``mesh._UNCLAIMED_AFTER``) is not used. A worker restarted at the same address no longer
has it: the segment fails to connect, and :func:`~.mesh_epoch.run_segment` drops that
client's spares and runs the segment again with listener tasks.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import NamedTuple

from . import mesh
from .mesh import _UNCLAIMED_AFTER

__all__ = ["SPARES", "Spare", "Spares", "open_spare", "spare_key"]

_TRUSTED_FOR = _UNCLAIMED_AFTER / 2  # seconds a spare is used after it was opened


class Spare(NamedTuple):
    """A listener open on a worker for a later segment: its key there and its address."""

    key: str
    address: tuple[str, int]


def open_spare(key: str | None) -> Spare | None:
    """On a worker: open a listener under ``key`` for a later segment (``None``: none)."""
    return None if key is None else Spare(key, tuple(mesh.listen(key)))


def spare_key() -> str:
    """A fresh key for a listener opened ahead."""
    return f"mesh-spare-{uuid.uuid4().hex}"


class Spares:
    """The spares of this process's clients, by (scheduler address, worker address)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], tuple[Spare, float]] = {}

    def take(self, scheduler: str, workers: list[str]) -> list[Spare | None]:
        """Each worker's spare, popped (``None`` where there is none fresh enough)."""
        now = time.monotonic()
        out: list[Spare | None] = []
        with self._lock:
            for w in workers:
                entry = self._held.pop((scheduler, w), None)
                out.append(entry[0] if entry and now - entry[1] < _TRUSTED_FOR else None)
        return out

    def holds(self, scheduler: str, worker: str) -> bool:
        """Whether a spare on ``worker`` is kept (fresh or not)."""
        with self._lock:
            return (scheduler, worker) in self._held

    def keep(self, scheduler: str, worker: str, spare: Spare | None) -> None:
        """Remember ``spare``, opened on ``worker`` by a rank that just ended."""
        if spare is None:
            return
        with self._lock:
            self._held[(scheduler, worker)] = (spare, time.monotonic())

    def drop(self, scheduler: str) -> None:
        """Forget the spares on ``scheduler``'s workers (one of them failed to connect)."""
        with self._lock:
            for k in [k for k in self._held if k[0] == scheduler]:
                del self._held[k]


SPARES = Spares()
