"""connect(): local clusters bound to localhost, clear errors."""

import pytest

import pipeline as pl


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="device must be"):
        pl.connect(device="tpu")


def test_gpu_without_the_extra_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dask_cuda(name, *args, **kwargs):
        if name == "dask_cuda":
            raise ImportError("No module named 'dask_cuda'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask_cuda)
    with pytest.raises(ImportError, match=r"pip install 'dask-pipeline\[gpu\]'"):
        pl.connect(device="gpu")


def test_library_functions_need_a_client_or_say_so(monkeypatch):
    from pipeline.cluster import current_client

    def none():
        raise ValueError("No clients found")

    monkeypatch.setattr("pipeline.cluster.get_client", none)
    with pytest.raises(RuntimeError, match=r"pipeline\.connect\(\)"):
        current_client()


def test_worker_lookups_do_not_read_the_clients_cached_identity(client, monkeypatch):
    """Client.scheduler_info() returns a cache that the client's periodic refresh replaces with
    an identity without per-worker information; read at that moment, a 2-worker cluster looked
    empty (a fit's colocation crashed on it, replicas="auto" would have taken 1, the watchdog
    would have seen every worker lost). Every lookup asks the scheduler instead."""
    from pipeline.cluster import workers_info
    from pipeline.mlp_config import replicas_for
    from pipeline.placement import worker_groups

    expected = sorted(client.scheduler_info()["workers"])
    assert len(expected) == 2
    # the refreshed cache, as the periodic callback leaves it
    monkeypatch.setattr(type(client), "scheduler_info",
                        lambda self, *a, **k: {"workers": {}, "type": "Scheduler"})
    assert sorted(workers_info(client)) == expected
    assert sorted(w for g in worker_groups(client) for w in g) == expected
    assert replicas_for("auto", client) == 2
