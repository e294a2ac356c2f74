"""The ADC configuration trap (issue 27): every combination of DAC bits, cell bits, ADC bits
and ADC range mode gives the error the ADC's rounding predicts against exact W.X (at most
half a step per read times the output's coefficients; rms as uniform rounding), or reports
its saturations; a range whose rounding swamps W.X is flagged in one line with the
predicted error; the two's-complement sign cycle is read with its own step."""

import itertools

import numpy as np
import pytest

from chipforge.accelerators import ISAAC, ISQED_TWO_COLUMN
from chipforge.mappings.placement import place_layer
from chipforge.sim.graph import Node, Op
from chipforge.sim.reram import (
    crossbar_layer_matmul,
    cycle_adc_steps,
    max_column_sum,
    predicted_adc_error,
    program_layer,
)

ROWS, OUTPUTS = 64, 8


def _node(signed, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (OUTPUTS, ROWS))
    return Node(Op.LINEAR, "fc", ("input",), dict(weight_bits=8, weight_scale=1.0,
                                                  act_bits=8, act_scale=1.0,
                                                  act_signed=signed), {"weight": w * 1.0})


def _inputs(signed, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-128 if signed else 0, 128 if signed else 256, (40, ROWS))


def _step(mode, layer, x, programmed, signed):
    full = (1 << layer.adc_bits) - 1
    if mode == "max":
        return 1.0
    if mode == "fraction:1":
        worst = ROWS * ((1 << layer.dac_bits) - 1) * ((1 << layer.cell_bits) - 1)
        return max(1.0, worst / full)
    top = max_column_sum(x, programmed, input_bits=8, signed_inputs=signed, per_cycle=True)
    return np.maximum(1.0, top / full)                     # each input cycle its own step


SWEEP = list(itertools.product([1, 2, 4, 8], [1, 2, 4, 8], [4, 8, 12],
                               ["max", "fraction:1", "calibrated"]))


@pytest.mark.parametrize("base", [ISAAC, ISQED_TWO_COLUMN], ids=lambda a: a.name)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_every_adc_configuration_gives_its_predicted_error(base, signed):
    node, x = _node(signed), _inputs(signed)
    exact = x @ node.params["weight"].T.astype(np.int64)
    ratios = []
    for dac, cell, adc, mode in SWEEP:
        accel = base.replace(rows=ROWS, weight_bits=8, input_bits=8, dac_bits=dac,
                             cell_bits=cell, adc_bits=adc)
        layer = place_layer(node, accel)
        programmed = program_layer(layer, accel.device)
        step = _step(mode, layer, x, programmed, signed)
        report = {}
        y = crossbar_layer_matmul(x, programmed, input_bits=8, signed_inputs=signed,
                                  adc_step=step, report=report)
        err = y - exact
        what = f"{base.name} dac={dac} cell={cell} adc={adc} {mode}"
        if report["saturated"]:
            assert mode == "max", f"{what}: the range saturated"   # clipping is reported
            continue
        worst, rms = predicted_adc_error(programmed, step, input_bits=8, signed_inputs=signed)
        assert np.all(np.abs(err) <= worst * (1 + 1e-9) + 1e-6), what
        measured = float(np.sqrt(np.mean(np.square(err))))
        if not rms.any():
            assert not err.any(), what                 # one level per code: exact
            continue
        predicted = float(np.sqrt(np.mean(np.square(rms))))
        assert measured <= 2 * predicted, what
        if np.min(step) >= 4:          # rounding errors spread over the step: uniform
            ratios.append(measured / predicted)
    # the uniform-rounding rms is an estimate (reads of exactly zero round nothing): most
    # coarse-step configurations sit within a factor 2 of it, none above
    ratios = np.array(ratios)
    assert len(ratios) > 20 and np.mean((ratios > 0.5) & (ratios < 2)) > 0.6, ratios


def test_the_sign_cycle_has_its_own_step():
    """Signed 8-bit inputs through 8-bit DACs: a 1-bit sign cycle and a 7-bit magnitude
    cycle. A range calibrated to the magnitude cycle (step S) reads the sign cycle with
    step S / 127 (never below one level)."""
    steps = cycle_adc_steps(9178.7, np.array([1, 127]))
    np.testing.assert_allclose(steps, [9178.7 / 127, 9178.7])
    assert cycle_adc_steps(50.0, np.array([1, 127])).tolist() == [1.0, 50.0]
    assert cycle_adc_steps(1.0, np.array([1, 127])).tolist() == [1.0, 1.0]


def _graph(n, signed):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (16, n))
    node = Node(Op.LINEAR, "fc", ("input",), dict(weight_bits=8, weight_scale=1.0, act_bits=8,
                                                  act_scale=1.0, act_signed=signed),
                {"weight": w * 1.0})
    from chipforge.sim.graph import Graph

    return Graph("fc", (n,), [node])


@pytest.mark.parametrize("dac,cell,adc,warned", [(8, 8, 8, True), (1, 2, 8, False),
                                                 (8, 8, 16, False)])
def test_a_range_whose_rounding_swamps_wx_is_flagged_in_one_line(dac, cell, adc, warned):
    """8-bit DACs, 8-bit cells and an 8-bit ADC with the calibrated range on 256 rows: the
    step (thousands of levels) and ISAAC's unit column x128 predict a relative error near 2
    (measured: 1.6 signed, 2.8 unsigned); 1-bit DACs with 2-bit cells, or a 16-bit ADC,
    are fine and say nothing."""
    from chipforge.mappings.placement import place
    from chipforge.sim.reram import (
        CrossbarMatmul,
        adc_error_warnings,
        adc_steps,
        calibrate_adc,
    )

    for signed in (True, False):
        graph = _graph(256, signed)
        accel = ISAAC.replace(rows=256, weight_bits=8, input_bits=8, dac_bits=dac,
                              cell_bits=cell, adc_bits=adc)
        mapped = place(graph, accel)
        x = np.random.default_rng(1).random((64, 256)) * (2 if signed else 1) - signed
        hook = CrossbarMatmul(mapped, accel.device)
        steps = adc_steps("calibrated", mapped, calibrate_adc(graph, x * 127, hook))
        lines = adc_error_warnings(graph, x * 127, hook, steps)
        assert len(lines) == int(warned)
        if warned:
            assert "relative error of" in lines[0] and "\n" not in lines[0]
            relative = float(lines[0].split("relative error of ")[1].split()[0])
            y = CrossbarMatmul(mapped, accel.device, adc_steps=steps)
            from chipforge.sim.executor import run_graph
            hw = run_graph(graph, x * 127, matmul=y)
            ideal = run_graph(graph, x * 127)
            measured = np.linalg.norm(hw - ideal) / np.linalg.norm(ideal)
            assert 0.5 * relative < measured < 2 * relative, (relative, measured)
