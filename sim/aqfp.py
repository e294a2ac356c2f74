"""AQFP superconducting stochastic BNN arrays (SupeRBNN, Li et al., MICRO'23).

Devices, circuits and mapping are kept apart, as in CrossSim:

- **Device** -- the randomized AQFP buffer: ``P(out = 1 | I) = Phi((I - I_off) / sigma)``
  (:func:`switching_probability`), with the gray-zone width ``sigma`` optionally scaled
  with temperature as ``sqrt(T / T_ref)`` (:meth:`AqfpConfig.sigma_at_temperature_ua`).
- **Circuit** -- an N x N crossbar of binary weights: a column carries
  ``I = alpha(N) * I_unit * MAC`` with the attenuation ``alpha(N)`` of an N-row crossbar
  (:meth:`AqfpConfig.attenuation`), read by one randomized buffer per column and per
  clock cycle; a layer wider than N is split over ``K = ceil(fan_in / N)`` crossbars whose
  bitstreams (length L) are accumulated by stochastic computing: counting, or a per-cycle
  majority (:func:`accumulate`). 4-phase clocking (:func:`layer_latency_s`); Josephson
  junction counts per block and energy per junction switch (:func:`layer_cost`), with the
  cryocooler overhead reported separately (:class:`EnergyReport`).
- **Mapping** -- a binarized :class:`~chipforge.sim.graph.Graph` (``LINEAR`` with +-1
  weights, ``BATCHNORM`` + ``SIGN`` between them) becomes :class:`BinaryLayer` s whose
  batch norm is folded into a threshold, i.e. an offset current (:func:`binary_layers`);
  :func:`run_superbnn` runs the data set on the array and reports accuracy, latency and
  energy per inference.

The paper's internal values are not available (``reference/aqfp-and-pim-adc.md`` part
A): the attenuation law, the gray-zone width, the current scale, the SC module and the
bitstream length are parameters with documented placeholder defaults. See
:data:`SUPERBNN` for what each default is based on.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.sc_config import ScAccumulation, ScAccumulatorConfig
from chipforge.sim.graph import Graph, Node, Op

__all__ = [
    "SUPERBNN",
    "AqfpConfig",
    "PUBLISHED_RATIOS",
    "BinaryLayer",
    "EnergyEstimate",
    "EnergyReport",
    "LayerCost",
    "Randomness",
    "SuperbnnResult",
    "accumulate",
    "aqfp_forward",
    "binary_layers",
    "cmos_bnn_energy",
    "cost_model",
    "crossbar_partials",
    "energy_comparison",
    "layer_cost",
    "layer_latency_s",
    "reram_bnn_energy",
    "run_superbnn",
    "switching_probability",
    "with_changes",
]

class Randomness(enum.Enum):
    """Where the bitstreams' randomness comes from."""

    THERMAL = "thermal"
    """The AQFP buffers' own thermal noise: independent Bernoulli bits, drawn from a
    seeded numpy generator (counts drawn as binomials: the same distribution as the bits)."""
    LFSR = "lfsr"
    """A digital emulation: each crossbar's probability is quantized to ``sng_bits`` and
    fed to the LFSR SNGs of :mod:`chipforge.sim.ref.sc_accumulator` (bit-exact with the
    ``sc-accumulator`` RTL)."""
    EXPECTED = "expected"
    """No sampling: the L -> infinity limit (counts replaced by their expectations). The
    'deterministic' randomized BNN that longer bitstreams converge to."""


