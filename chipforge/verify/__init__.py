"""Verification support shared by the cocotb testbenches in ``testbenches/``.

- :mod:`chipforge.verify.manifest`: read ``rtl/<block>/manifest.json`` and pack/unpack
  stream payloads by its field table (sizes never come from constants);
- :mod:`chipforge.verify.cocotb_stream`: stream driver, monitor and scoreboard with random
  idle cycles and back-pressure (imports cocotb; used inside the simulator only);
- :mod:`chipforge.verify.runner`: build and run a testbench from pytest through
  ``cocotb_tools.runner`` on Icarus or Verilator.
"""
