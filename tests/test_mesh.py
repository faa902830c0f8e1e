"""The socket mesh of exact-gradient epochs (``pipeline.train.mesh``, ``mesh_epoch``).

The transport is checked in one process, ranks on threads, against what each rank sent (plain
Python): every rank gets every rank's value in rank order, frames of any size keep their
boundaries over many rounds, strangers are dropped unread, a peer that dies or never comes
breaks the mesh instead of hanging it. On the session cluster, a fit whose epochs ran on the mesh
has the bits of the same fit through Dask's pipelined rounds and of the client-driven rounds
(``rounds_ahead=1``); the bit-identity matrix (``test_bit_identity.py``) and the distributed
math tests check those against their recorded values and against NumPy and scikit-learn.
"""

from __future__ import annotations

import socket
import threading
import uuid

import dask
import numpy as np
import pytest

from pipeline.train.mesh import Mesh, MeshBroken, listen
from pipeline.train.mesh_epoch import mesh_usable
from pipeline.train.mesh_spares import SPARES

TOKEN = b"0123456789abcdef"


def _run_ranks(size, body, timeout=10.0, token=TOKEN):
    """Start ``size`` ranks on threads: ``body(mesh)`` per rank; (results, errors) by rank."""
    key = f"test-{uuid.uuid4().hex}"
    addresses = [listen(key + str(j), host="127.0.0.1") for j in range(size - 1)] + [None]
    results, errors = [None] * size, [None] * size

    def rank(j):
        try:
            # one process holds every rank's listener here: each claims its own key
            with Mesh(key + str(j), j, addresses, token, timeout) as mesh:
                results[j] = body(mesh)
        except BaseException as exc:
            errors[j] = exc

    threads = [threading.Thread(target=rank, args=(j,)) for j in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors, addresses


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_allgather_returns_every_ranks_value_in_rank_order(size):
    rng = np.random.default_rng(size)
    # sizes across rounds: empty, small, and larger than a socket buffer (partial sends)
    lengths = [0, 1, 3, 1 << 20, 7, 5 << 20]
    sent = [[rng.standard_normal(n + j).astype(np.float32) for n in lengths]
            for j in range(size)]

    def body(mesh):
        return [mesh.allgather((mesh.rank, r, sent[mesh.rank][r])) for r in range(len(lengths))]

    results, errors, _ = _run_ranks(size, body)
    assert errors == [None] * size
    for j in range(size):
        for r in range(len(lengths)):
            got = results[j][r]
            assert [g[0] for g in got] == list(range(size))
            assert [g[1] for g in got] == [r] * size
            for i in range(size):
                assert np.array_equal(got[i][2], sent[i][r])


def test_a_stranger_is_dropped_unread_and_the_ranks_still_meet():
    key = f"test-{uuid.uuid4().hex}"
    address = listen(key, host="127.0.0.1")
    stranger = socket.create_connection(address)
    stranger.sendall(b"x" * len(TOKEN) + (1).to_bytes(4, "big"))  # wrong token, valid rank
    out = {}

    def rank1():
        with Mesh(key, 1, [address, None], TOKEN, 10.0) as mesh:
            out[1] = mesh.allgather("one")

    t = threading.Thread(target=rank1)
    t.start()
    with Mesh(key, 0, [address, None], TOKEN, 10.0) as mesh:
        out[0] = mesh.allgather("zero")
    t.join(10)
    assert out == {0: ["zero", "one"], 1: ["zero", "one"]}
    stranger.settimeout(5)
    assert stranger.recv(1) == b""  # closed by rank 0 without an answer
    stranger.close()


def test_a_rank_that_reaches_something_else_than_its_peer_reads_nothing_from_it():
    """A connection taken by something other than the peer (a proxy answering for an
    unreachable address, a port reused since): the connecting rank fails at once, without
    reading the stranger's bytes as a frame."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer_like_a_proxy():
        conn, _ = server.accept()
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n" + b"x" * 64)
        conn.close()

    t = threading.Thread(target=answer_like_a_proxy)
    t.start()
    with pytest.raises(MeshBroken, match="is not rank 0 of this epoch") as info:
        Mesh("unused", 1, [server.getsockname()[:2], None], TOKEN, 5.0)
    _causes(info.value)
    t.join(5)
    server.close()


def test_a_peer_that_leaves_breaks_the_mesh_at_once():
    def body(mesh):
        mesh.allgather(mesh.rank)
        if mesh.rank == 1:
            return "left"  # closes its connections without a second round
        return mesh.allgather(mesh.rank)

    results, errors, _ = _run_ranks(3, body, timeout=30.0)
    assert results[1] == "left"
    assert isinstance(errors[0], MeshBroken) and isinstance(errors[2], MeshBroken)
    # (closed, or reset when the leaver had unread bytes)
    assert str(errors[0]).startswith(("rank 0: rank 1 closed", "rank 0: the connection to rank 1"))
    # rank 2 learns it from rank 1 or from rank 0, which closed its own connections on failing
    assert str(errors[2]).startswith("rank 2: ")


def _causes(exc):
    """The chain of ``__cause__`` as distributed walks it to ship a task's error (a cycle
    there loops forever in the worker)."""
    seen = []
    while exc is not None:
        assert all(exc is not e for e in seen), "the exception is its own cause"
        seen.append(exc)
        exc = exc.__cause__
    return seen


def test_a_peer_that_never_comes_times_out():
    key = f"test-{uuid.uuid4().hex}"
    address = listen(key, host="127.0.0.1")
    with pytest.raises(MeshBroken, match="did not connect within") as info:
        Mesh(key, 0, [address, None], TOKEN, 0.3)
    _causes(info.value)


def test_abort_frees_a_rank_waiting_for_a_peer_that_will_never_come():
    """The client aborts an epoch whose peer's worker died before its task started: the rank
    waiting in accept, and one waiting in an all-gather, return at once (not at the timeout)."""
    import time

    from pipeline.train.mesh import abort

    key = f"test-{uuid.uuid4().hex}"
    address = listen(key, host="127.0.0.1")
    errors = {}

    def waiting():
        try:
            Mesh(key, 0, [address, None, None], TOKEN, 60.0)  # ranks 1 and 2 never come
        except MeshBroken as exc:
            errors["accept"] = exc

    t = threading.Thread(target=waiting)
    began = time.monotonic()
    t.start()
    time.sleep(0.2)
    abort(key)
    t.join(10)
    assert "aborted" in str(errors["accept"])
    assert time.monotonic() - began < 10

    def body(mesh):
        mesh.allgather(mesh.rank)
        if mesh.rank == 1:
            abort(mesh.key)  # its own part: its connections shut down, rank 0 sees the end
            return "aborted"
        return mesh.allgather(mesh.rank)

    results, errs, _ = _run_ranks(2, body, timeout=60.0)
    assert results[1] == "aborted" and isinstance(errs[0], MeshBroken)


def test_without_its_listener_a_rank_refuses_to_start():
    with pytest.raises(MeshBroken, match="no listening socket"):
        Mesh("never-opened", 0, [("127.0.0.1", 1), None], TOKEN, 1.0)


def test_only_plain_tcp_workers_and_the_config_switch_allow_a_mesh():
    assert mesh_usable(["tcp://10.0.0.1:4000", "tcp://10.0.0.2:4000"])
    assert not mesh_usable(["tcp://10.0.0.1:4000", "tls://10.0.0.2:4000"])  # unencrypted
    assert not mesh_usable(["inproc://10.0.0.1/1/2"])
    assert not mesh_usable([])
    with dask.config.set({"pipeline.train.mesh": False}):
        assert not mesh_usable(["tcp://10.0.0.1:4000"])


def _fit(client, X, y, **kw):
    import dask.array as da

    import pipeline as pl

    Xd = X if hasattr(X, "dask") else da.from_array(X, chunks=len(X) // 6).persist()
    yd = y if hasattr(y, "dask") else da.from_array(y, chunks=len(y) // 6).persist()
    est = pl.MLPClassifier(hidden_layer_sizes=(16, 8), sync="gradient", batch_size=96,
                           max_iter=3, random_state=5, min_block_rows=1, **kw)
    return est.fit(Xd, yd, client=client)  # (3 epochs: a ConvergenceWarning, ignored below)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_mesh_epoch_has_the_bits_of_pipelined_and_client_driven_rounds(client):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1200, 5)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + 0.2 * rng.standard_normal(1200) > 0).astype(int)

    def ran_mesh(dask_scheduler):
        return sum(1 for k in dask_scheduler.task_prefixes if k == "mesh_epoch")

    fits = {}
    for name, mesh, ahead, segment in (("mesh", True, 4, "2s"), ("pipelined", False, 4, "2s"),
                                       ("client", True, 1, "2s"), ("segments", True, 4, "0s")):
        with dask.config.set({"pipeline.train.mesh": mesh,
                              "pipeline.train.mesh-segment": segment}):
            fits[name] = _fit(client, X, y, rounds_ahead=ahead)
        if name == "mesh":  # the epochs really ran on the mesh, and none was redone
            assert client.run_on_scheduler(ran_mesh) == 1
            assert fits[name].train_summary_["retries"] == 0
    # segment "0s": every round ends a segment (a new mesh per round, the state through the
    # client in between)
    assert fits["segments"].train_summary_["retries"] == 0
    ref = fits["client"]
    for name in ("mesh", "pipelined", "segments"):
        for a, b in zip(fits[name].coefs_ + fits[name].intercepts_,
                        ref.coefs_ + ref.intercepts_, strict=True):
            assert np.array_equal(a, b), name
        assert fits[name].loss_curve_ == ref.loss_curve_, name


def test_a_local_sgd_mesh_epoch_has_the_bits_of_rounds_through_dask(client):
    """Local SGD over 2 replicas with the outer Nesterov step, 3 rounds an epoch: the replicas'
    states stay on their workers between rounds, and the parameters, the loss curve and the
    next epoch's start (the states) are those of rounds through Dask."""
    import dask.array as da

    import pipeline as pl

    rng = np.random.default_rng(4)
    X = rng.standard_normal((1800, 5)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + 0.2 * rng.standard_normal(1800) > 0).astype(int)
    Xd = da.from_array(X, chunks=300).persist()
    yd = da.from_array(y, chunks=300).persist()

    def ran(dask_scheduler):
        return sum(1 for k in dask_scheduler.task_prefixes if k == "mesh_local_epoch")

    fits = {}
    for name, mesh, segment in (("mesh", True, "2s"), ("dask", False, "2s"),
                                ("segments", True, "0s")):
        est = pl.MLPClassifier(hidden_layer_sizes=(16,), batch_size=50, local_steps=6,
                               replicas=2, outer_momentum=0.5, max_iter=3, random_state=2,
                               min_block_rows=1)
        with dask.config.set({"pipeline.train.mesh": mesh,
                              "pipeline.train.mesh-segment": segment}), pytest.warns(Warning):
            fits[name] = est.fit(Xd, yd, client=client)
        if name == "mesh":
            assert client.run_on_scheduler(ran) == 1
        assert fits[name].train_summary_["retries"] == 0
        assert fits[name].train_summary_["rounds"] == 9
    for name in ("mesh", "segments"):
        for a, b in zip(fits[name].coefs_ + fits[name].intercepts_,
                        fits["dask"].coefs_ + fits["dask"].intercepts_, strict=True):
            assert np.array_equal(a, b), name
        assert fits[name].loss_curve_ == fits["dask"].loss_curve_, name


