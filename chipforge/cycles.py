"""``chipforge cycles --data``: the cycle model on the model and data ``simulate`` runs.

::

    from chipforge.cycles import cycles_on_data
    run = cycles_on_data("model.onnx", "test.npz", ["forms8", "isaac8"], samples=1000)
    run.reports[0].cycles, run.describe()

The model and data go through the same steps as the main job
(:func:`chipforge.mainjob.load_inputs`: the family's ``load_model``, ``load_data`` — data that
does not fit the model is one clear line — and post-training 8-bit quantization of a float
model, calibrated on the first 256 given inputs, or the digits training split for
``digits``), so the zero-skipping statistics come from the user's inputs through the
quantized model. An architecture that is also a ReRAM accelerator preset (``isaac``,
``forms4``, ``forms8``, ``forms16``) is mapped by the ReRAM family and costed by its cycle
model on that placement, exactly as ``chipforge simulate --accelerator NAME`` does (the same
figures for the same ``--samples`` and ``--images`` = simulate's ``--cycle-samples``); any
other (``isaac8``, ``forms<m>``) runs the cycle model's own tiling on the same quantized model
and inputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CycleRun", "cycles_on_data", "describe_model"]

DEFAULT_IMAGES = 100
"""Inputs the cycle model runs on with ``--data`` (simulate's ``--cycle-samples`` default)."""


@dataclasses.dataclass
class CycleRun:
    """The cycle model's reports and what they ran on."""

    reports: list[Any]
    """One :class:`~chipforge.sim.cycle.model.ModelReport` per architecture."""
    data: str
    """Which inputs, in words."""
    model: str
    """Which model (name, bits, quantization), in words."""
    placed: list[bool]
    """Per architecture: mapped by the ReRAM family's placement (as ``simulate``)."""
    notes: list[str]
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        lines = [f"data: {self.data}", f"model: {self.model}"]
        for report, placed in zip(self.reports, self.placed, strict=True):
            how = ("the ReRAM family's placement, as `chipforge simulate --accelerator` "
                   "maps it" if placed else "the cycle model's own tiling")
            lines.append(f"architecture {report.arch.name}: {how}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def describe_model(graph) -> str:
    """A graph's name and bits: what its weighted layers store and take."""
    nodes = graph.weighted_nodes()
    if nodes and all(n.quantized for n in nodes):
        weights = sorted({int(n.attrs["weight_bits"]) for n in nodes})
        acts = sorted({int(n.attrs.get("act_bits", 16)) for n in nodes})
        return (f"{graph.name}, quantized: {'/'.join(map(str, weights))}-bit weights, "
                f"{'/'.join(map(str, acts))}-bit activations")
    return f"{graph.name}, float"


def cycles_on_data(model: Any, data: Any, archs: list[str], *, samples: int | None = None,
                   images: int | None = None, quantize: str = "auto") -> CycleRun:
    """The cycle model of each of ``archs`` on ``model`` and ``data`` as ``simulate``
    loads and quantizes them (see the module doc); ``images`` inputs (default
    :data:`DEFAULT_IMAGES`) of the ``samples`` loaded."""
    from chipforge.families import families, get_accelerator_spec
    from chipforge.families.reram import at_model_widths
    from chipforge.mainjob import load_inputs
    from chipforge.sim.cycle.report import ARCHITECTURES, arch_for, cycle_reports
    from chipforge.stages import StageTimer

    if images is not None and images < 1:
        raise ValueError(f"--images must be >= 1, not {images}")
    for name in archs:         # unknown names fail before any work
        arch_for(name)
    family = families()["reram"]
    timer, notes = StageTimer(), []
    graph, x, _ = load_inputs(family, model, data, samples=samples, quantize=quantize,
                              notes=notes, timer=timer)
    x = x[:images or DEFAULT_IMAGES]
    reports, placed = [], []
    for name in archs:
        preset = name if name in ARCHITECTURES else None
        spec = None
        if preset is not None:
            try:
                spec = get_accelerator_spec(preset)
            except ValueError:
                spec = None
        if spec is not None and spec.family is family:
            try:
                with timer("map"):
                    mapped = family.map(graph, spec.config)
            except ValueError as e:      # e.g. FORMS refuses a model that is not polarized
                notes.append(f"{name}: the ReRAM placement refuses this model ({e}); "
                             "the cycle model's own tiling instead")
                mapped = None
            with timer("cost"):
                cost = None if mapped is None else family.cost(graph, mapped, spec.config, x)
            if cost is not None:
                reports.append(cost.native)
                placed.append(True)
                continue
        # the model's own widths, as the placed presets above take them: every
        # architecture of the comparison runs the same 8-bit (say) work
        with timer("cost"):
            reports.append(cycle_reports(graph, x, [at_model_widths(arch_for(name),
                                                                    graph)])[0])
        placed.append(False)
    label = "digits" if str(data) == "digits" else str(Path(str(data)))
    what = (f"{len(x)} inputs of the digits test split, shaped {tuple(x.shape[1:])}"
            if label == "digits" else f"the first {len(x)} inputs of {label}, shaped "
            f"{tuple(x.shape[1:])}")
    return CycleRun(reports, what + f" (value range {_range(x)})", describe_model(graph),
                    placed, notes, timer.rows())


def _range(x: np.ndarray) -> str:
    return f"{float(np.min(x)):.3g}..{float(np.max(x)):.3g}"
