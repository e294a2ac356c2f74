"""Deliberate faults in the generated FORMS fragment's Verilog must fail its testbench.

``can_finish = ~last | ~o_blocked`` turned ``~o_blocked``: a job that is not an output's
last also waits while a result is stalled on ``o_stream``. Every result stays right and
back to back (output always ready) nothing changes: a throughput fault under back-pressure
only, which the per-cycle handshake check (``FragmentTiming``) sees. Located by structure:
the assign of the named ``can_finish`` from two terms, the second being ``~o_blocked``'s.
And rows 0 and 1 swapped on the ``dac_bits`` port (its assign, by the shift registers'
names): results unchanged, only the port an analog array would read is wrong.
"""

from pathlib import Path

import pytest

from chipforge.verify.mutation import mutated_copy

HERE = Path(__file__).resolve().parent
BLOCK = HERE.parents[1] / "rtl" / "forms-fragment"
TESTBENCH = HERE / "test_forms_fragment_cocotb.py"

MUTATIONS = {
    "non-last-job-waits-for-output": (r"(assign can_finish = )\\\$\d+  \| (\\\$\d+ ;)",
                                      r"\1\2"),
    # rows 0 and 1 swapped on the DAC port only (the datapath still shifts the right bits)
    "dac-bits-rows-swapped": (r"(assign dac_bits = \{ [^;]*)shift1\[0\], shift0\[0\] \}",
                              r"\1shift0[0], shift1[0] }"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name, tmp_path):
    from chipforge.verify.runner import run_cocotb

    copy = mutated_copy(BLOCK, "forms_fragment.v", *MUTATIONS[name], tmp_path)
    with pytest.raises(AssertionError, match="tests of"):
        run_cocotb(copy, TESTBENCH, simulator="icarus", build_root=tmp_path)
