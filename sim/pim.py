"""Processing-in-memory layers with ADC quantization of every analog partial sum.

A weighted layer's integer product ``x_q @ w_q`` is decomposed the way a PIM macro
computes it: the inputs into DAC slices, the weights into cell slices, the rows into
arrays of ``rows`` rows. Every (input slice, weight slice, array, column) partial sum is an
analog quantity that a :class:`~chipforge.sim.adc.PimAdc` digitizes; the digital side
recombines the digitized sums with their powers of two and adds the arrays.

The three decomposition schemes (the PIM-QAT paper validates "three mainstream PIM
decomposition schemes" without naming them here; these are the CAP-RAM family's, see
``/shared/reference/aqfp-and-pim-adc.md`` B.2-B.3):

- ``BIT_SERIAL``: 1-bit inputs x bit-sliced weights (CAP-RAM Eq. 2);
- ``MULTIBIT_DAC``: ``dac_bits``-bit inputs x bit-sliced weights (CAP-RAM Eq. 3);
- ``DIFFERENTIAL``: ternary weight digits ``sign(w) * bit_s(|w|)`` on cell pairs (CAP-RAM's
  ternary mode, "01" = +1, "10" = -1) read by a differential (bipolar) ADC.

Weights are two's complement, one bit per cell, the most significant slice weighted
``-2**(weight_bits - 1)`` (CAP-RAM: "the MSB's sign reversed"); inputs are unsigned
activations (after a ReLU, or image pixels).

:class:`PimMatmul` is a ``matmul`` hook for :func:`chipforge.sim.executor.run_graph`; with
an ideal ADC wide enough never to saturate it returns ``x_q @ w_q`` exactly.
"""

from __future__ import annotations

import dataclasses
import enum
import zlib

import numpy as np

from chipforge.config import ConfigBase, CrossbarConfig, check_int
from chipforge.sim.adc import AdcConfig, PimAdc
from chipforge.sim.graph import Node
from chipforge.sim.ref.crossbar import input_slices

__all__ = ["Decomposition", "PimConfig", "PimMatmul", "pim_matmul", "weight_digits"]


class Decomposition(enum.Enum):
    BIT_SERIAL = "bit_serial"
    MULTIBIT_DAC = "multibit_dac"
    DIFFERENTIAL = "differential"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PimConfig(ConfigBase):
    """How a PIM macro decomposes a layer, and its ADC."""

    decomposition: Decomposition = Decomposition.BIT_SERIAL
    rows: int = 128
    """Rows summed on one column before the ADC (CAP-RAM: 128 active clusters)."""
    dac_bits: int = 4
    """Input bits per cycle for MULTIBIT_DAC (CAP-RAM: 4); BIT_SERIAL always uses 1."""
    adc: AdcConfig = dataclasses.field(default_factory=AdcConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.decomposition, Decomposition):
            raise ValueError(f"decomposition must be a Decomposition "
                             f"({', '.join(d.name for d in Decomposition)}), "
                             f"not {self.decomposition!r}")
        check_int("rows", self.rows, 1, 4096)
        check_int("dac_bits", self.dac_bits, 1, 8)
        if not isinstance(self.adc, AdcConfig):
            raise ValueError(f"adc must be an AdcConfig, not {self.adc!r}")

    @property
    def input_dac_bits(self) -> int:
        return self.dac_bits if self.decomposition is Decomposition.MULTIBIT_DAC else 1

    @property
    def bipolar(self) -> bool:
        return self.decomposition is Decomposition.DIFFERENTIAL

    def hardware_range(self) -> float:
        """Largest partial sum: rows x largest input slice x largest cell level (1)."""
        return float(self.rows * ((1 << self.input_dac_bits) - 1))


def weight_digits(w_q: np.ndarray, weight_bits: int,
                  decomposition: Decomposition) -> tuple[np.ndarray, np.ndarray]:
    """Cell digits (S, K, N) and their digital weights (S,) of integer weights (K, N)."""
    w_q = np.asarray(w_q, dtype=np.int64)
    if decomposition is Decomposition.DIFFERENTIAL:
        magnitude, sign = np.abs(w_q), np.sign(w_q)
        slices = np.arange(weight_bits)
        digits = sign[None] * ((magnitude[None] >> slices[:, None, None]) & 1)
        return digits, (1 << slices).astype(np.float64)
    pattern = w_q & ((1 << weight_bits) - 1)
    slices = np.arange(weight_bits)
    digits = (pattern[None] >> slices[:, None, None]) & 1
    scale = (1 << slices).astype(np.float64)
    scale[-1] = -scale[-1]
    return digits, scale


