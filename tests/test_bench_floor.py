"""The benchmarks' floor (issue 27) counts the reads a zero-skipping simulation does: hand-
built inputs with a known number of non-zero input slices per row group."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from chipforge.accelerators import AdcRange, PlacementScheme, ReramAcceleratorConfig
from chipforge.config import CrossbarConfig
from chipforge.mappings.placement import place_layer
from chipforge.sim.graph import Node, Op
from chipforge.sim.reram import _input_planes_spec

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_crossbar_layer",
                                               ROOT / "benchmarks" / "bench_crossbar_layer.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _layer():
    """16 inputs on two 8-row crossbars (rows 0-7 and 8-15), 3 outputs, 4-bit signed
    inputs through a 1-bit DAC: a sign cycle (bit 3) and three magnitude cycles."""
    accel = ReramAcceleratorConfig(rows=8, cols=128, cell_bits=2, weight_bits=8, input_bits=4,
                                   dac_bits=1, adc_bits=6, scheme=PlacementScheme.OFFSET,
                                   adc_range=AdcRange.CLIP)
    w = np.arange(48).reshape(16, 3) % 7 - 3
    node = Node(Op.LINEAR, "l", ("input",), dict(weight_bits=8, weight_scale=1.0, act_bits=4,
                                                   act_scale=1.0, act_signed=True),
                {"weight": w.T * 1.0})
    layer = place_layer(node, accel)
    assert np.array_equal(layer.row_index, np.arange(16).reshape(2, 8))   # the hand count's
    return layer


def _inputs() -> np.ndarray:
    x = np.zeros((5, 16), dtype=np.int64)     # row 0: all zero, no read at all
    x[1, 0] = 1                               # group 0, bit 0: 1 read
    x[2, 3], x[2, 5], x[2, 12] = 2, 4, 1      # group 0 bits 1 and 2, group 1 bit 0: 3 reads
    x[3, 9], x[3, 2] = -1, -8                 # group 1 0b1111: 4; group 0 0b1000 (sign): 1
    x[4, 15], x[4, 8] = 7, 1                  # group 1 bits 0, 1, 2 (bit 0 twice): 3 reads
    return x


def test_reads_done_are_the_non_zero_input_slices_per_row_group():
    layer = _layer()
    x = _inputs()
    assert bench.count_reads_done(x, layer, input_bits=4, signed=True) == 12
    assert bench.count_reads_done(x, layer, input_bits=4, signed=True, chunk_bytes=8) == 12
    groups = bench.reads_done_per_group(x, layer, input_bits=4, signed=True)
    assert [len(a) for a in groups] == [4, 8]
    # Every kept read has a non-zero DAC input, and the ones they carry are the inputs' bits:
    # group 0: 1 + (1 + 1) + 1; group 1: 1 + 4 + (3 + 1).
    assert all(a.any(axis=1).all() for a in groups)
    assert [int(a.sum()) for a in groups] == [4, 9]
    # Nominal: every (row, group, cycle) read, skipped or not.
    assert layer.stats.adc_reads_per_vector == 4 * 2 * (12 + 1)


@pytest.mark.parametrize(("bits", "dac", "signed"), [(8, 1, True), (8, 1, False), (5, 2, False),
                                                     (8, 3, True), (16, 4, True)])
def test_input_slices_are_the_simulators_cycles(bits, dac, signed):
    cfg = CrossbarConfig(rows=1, cols=1, cell_bits=2, weight_bits=1, input_bits=bits,
                         dac_bits=dac, adc_bits=8, signed_inputs=signed)
    shifts, masks = _input_planes_spec(cfg)
    assert bench.input_slices(bits, dac, signed) == list(zip(shifts.tolist(), masks.tolist(),
                                                             strict=True))
    assert bench.input_slices(5, 2, False) == [(4, 1), (2, 3), (0, 3)]


def test_the_floor_has_a_variance_gemm_only_for_proportional_noise():
    layer = _layer()
    groups = bench.reads_done_per_group(_inputs(), layer, input_bits=4, signed=True)
    cells = layer.levels.astype(np.float32)
    independent = bench.floor_of_reads(groups, cells, None, 12 * 12, repeats=1)
    proportional = bench.floor_of_reads(groups, cells, cells * 0.01, 12 * 12, repeats=1)
    assert independent["var_gemm"] == 0.0 and proportional["var_gemm"] > 0.0
    for floor in (independent, proportional):
        assert floor["floor"] == pytest.approx(floor["gemm"] + floor["var_gemm"]
                                               + floor["draws"])
