"""Bit-exact integer reference models, one module per hardware block.

The functional simulator, the Amaranth simulation tests and the cocotb scoreboards all call
these functions; analog non-idealities wrap them and never fork them.
"""
