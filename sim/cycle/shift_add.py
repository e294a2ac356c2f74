"""Cycle model of the shift-and-add unit (``chipforge.hw.shift_add.ShiftAdd``).

The block's docstring states its timing: one input beat per cycle (one ADC readout of one
weight column per input cycle), ``cfg.input_cycles`` beats per dot product, the result
valid 2 cycles after the last beat is accepted (two pipeline stages), and back-to-back
vectors without a bubble (``i_stream.ready`` stays high while the output is consumed
every cycle). The RTL in the loop (``chipforge.sim.rtl_layer``) checks this model
against the cycles it measures.
"""

from __future__ import annotations

import operator

from chipforge.config import CrossbarConfig

__all__ = ["SHIFT_ADD_LATENCY", "shift_add_stream_cycles"]

SHIFT_ADD_LATENCY = 2
"""Cycles from the acceptance of a vector's last beat to its result being valid."""


def shift_add_stream_cycles(cfg: CrossbarConfig, dot_products: int) -> int:
    """Cycles for one ShiftAdd to compute ``dot_products`` dot products streamed back to back
    (no idle input cycles, output always ready), from the first beat through the cycle in
    which the last result is taken: ``dot_products * input_cycles + latency``."""
    try:
        dot_products = operator.index(dot_products)
    except TypeError:
        raise ValueError(f"dot_products must be an integer, not {dot_products!r}") from None
    if dot_products < 0:
        raise ValueError(f"dot_products must be >= 0, not {dot_products}")
    if dot_products == 0:
        return 0
    return dot_products * cfg.input_cycles + SHIFT_ADD_LATENCY
