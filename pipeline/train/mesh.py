"""A socket mesh between the workers of one exact-gradient epoch (:mod:`pipeline.train.mesh_epoch`).

A pipelined round (:mod:`pipeline.train.ahead`) crosses Dask once per hop: a worker reports its
task to the scheduler (batched every 2 ms), the scheduler dispatches the next round's tasks
(batched every 5 ms), the next task fetches the other workers' partials through their event
loops. On this machine that is 15-20 ms a round whatever the compute. Inside one long task per
worker, the rounds exchange their partials over TCP connections of their own: an all-gather of
a few hundred kB takes well under a millisecond on one host.

Rendezvous, once per epoch: :func:`listen` (a task on each worker but the last rank) binds a
listening socket on the worker's own host and returns its address; the epoch tasks receive every
rank's address and a random token. Rank ``i`` connects to every lower rank and accepts a
connection from every higher one. The handshake carries the token, so a stray or stale
connection is closed before anything is read from it, and nothing is unpickled from a peer that
did not prove it belongs to this epoch. Only ``tcp://`` workers take part: on a ``tls://``
cluster these connections would be unencrypted, so the epoch goes through Dask instead.

The connecting rank waits for the same token and the listener's rank back before it reads
anything else, so a connection that reached something other than its peer (a proxy, a port
reused since) fails at once instead of feeding it bytes.

A peer that dies closes its connections (its process is gone), so the others see end-of-file at
once and raise :class:`MeshBroken`; a peer that hangs is waited for at most ``timeout`` seconds.
Either way the caller redoes the epoch through Dask, which recovers lost blocks from lineage.
"""

from __future__ import annotations

import contextlib
import pickle
import selectors
import socket
import struct
import threading
import time
from typing import Any

__all__ = ["Mesh", "MeshBroken", "MeshUnreachable", "abort", "leave_thread_pool", "listen", "mesh_capable"]

_HEADER = struct.Struct("!Q")  # the length of a frame's payload
_HELLO = struct.Struct("!I")  # the connecting peer's rank, after the token
_LISTENERS: dict[str, tuple[socket.socket, float]] = {}
_ACTIVE: dict[str, list[Mesh]] = {}  # the meshes being built or used, by epoch
_LOCK = threading.Lock()
_HELLO_WITHIN = 5.0  # seconds a connection has to say hello
_UNCLAIMED_AFTER = 600.0  # seconds: a listener whose epoch never came (cancelled) is closed


class MeshBroken(ConnectionError):
    """A peer went away, sent something unexpected or did not come in time. ``lost``: the
    workers of the mesh the scheduler no longer knows (filled in on the client)."""

    lost: frozenset[str] = frozenset()


class MeshUnreachable(MeshBroken):
    """A rank's listener could not be claimed, or a lower rank's not reached or not answered
    by that rank, before anything was exchanged (a worker restarted, a listener expired)."""


def leave_thread_pool() -> None:
    """Called by a rank's task first: free its worker's thread slot (``distributed.secede``).
    A rank waits for its peers; holding the slot, two fits' meshes on workers with one
    thread each could each wait for a slot the other holds, until the timeout."""
    try:
        from distributed import get_worker, secede

        get_worker()
    except (ImportError, ValueError):  # not in a worker (called directly)
        return
    secede()


def mesh_capable(address: str) -> bool:
    """Whether a worker at ``address`` can join a mesh (plain TCP, see the module's note)."""
    return address.startswith("tcp://")


def _host_of(address: str) -> str:
    from distributed.comm.addressing import parse_address, parse_host_port

    _, loc = parse_address(address)
    return parse_host_port(loc)[0]