def _forgotten(client, part, timeout=20.0):
    """Wait until the scheduler holds no key containing ``part``: a graph sent while it is
    still forgetting the same keys from an earlier fit can find them lost."""
    import gc
    import time

    def held(dask_scheduler, part=part):
        return sum(1 for k in dask_scheduler.tasks if part in str(k))

    deadline = time.monotonic() + timeout
    gc.collect()
    while client.run_on_scheduler(held) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_two_fits_at_once_on_one_thread_per_worker_do_not_wait_for_each_other(client):
    """Two users' fits on the same 2-worker cluster (one thread each), at the same time: a rank
    that waits for its peer must not hold the only thread its peer's worker has, or the two
    meshes wait for each other until the timeout. Both finish on their meshes, none redone,
    with the bits each has alone."""
    import concurrent.futures

    import dask.array as da

    rng = np.random.default_rng(8)
    data = []
    for _ in range(2):  # persisted once and held: both runs fit the same collections
        X = rng.standard_normal((1200, 5)).astype(np.float32)
        y = (X[:, 0] - X[:, 2] > 0).astype(int)
        data.append((da.from_array(X, chunks=200).persist(),
                     da.from_array(y, chunks=200).persist()))
    alone = [_fit(client, X, y) for X, y in data]
    _forgotten(client, "training-block")  # the refits build the same keys again
    with dask.config.set({"pipeline.train.mesh-timeout": "20s",
                          "pipeline.train.mesh-segment": "0s"}), \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda d: _fit(client, *d), data))
    for a, b in zip(alone, together, strict=True):
        assert b.train_summary_["retries"] == 0
        for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
            assert np.array_equal(u, v)