def pim_matmul(x_q: np.ndarray, w_q: np.ndarray, *, act_bits: int, weight_bits: int,
               cfg: PimConfig, adc: PimAdc, noise_key: int | None = None,
               row_offset: int = 0) -> np.ndarray:
    """``x_q @ w_q`` through the PIM macro (float64 result in integer-product units).

    ``noise_key``: the thermal noise of every conversion is then Gaussian number
    ``(row_offset + m) * reads_per_row + read`` of that counter-based stream
    (:func:`chipforge.sim.reram_kernels.gaussians`), so consecutive calls on consecutive
    input rows give the same result as one call on all of them. Without it the ADC
    draws from its own stream in call order."""
    x_q = np.asarray(x_q, dtype=np.int64)
    m, k = x_q.shape
    n = w_q.shape[1]
    if x_q.size and x_q.min() < 0:
        raise ValueError("PIM inputs must be unsigned activations (act_signed=False): "
                         f"found {int(x_q.min())}")
    xcfg = CrossbarConfig(input_bits=act_bits, dac_bits=cfg.input_dac_bits,
                          signed_inputs=False)
    x_slices = input_slices(x_q, xcfg).astype(np.float32)               # C, M, K
    shifts = np.cumsum(xcfg.input_slice_widths[::-1])[::-1] - np.array(xcfg.input_slice_widths)
    digits, slice_scale = weight_digits(w_q, weight_bits, cfg.decomposition)  # S, K, N
    tiles = -(-k // cfg.rows)
    pad = tiles * cfg.rows - k
    if pad:
        x_slices = np.pad(x_slices, ((0, 0), (0, 0), (0, pad)))
        digits = np.pad(digits, ((0, 0), (0, pad), (0, 0)))
    c, s = x_slices.shape[0], digits.shape[0]
    xs = x_slices.reshape(c, m, tiles, cfg.rows).transpose(0, 2, 1, 3)   # C, T, M, R
    ws = digits.reshape(s, tiles, cfg.rows, n).transpose(1, 2, 0, 3)      # T, R, S, N
    ws = ws.reshape(tiles, cfg.rows, s * n).astype(np.float32)
    sums = np.matmul(xs, ws[None])                                       # C, T, M, S*N
    columns = np.arange(tiles)[:, None] * (s * n) + np.arange(s * n)[None]  # T, S*N
    normals = None
    if noise_key is not None and adc.cfg.thermal_noise_lsb:
        from chipforge.sim.reram_kernels import gaussians

        per_row = c * tiles * s * n                          # conversions of one input row
        normals = gaussians(noise_key, row_offset * per_row, m * per_row).reshape(
            m, c, tiles, s * n).transpose(1, 2, 0, 3)
    values = adc.convert(sums, columns[None, :, None, :], normals=normals)
    values = values.reshape(c, tiles, m, s, n).sum(axis=1)                # C, M, S, N
    per_cycle = np.einsum("cmsn,s->cmn", values, slice_scale)
    return np.einsum("cmn,c->mn", per_cycle, np.exp2(shifts))


_THERMAL = 4       # the noise stream's purpose word (crossbar streams use 1-3)


class PimMatmul:
    """Executor hook: every quantized weighted node runs through a PIM macro.

    Each layer gets its own converters, whose gain/offset errors and noise stream derive
    from ``seed`` and the node's name; a conversion's thermal noise is indexed by the
    input row (counted since this hook was made) and the read, so results depend only on
    the seed, not on how the batch is split into calls.
    """

    def __init__(self, cfg: PimConfig, *, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self._adcs: dict[str, PimAdc] = {}
        self._rows_done: dict[str, int] = {}

    def adc_for(self, node: Node) -> PimAdc:
        if node.name not in self._adcs:
            key = zlib.crc32(node.name.encode())
            self._adcs[node.name] = PimAdc(
                self.cfg.adc, hardware_range=self.cfg.hardware_range(),
                bipolar=self.cfg.bipolar, seed=np.random.SeedSequence([self.seed, key]))
        return self._adcs[node.name]

    def __call__(self, node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
        if node.attrs.get("act_signed"):
            raise ValueError(f"node {node.name!r}: PIM inputs must be unsigned "
                             "(act_signed=False)")
        from chipforge.sim.reram_kernels import stream_key

        offset = self._rows_done.get(node.name, 0)
        self._rows_done[node.name] = offset + len(x_q)
        y = pim_matmul(x_q, w_q, act_bits=int(node.attrs["act_bits"]),
                       weight_bits=int(node.attrs["weight_bits"]), cfg=self.cfg,
                       adc=self.adc_for(node), row_offset=offset,
                       noise_key=stream_key(self.seed, zlib.crc32(node.name.encode()),
                                            _THERMAL))
        # PIM-aware training (chipforge compress pim-qat) learns a digital gain per layer or
        # per output channel that rescales the ADC-quantized product (folded into the
        # requantization scale in hardware).
        gain = node.attrs.get("pim_gain")
        return y if gain is None else y * np.asarray(gain, dtype=np.float64)
