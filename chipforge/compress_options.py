"""Options of the ``chipforge compress`` methods: one frozen keyword-only dataclass each.

Stdlib only, so the command line lists every method's options without importing torch.
Defaults run on the bundled digits data in about a minute on 2 cores (a LeNet-sized CNN);
where a paper gives a parameter, its value is the default or named in the docstring.
Each field is a ``--flag`` of ``chipforge compress`` (underscores become dashes; tuples
are comma lists) and a keyword of :func:`chipforge.compress.compress`.
"""

from __future__ import annotations

import dataclasses

from chipforge.config import ConfigBase, check_float, check_int

__all__ = ["FormsOptions", "IsqedOptions", "PimQatOptions", "SuperbnnOptions"]

FRAGMENT_ORDERS = ("w-major", "h-major", "c-major")
DECOMPOSITIONS = ("bit_serial", "multibit_dac", "differential")
FAULT_MAPPINGS = ("isqed-differential", "isqed-two-column")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_ratios(name: str, text: str) -> None:
    """``""`` or ``"layer=ratio,layer=ratio"`` with ratios in [0, 1)."""
    for item in filter(None, (s.strip() for s in text.split(","))):
        layer, sep, value = item.partition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = -1.0
        if not sep or not layer or not 0.0 <= ratio < 1.0:
            raise ValueError(f"{name} must be 'layer=ratio,...' with ratios in [0, 1), not "
                             f"{text!r}")


