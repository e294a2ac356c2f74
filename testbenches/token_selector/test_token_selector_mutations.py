"""Deliberate faults in the generated token selector's Verilog must fail its testbench.

Each mutation edits a copy of ``rtl/token-selector`` and runs the testbench on one real
image: two bits of an output channel swapped, a wrong keep decision (the packager's
threshold 57 -> 41), one lost cycle per head (fc1 takes the next head a cycle late:
bit-exact, only slower), an output that advances while stalled, and a reset that no
longer clears a pending output beat. On the centered selector (vit-digits-keep60's first
selector switched to centered, generated for the test): the mean token rounded down
instead of to nearest (the ``+ 2**15`` before the shift dropped), and channel 0 of every
head fed to fc1 without the mean subtracted.
"""

from pathlib import Path

import pytest

from chipforge.verify.mutation import mutated_copy

HERE = Path(__file__).resolve().parent
BLOCK = HERE.parents[1] / "rtl" / "token-selector"
TESTBENCH = HERE / "test_token_selector_cocotb.py"

MUTATIONS = {
    "output-bits-swapped": (r"assign m_axis_tdata\[15:0\] = (\\\$signature__data\$\d+ )\[15:0\];",
                            r"assign m_axis_tdata[15:0] = { \1[15:2], \1[0], \1[1] };"),
    "wrong-keep-decision": (r"(i_stream__payload\[775:768\] >= )6'h39;", r"\g<1>6'h29;"),
    "lost-cycle-per-head": (r"(module \\token_selector\.fc1 [\s\S]*?assign i_stream__ready = "
                            r"\\\$\d+  )\| finishing;", r"\1;"),
    "output-ignores-stall": (r"assign out_take = m_axis_tvalid & m_axis_tready;",
                             r"assign out_take = m_axis_tvalid;"),
    "reset-keeps-output": (r"(\$(\d+)  = m_axis_tvalid;[\s\S]*?endcase\n)    if \(rst\) begin\n"
                           r"      \\\$\2  = 1'h0;\n    end\n", r"\1"),
}


@pytest.fixture(scope="module")
def one_image_case(tmp_path_factory):
    from chipforge.verify.selector_case import save_case, selector_cases
    from chipforge.zoo.data import digits

    data = digits(8)
    case = selector_cases("vit-digits-keep60", data.x_test[:1], data.x_train[:256])[0]
    return save_case(case, tmp_path_factory.mktemp("case") / "case.npz")


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name, one_image_case, tmp_path):
    from chipforge.verify.runner import run_cocotb

    block = mutated_copy(BLOCK, "token_selector.v", *MUTATIONS[name], tmp_path)
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(block, TESTBENCH, simulator="icarus", build_root=tmp_path,
                   extra_env={"CHIPFORGE_SELECTOR_CASE": str(one_image_case)})


CENTERED_MUTATIONS = {
    "mean-rounds-down": (r"\$signed\(17'h08000\)", r"$signed(17'h00000)"),
    "channel-not-centered": (r"(assign \\\$\d+  = \$signed\(h_head\[7:0\]\)) - "
                             r"\$signed\(m_head\[7:0\]\);", r"\1;"),
}


@pytest.fixture(scope="module")
def centered_block(tmp_path_factory):
    """The centered selector's generated Verilog and a one-image case for it."""
    from chipforge.hw.generate import generate_selector
    from chipforge.verify.selector_case import save_case, selector_cases
    from chipforge.zoo.data import digits

    data = digits(8)
    case = selector_cases("vit-digits-keep60", data.x_test[:1], data.x_train[:256],
                          center=True)[0]
    where = tmp_path_factory.mktemp("centered")
    verilog, _ = generate_selector("vit-digits-keep60", where / "rtl", center=True)
    return verilog, save_case(case, where / "case.npz")


@pytest.mark.parametrize("name", sorted(CENTERED_MUTATIONS))
def test_centering_mutation_is_caught(name, centered_block, tmp_path):
    from chipforge.verify.runner import run_cocotb

    verilog, case = centered_block
    block = mutated_copy(verilog.parent, verilog.name, *CENTERED_MUTATIONS[name], tmp_path)
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(block, TESTBENCH, simulator="icarus", build_root=tmp_path,
                   extra_env={"CHIPFORGE_SELECTOR_CASE": str(case)})
