"""Configuration dataclasses shared by the simulators and the hardware generators.

Every config is a frozen dataclass that validates itself in ``__post_init__`` and raises
``ValueError`` naming the field, the rule and the bad value. Choices are enums. Named
presets are module constants, each citing the table it comes from.

This module imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import tomllib
from pathlib import Path
from typing import Any, Self

__all__ = [
    "HEATVIT_EXP",
    "HEATVIT_GELU",
    "HEATVIT_PACKAGER",
    "HEATVIT_SELECTOR_LINEAR",
    "HEATVIT_SIGMOID",
    "ISAAC_CROSSBAR",
    "FORMS_FRAGMENT8",
    "ConfigBase",
    "CrossbarConfig",
    "FormsFragmentConfig",
    "PlanSigmoidConfig",
    "PolyExpConfig",
    "PolyGeluConfig",
    "TokenLinearConfig",
    "TokenPackagerConfig",
    "TokenSelectorConfig",
    "VIT_DIGITS_KEEP60_SELECTOR0",
    "WeightEncoding",
    "check_float",
    "check_int",
    "load_toml",
]


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an ``int`` (not a bool) in ``lo..hi``."""
    bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if (isinstance(value, bool) or not isinstance(value, int) or value < lo
            or (hi is not None and value > hi)):
        raise ValueError(f"{name} must be an integer in {bounds}, not {value!r}")