@dataclass(frozen=True, kw_only=True)
class AqfpConfig(ConfigBase):
    """An AQFP stochastic BNN array (all currents in microamperes)."""

    crossbar_size: int = 32
    """N: rows (and columns) of one AQFP crossbar. A layer with fan-in > N is split over
    ``ceil(fan_in / N)`` crossbars whose bitstreams are accumulated."""
    i_unit_ua: float = 1.0
    """Column current per unit of MAC before attenuation. Placeholder [NF]: only the ratio
    ``sigma / (alpha(N) * i_unit)`` (the noise in MAC units) matters for accuracy."""
    attenuation_n0: float = 16.0
    """N0 of the placeholder attenuation curve ``alpha(N) = 1 / (1 + N / N0)`` [I]: the
    paper models attenuation vs crossbar size but its law is not available."""
    attenuation_table: tuple[tuple[int, float], ...] = ()
    """Optional measured ``(N, alpha)`` points (N increasing, alpha in (0, 1]); when given
    they replace the placeholder curve (linear interpolation in N, clamped at the ends)."""
    sigma_ua: float = 1.0
    """Gray-zone width: the noise-equivalent input current sigma of the randomized buffer
    at ``reference_temperature_k``. Placeholder [NF]; calibrate from JoSIM ``.temp 4.2``
    transient sweeps."""
    i_offset_ua: float = 0.0
    """The buffer's intrinsic switching offset I_off (P = 1/2 at I = I_off). The batch-norm
    threshold is a separate, per-column offset current added by the mapping."""
    temperature_k: float = 4.2
    """Operating temperature."""
    reference_temperature_k: float = 4.2
    """Temperature at which ``sigma_ua`` is given."""
    temperature_scaling: bool = True
    """Scale sigma as ``sqrt(temperature_k / reference_temperature_k)`` (equilibrium
    thermal noise, a first-order assumption [I], unverified for AQFP)."""
    bitstream_length: int = 64
    """L: clock cycles (bits per crossbar output) per layer evaluation. Our choice [NF]."""
    accumulation: ScAccumulation = ScAccumulation.COUNT
    """How the K bitstreams of a split layer are combined (counting or majority)."""
    randomness: Randomness = Randomness.THERMAL
    """Source of the bitstreams' randomness (thermal noise, LFSR emulation, or none)."""
    sng_bits: int = 8
    """Probability-code width of the LFSR emulation (``randomness=LFSR`` only)."""
    clock_ghz: float = 5.0
    """AC excitation frequency: one bit per crossbar per cycle [V-2nd: single AQFP gates
    measured at 5 GHz; 2.5 GHz for large circuits]."""
    phases: int = 4
    """Clock phases per cycle; every gate level adds one phase of latency (4-phase: 50 ps
    a phase at 5 GHz) [V-2nd]."""
    jj_switch_energy_zj: float = 1.4
    """Energy per Josephson junction per clock cycle at 4.2 K and 5 GHz (Takeuchi et al.,
    APL 114, 042602, 2019) [V-2nd]."""
    jj_per_cell: int = 2
    """JJs of one binary-weight crossbar cell (a buffer whose output coupling polarity
    stores the weight). Placeholder [I]."""
    jj_per_buffer: int = 2
    """JJs of an AQFP buffer (the randomized column readout) [V-2nd]."""
    jj_per_splitter: int = 4
    """JJs of a 1:2 branch (splitter) cell; inputs fan out over balanced 1:2 trees [V-2nd
    for the cell, I for the tree]."""
    jj_per_maj3: int = 6
    """JJs of a MAJ3 gate (three buffers merged) [I]; a full adder is 3 MAJ3."""
    path_balance_overhead: float = 0.0
    """Extra JJs for path-balancing buffers, as a fraction of the logic JJs. 0: balanced
    trees need none; synthesized AQFP netlists can exceed 9x (>90 % of JJs) [V-2nd]."""
    cryocooler_overhead: float = 400.0
    """Wall-plug watts per watt dissipated at 4 K, reported separately and never folded
    into the chip energy [V-2nd: typically 300-1000 for small 4 K cryocoolers]."""
    jj_per_mm2: float = 4340.0
    """Josephson junctions per mm^2 of chip, for the area estimate: MIT Lincoln
    Laboratory's SFQ5ee ac-powered shift-register chips hold 108,500 JJs on 5 mm x 5 mm
    (Tolpygo et al., flux-trapping study, Applied Superconductivity Conference) [V-2nd];
    an assumed density for AQFP, whose cells (larger transformer loops) are sparser, so
    the area is a lower bound [I]."""

    def __post_init__(self) -> None:
        check_int("crossbar_size", self.crossbar_size, 1, 4096)
        check_float("i_unit_ua", self.i_unit_ua, 0.0, lo_open=True)
        check_float("attenuation_n0", self.attenuation_n0, 0.0, lo_open=True)
        table = tuple(tuple(p) for p in self.attenuation_table)
        object.__setattr__(self, "attenuation_table", table)
        for i, point in enumerate(table):
            if len(point) != 2:
                raise ValueError(f"attenuation_table[{i}] must be an (N, alpha) pair, "
                                 f"not {point!r}")
            check_int(f"attenuation_table[{i}] N", point[0], 1)
            check_float(f"attenuation_table[{i}] alpha", point[1], 0.0, 1.0, lo_open=True)
        if any(b[0] <= a[0] for a, b in zip(table, table[1:], strict=False)):
            raise ValueError(f"attenuation_table N values must increase, not {table!r}")
        check_float("sigma_ua", self.sigma_ua, 0.0, lo_open=True)
        check_float("i_offset_ua", self.i_offset_ua, -1e6, 1e6)
        check_float("temperature_k", self.temperature_k, 0.0, lo_open=True)
        check_float("reference_temperature_k", self.reference_temperature_k, 0.0,
                    lo_open=True)
        check_int("bitstream_length", self.bitstream_length, 1, 1 << 16)
        check_int("sng_bits", self.sng_bits, 3, 16)
        check_float("clock_ghz", self.clock_ghz, 0.0, lo_open=True)
        check_int("phases", self.phases, 1, 16)
        check_float("jj_switch_energy_zj", self.jj_switch_energy_zj, 0.0, lo_open=True)
        for name in ("jj_per_cell", "jj_per_buffer", "jj_per_splitter", "jj_per_maj3"):
            check_int(name, getattr(self, name), 0, 1000)
        check_float("path_balance_overhead", self.path_balance_overhead, 0.0)
        check_float("cryocooler_overhead", self.cryocooler_overhead, 0.0)
        check_float("jj_per_mm2", self.jj_per_mm2, 0.0, lo_open=True)
        if not isinstance(self.temperature_scaling, bool):
            raise ValueError(f"temperature_scaling must be a bool, not "
                             f"{self.temperature_scaling!r}")
        for name, kind in (("accumulation", ScAccumulation), ("randomness", Randomness)):
            if not isinstance(getattr(self, name), kind):
                choices = ", ".join(e.name for e in kind)
                raise ValueError(f"{name} must be a {kind.__name__} ({choices}), "
                                 f"not {getattr(self, name)!r}")

    # -- device and circuit laws -------------------------------------------------------
    def attenuation(self, n: int | None = None) -> float:
        """alpha(N) of an N-row crossbar (default: this config's ``crossbar_size``)."""
        n = self.crossbar_size if n is None else n
        if self.attenuation_table:
            ns, alphas = zip(*self.attenuation_table, strict=True)
            return float(np.interp(n, ns, alphas))
        return 1.0 / (1.0 + n / self.attenuation_n0)

    @property
    def sigma_at_temperature_ua(self) -> float:
        """Gray-zone sigma at ``temperature_k``."""
        if not self.temperature_scaling:
            return self.sigma_ua
        return self.sigma_ua * math.sqrt(self.temperature_k / self.reference_temperature_k)

    @property
    def gray_zone_ua(self) -> float:
        """Width of the input-current band where 1 % < P(1) < 99 %: ``2 * 2.326 * sigma``."""
        return 2 * 2.3263478740408408 * self.sigma_at_temperature_ua

    @property
    def noise_mac(self) -> float:
        """Gray-zone sigma in MAC units: ``sigma / (alpha(N) * I_unit)``. Larger crossbars
        attenuate more, so the same current noise costs more MAC units."""
        return self.sigma_at_temperature_ua / (self.attenuation() * self.i_unit_ua)

    @property
    def phase_s(self) -> float:
        return 1.0 / (self.clock_ghz * 1e9 * self.phases)

    @property
    def cycle_s(self) -> float:
        return 1.0 / (self.clock_ghz * 1e9)

    def sc_config(self, streams: int, seed: int = 1) -> ScAccumulatorConfig:
        """The digital SC accumulator that emulates a layer split over ``streams``."""
        return ScAccumulatorConfig(streams=streams, code_bits=self.sng_bits,
                                   length=self.bitstream_length,
                                   accumulation=self.accumulation, seed=seed)


