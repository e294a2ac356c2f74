"""Deliberate faults in the generated element-wise units' Verilog must fail their testbench.

A pipeline stage that no longer advances when it is empty (``advance_k = ~valid_k |
advance_(k+1)`` turned ``advance_(k+1)``): every value still comes out right and back to
back nothing changes, but under back-pressure a bubble is not collapsed, so the unit is
slower only when its output stalls (the throughput fault that only the per-cycle
handshake check under idle input and back-pressure together sees). Located by structure:
the assign of the stage's ``advance`` signal from the next stage's.
"""

from pathlib import Path

import pytest

from chipforge.verify.mutation import mutated_copy

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl"
TESTBENCH = HERE / "test_elementwise_units_cocotb.py"

MUTATIONS = {   # block: (verilog, pattern, replacement)
    "poly-gelu": ("poly_gelu.v", r"(assign advance1 = )\\\$\d+  \| (advance2;)", r"\1\2"),
    "poly-exp": ("poly_exp.v", r"(assign advance1 = )\\\$\d+  \| (advance2;)", r"\1\2"),
}


@pytest.mark.parametrize("block", sorted(MUTATIONS))
def test_bubble_not_collapsed_is_caught(block, tmp_path):
    from chipforge.verify.runner import run_cocotb

    verilog, pattern, replacement = MUTATIONS[block]
    copy = mutated_copy(RTL / block, verilog, pattern, replacement, tmp_path)
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(copy, TESTBENCH, simulator="icarus", build_root=tmp_path,
                   extra_env={"CHIPFORGE_UNIT": block})