def _unreachable_listeners(dask_worker=None, on=True):
    """On a worker: listeners that answer with an address no connection reaches (as behind a
    firewall that drops the mesh's ports), or the real ones again."""
    import pipeline.train.mesh as mesh

    if on:
        mesh._real_listen = getattr(mesh, "_real_listen", mesh.listen)

        def listen(key, host=None):
            mesh._real_listen(key, host)  # opened (the rank waiting in accept is aborted)
            return ("10.255.255.1", 9)

        mesh.listen = listen
    elif hasattr(mesh, "_real_listen"):
        mesh.listen = mesh._real_listen


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_mesh_the_network_will_not_connect_is_left_for_the_rest_of_the_fit(client):
    """When a rank cannot reach its peer (no worker lost), the segment's rounds are redone
    through Dask and the fit does not try the mesh again: one retry, the bits of a fit without
    the mesh."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((1200, 5)).astype(np.float32)
    y = (X[:, 1] > 0.2).astype(int)
    with dask.config.set({"pipeline.train.mesh": False}):
        plain = _fit(client, X, y)
    client.run(_unreachable_listeners, on=True)
    SPARES.drop(client.scheduler.address)  # the earlier tests' listeners were reachable
    try:
        with dask.config.set({"pipeline.train.mesh-connect-timeout": "1s",
                              "pipeline.train.mesh-segment": "0s"}):
            walled = _fit(client, X, y)
    finally:
        client.run(_unreachable_listeners, on=False)
    assert walled.train_summary_["retries"] == 1  # the first segment only
    for u, v in zip(plain.coefs_ + plain.intercepts_, walled.coefs_ + walled.intercepts_,
                    strict=True):
        assert np.array_equal(u, v)
