"""Deliberate faults in the generated token selector's Verilog must fail its testbench.

Each mutation edits a copy of ``rtl/token-selector`` and runs the testbench on one real
image: two bits of an output channel swapped, a wrong keep decision (the packager's
threshold 57 -> 41), one lost cycle per head (fc1 takes the next head a cycle late:
bit-exact, only slower), an output that advances while stalled, and a reset that no
longer clears a pending output beat. On the centered selector (vit-digits-keep60's first
selector switched to centered, generated for the test): the mean token rounded down
instead of to nearest (the ``+ 2**15`` before the shift dropped), and channel 0 of every
head fed to fc1 without the mean subtracted. On the testbench's small extremes selector
(tokens scored exactly at the keep threshold): either keep compare (the packager's, the
keep mask's) ``>=`` turned ``>``.
"""

import re
from pathlib import Path

import pytest

from chipforge.verify.mutation import mutated_copy

HERE = Path(__file__).resolve().parent
BLOCK = HERE.parents[1] / "rtl" / "token-selector"
TESTBENCH = HERE / "test_token_selector_cocotb.py"

def _lower_threshold(block: Path) -> tuple[str, str]:
    """The packager's keep compare (its input's score field against the threshold constant,
    read from the block's manifest) with the threshold 16 lower."""
    from chipforge.config import TokenSelectorConfig
    from chipforge.verify.manifest import load_manifest

    threshold = TokenSelectorConfig.from_dict(load_manifest(block).config).threshold
    return (rf"(i_stream__payload\[\d+:\d+\] >= )(\d+)'h{threshold:x};",
            rf"\g<1>\g<2>'h{threshold - 16:x};")


MUTATIONS = {
    "output-bits-swapped": (r"assign m_axis_tdata\[15:0\] = (\\\$signature__data\$\d+ )\[15:0\];",
                            r"assign m_axis_tdata[15:0] = { \1[15:2], \1[0], \1[1] };"),
    "wrong-keep-decision": _lower_threshold(BLOCK),
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


def _threshold_mutations(threshold: int) -> dict[str, tuple[str, str]]:
    """The two keep compares ``>=`` turned ``>``, located by structure: the compare of the
    packager's score field (its input payload) and of the top level's ``score`` register
    (the keep mask) against the config's threshold constant."""
    const = rf"(\d+'h{threshold:x};)"
    return {
        "packager-keeps-above-threshold": (
            rf"(assign \\\$\d+  = i_stream__payload\[\d+:\d+\] )>= {const}", r"\1> \2"),
        "mask-keeps-above-threshold": (rf"(assign \\\$\d+  = score )>= {const}", r"\1> \2"),
    }


@pytest.fixture(scope="module")
def threshold_block(tmp_path_factory):
    """The small centered selector of the testbench's extremes case (tokens scored exactly
    at the threshold and one below it), generated for the test, and that case."""
    import importlib.util

    from chipforge.hw.generate import Block, write_block
    from chipforge.hw.token_selector import TokenSelector

    spec = importlib.util.spec_from_file_location("selector_testbench", TESTBENCH)
    testbench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(testbench)
    where = tmp_path_factory.mktemp("threshold")
    cfg, case = testbench._extreme_centered_case(where / "case.npz")
    verilog, _ = write_block("token-selector-extremes", Block(
        module="token_selector_extremes", build=TokenSelector, config=cfg,
        summary="centered token selector, synthetic"), where / "rtl")
    return cfg, verilog, case


@pytest.mark.parametrize("name", ["packager-keeps-above-threshold",
                                  "mask-keeps-above-threshold"])
def test_threshold_mutation_is_caught(name, threshold_block, tmp_path):
    """A token scored exactly at the threshold is kept: ``>=`` turned ``>`` in either keep
    compare must fail the extremes case."""
    from chipforge.verify.runner import run_cocotb

    cfg, verilog, case = threshold_block
    for other, (pattern, _) in _threshold_mutations(cfg.threshold).items():
        assert len(re.findall(pattern, verilog.read_text())) == 1, f"{other}: not unique"
    block = mutated_copy(verilog.parent, verilog.name,
                         *_threshold_mutations(cfg.threshold)[name], tmp_path)
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(block, TESTBENCH, simulator="icarus", build_root=tmp_path,
                   extra_env={"CHIPFORGE_SELECTOR_CASE": str(case)})
