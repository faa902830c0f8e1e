"""A refactor changes no bits: every configuration of ``bit_matrix.configs()`` fits to the
parameters recorded in ``fixtures/bit_identity.json``, on 1 worker and on 2."""

import json

import pytest
from bit_matrix import FIXTURE, configs, fit_checksum

_RECORDED = json.loads(FIXTURE.read_text())


def test_fixture_lists_the_current_matrix():
    assert _RECORDED["configs"] == configs()


@pytest.fixture(scope="module")
def one_worker():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


# Every configuration on 2 workers; every fourth also on 1 (the number of workers never enters
# the numbers: tests/test_train.py and test_distributed_math.py check that directly too).
_CASES = [(i, 2) for i in range(len(_RECORDED["configs"]))] + [
    (i, 1) for i in range(0, len(_RECORDED["configs"]), 4)]


@pytest.mark.parametrize(("index", "workers"), _CASES)
def test_fitted_parameters_are_bit_identical(client, one_worker, workers, index):
    cfg = _RECORDED["configs"][index]
    got = fit_checksum(client if workers == 2 else one_worker, cfg)
    assert got == _RECORDED["sha256"][index], f"bits changed for {cfg}"
