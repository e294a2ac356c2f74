"""The generated Verilog is lint-clean and synthesizes; resource counts are printed."""

import pytest

from chipforge.hw.generate import BLOCKS, generate
from chipforge.toolchain import lint_verilog, synthesize


@pytest.mark.parametrize("block", list(BLOCKS))
def test_verilator_lint_clean(block, tmp_path):
    verilog_path = generate(block, tmp_path)[0]
    lint_verilog(verilog_path, BLOCKS[block].module)


# Blocks whose LUT-only iCE40 synthesis takes over half a minute run with `make test-slow`.
SLOW_SYNTHESIS = {"token-linear", "tile-isaac", "tile-forms8"}


@pytest.mark.parametrize("block", [pytest.param(b, marks=pytest.mark.slow)
                                   if b in SLOW_SYNTHESIS else b for b in BLOCKS])
def test_yosys_synthesis(block, tmp_path):
    verilog_path = generate(block, tmp_path)[0]
    counts = synthesize(verilog_path, BLOCKS[block].module, "ice40")
    print(f"\n{block} on iCE40: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert counts["cells"] > 0 and counts.get("SB_LUT4", 0) > 0
    assert sum(v for k, v in counts.items() if k.startswith("SB_DFF")) > 0


def test_lint_rejects_a_latch(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input en, input d, output reg q);\n"
                   "always @* if (en) q = d;\nendmodule\n")
    with pytest.raises(RuntimeError, match="LATCH"):
        lint_verilog(bad, "bad")
