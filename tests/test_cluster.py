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
