"""Amaranth components of the accelerators' digital blocks (imported as ``chipforge.hw``).

Each block is a ``wiring.Component`` built from one config with ``lib.stream`` ports; its
docstring states latency and throughput. ``chipforge.hw.generate`` writes their Verilog.
"""