def parse_ratios(text: str) -> dict[str, float]:
    return {k.strip(): float(v) for k, _, v in (s.partition("=") for s in text.split(",")
                                                  if s.strip())}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FormsOptions(ConfigBase):
    """FORMS (Yuan et al., ISCA'21): ADMM pruning, ADMM fragment polarization, then 8-bit
    quantization-aware fine-tuning (the paper's order: prune -> polarize -> quantize).

    FORMS gives the fragment sizes (4, 8, 16; 8 its default), the 8-bit weights and the
    sign rule (Eq. 2); it gives neither rho nor the epoch counts, nor the sign-update
    period M (defaults below: ours)."""

    fragment_size: int = 8
    """Rows per fragment m (FORMS: 4, 8 or 16): run the output on ``forms{m}``."""
    fragment_order: str = "w-major"
    """Which weight axis runs along a fragment (w-major, h-major, c-major)."""
    polarize: bool = True
    """False: prune and quantize only (the unpolarized comparison; runs on isaac/isqed)."""
    prune_ratio: float = 0.7
    """Fraction of zero weights in every weighted layer (0: no pruning)."""
    prune_ratios: str = ""
    """Per-layer ratios overriding ``prune_ratio``: ``"conv1=0.4,fc1=0.9"`` (IR node names)."""
    rho: float = 0.01
    """Initial ADMM penalty (grows 1.5x per epoch)."""
    prune_epochs: int = 10
    """ADMM pruning epochs."""
    polarize_epochs: int = 18
    """ADMM polarization epochs (the paper's N; 18 as the zoo's FORMS models)."""
    sign_update_every: int = 3
    """Recompute the fragment signs every M polarization epochs."""
    joint_pruning: bool = True
    """Re-select the zeros jointly with the signs while polarizing (weights may regrow with
    their fragment's sign; the sparsity is kept). False keeps the pruning mask. True with lr
    3e-3 was chosen on the validation split (tools/forms_recipe_selection.py: 9 of 10 compress
    seeds within 1 point, 1.4 validation images lost on average, against 3 of 10 and 3.5 for
    the former False / 1e-3; docs/compress.md)."""
    finetune_epochs: int = 30
    """Masked fine-tuning epochs after each hard projection (on a user CNN, 15 left the
    polarized model 1.4 points below the unpolarized one, 30 0.6 points)."""
    lr: float = 3e-3
    """Adam learning rate of the ADMM and fine-tuning phases (3e-3 chosen on the validation
    split with ``joint_pruning``; it was 1e-3)."""
    weight_bits: int = 8
    """Fixed-point weight bits (FORMS: 8, four 2-bit cells)."""
    act_bits: int = 8
    """Activation bits of each weighted layer's input."""
    qat_epochs: int = 4
    """Quantization-aware fine-tuning epochs."""

    def __post_init__(self) -> None:
        check_int("fragment_size", self.fragment_size, 1, 128)
        _check_choice("fragment_order", self.fragment_order, FRAGMENT_ORDERS)
        for name in ("polarize", "joint_pruning"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, not {getattr(self, name)!r}")
        check_float("prune_ratio", self.prune_ratio, 0.0, 0.99)
        _check_ratios("prune_ratios", self.prune_ratios)
        check_float("rho", self.rho, 0.0, lo_open=True)
        for name in ("prune_epochs", "polarize_epochs", "finetune_epochs", "qat_epochs"):
            check_int(name, getattr(self, name), 0, 10_000)
        check_int("sign_update_every", self.sign_update_every, 1, 10_000)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("weight_bits", self.weight_bits, 2, 16)
        check_int("act_bits", self.act_bits, 2, 16)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IsqedOptions(ConfigBase):
    """ISQED'21 (Yuan et al.) hierarchical progressive pruning (Algorithm 1): layers in
    blocks by size, candidate ratios ascending, a step accepted when the *fault-injected*
    accuracy of the chosen mapping on the validation split stays within ``threshold`` of
    the unpruned model's. The paper gives neither threshold, ratio list nor epochs; its
    fault rates span 0.1-1 % (0.5 % the default here), stuck-off : stuck-on = 1 : 5.2."""

    mapping: str = "isqed-differential"
    """ReRAM preset whose faults the evaluation injects (isqed-differential, -two-column)."""
    fault_rate: float = 0.005
    """Total stuck-at rate of the evaluation (split 1 : 5.2)."""
    fault_trials: int = 3
    """Chip instances (fault maps) averaged per evaluation."""
    threshold: float = 0.01
    """Largest accepted drop of the fault-injected accuracy (0.01 = 1 point)."""
    ratios: tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    """Candidate pruning ratios, ascending."""
    prune_epochs: int = 5
    """ADMM epochs of each pruning step."""
    finetune_epochs: int = 5
    """Masked fine-tuning epochs of each pruning step."""
    lr: float = 1e-3
    weight_bits: int = 8
    act_bits: int = 8
    qat_epochs: int = 4
    """Quantization-aware fine-tuning of the chosen model."""

    def __post_init__(self) -> None:
        _check_choice("mapping", self.mapping, FAULT_MAPPINGS)
        check_float("fault_rate", self.fault_rate, 0.0, 1.0)
        check_int("fault_trials", self.fault_trials, 1, 1000)
        check_float("threshold", self.threshold, 0.0, 1.0)
        if isinstance(self.ratios, str | bytes) or not hasattr(self.ratios, "__iter__"):
            raise ValueError(f"ratios must be a list of numbers (e.g. [0.3, 0.5]), not "
                             f"{self.ratios!r}")
        object.__setattr__(self, "ratios", tuple(self.ratios))
        if not self.ratios or list(self.ratios) != sorted(self.ratios):
            raise ValueError(f"ratios must be a non-empty ascending list, not {self.ratios!r}")
        for r in self.ratios:
            check_float("each candidate ratio", r, 0.0, 0.99)
        for name in ("prune_epochs", "finetune_epochs", "qat_epochs"):
            check_int(name, getattr(self, name), 0, 10_000)
        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("weight_bits", self.weight_bits, 2, 16)
        check_int("act_bits", self.act_bits, 2, 16)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PimQatOptions(ConfigBase):
    """PIM-aware training (PIM-QAT, Jin et al. 2022) for a PIM ADC macro: quantize the model
    to ``weight_bits``/``act_bits`` (QAT with learned clipping), insert batch norms, calibrate
    each layer's activation and weight clips for the macro's ADC, train through the macro's
    decomposition and noisy ADC (straight-through estimator, per-output-channel rescaling
    gains), calibrate the batch norms with the PIM forward pass, fold them.

    The macro is a preset of the PIM family (``chipforge.families.pim``: cap-ram,
    cap-ram-ternary, pim-bit-serial, pim-ideal) with optional overrides; 0 or "" keeps the
    preset's value. The output runs on ``chipforge simulate --accelerator PRESET --set
    KEY=VALUE`` with the same overrides (the provenance says which). The paper's models use
    4-bit weights and activations and b_PIM of 3-7 bits."""

    preset: str = "cap-ram"
    """The PIM macro preset trained for."""
    decomposition: str = ""
    """Override: bit_serial, multibit_dac or differential."""
    rows: int = 0
    """Override: rows summed per ADC conversion."""
    dac_bits: int = 0
    """Override: input bits per cycle (multibit_dac)."""
    b_pim: int = 0
    """Override: ADC resolution b_PIM (``--set adc.bits=B`` in simulate)."""
    weight_bits: int = 4
    act_bits: int = 4
    qat_epochs: int = 6
    """Digital quantization-aware epochs before the PIM-aware ones."""
    epochs: int = 20
    """PIM-aware training epochs (the user CNN of docs/compress.md at b_PIM 7, measured with
    lr 0.02 on the test split before the validation selection: 96.6 % after 12, 96.9 %
    after 20). 40 epochs lost more validation images than 20 (4.1 against 4.0 of 287, mean
    of 3 seeds, with lr 0.02) at 1.4x the time: not chosen."""
    lr: float = 0.01
    """SGD (momentum 0.9, cosine) learning rate of both phases. Chosen on compress's
    validation split (tools/pim_qat_recipe_selection.py, docs/compress.md "How the PIM-QAT
    recipe was chosen"): the user CNN at b_PIM 7 lost 3.3 of 287 validation images against
    its 4-bit digital model with 0.01, 4.0 with 0.02 (the earlier default), 4.9 with 0.05
    (mean of 3 compress seeds)."""
    bn_batches: int = 8
    """Batches of 128 training samples for the BN calibration (16 lost 3.9 validation images
    against 8's 4.0 at lr 0.02, within the noise: the cheaper 8 kept)."""
    calibrate_ranges: bool = True
    """Before PIM-aware training, choose each layer's activation and weight clip that
    minimize its PIM output error on training data
    (:func:`chipforge.mappings.pim_qat.calibrate_ranges`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError(f"preset must be a PIM preset name, not {self.preset!r}")
        if self.decomposition:
            _check_choice("decomposition", self.decomposition, DECOMPOSITIONS)
        check_int("rows", self.rows, 0, 4096)
        check_int("dac_bits", self.dac_bits, 0, 8)
        check_int("b_pim", self.b_pim, 0, 16)
        check_int("weight_bits", self.weight_bits, 2, 8)
        check_int("act_bits", self.act_bits, 2, 8)
        check_int("qat_epochs", self.qat_epochs, 0, 10_000)
        check_int("epochs", self.epochs, 0, 10_000)
        check_float("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_int("bn_batches", self.bn_batches, 1, 10_000)
        if not isinstance(self.calibrate_ranges, bool):
            raise ValueError(f"calibrate_ranges must be a bool, not {self.calibrate_ranges!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SuperbnnOptions(ConfigBase):
    """SupeRBNN (Li et al., MICRO'23) randomized-BNN training with batch-norm matching for
    the AQFP arrays of the ``superbnn`` preset (our reconstruction, see
    :mod:`chipforge.mappings.superbnn`). The user's MLP gives the layer widths; its trained
    weights initialize the latent weights (scaled into the clamp)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.01
    """Adam learning rate (cosine-annealed to 0)."""
    input_threshold: float = 0.5
    """Pixels at or above it encode +1 (inputs in [0, 1])."""
    randomized: bool = True
    """Train through the buffers' randomness (False: a plain BNN)."""
    init_from_model: bool = True
    """Start from the user's weights (else from a uniform random init)."""

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("batch_size", self.batch_size, 1, 1 << 16)
        check_float("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_float("input_threshold", self.input_threshold, 0.0, 1.0)
        for name in ("randomized", "init_from_model"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, not {getattr(self, name)!r}")