def listen(key: str, host: str | None = None) -> tuple[str, int]:
    """Open this worker's listening socket for the epoch ``key`` on ``host`` (default: the
    worker's own host); its ``(host, port)``."""
    if host is None:
        from distributed import get_worker

        host = _host_of(get_worker().address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.create_server((host, 0), family=family, backlog=64)
    now = time.monotonic()
    with _LOCK:
        for k, (sock, opened) in list(_LISTENERS.items()):
            if now - opened > _UNCLAIMED_AFTER:
                sock.close()
                del _LISTENERS[k]
        _LISTENERS[key] = (server, now)
    return host, server.getsockname()[1]


def abort(key: str) -> None:
    """Break this worker's part of the epoch ``key`` (its listener and connections): a rank
    waiting for a peer that will never come (its worker died before its task started) returns
    with :class:`MeshBroken` instead of holding the worker's thread until the timeout."""
    with _LOCK:
        entry = _LISTENERS.pop(key, None)
        meshes = list(_ACTIVE.get(key, ()))
    socks = ([entry[0]] if entry else []) + [s for m in meshes for s in
                                             [*m.peers.values(), *m.waiting]]
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept or select


def _claim(key: str) -> socket.socket:
    with _LOCK:
        entry = _LISTENERS.pop(key, None)
    if entry is None:
        raise MeshUnreachable(f"no listening socket for {key} on this worker (restarted?)")
    return entry[0]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise MeshBroken("a peer closed its connection during the handshake")
        got += k
    return bytes(buf)


class Mesh:
    """Connections from rank ``rank`` to every other rank of one epoch (a context manager).
    ``listener``: the key this rank's listening socket was opened under (default ``key``)."""

    def __init__(self, key: str, rank: int, addresses: list[tuple[str, int] | None], token: bytes,
                 timeout: float, connect_timeout: float = 10.0, listener: str | None = None):
        self.rank, self.size, self.timeout, self.key = rank, len(addresses), timeout, key
        # a peer's listener is open before any rank starts: a connection that takes longer
        # than this is a network that drops it (a firewall), not a slow peer
        self.connect_timeout = min(timeout, connect_timeout)
        self.peers: dict[int, socket.socket] = {}
        self.waiting: list[socket.socket] = []  # the listener while peers connect
        with _LOCK:
            _ACTIVE.setdefault(key, []).append(self)
        try:
            self._connect(listener or key, addresses, token)
        except MeshBroken:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise MeshBroken(f"rank {rank} could not join the mesh: {exc!r}") from exc

    def _connect(self, listener: str, addresses: list[tuple[str, int] | None],
                 token: bytes) -> None:
        deadline = time.monotonic() + self.timeout
        for j in range(self.rank):  # every lower rank listens (its listener is already open)
            try:
                sock = socket.create_connection(addresses[j], timeout=self.connect_timeout)
            except OSError as exc:
                raise MeshUnreachable(f"rank {self.rank} could not reach rank {j} at "
                                      f"{addresses[j]}: {exc!r}") from exc
            try:
                sock.sendall(token + _HELLO.pack(self.rank))
                # the peer answers with the token and its rank: whatever else took the
                # connection (a proxy, a stale port) is not read from
                answer = _recv_exact(sock, len(token) + _HELLO.size)
            except (OSError, MeshBroken) as exc:
                sock.close()
                raise MeshUnreachable(f"rank {self.rank}: rank {j} at {addresses[j]} did not "
                                      f"answer: {exc!r}") from exc
            if answer != token + _HELLO.pack(j):
                sock.close()
                raise MeshUnreachable(f"rank {self.rank}: {addresses[j]} is not rank {j} of "
                                      "this epoch (it answered something else)")
            self._keep(j, sock)
        if self.rank == self.size - 1:
            return
        server = _claim(listener)
        self.waiting = [server]
        try:
            while len(self.peers) < self.size - 1:
                server.settimeout(max(0.0, deadline - time.monotonic()))
                try:
                    sock, _ = server.accept()
                except TimeoutError as exc:
                    raise MeshBroken(f"rank {self.rank}: {self.size - 1 - len(self.peers)} "
                                     f"peer(s) did not connect within {self.timeout:g} s") from exc
                except OSError as exc:  # shut down by abort()
                    raise MeshBroken(f"rank {self.rank}: the epoch was aborted while "
                                     f"{self.size - 1 - len(self.peers)} peer(s) had not "
                                     "connected") from exc
                # a peer says hello as soon as it connects: a silent stranger waits briefly
                sock.settimeout(max(0.01, min(_HELLO_WITHIN, deadline - time.monotonic())))
                try:
                    hello = _recv_exact(sock, len(token) + _HELLO.size)
                except (OSError, MeshBroken):
                    sock.close()
                    continue
                (peer,) = _HELLO.unpack(hello[len(token):])
                if hello[:len(token)] != token or not self.rank < peer < self.size \
                        or peer in self.peers:
                    sock.close()  # not of this epoch: dropped unread
                    continue
                try:
                    sock.sendall(token + _HELLO.pack(self.rank))
                except OSError:
                    sock.close()
                    continue
                self._keep(peer, sock)
        finally:
            self.waiting = []
            server.close()

    def _keep(self, peer: int, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.peers[peer] = sock

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (this rank's is ``value`` itself, not a copy)."""
        if not self.peers:
            return [value]
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        frame = memoryview(_HEADER.pack(len(payload)) + payload)
        outgoing = {j: frame for j in self.peers}
        headers = {j: bytearray(_HEADER.size) for j in self.peers}
        bodies: dict[int, bytearray] = {}
        filled = dict.fromkeys(self.peers, 0)
        done: dict[int, Any] = {}
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            for j, sock in self.peers.items():
                sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, j)
            while outgoing or len(done) < len(self.peers):
                ready = sel.select(timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise MeshBroken(f"rank {self.rank}: no word from rank(s) "
                                     f"{sorted(set(self.peers) - set(done))} in "
                                     f"{self.timeout:g} s")
                for selected, mask in ready:
                    j, sock = selected.data, selected.fileobj
                    try:
                        if mask & selectors.EVENT_WRITE and j in outgoing:
                            sent = sock.send(outgoing[j])
                            outgoing[j] = outgoing[j][sent:]
                            if not outgoing[j]:
                                del outgoing[j]
                        if mask & selectors.EVENT_READ and j not in done:
                            self._receive(j, sock, headers, bodies, filled, done)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except MeshBroken:
                        raise
                    except OSError as exc:
                        raise MeshBroken(f"rank {self.rank}: the connection to rank {j} "
                                         f"failed: {exc!r}") from exc
                    events = (selectors.EVENT_WRITE if j in outgoing else 0) | (
                        selectors.EVENT_READ if j not in done else 0)
                    if events == 0:
                        sel.unregister(sock)
                    elif events != selected.events:
                        sel.modify(sock, events, j)
        return [value if j == self.rank else done[j] for j in range(self.size)]

    def _receive(self, j: int, sock: socket.socket, headers: dict[int, bytearray],
                 bodies: dict[int, bytearray], filled: dict[int, int], done: dict[int, Any]
                 ) -> None:
        if j not in bodies:  # still reading the length
            got = sock.recv_into(memoryview(headers[j])[filled[j]:])
            if got == 0:
                raise MeshBroken(f"rank {self.rank}: rank {j} closed its connection")
            filled[j] += got
            if filled[j] < _HEADER.size:
                return
            (length,) = _HEADER.unpack(headers[j])
            bodies[j], filled[j] = bytearray(length), 0
            if length:
                return
        body = bodies[j]
        if filled[j] < len(body):
            got = sock.recv_into(memoryview(body)[filled[j]:])
            if got == 0:
                raise MeshBroken(f"rank {self.rank}: rank {j} closed its connection")
            filled[j] += got
        if filled[j] == len(body):
            done[j] = pickle.loads(body)

    def close(self) -> None:
        for sock in self.peers.values():
            sock.close()
        self.peers = {}
        with _LOCK:
            mine = _ACTIVE.get(self.key, [])
            if self in mine:
                mine.remove(self)
            if not mine:
                _ACTIVE.pop(self.key, None)

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
