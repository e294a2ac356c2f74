"""Deliberate faults in the generated shift-and-add Verilog must fail its testbench (slow).

The faults an independent review found the old testbenches missed: a result overwritten
when the output stalls longer than a dot product (16 beats), one lost cycle per dot
product, a reset that no longer clears a pending result, and a slowdown that shows only
under output stalls (the input is held off one cycle longer than the ready rule allows).
"""

from pathlib import Path

import pytest

from chipforge.verify.mutation import mutated_copy

HERE = Path(__file__).resolve().parent
BLOCK = HERE.parents[1] / "rtl" / "shift-add"
TESTBENCH = HERE / "test_shift_add_cocotb.py"

MUTATIONS = {   # yosys numbers its wires ($NN): the patterns match any number
    "overwritten-under-stall": (r"assign i_stream__ready = \\\$(\d+)  \| o_stream__ready;",
                                "assign i_stream__ready = 1'h1;"),
    "lost-cycle-per-dot-product": (r"= beat == 4'hf;", "= beat == 4'he;"),
    "reset-keeps-pending": (r"(\\\$(\d+)  = 1'h1;\n        end\n      end\n    end\n)    if "
                            r"\(rst\) begin\n      \\\$\2  = 1'h0;\n    end\n", r"\1"),
    "slower-under-stalls": (r"assign i_stream__ready = \\\$(\d+)  \| o_stream__ready;",
                            r"assign i_stream__ready = \\$\1 ;"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name, tmp_path):
    from chipforge.verify.runner import run_cocotb

    block = mutated_copy(BLOCK, "shift_add.v", *MUTATIONS[name], tmp_path)
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(block, TESTBENCH, simulator="icarus", build_root=tmp_path)
