"""The row groups' GEMMs of the crossbar simulation spread over threads, one BLAS thread
each (issue 27): the same integers as one stacked GEMM, BLAS's own thread count restored
afterwards, and no pool inside a worker limited to one thread (a campaign worker)."""

import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from chipforge.accelerators import ISAAC
from chipforge.sim import reram
from chipforge.sim.devices import ReadNoiseModel
from chipforge.sim.reram import crossbar_layer_matmul, program_layer

sys.path.insert(0, str(Path(__file__).parent))
from test_reram_backends import _layer  # noqa: E402


def _blas_threads():
    return [lib.num_threads for lib in ThreadpoolController().select(user_api="blas")
            .lib_controllers]


@pytest.mark.parametrize("dac_bits", [1, 2], ids=["1-bit-dac", "2-bit-dac-variance-gemm"])
def test_pooled_group_gemms_give_the_stacked_gemms_integers(monkeypatch, dac_bits):
    accel = ISAAC.replace(dac_bits=dac_bits).with_device(
        programming_sigma=0.1, p_stuck_on=0.01, read_noise=0.02,
        read_noise_model=ReadNoiseModel.PROPORTIONAL)
    _, layer = _layer(accel, 600, 24)                 # 600 rows: 5 row groups of 128
    assert layer.levels.shape[0] >= 3 and layer.levels.shape[1] > reram._FUSED_MAX_ROWS
    programmed = program_layer(layer, accel.device, seed=2)
    x = np.random.default_rng(4).integers(-128, 128, (40, 600))
    kw = dict(input_bits=8, signed_inputs=True, noise_key=11)
    monkeypatch.setattr(reram, "_gemm_workers", lambda n_groups: 1)
    stacked = crossbar_layer_matmul(x, programmed, **kw)
    before = _blas_threads()
    calls = []
    monkeypatch.setattr(reram, "_gemm_workers", lambda n_groups: calls.append(n_groups) or 3)
    pooled = crossbar_layer_matmul(x, programmed, **kw)
    assert calls                                       # the pooled path ran
    assert np.array_equal(stacked, pooled)
    assert _blas_threads() == before                   # the one-thread limit was undone
    monkeypatch.undo()
    assert np.array_equal(stacked, crossbar_layer_matmul(x, programmed, **kw))


def test_a_worker_limited_to_one_thread_runs_no_pool():
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)                       # what campaign.py sets per worker
        assert reram._gemm_workers(64) == 1
    finally:
        numba.set_num_threads(saved)


def test_the_pool_never_exceeds_the_callers_threads_or_the_groups():
    workers = numba.get_num_threads()
    assert reram._gemm_workers(1) == 1
    assert 1 <= reram._gemm_workers(10_000) <= workers
    if workers >= 2:                               # fewer groups than threads: BLAS's own
        assert reram._gemm_workers(workers - 1) == 1
