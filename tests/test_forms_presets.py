"""A model polarized at fragment F runs on every FORMS preset whose fragment divides F (a
fragment of F rows with one sign is F / f fragments of f rows with that sign), and is refused
in one line elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from chipforge.cli import main
from chipforge.simulate import simulate
from chipforge.zoo import load


@pytest.mark.parametrize("preset", ["forms4", "forms8"])
def test_fragment_8_model_runs_on_presets_whose_fragment_divides_8(preset):
    graph = load("lenet-digits-forms8")
    assert {n.attrs.get("fragment_size") for n in graph.weighted_nodes()} == {8}
    result = simulate(graph, preset, "digits", samples=48, progress=False)
    # ideal devices: the polarized crossbars compute the quantized model exactly
    assert result.accuracy_hardware == result.accuracy_ideal > 0.8
    assert result.agreement == 1.0
    assert np.isfinite(result.metrics["crossbars"]) and result.metrics["crossbars"] > 0


def test_fragment_8_model_on_forms16_is_one_line_with_exit_2(capsys, tmp_path):
    assert main(["simulate", "lenet-digits-forms8", "--accelerator", "forms16", "--samples",
                 "4", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "polarized with fragment_size 8" in err and "fragments of 16 rows, which must " \
        "divide 8" in err