# SupeRBNN (Li et al., MICRO'23; arXiv 2309.12212). Only the abstract is available, so none
# of these values is confirmed from the paper: the clock, junction energy and cell sizes are
# AQFP-technology figures from the literature the paper builds on, the rest placeholders:
# - clock 5 GHz, 4 phases (50 ps/phase): AQFP 4-phase tutorial (Takeuchi 2022) via the
#   AQFP design textbook; SuperSIM's example config uses freq 5, phase 4 [V-2nd / V];
# - 1.4 zJ per JJ at 4.2 K: Takeuchi et al., APL 114, 042602 (2019) [V-2nd];
# - buffer 2 JJs, branch 4 JJs: AQFP design textbook [V-2nd]; cell 2 JJs, MAJ3 6 JJs [I];
# - cryocooler 400 W/W: inside the textbook's 300-1000 range for small 4 K coolers [V-2nd];
# - alpha(N) = 1/(1 + N/16), sigma = 1 uA, I_unit = 1 uA, N = 32, L = 64, counting: our
#   placeholders [NF], chosen so that the digits BNN shows the paper's qualitative
#   trade-off (larger N, more attenuation, more randomness).
SUPERBNN = AqfpConfig()


# -- device -------------------------------------------------------------------------------
def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (scipy is installed with scikit-learn; numpy has no erf)."""
    from scipy.special import ndtr

    return ndtr(np.asarray(z, dtype=np.float64))


def switching_probability(current_ua: np.ndarray, cfg: AqfpConfig) -> np.ndarray:
    """``P(out = 1) = Phi((I - I_off) / sigma(T))`` of the randomized buffer."""
    return _phi((np.asarray(current_ua, dtype=np.float64) - cfg.i_offset_ua)
                / cfg.sigma_at_temperature_ua)


# -- circuit ------------------------------------------------------------------------------
def crossbar_partials(x_pm: np.ndarray, weights: np.ndarray, n: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Split a binary product over crossbars of ``n`` rows.

    ``x_pm`` (B, fan_in) and ``weights`` (fan_in, out) in {-1, +1}. Returns the partial
    MACs (B, out, K) int64 and the rows each crossbar uses (K,); unused rows of the last
    crossbar carry no current.
    """
    batch, fan_in = x_pm.shape
    k = -(-fan_in // n)
    pad = k * n - fan_in
    # float32 BLAS is exact here: every partial sum is an integer of magnitude <= n.
    xs = np.pad(x_pm.astype(np.float32), ((0, 0), (0, pad))).reshape(batch, k, n)
    ws = np.pad(weights.astype(np.float32), ((0, pad), (0, 0))).reshape(k, n, -1)
    partial = np.matmul(xs.transpose(1, 0, 2), ws).transpose(1, 2, 0)      # (B, out, K)
    rows = np.full(k, n, dtype=np.int64)
    rows[-1] = n - pad
    return np.rint(partial).astype(np.int64), rows


def column_currents_ua(partials: np.ndarray, threshold: np.ndarray, rows: np.ndarray,
                       fan_in: int, cfg: AqfpConfig) -> np.ndarray:
    """Column currents (B, out, K): ``alpha(N) I_unit (MAC_k - theta * rows_k / fan_in)``.

    The threshold (folded batch norm) is an offset current shared out over the K
    crossbars in proportion to the rows they use [I: the paper's current formulation is
    not available].
    """
    share = threshold[None, :, None] * (rows / fan_in)[None, None, :]
    return cfg.attenuation() * cfg.i_unit_ua * (partials - share)


def _majority_probability(p: np.ndarray) -> np.ndarray:
    """P(2 * sum_k b_k >= K) for independent b_k ~ Bernoulli(p[..., k]) (Poisson
    binomial tail), by dynamic programming over the K crossbars, vectorized over the rest."""
    k = p.shape[-1]
    dist = np.zeros(p.shape[:-1] + (k + 1,))
    dist[..., 0] = 1.0
    for j in range(k):          # K crossbars (a handful), not elements
        pj = p[..., j:j + 1]
        shifted = np.concatenate([np.zeros_like(dist[..., :1]), dist[..., :-1]], axis=-1)
        dist = dist * (1 - pj) + shifted * pj
    need = -(-k // 2)           # 2 * s >= K
    return dist[..., need:].sum(axis=-1)


def accumulate(p: np.ndarray, cfg: AqfpConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SC accumulation of crossbar switching probabilities ``p`` (B, out, K).

    Returns (counts, votes): counts (B, out) as float (integers when sampled; the
    expectation for ``Randomness.EXPECTED``) and the number of votes they range over
    (``K * L`` for COUNT, ``L`` for MAJORITY). The sign is ``2 * count >= votes``.
    """
    length = cfg.bitstream_length
    k = p.shape[-1]
    majority = cfg.accumulation is ScAccumulation.MAJORITY
    votes = length if majority else k * length
    match cfg.randomness:
        case Randomness.EXPECTED:
            q = _majority_probability(p) if majority else p.mean(axis=-1)
            counts = q * votes
        case Randomness.THERMAL:
            if majority:
                counts = rng.binomial(length, _majority_probability(p)).astype(np.float64)
            else:
                counts = rng.binomial(length, p).sum(axis=-1).astype(np.float64)
        case Randomness.LFSR:
            from chipforge.sim.ref.sc_accumulator import sc_accumulate

            sc = cfg.sc_config(streams=k, seed=int(rng.integers(0, 2**32)))
            codes = np.rint(p * sc.code_max).astype(np.int64).reshape(-1, k)
            counts = sc_accumulate(codes, sc).count.reshape(p.shape[:-1])
            counts = counts.astype(np.float64)
    return counts, votes


def sample_bitstreams(p: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Explicit thermal bitstreams (B, out, K, L) of uint8 (for tests and plots; the
    simulator draws their counts directly)."""
    return (rng.random(p.shape + (length,)) < p[..., None]).astype(np.uint8)


# -- mapping ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BinaryLayer:
    """One binary layer on the AQFP array."""

    name: str
    weights: np.ndarray
    """(fan_in, out) int8 in {-1, +1} (columns negated where the batch norm's gamma < 0)."""
    threshold: np.ndarray
    """(out,) float: the deterministic output is +1 iff ``MAC >= threshold``."""
    is_output: bool
    """The last layer: its counts are the class scores (no sign)."""

    @property
    def fan_in(self) -> int:
        return self.weights.shape[0]

    @property
    def fan_out(self) -> int:
        return self.weights.shape[1]


def _bn_threshold(bn: Node, bias: np.ndarray,
                  scale: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``gamma (scale MAC + bias - mean) / s + beta >= 0`` into ``flip * MAC >= theta``
    (``scale > 0``: the weights' magnitude per output)."""
    p = bn.params
    s = np.sqrt(p["var"].astype(np.float64) + float(bn.attrs.get("eps", 1e-5)))
    gamma, beta = p["gamma"].astype(np.float64), p["beta"].astype(np.float64)
    # gamma (k MAC + b - mean) / s = (gamma k) (MAC + b / k - mean / k) / s
    gamma = gamma * scale
    bias = bias / scale
    p = dict(p, mean=p["mean"] / scale)
    safe = np.where(gamma == 0, 1.0, gamma)
    theta = p["mean"] - bias - beta * s / safe
    flip = np.where(gamma < 0, -1, 1)
    theta = np.where(gamma < 0, -theta, theta)
    # gamma == 0: constant output sign(beta) -> an unreachable threshold.
    theta = np.where(gamma == 0, np.where(beta >= 0, -np.inf, np.inf), theta)
    return theta, flip


def _row_scales(w: np.ndarray) -> np.ndarray | None:
    """Per-row magnitude ``k`` of a weight matrix (out, in) whose every row is ``k_j``
    times a +-1 vector (a binary layer with its batch norm folded into the weights, as
    importers do), or None."""
    k = np.abs(w[:, :1]).astype(np.float64)
    if np.any(k == 0) or not np.allclose(np.abs(w), k, rtol=1e-5, atol=0.0):
        return None
    return k[:, 0]


def binary_layers(graph: Graph) -> tuple[Graph, list[BinaryLayer]]:
    """Split a binarized graph into its input encoder and its binary layers.

    The encoder is every node before the first ``LINEAR`` (run on the host by the numpy
    executor) and must end with ``SIGN``. Then each hidden layer is ``LINEAR`` -> ``SIGN``
    with an optional ``BATCHNORM`` between them; its weights are +-1, or (a batch norm an
    importer folded into the layer: ONNX files, ``chipforge.from_torch``) each output row
    is ``k_j`` times +-1. Either way the batch norm and bias become a per-column threshold
    (``flip * MAC >= theta``). The last layer is a ``LINEAR`` whose outputs are the class
    scores: +-1 weights, or one common scale for all rows (which leaves the argmax as it
    is). Raises ``ValueError`` naming the first node that does not fit.
    """
    nodes = graph.nodes
    first = next((i for i, n in enumerate(nodes) if n.op is Op.LINEAR), None)
    weighted = [n for n in (nodes if first is None else nodes[:first]) if n.weighted]
    if weighted:   # the encoder runs on the host: weighted layers there would not be mapped
        raise ValueError(f"graph {graph.name!r}: node {weighted[0].name!r} "
                         f"({weighted[0].op.value}) comes before the first linear layer; the "
                         "AQFP array maps binary linear layers only (binarized convolutions "
                         "are not supported)")
    if first is None or first == 0 or nodes[first - 1].op is not Op.SIGN:
        raise ValueError(f"graph {graph.name!r}: the AQFP array needs binary inputs: an "
                         "encoder ending in SIGN (sign activations), then LINEAR layers")
    encoder = Graph(f"{graph.name}-encoder", graph.input_shape,
                    [n.copy() for n in nodes[:first]])
    layers: list[BinaryLayer] = []
    i = first
    while i < len(nodes):
        lin = nodes[i]
        if lin.op is not Op.LINEAR:
            raise ValueError(f"graph {graph.name!r}: node {lin.name!r} ({lin.op.value}) "
                             "where the AQFP mapping expects LINEAR")
        w = np.asarray(lin.params["weight"], dtype=np.float64)
        scale = _row_scales(w)
        if scale is None:
            raise ValueError(f"graph {graph.name!r}: linear {lin.name!r} has weights that "
                             "are not +-1 (nor +-1 times one scale per output, a folded "
                             "batch norm); binarize it first")
        bias = lin.params.get("bias", np.zeros(w.shape[0])).astype(np.float64)
        weights = np.sign(w).T.astype(np.int8)
        if i + 1 == len(nodes):
            if not np.allclose(scale, scale[0], rtol=1e-5):
                raise ValueError(f"graph {graph.name!r}: output linear {lin.name!r} scales "
                                 "its rows differently (a folded batch norm); the AQFP "
                                 "array needs +-1 weights or one common scale there")
            layers.append(BinaryLayer(lin.name, weights, -bias / scale, is_output=True))
            break
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if nxt is not None and nxt.op is Op.BATCHNORM:
            after = 2
            theta, flip = _bn_threshold(nxt, bias, scale)
        elif nxt is not None and nxt.op is Op.SIGN:
            after = 1       # sign(k MAC + b) = sign(MAC + b / k): threshold -b / k
            theta, flip = -bias / scale, np.ones(len(bias), dtype=np.int64)
        else:
            found = f"{nxt.name!r} ({nxt.op.value})" if nxt else "the end of the graph"
            raise ValueError(f"graph {graph.name!r}: after linear {lin.name!r} the AQFP "
                             f"mapping expects SIGN (or BATCHNORM then SIGN), found {found}")
        sign = nodes[i + after] if i + after < len(nodes) else None
        if sign is None or sign.op is not Op.SIGN:
            found = f"{sign.name!r} ({sign.op.value})" if sign else "the end of the graph"
            raise ValueError(f"graph {graph.name!r}: after linear {lin.name!r} the AQFP "
                             f"mapping expects BATCHNORM then SIGN, found {found}")
        layers.append(BinaryLayer(lin.name, (weights * flip[None, :]).astype(np.int8),
                                  theta, is_output=False))
        i += after + 1
    if graph.output_name != nodes[-1].name:
        raise ValueError(f"graph {graph.name!r}: the output must be the last node")
    return encoder, layers


def aqfp_forward(x_pm: np.ndarray, layers: list[BinaryLayer], cfg: AqfpConfig,
                 rng: np.random.Generator) -> np.ndarray:
    """Run binary inputs (B, fan_in) in {-1, +1} through the layers; return class scores
    (B, classes): the output layer's normalized counts ``2 * count / votes - 1``."""
    h = x_pm
    for layer in layers:
        partials, rows = crossbar_partials(h, layer.weights, cfg.crossbar_size)
        current = column_currents_ua(partials, layer.threshold, rows, layer.fan_in, cfg)
        p = switching_probability(current, cfg)
        counts, votes = accumulate(p, cfg, rng)
        if layer.is_output:
            return 2.0 * counts / votes - 1.0
        h = np.where(2 * counts >= votes, 1, -1).astype(np.int8)
    raise ValueError("the last layer must be the output layer")


# -- cost: junctions, energy, latency -----------------------------------------------------
@dataclass(frozen=True)
class LayerCost:
    """Physical mapping and cost of one layer."""

    name: str
    crossbars: int
    streams: int
    """K: crossbars a column's fan-in is split over."""
    jj: dict[str, int]
    """Josephson junctions per block: cells, splitters, readout buffers, SC accumulators,
    path balancing."""
    depth_phases: int
    """Gate levels from the layer's inputs to its SC output register."""

    @property
    def jj_total(self) -> int:
        return sum(self.jj.values())


def _full_adders_for_popcount(k: int) -> int:
    return max(k - 1, 0)


def layer_cost(fan_in: int, fan_out: int, cfg: AqfpConfig, name: str = "layer") -> LayerCost:
    """Junction counts and logic depth of a ``fan_in x fan_out`` layer on N x N crossbars.

    Assumptions [I]: every N x N crossbar is fully built (unused cells still clocked);
    each crossbar row fans out to N cells through a balanced tree of N - 1 1:2 splitters;
    one randomized buffer per crossbar column; per output, COUNT uses a popcount of K bits
    (K - 1 full adders) and an accumulator of ``count_bits`` full adders whose one-cycle
    feedback loop holds 4 buffers a bit, MAJORITY a tree of ``ceil((K - 1) / 2)`` MAJ3 and
    an L-counter; a comparator of ``count_bits`` MAJ3 gives the sign. A full adder is
    3 MAJ3.
    """
    n = cfg.crossbar_size
    k = -(-fan_in // n)
    col_tiles = -(-fan_out // n)
    crossbars = k * col_tiles
    length = cfg.bitstream_length
    fa_jj = 3 * cfg.jj_per_maj3
    if cfg.accumulation is ScAccumulation.COUNT:
        count_bits = (k * length).bit_length()
        combine = _full_adders_for_popcount(k) * fa_jj
        combine_depth = 2 * max(math.ceil(math.log2(k)), 0) if k > 1 else 0
    else:
        count_bits = length.bit_length()
        combine = math.ceil((k - 1) / 2) * cfg.jj_per_maj3
        combine_depth = max(math.ceil(math.log(k, 3)), 0) if k > 1 else 0
    counter = count_bits * (fa_jj + 4 * cfg.jj_per_buffer)
    compare = count_bits * cfg.jj_per_maj3
    jj = {
        "cells": crossbars * n * n * cfg.jj_per_cell,
        "splitters": crossbars * n * (n - 1) * cfg.jj_per_splitter,
        "readout_buffers": crossbars * n * cfg.jj_per_buffer,
        "sc_accumulators": fan_out * (combine + counter + compare),
    }
    jj["path_balancing"] = int(round(cfg.path_balance_overhead * sum(jj.values())))
    depth = (max(math.ceil(math.log2(n)), 0) + 1 + 1 + combine_depth + 2
             + max(math.ceil(math.log2(count_bits)), 0) + 1)
    return LayerCost(name, crossbars, k, jj, depth)


def layer_latency_s(cost: LayerCost, cfg: AqfpConfig) -> float:
    """Input to sign of one layer: its logic depth in phases plus L clock cycles of
    bitstream (the next layer needs the whole count before it can start)."""
    return cost.depth_phases * cfg.phase_s + cfg.bitstream_length * cfg.cycle_s


@dataclass(frozen=True)
class EnergyReport:
    """Energy per inference; the cryocooler is a separate line, never folded in."""

    chip_j: float
    """Dissipated in the 4.2 K array: every junction of every layer switches once per clock
    cycle for L cycles per inference (AQFP is AC-powered: idle gates dissipate too)."""
    cryocooler_overhead: float
    """Wall-plug watts per watt at 4 K (from the config)."""
    by_block_j: dict[str, float] = field(default_factory=dict)

    @property
    def wall_j(self) -> float:
        """Chip energy including the cryocooler: ``chip_j * (1 + cryocooler_overhead)``."""
        return self.chip_j * (1.0 + self.cryocooler_overhead)


def energy_per_inference(costs: list[LayerCost], cfg: AqfpConfig) -> EnergyReport:
    per_jj = cfg.jj_switch_energy_zj * 1e-21 * cfg.bitstream_length
    blocks: dict[str, float] = {}
    for c in costs:
        for block, count in c.jj.items():
            blocks[block] = blocks.get(block, 0.0) + count * per_jj
    return EnergyReport(chip_j=sum(blocks.values()), cryocooler_overhead=cfg.cryocooler_overhead,
                        by_block_j=blocks)


# -- the simulate runner ------------------------------------------------------------------
@dataclass(frozen=True)
class SuperbnnResult:
    """What ``chipforge simulate --accelerator superbnn`` reports."""

    accuracy: float
    """Top-1 accuracy on the array (argmax of the output counts; ties to the lowest class)."""
    accuracy_ideal: float
    """The same graph on the numpy executor: the deterministic BNN (sign of the MAC)."""
    latency_s: float
    """One inference, input to class scores: sum of the layers' latencies."""
    throughput_per_s: float
    """Inferences per second with the layers pipelined (one every L cycles)."""
    energy: EnergyReport
    jj_total: int
    layers: list[LayerCost]
    config: dict[str, Any]
    seed: int
    samples: int
    agreement: float = float("nan")
    """Fraction of samples whose array prediction equals the deterministic BNN's."""

    @property
    def energy_chip_j(self) -> float:
        return self.energy.chip_j

    @property
    def energy_wall_j(self) -> float:
        return self.energy.wall_j

    def summary(self) -> str:
        lines = [
            f"SupeRBNN AQFP array: N={self.config['crossbar_size']}, "
            f"L={self.config['bitstream_length']}, {self.config['accumulation']}, "
            f"randomness {self.config['randomness']}, seed {self.seed}, "
            f"{self.samples} test samples",
            f"  accuracy {self.accuracy:.4f} (deterministic BNN {self.accuracy_ideal:.4f})",
            f"  latency {self.latency_s * 1e9:.3f} ns, throughput "
            f"{self.throughput_per_s:.3e} inferences/s",
            f"  energy per inference: {self.energy.chip_j:.3e} J at 4.2 K "
            f"({self.jj_total} JJs); with cryocooler x{self.energy.cryocooler_overhead:g}: "
            f"{self.energy.wall_j:.3e} J (reported separately)",
        ]
        for c in self.layers:
            lines.append(f"  {c.name}: {c.crossbars} crossbars, K={c.streams}, "
                         f"{c.jj_total} JJs, depth {c.depth_phases} phases")
        return "\n".join(lines)


def _dataset_arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return np.asarray(data.x_test), np.asarray(data.y_test)
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise ValueError("data must be a chipforge.zoo.data.Dataset or an (x, y) tuple, "
                     f"not {type(data).__name__}")


def cost_model(layers: list[BinaryLayer], cfg: AqfpConfig) -> tuple[list[LayerCost], float,
                                                                      float, EnergyReport]:
    """(layer costs, latency s, throughput 1/s, energy) of a mapped network."""
    costs = [layer_cost(l.fan_in, l.fan_out, cfg, l.name) for l in layers]
    latency = sum(layer_latency_s(c, cfg) for c in costs)
    throughput = 1.0 / (cfg.bitstream_length * cfg.cycle_s)
    return costs, latency, throughput, energy_per_inference(costs, cfg)


def run_superbnn(graph: Graph, data: Any, cfg: AqfpConfig = SUPERBNN,
                 seed: int = 0) -> SuperbnnResult:
    """Run a binarized graph on the AQFP array: accuracy, latency, energy per inference.

    ``data`` is a :class:`chipforge.zoo.data.Dataset` (its test split is used) or an
    ``(x, y)`` tuple. Same seed, same result.
    """
    from chipforge.sim.executor import run_graph

    if not isinstance(cfg, AqfpConfig):
        raise ValueError(f"cfg must be an AqfpConfig, not {type(cfg).__name__}")
    encoder, layers = binary_layers(graph)
    x, y = _dataset_arrays(data)
    if x.shape[1:] != graph.input_shape:
        raise ValueError(f"data has samples of shape {x.shape[1:]}; graph {graph.name!r} "
                         f"expects {graph.input_shape}")
    x_pm = run_graph(encoder, x, quantized=False).reshape(len(x), -1).astype(np.int8)
    rng = np.random.default_rng(seed)
    scores = aqfp_forward(x_pm, layers, cfg, rng)
    ideal = run_graph(graph, x, quantized=False)
    costs, latency, throughput, energy = cost_model(layers, cfg)
    return SuperbnnResult(
        accuracy=float((scores.argmax(axis=1) == y).mean()),
        accuracy_ideal=float((ideal.argmax(axis=1) == y).mean()),
        latency_s=latency, throughput_per_s=throughput, energy=energy,
        jj_total=sum(c.jj_total for c in costs), layers=costs,
        config=cfg.to_dict(), seed=seed, samples=len(x),
        agreement=float((scores.argmax(axis=1) == ideal.argmax(axis=1)).mean()))


def with_changes(cfg: AqfpConfig, **changes: Any) -> AqfpConfig:
    """``dataclasses.replace`` that also accepts enum values as strings."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for name, value in list(changes.items()):
        if name in ("accumulation", "randomness") and isinstance(value, str):
            kind = ScAccumulation if name == "accumulation" else Randomness
            changes[name] = kind(value)
        elif name not in fields:
            raise ValueError(f"AqfpConfig has no field {name!r}")
    return dataclasses.replace(cfg, **changes)


# -- energy baselines ---------------------------------------------------------------------
# ISAAC per-action energies at 32 nm (reference/papers.md §6.2: Accelergy's derivation from
# ISAAC Table I, not ISAAC's own numbers), and ISAAC Table I's array power and read cycle.
ISAAC_ADC8_PJ = 1.667          # one 8-bit ADC conversion (16 mW / 9.6 GS/s)
ISAAC_DAC1_PJ = 0.417          # one 1-bit DAC activation
ISAAC_ARRAY_READ_PJ = 2.4e-3 / 8 * 100e-9 * 1e12   # 2.4 mW per 8 arrays x 100 ns = 30 pJ
ISAAC_SHIFT_ADD_PJ = 0.021     # one shift-and-add
ISAAC_EDRAM_256B_PJ = 20.45    # one 256-bit eDRAM access
ISAAC_ROWS = 128


@dataclass(frozen=True)
class EnergyEstimate:
    """A baseline's energy per inference, with every assumption spelled out."""

    name: str
    energy_j: float
    breakdown_j: dict[str, float]
    assumptions: tuple[str, ...]


def reram_bnn_energy(layers: list[BinaryLayer]) -> EnergyEstimate:
    """A ReRAM BNN on ISAAC-style 128 x 128 crossbars, from ISAAC per-action energies."""
    reads = dacs = adcs = adds = edram = 0
    for layer in layers:
        row_tiles = -(-layer.fan_in // ISAAC_ROWS)
        col_tiles = -(-2 * layer.fan_out // ISAAC_ROWS)
        reads += row_tiles * col_tiles
        dacs += row_tiles * col_tiles * min(layer.fan_in, ISAAC_ROWS)
        adcs += row_tiles * 2 * layer.fan_out
        adds += row_tiles * layer.fan_out
        edram += -(-layer.fan_in // 256) + -(-layer.fan_out // 256)
    parts = {
        "crossbar_reads": reads * ISAAC_ARRAY_READ_PJ * 1e-12,
        "dacs": dacs * ISAAC_DAC1_PJ * 1e-12,
        "adcs": adcs * ISAAC_ADC8_PJ * 1e-12,
        "shift_add": adds * ISAAC_SHIFT_ADD_PJ * 1e-12,
        "edram_activations": edram * ISAAC_EDRAM_256B_PJ * 1e-12,
    }
    assumptions = (
        "ISAAC-CE style 32 nm ReRAM tiles; per-action energies from Accelergy's ISAAC "
        "derivation (papers.md §6.2); array read = 2.4 mW / 8 arrays x 100 ns = 30 pJ",
        "1-bit cells, each +-1 weight on two columns (w+, w-); 128 x 128 crossbars",
        "+-1 inputs as {0,1} bits in one 1-bit DAC read (MAC = 2 sum(x01 w) - sum(w), the "
        "correction folded into the threshold): one read per crossbar per inference",
        "one 8-bit ADC conversion per used column per read (log2(128) + 1 bits, ISAAC §4)",
        "one shift-and-add per output and row tile; activations read from and written to "
        "eDRAM in 256-bit accesses; weights stationary in the crossbars",
        "excluded: router, HyperTransport, threshold/sign units, leakage, control",
    )
    return EnergyEstimate("ReRAM BNN (ISAAC per-action energies)", sum(parts.values()),
                          parts, assumptions)


def cmos_bnn_energy(layers: list[BinaryLayer]) -> EnergyEstimate:
    """A digital CMOS BNN: XNOR-popcount-accumulate per binary MAC, weights from eDRAM."""
    macs = sum(l.fan_in * l.fan_out for l in layers)
    weight_bits = macs
    act_bits = sum(l.fan_in + l.fan_out for l in layers)
    parts = {
        "macs": macs * ISAAC_SHIFT_ADD_PJ * 1e-12,
        "edram_weights": -(-weight_bits // 256) * ISAAC_EDRAM_256B_PJ * 1e-12,
        "edram_activations": -(-act_bits // 256) * ISAAC_EDRAM_256B_PJ * 1e-12,
    }
    assumptions = (
        "32 nm digital CMOS; one binary MAC (XNOR + popcount + accumulate) costs one ISAAC "
        "shift-and-add action, 0.021 pJ [our placeholder: no CMOS BNN per-op energy is in "
        "the references]",
        "every weight bit read once per inference from eDRAM in 256-bit accesses "
        "(20.45 pJ), batch 1, no on-chip weight reuse; activations likewise",
        "excluded: control, clock tree, leakage, off-chip memory",
    )
    return EnergyEstimate("digital CMOS BNN (32 nm, ISAAC per-action energies)",
                          sum(parts.values()), parts, assumptions)


# Published ratios to set beside ours (reference/aqfp-and-pim-adc.md A.0, A.6).
PUBLISHED_RATIOS = (
    ("SupeRBNN vs ReRAM BNN, energy efficiency (MICRO'23 abstract)", 7.8e4),
    ("AQFP vs 12 nm FinFET CMOS, energy per op (Sci. Rep. 2019 projection)", 9313.0),
    ("AQFP vs 28 nm CMOS, energy per op (Sci. Rep. 2019 projection)", 25242.0),
    ("AQFP vs 40 nm CMOS, energy per op (Sci. Rep. 2019 projection)", 48466.0),
    ("AQFP SC framework vs CMOS, potential (Cai et al. ISCA'19 abstract)", 1e4),
)


def energy_comparison(layers: list[BinaryLayer], cfg: AqfpConfig) -> list[dict[str, Any]]:
    """Rows of (design, energy per inference, AQFP's advantage without and with the
    cryocooler), for the AQFP array and the two baselines."""
    _, _, _, aqfp = cost_model(layers, cfg)
    rows = [{"design": "AQFP SupeRBNN array (4.2 K chip)", "energy_j": aqfp.chip_j,
             "aqfp_advantage": 1.0, "aqfp_advantage_with_cryocooler": 1.0}]
    for est in (reram_bnn_energy(layers), cmos_bnn_energy(layers)):
        rows.append({"design": est.name, "energy_j": est.energy_j,
                     "aqfp_advantage": est.energy_j / aqfp.chip_j,
                     "aqfp_advantage_with_cryocooler": est.energy_j / aqfp.wall_j})
    return rows