def check_float(name: str, value: Any, lo: float, hi: float | None = None, *,
                lo_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number in the given range."""
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value)
          and (value > lo if lo_open else value >= lo)
          and (hi is None or value <= hi))
    if not ok:
        left = "(" if lo_open else "["
        right = f"{hi}]" if hi is not None else "inf)"
        raise ValueError(f"{name} must be a finite number in {left}{lo}, {right}, not {value!r}")


class ConfigBase:
    """Mixin for the frozen config dataclasses: dict and TOML round trips, ``replace``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; enums become their values, nested configs become dicts."""
        def plain(value: Any) -> Any:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, ConfigBase):
                return value.to_dict()
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            return value
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a plain dict (as written by :meth:`to_dict` or read from TOML).

        Unknown keys are an error, so a typo in a file never silently keeps a default.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}; "
                             f"known fields: {', '.join(fields)}")
        kwargs = {}
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, value in values.items():
            kind = _resolve_type(cls, hints[name])
            is_enum = isinstance(kind, type) and issubclass(kind, enum.Enum)
            if is_enum and not isinstance(value, kind):
                try:
                    value = kind(value)
                except ValueError:
                    choices = ", ".join(repr(m.value) for m in kind)
                    raise ValueError(f"{cls.__name__}.{name} must be one of {choices}, "
                                     f"not {value!r}") from None
            elif (isinstance(kind, type) and issubclass(kind, ConfigBase)
                  and isinstance(value, dict)):
                value = kind.from_dict(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _resolve_type(cls: type, annotation: Any) -> Any:
    if isinstance(annotation, str):
        import sys
        namespace = vars(sys.modules[cls.__module__])
        try:
            return eval(annotation, namespace)  # noqa: S307 - our own annotations only
        except Exception:
            return None
    return annotation


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; a folder, a missing, unreadable or invalid file is a
    ``ValueError`` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder, not a .toml file")
    if path.exists() and not path.is_file():   # a FIFO would block forever
        raise ValueError(f"config file {path} is not a regular file (a pipe, device or "
                         "socket); give a file")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ValueError(f"config file {path} cannot be read: {e.strerror}") from None


def load_toml(cls: type[ConfigBase], path: str | Path, table: str | None = None, *,
              required: tuple[str, ...] = ()) -> ConfigBase:
    """Load a config of type ``cls`` from a TOML file (optionally from one of its tables).

    An empty file (or table), a missing ``required`` field and a bad value are errors naming
    the file and the field: a truncated or empty file never becomes a default config.
    """
    path = Path(path)
    data = read_toml(path)
    if table is not None:
        if table not in data:
            raise ValueError(f"config file {path} has no [{table}] table; "
                             f"tables: {', '.join(data) or 'none'}")
        data = data[table]
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: [{table}] must be a table")
    if not data:
        raise ValueError(f"config file {path} is empty: it must set the fields of a "
                         f"{cls.__name__} ({', '.join(required) or 'at least one'} required)")
    try:
        config = cls.from_dict(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config file {path}: {e}") from None
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"config file {path}: field(s) {', '.join(missing)} required, "
                         f"missing (it sets {', '.join(data)}); a partial file is refused "
                         "rather than completed with defaults")
    return config


class WeightEncoding(enum.Enum):
    """How a signed weight is stored in non-negative cell conductances."""

    OFFSET = "offset"
    """``w + 2**(weight_bits-1)`` stored unsigned; an extra unit column counts the input
    ones so the digital side subtracts the bias (ISAAC §4.3)."""

    TWO_COLUMN = "two_column"
    """``w = w+ - w-`` on two columns of magnitudes; the digital side subtracts."""

    DIFFERENTIAL = "differential"
    """The fault-tolerant differential mapping (ISQED'21, papers.md §2.2): ``w = w_a - w_b``
    with ``w_a = M + min(w, 0)`` and ``w_b = M - max(w, 0)``, ``M = 2**(slices*cell_bits) - 1``
    (all cells at the top level). A zero weight programs both columns high, where a stuck-on
    fault does no harm. The digital side subtracts, as for ``TWO_COLUMN``."""

    MAGNITUDE = "magnitude"
    """``|w|`` on one column; a digital sign per column (FORMS' per-fragment sign indicator,
    papers.md §1.2) decides whether its result is added or subtracted."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrossbarConfig(ConfigBase):
    """One ReRAM crossbar with its DACs, ADCs and the digital shift-and-add behind them."""

    rows: int = 128
    """Word lines (inputs summed on one bit line)."""
    cols: int = 128
    """Logical weight columns (outputs) the crossbar holds."""
    cell_bits: int = 2
    """Bits stored per cell (conductance levels = 2**cell_bits)."""
    weight_bits: int = 16
    """Bits of a signed weight; it occupies ``slices = ceil(weight_bits / cell_bits)`` cells."""
    input_bits: int = 16
    """Bits of a two's-complement input, fed bit-serially through the DACs."""
    dac_bits: int = 1
    """Bits the DAC applies per cycle. The sign bit always takes a 1-bit cycle of its own
    (it is subtracted); the other bits are grouped into ``dac_bits``-bit slices."""
    adc_bits: int = 8
    """ADC resolution; a column sum above ``2**adc_bits - 1`` saturates."""
    adcs_per_crossbar: int = 1
    """ADCs shared by the columns of one crossbar (time-multiplexed)."""
    adc_rate: float = 1.2e9
    """ADC conversions per second, each ADC."""
    weight_encoding: WeightEncoding = WeightEncoding.OFFSET
    """How signed weights become cell levels."""
    flip_encoding: bool = False
    """ISAAC's column flip (§4.4): a physical column whose cell levels sum to more than half
    the maximum is stored complemented, ``(2**cell_bits - 1) - level``, so its partial sums
    need one ADC bit less; the digital side corrects with the unit column. Requires
    ``weight_encoding`` OFFSET or MAGNITUDE (it adds a unit column to MAGNITUDE)."""
    signed_inputs: bool = True
    """Inputs are two's complement (the MSB cycle subtracts); False for unsigned
    activations, e.g. after a ReLU."""

    def __post_init__(self) -> None:
        check_int("rows", self.rows, 1, 4096)
        check_int("cols", self.cols, 1, 4096)
        check_int("cell_bits", self.cell_bits, 1, 8)
        check_int("weight_bits", self.weight_bits, 1, 32)
        check_int("input_bits", self.input_bits, 1, 32)
        check_int("dac_bits", self.dac_bits, 1, 8)
        check_int("adc_bits", self.adc_bits, 1, 16)
        check_int("adcs_per_crossbar", self.adcs_per_crossbar, 1, self.cols + 1)
        check_float("adc_rate", self.adc_rate, 0.0, lo_open=True)
        if not isinstance(self.weight_encoding, WeightEncoding):
            choices = ", ".join(e.name for e in WeightEncoding)
            raise ValueError(f"weight_encoding must be a WeightEncoding ({choices}), "
                             f"not {self.weight_encoding!r}")
        for name in ("flip_encoding", "signed_inputs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, not {getattr(self, name)!r}")
        if self.flip_encoding and self.weight_encoding not in (WeightEncoding.OFFSET,
                                                               WeightEncoding.MAGNITUDE):
            raise ValueError("flip_encoding needs weight_encoding OFFSET or MAGNITUDE (a unit "
                             f"column), not {self.weight_encoding.name}")
        if self.signed_inputs and self.input_bits < 2:
            raise ValueError(f"input_bits must be >= 2 for signed inputs, not {self.input_bits}")

    @property
    def slices(self) -> int:
        """Cells (physical columns) per weight and polarity."""
        return -(-self.weight_bits // self.cell_bits)

    @property
    def input_slice_widths(self) -> tuple[int, ...]:
        """Bit width of each input cycle, most significant first (the DAC slices).

        Signed inputs start with a 1-bit sign cycle whose contribution is subtracted; the
        remaining bits go in ``dac_bits``-wide slices with any narrower one at the top.
        """
        magnitude = self.input_bits - 1 if self.signed_inputs else self.input_bits
        full, rest = divmod(magnitude, self.dac_bits)
        widths = ([rest] if rest else []) + [self.dac_bits] * full
        return ((1,) if self.signed_inputs else ()) + tuple(widths)

    @property
    def input_cycles(self) -> int:
        """Crossbar reads per input vector (one per DAC slice)."""
        return len(self.input_slice_widths)

    @property
    def physical_cols_per_weight(self) -> int:
        """Cell columns one logical weight column occupies (excluding the shared unit column)."""
        per_polarity = self.slices
        two = self.weight_encoding in (WeightEncoding.TWO_COLUMN, WeightEncoding.DIFFERENTIAL)
        return 2 * per_polarity if two else per_polarity

    @property
    def has_unit_column(self) -> bool:
        """Whether the crossbar carries ISAAC's unit column (all cells at level 1)."""
        return self.weight_encoding is WeightEncoding.OFFSET or self.flip_encoding

    @property
    def adc_max_code(self) -> int:
        return (1 << self.adc_bits) - 1

    @property
    def weight_range(self) -> tuple[int, int]:
        """Inclusive range of a signed weight."""
        return -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1

    @property
    def input_range(self) -> tuple[int, int]:
        """Inclusive range of an input."""
        if self.signed_inputs:
            return -(1 << (self.input_bits - 1)), (1 << (self.input_bits - 1)) - 1
        return 0, (1 << self.input_bits) - 1


# ISAAC-CE (Shafiee et al., ISCA'16), Table I and §4: 128x128 arrays of 2-bit cells,
# 16-bit weights in 8 cells with a 2**15 bias and a unit column, 16-bit inputs through 1-bit
# DACs, and 8 ADCs of 8 bits at 1.2 GSps per IMA of 8 arrays (so 1 per crossbar). A column
# sum needs log2(128) + 1 + 2 - 1 = 9 bits (§4.4); the flip encoding saves one, hence 8.
ISAAC_CROSSBAR = CrossbarConfig(
    rows=128, cols=128, cell_bits=2, weight_bits=16, input_bits=16, dac_bits=1,
    adc_bits=8, adcs_per_crossbar=1, adc_rate=1.2e9,
    weight_encoding=WeightEncoding.OFFSET, flip_encoding=True, signed_inputs=True,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FormsFragmentConfig(ConfigBase):
    """FORMS' fragment datapath (Yuan et al., ISCA'21, §IV-B/C, Figs. 5, 9, 11).

    A fragment is ``fragment_size`` consecutive crossbar rows holding polarized weight
    magnitudes of ``columns`` weight columns (``slices`` cells each); its unsigned inputs
    enter parallel-in/serial-out shift registers and are fed LSB first, 1 bit per cycle,
    until every bit still to shift is zero (zero-skipping: NOR per register, AND across
    the fragment); then the ADC result is added to or subtracted from the column's
    accumulator as the fragment's sign bit says.
    """

    fragment_size: int = 8
    """Rows of a fragment (FORMS studies 4, 8 and 16; 8 is its default)."""
    columns: int = 2
    """Weight columns a fragment job carries (they share the inputs and the skip logic)."""
    input_bits: int = 16
    """Unsigned input (activation) width: at most this many shift cycles."""
    cell_bits: int = 2
    magnitude_bits: int = 8
    """Bits of a weight magnitude; the sign is the fragment's (sign indicator)."""
    adc_bits: int = 5
    """ADC resolution; per-cycle sums above ``2**adc_bits - 1`` clip. 5 bits are exact for
    fragments of 8 with 2-bit cells (8 x 3 = 24); FORMS uses 4-bit ADCs without saying how
    the missing bit is handled (papers.md §1.2), so 4 here clips."""
    max_fragments: int = 16
    """Most fragments accumulated into one result (16 x 8 = one 128-row column); sizes the
    accumulator."""

    def __post_init__(self) -> None:
        check_int("fragment_size", self.fragment_size, 1, 128)
        check_int("columns", self.columns, 1, 64)
        check_int("input_bits", self.input_bits, 1, 32)
        check_int("cell_bits", self.cell_bits, 1, 4)
        check_int("magnitude_bits", self.magnitude_bits, 1, 16)
        check_int("adc_bits", self.adc_bits, 1, 16)
        check_int("max_fragments", self.max_fragments, 1, 1 << 16)

    @property
    def slices(self) -> int:
        """Cells per weight magnitude, least significant first."""
        return -(-self.magnitude_bits // self.cell_bits)

    @property
    def adc_max_code(self) -> int:
        return (1 << self.adc_bits) - 1

    @property
    def exact_adc_bits(self) -> int:
        """ADC bits that never clip: the largest sum is fragment_size * (2**cell_bits - 1)."""
        return (self.fragment_size * ((1 << self.cell_bits) - 1)).bit_length()

    @property
    def fragment_max(self) -> int:
        """Largest value one fragment can produce (codes at full scale every cycle)."""
        scale = sum(1 << (self.cell_bits * s) for s in range(self.slices))
        return self.adc_max_code * ((1 << self.input_bits) - 1) * scale


# FORMS fragment 8 (ISCA'21 §IV): 8 rows, 16-bit activations, 8-bit magnitudes in four 2-bit
# cells. ADC: 5 bits (exact) instead of the paper's 4, see FormsFragmentConfig.adc_bits.
FORMS_FRAGMENT8 = FormsFragmentConfig()
# --------------------------------------------------------------------------------------
# HeatViT (Dong et al., HPCA'23): fixed-point nonlinear units and the token packager.
# See /work/shared/reference/papers.md §5 and docs in chipforge.sim.ref.poly_gelu etc.


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolyGeluConfig(ConfigBase):
    """I-BERT's polynomial GELU, ``x/2 * (1 + L(x/sqrt2))`` with
    ``L(u) = sign(u) * (a * (min(|u|, -b) + b)**2 + 1)``, a = -0.2888, b = -1.769."""

    data_bits: int = 8
    """Signed width of the input and the output."""
    frac_bits: int = 4
    """Fraction bits of input and output (value = code * 2**-frac_bits)."""
    erf_frac_bits: int = 10
    """Fraction bits of the internal erf value L."""
    coeff_frac_bits: int = 16
    """Fraction bits of the constant -a/2 (the erf curvature in input units)."""

    def __post_init__(self) -> None:
        check_int("data_bits", self.data_bits, 2, 16)
        check_int("frac_bits", self.frac_bits, 0, self.data_bits - 1)
        check_int("erf_frac_bits", self.erf_frac_bits, 2, 16)
        check_int("coeff_frac_bits", self.coeff_frac_bits, 4, 24)
        if 2 * self.frac_bits + self.coeff_frac_bits < self.erf_frac_bits:
            raise ValueError("2 * frac_bits + coeff_frac_bits must be >= erf_frac_bits, not "
                             f"{2 * self.frac_bits + self.coeff_frac_bits} < "
                             f"{self.erf_frac_bits}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolyExpConfig(ConfigBase):
    """I-BERT's exponential for softmax: for x <= 0, ``z = floor(-x / ln2)``,
    ``p = x + z ln2`` in (-ln2, 0], ``exp(x) ~ (0.3585 (p + 1.353)**2 + 0.344) >> z``."""

    in_bits: int = 10
    """Signed width of the (max-subtracted, so <= 0) input."""
    frac_bits: int = 5
    """Fraction bits of the input."""
    out_frac_bits: int = 15
    """Fraction bits of the unsigned output (exp(0) = 2**out_frac_bits - a little)."""
    coeff_frac_bits: int = 14
    """Fraction bits of the constant 0.3585."""

    def __post_init__(self) -> None:
        check_int("in_bits", self.in_bits, 2, 16)
        check_int("frac_bits", self.frac_bits, 1, self.in_bits - 1)
        check_int("out_frac_bits", self.out_frac_bits, 2, 24)
        check_int("coeff_frac_bits", self.coeff_frac_bits, 4, 24)
        if 2 * self.frac_bits + self.coeff_frac_bits < self.out_frac_bits:
            raise ValueError("2 * frac_bits + coeff_frac_bits must be >= out_frac_bits, not "
                             f"{2 * self.frac_bits + self.coeff_frac_bits} < "
                             f"{self.out_frac_bits}")

    @property
    def out_bits(self) -> int:
        return self.out_frac_bits + 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanSigmoidConfig(ConfigBase):
    """PLAN piecewise-linear sigmoid (Amin et al. 1997): slopes 1/4, 1/8, 1/32 with breaks
    at |x| = 1, 2.375, 5; ``sigmoid(-x) = 1 - sigmoid(x)``."""

    in_bits: int = 8
    """Signed input width."""
    frac_bits: int = 4
    """Fraction bits of the input (>= 3 so that the break at 2.375 is a code)."""
    out_frac_bits: int = 7
    """Fraction bits of the unsigned output; 1.0 = 2**out_frac_bits (>= 5 for 27/32)."""

    def __post_init__(self) -> None:
        check_int("in_bits", self.in_bits, 4, 16)
        check_int("frac_bits", self.frac_bits, 3, self.in_bits - 1)
        check_int("out_frac_bits", self.out_frac_bits, 5, 16)

    @property
    def out_bits(self) -> int:
        return self.out_frac_bits + 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenPackagerConfig(ConfigBase):
    """HeatViT's keep decision and token packaging over a stream of scored tokens."""

    channels: int = 8
    """Channels per token (the embedding width D; the RTL moves one token per beat)."""
    data_bits: int = 16
    """Signed width of a channel (the residual stream)."""
    score_bits: int = 8
    """Unsigned width of a keep score; score = code * 2**-score_frac_bits."""
    score_frac_bits: int = 7
    """Fraction bits of a score (1.0 = 2**score_frac_bits)."""
    threshold: int = 64
    """Keep iff score code >= threshold (64 = 0.5 with 7 fraction bits)."""
    max_tokens: int = 256
    """Most tokens in one image's frame (sizes the package accumulators)."""

    def __post_init__(self) -> None:
        check_int("channels", self.channels, 1, 1024)
        check_int("data_bits", self.data_bits, 2, 32)
        check_int("score_bits", self.score_bits, 1, 16)
        check_int("score_frac_bits", self.score_frac_bits, 0, self.score_bits)
        check_int("threshold", self.threshold, 0, (1 << self.score_bits) - 1)
        check_int("max_tokens", self.max_tokens, 1, 1 << 16)

    @property
    def weight_bits(self) -> int:
        """Width of the score sum (denominator of Eq. 10)."""
        return self.score_bits + (self.max_tokens - 1).bit_length()

    @property
    def acc_bits(self) -> int:
        """Signed width of a channel's score-weighted sum (numerator of Eq. 10)."""
        return self.data_bits + self.score_bits + (self.max_tokens - 1).bit_length()


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenLinearConfig(ConfigBase):
    """A fixed-point linear layer over a token stream on a row of MACs: one output of one
    token per cycle (``in_features`` MACs per cycle), requantized by a rounding shift."""

    in_features: int = 16
    """Inputs per token (the selector's head_dim)."""
    out_features: int = 8
    """Outputs per token (the selector's hidden width)."""
    data_bits: int = 8
    """Signed width of the inputs and the weights."""
    bias_bits: int = 20
    """Signed width of a bias (in accumulator units)."""
    out_bits: int = 8
    """Signed width of an output after the shift (saturating)."""
    out_shift: int = 6
    """Rounding right shift from the accumulator to the output (round half up)."""

    def __post_init__(self) -> None:
        check_int("in_features", self.in_features, 1, 256)
        check_int("out_features", self.out_features, 1, 256)
        check_int("data_bits", self.data_bits, 2, 16)
        check_int("bias_bits", self.bias_bits, 2, 40)
        check_int("out_bits", self.out_bits, 2, 32)
        check_int("out_shift", self.out_shift, 0, 40)

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: products, their sum and the bias never overflow it."""
        product = 2 * self.data_bits - 1
        return max(product + (self.in_features - 1).bit_length(), self.bias_bits) + 1


# Presets of the HeatViT blocks generated into rtl/. The paper (§5.1 of papers.md) gives
# 8-bit fixed point but not the fraction bits: these are the formats the vit-digits model
# uses (GELU input Q3.4, sigmoid input Q3.4 and Q0.7 scores, softmax input Q4.5); the
# packager preset is a 4-channel slice of the 16-bit residual stream (the full model has 48).
HEATVIT_GELU = PolyGeluConfig()
HEATVIT_EXP = PolyExpConfig()
HEATVIT_SIGMOID = PlanSigmoidConfig()
HEATVIT_PACKAGER = TokenPackagerConfig(channels=4)
# The vit-digits selector's first layer: per head, 16 channels -> 8 hidden.
HEATVIT_SELECTOR_LINEAR = TokenLinearConfig()


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenSelectorConfig(ConfigBase):
    """Sizes and fixed-point formats of one HeatViT token selector top level
    (``chipforge.hw.token_selector``; reference ``chipforge.sim.ref.token_selector``).
    The weights are loaded at run time; the formats (shifts) and the threshold are built in."""

    dim: int = 48
    """Channels per token (the embedding width)."""
    heads: int = 3
    """Heads; each scores ``dim / heads`` channels with the shared MLP."""
    hidden: int = 8
    """Hidden width of the selector MLP."""
    token_bits: int = 8
    """Signed width of a LayerNorm output code (the MLP input)."""
    data_bits: int = 16
    """Signed width of a residual-stream code (what is kept and packaged)."""
    bias_bits: int = 20
    """Signed width of a bias, in accumulator units."""
    fc1_shift: int = 8
    """Rounding right shift from the fc1 accumulator to the GELU input format."""
    gelu_frac_bits: int = 4
    """Fraction bits of the fc1 output / GELU input and output."""
    fc2_shift: int = 7
    """Rounding right shift from the fc2 accumulator to the sigmoid input (Q3.4)."""
    threshold: int = 64
    """Keep iff the Q0.7 score code is >= threshold."""
    max_tokens: int = 32
    """Most tokens of one image at the selector (sizes the buffers and the keep mask)."""
    center: bool = False
    """Score each token relative to the image's mean token: fc1 reads ``h_t - mean(h)``,
    the mean over the image's live tokens (:func:`chipforge.sim.ref.token_selector.
    live_mean`), one ``token_bits + 1``-bit code per channel. The global feature of
    HeatViT's (and DynamicViT's) selector, tied to fc1's weights so that it costs
    subtractors, not multipliers (docs/heatvit.md)."""

    def __post_init__(self) -> None:
        check_int("dim", self.dim, 1, 1024)
        check_int("heads", self.heads, 1, 64)
        if self.dim % self.heads:
            raise ValueError(f"dim must be a multiple of heads, not {self.dim} and {self.heads}")
        check_int("hidden", self.hidden, 1, 256)
        check_int("token_bits", self.token_bits, 2, 16)
        check_int("data_bits", self.data_bits, 2, 24)
        check_int("bias_bits", self.bias_bits, 2, 40)
        check_int("fc1_shift", self.fc1_shift, 0, 40)
        check_int("gelu_frac_bits", self.gelu_frac_bits, 0, 7)
        check_int("fc2_shift", self.fc2_shift, 0, 40)
        check_int("threshold", self.threshold, 0, 255)
        check_int("max_tokens", self.max_tokens, 2, 1024)
        if not isinstance(self.center, bool):
            raise TypeError(f"center must be a bool, not {self.center!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def fc1_in_bits(self) -> int:
        """Signed width of fc1's input: ``token_bits``, one more when centered."""
        return self.token_bits + int(self.center)

    @property
    def fc1(self) -> TokenLinearConfig:
        return TokenLinearConfig(in_features=self.head_dim, out_features=self.hidden,
                                 data_bits=self.fc1_in_bits, bias_bits=self.bias_bits,
                                 out_bits=8, out_shift=self.fc1_shift)

    @property
    def fc2(self) -> TokenLinearConfig:
        return TokenLinearConfig(in_features=self.hidden, out_features=1, data_bits=8,
                                 bias_bits=self.bias_bits, out_bits=HEATVIT_SIGMOID.in_bits,
                                 out_shift=self.fc2_shift)

    @property
    def gelu(self) -> PolyGeluConfig:
        return PolyGeluConfig(data_bits=8, frac_bits=self.gelu_frac_bits)

    @property
    def sigmoid(self) -> PlanSigmoidConfig:
        return HEATVIT_SIGMOID

    @property
    def exp(self) -> PolyExpConfig:
        """The exp unit of the head-weight softmax (the attention softmax's unit)."""
        return HEATVIT_EXP

    @property
    def score_frac_bits(self) -> int:
        return HEATVIT_SIGMOID.out_frac_bits

    @property
    def packager(self) -> TokenPackagerConfig:
        return TokenPackagerConfig(channels=self.dim, data_bits=self.data_bits, score_bits=8,
                                   score_frac_bits=self.score_frac_bits,
                                   threshold=self.threshold, max_tokens=self.max_tokens)


# The first selector of vit-digits-keep60 (formats calibrated on 256 digits training images;
# tests/test_token_selector.py checks that they are still what the model gives).
VIT_DIGITS_KEEP60_SELECTOR0 = TokenSelectorConfig(fc1_shift=8, gelu_frac_bits=4, fc2_shift=7,
                                                  threshold=57)
