"""The ReRAM tile's reference model and requantization (numpy only; the Verilog is tested
in testbenches/reram_tile)."""

import numpy as np
import pytest

from chipforge import zoo
from chipforge.hw.reram_tile import TileConfig, tile_config
from chipforge.sim.ref.reram_tile import TileProgram, effective_input_cycles
from chipforge.verify.tile_case import check_requantization, layer_case
from chipforge.zoo.data import digits


@pytest.mark.parametrize("accelerator", ["isaac", "forms8"])
def test_tile_reference_is_the_exact_product(accelerator):
    """Random polarized weights and inputs over the whole range, extremes included: the
    tile's crossbar-level computation (row groups, flips, signs) is exactly x @ W."""
    rng = np.random.default_rng(0)
    cfg = tile_config(accelerator, 40, 5)
    w = rng.integers(-127, 128, size=(40, 5))
    if cfg.forms:   # one sign per fragment column
        signs = np.where(rng.random((5, 5)) < 0.5, -1, 1)
        w = np.abs(w) * np.repeat(signs, 8, axis=0)
    x = rng.integers(0, 256, size=(30, 40))
    x[0], x[1] = 255, 0
    prog = TileProgram(cfg, w)
    assert np.array_equal(prog.dots(x), x @ w)
    # One plane's codes, summed the way the tile does, give the same product.
    if cfg.forms:
        planes = prog.planes(x[2])
        assert len(planes) == effective_input_cycles(x[2:3])[0]


def test_forms_tile_needs_unsigned_inputs():
    cfg = tile_config("forms8", 16, 4)
    with pytest.raises(ValueError, match="unsigned inputs"):
        TileConfig(crossbar=cfg.crossbar.replace(signed_inputs=True), row_groups=2, cols=4)


@pytest.mark.parametrize("model,accelerator", [("lenet-digits", "isaac"),
                                               ("lenet-digits-forms8", "forms8")])
@pytest.mark.parametrize("layer", ["conv2", "fc1"])
def test_tile_requantization_gives_the_next_layers_inputs(model, accelerator, layer):
    """The tile's integer requantization (+ ReLU, max-pool between) of the ideal run's
    products equals the next layer's quantized inputs in the float executor, every value."""
    graph = zoo.load(model)
    x = digits(16).x_test[:10]
    case = layer_case(graph, x, layer, accelerator)
    assert np.array_equal(case.ideal, case.x @ case.weights)
    assert not case.requant.raw and case.requant.shift > 20
    assert check_requantization(graph, x, case) == 0
