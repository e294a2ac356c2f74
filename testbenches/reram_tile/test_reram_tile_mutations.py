"""Deliberate faults in the generated tile's Verilog must fail its testbench (slow).

Each mutation edits a copy of ``rtl/tile-forms8``: a reset that no longer clears the
controller (a pending result survives), an output that advances while stalled (a result is
overwritten/lost under back-pressure), two rows of the DAC port swapped (the crossbar port),
and an output stream that ignores ``tready`` only after a stall of more than 16 cycles;
the register and requantization faults that a one-layer case misses: the K register losing
bit 5 (K = 32 reads as 0), the shift losing bit 5 (S >= 32), the upper clip one below the
rail, the rounding term dropped (located by the named registers ``reg_k``'s write,
``rounded``, ``clipped`` and ``reg_shift``, not by yosys' wire numbers).
"""

from pathlib import Path

import pytest

from chipforge.verify.mutation import mutated_copy

HERE = Path(__file__).resolve().parent
BLOCK = HERE.parents[1] / "rtl" / "tile-forms8"
TESTBENCH = HERE / "test_reram_tile_cocotb.py"

MUTATIONS = {   # yosys numbers its wires ($NN): the patterns match any number
    "reset-keeps-state": (r"(\\\$(\d+)  = tile_state;[\s\S]*?endcase\n)    if \(rst\) begin\n"
                          r"      \\\$\2  = 3'h0;\n    end\n", r"\1"),
    "output-ignores-stall": (r"(\\\$\d+  = out_col;[\s\S]*?3'h5:\n          )"
                             r"if \(m_axis_tready\)", r"\1if (1'b1)"),
    "dac-rows-swapped": (r"dac1\[0\], dac0\[0\] \}", "dac0[0], dac1[0] }"),
    # the register file: K's write (address 0x001) loses bit 5, so K = 32 reads as 0
    "k-register-loses-bit-5": (r"(12'h001:\n\s+\\\$\d+  = )cfg_wdata\[5:0\];",
                               r"\1{ 1'h0, cfg_wdata[4:0] };"),
    # the requantization: the shift by S uses S's low 5 bits only (S >= 32 wrong)
    "shift-loses-bit-5": (r"(assign rounded = \$signed\(scaled\) >>> )reg_shift;",
                          r"\1reg_shift[4:0];"),
    # the upper clip value one below the rail (ReLU clips at 254, signed at 126)
    "upper-clip-one-low": (r"(clipped = \{ 1'h0, )(\\\$\d+ ) \};", r"\1\2- 1'h1 };"),
    # the rounding term 2**(S-1) dropped (truncation instead of round half up)
    "rounding-term-dropped": (r"(assign \\\$\d+  = )1'h1 << reg_shift;",
                              r"\g<1>1'h0 << reg_shift;"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name, tmp_path):
    from chipforge import zoo
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.tile_case import layer_case, save_case
    from chipforge.zoo.data import digits

    block = mutated_copy(BLOCK, "reram_tile_forms8.v", *MUTATIONS[name], tmp_path)
    case = layer_case(zoo.load("lenet-digits-forms8"), digits(16).x_test[:1], "conv1",
                      "forms8")
    path = save_case(case, tmp_path / "case.npz")
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(block, TESTBENCH, simulator="icarus", build_root=tmp_path,
                   extra_env={"CHIPFORGE_TILE_CASE": str(path),
                              "CHIPFORGE_TILE_VECTORS": "24"})
