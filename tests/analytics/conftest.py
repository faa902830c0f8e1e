import dask
import pytest


@pytest.fixture(autouse=True)
def _sync_scheduler(request):
    """Pure-correctness tests run on the synchronous scheduler; tests that ask for the
    distributed ``client`` use it."""
    if "client" in request.fixturenames:
        yield
        return
    with dask.config.set(scheduler="sync"):
        yield
