"""The accelerator interface every family implements, and the plain data it returns.

A family (ReRAM crossbars, the PIM ADC macro, AQFP arrays, the HeatViT FPGA engine, ...)
is a subclass of :class:`AcceleratorFamily` registered with
:func:`chipforge.families.register_family`. It brings

- ``config_type``: its frozen config dataclass (a :class:`chipforge.config.ConfigBase`),
  and ``presets``: preset name -> config (module constants citing their tables);
- ``options``: the convenience options it accepts (``variation``, ``sigma_ua``, ...), each
  a dotted config key or a function ``(config, value) -> config``;
- :meth:`~AcceleratorFamily.map` ``(graph, config) -> Mapping``: placement, tiling and
  per-layer statistics as plain data;
- :meth:`~AcceleratorFamily.run` ``(graph, mapped, config, x, seed=..., progress=...) ->
  RunOutput``: hardware logits next to the ideal ones, batched numpy, one seed one result;
  ``progress`` (optional) is called with the number of samples each streamed chunk of the
  hardware run finished (a family without it is reported done at the end);
- :meth:`~AcceleratorFamily.cost` ``(graph, mapped, config, x) -> CostReport | None``:
  cycles, latency, throughput, energy, area per layer and in total;
- ``rtl_blocks``: the names of its blocks in :data:`chipforge.hw.generate.BLOCKS`.

Everything else (the main job, ``simulate()``, sweeps, reports, the CLI) reaches a family
only through this interface; see ``docs/accelerators.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from chipforge.config import ConfigBase, _resolve_type

__all__ = [
    "AcceleratorFamily",
    "CostReport",
    "FamilyError",
    "LayerCost",
    "Mapping",
    "RunOutput",
    "apply_overrides",
    "config_keys",
    "parse_value",
]


class FamilyError(ValueError):
    """A user's accelerator choice or option is wrong: the message is one line that names
    the input, the family and what it accepts."""


# -- what the interface returns -----------------------------------------------------------

@dataclasses.dataclass
class Mapping:
    """A graph mapped onto a family's hardware: plain data.

    ``layers`` rows are shown in the report's per-layer table (same keys on every row).
    ``detail`` is the family's own object (e.g. a ReRAM ``MappedModel``), reused by
    :meth:`AcceleratorFamily.run` and :meth:`AcceleratorFamily.cost`."""

    family: str
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per-layer statistics (node, shapes, tiles, arrays, cells, utilization, ...)."""
    totals: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Counted over the placement (crossbars, cells, ...), shown with the metrics."""
    detail: Any = None


@dataclasses.dataclass
class RunOutput:
    """What one functional run on the hardware measured."""

    logits: np.ndarray
    """Hardware class scores, (samples, classes)."""
    ideal_logits: np.ndarray
    """The same model on ideal hardware, (samples, classes)."""
    ideal_label: str
    """What "ideal" means for this family (shown next to the ideal accuracy)."""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Measured during the run (ADC reads, saturations, tokens kept, ...)."""
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per-layer rows measured during the run; merged by ``node`` into the mapping's."""
    float_logits: np.ndarray | None = None
    """The float model's scores, where the model has a float view."""
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Optional breakdown of the run's time (:class:`chipforge.stages.StageTimer` rows:
    ``stage``, ``wall_s``, ``cpu_s``), e.g. hardware, ideal and float runs."""
    workloads: Any = None
    """The cost model's layer inputs recorded on the first samples during the ideal run
    (where the family's ``run`` was asked to, ``capture_samples``), for its ``cost``
    (``workloads=``), so the cost model needs no second exact pass; else None."""


@dataclasses.dataclass
class LayerCost:
    """Cost of one layer (None where the family's model does not count it)."""

    name: str
    cycles: float | None = None
    latency_s: float | None = None
    energy_j: float | None = None
    area_mm2: float | None = None
    energy_by_component_j: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CostReport:
    """Cycles, latency, throughput, energy and area of a model on a family's hardware."""

    layers: list[LayerCost]
    cycles: float | None
    """Cycles of one inference (family clock), None where not counted."""
    latency_s: float
    """One inference, input to output."""
    throughput_per_s: float
    """Inferences per second in steady state."""
    energy_j: float | None
    """Energy per inference (None: the family has no energy model)."""
    area_mm2: float | None
    energy_by_component_j: dict[str, float] = dataclasses.field(default_factory=dict)
    basis: str = ""
    """Where the numbers come from (model, tables, what is assumed), shown in the report."""
    samples: int = 0
    """Inputs the cost model ran on (0: data independent)."""
    includes: dict[str, str] = dataclasses.field(default_factory=dict)
    """What each headline number includes (keys ``latency``, ``energy``, ``area``): chip,
    periphery, memory, cooling; what is left out; what is assumed. Printed beside the
    numbers and kept in report.json, so numbers of different families compare fairly."""
    extra: dict[str, float | int | str] = dataclasses.field(default_factory=dict)
    """More headline numbers, named with their unit (``energy_wall_plug_j``,
    ``crossbars_priced_in_area``, ...), printed after latency, energy and area."""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Family-specific numbers (plain data), written to the family's report section."""
    native: Any = None
    """The family's own cost object (e.g. a cycle ``ModelReport``), not serialized."""

    def to_dict(self) -> dict[str, Any]:
        from chipforge.report import plain

        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("native", "details")}
        return plain(data)


# -- configs: presets, files, overrides ---------------------------------------------------

def _field_types(cls: type) -> dict[str, Any]:
    return {f.name: _resolve_type(cls, f.type) for f in dataclasses.fields(cls)}


def _is_config(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind) and issubclass(
        kind, ConfigBase)


def config_keys(config_type: type, prefix: str = "") -> list[str]:
    """Every settable key of a config dataclass; nested configs as ``outer.inner``."""
    keys = []
    for name, kind in _field_types(config_type).items():
        if _is_config(kind):
            keys += config_keys(kind, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (``6``, ``0.1``, ``true``, ``[1, 2]``, ``"x"``), or
    the bare text when it is not a TOML value (``bit_serial``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(kind: Any, value: Any, key: str) -> Any:
    """Turn a value read from the command line or TOML into the field's type."""
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if isinstance(value, kind):
            return value
        for member in kind:
            if str(value).lower() in (str(member.value).lower(), member.name.lower()):
                return member
        choices = ", ".join(str(m.value) for m in kind)
        raise FamilyError(f"{key} must be one of {choices}, not {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)       # a sweep axis of numbers, an integer field
    if kind is bool and isinstance(value, str):
        if value.lower() in ("true", "yes", "on", "1"):
            return True
        if value.lower() in ("false", "no", "off", "0"):
            return False
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def apply_overrides(config: ConfigBase, overrides: MappingABC[str, Any], *,
                    where: str) -> ConfigBase:
    """``config`` with dotted keys changed (``adc.bits=6``); each value is coerced to the
    field's type and the dataclass validates the result. ``where`` names the family and
    accelerator in errors."""
    if not overrides:
        return config
    known = config_keys(type(config))
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    types = _field_types(type(config))
    for key, value in overrides.items():
        if key not in known:
            raise FamilyError(f"unknown key {key!r} for {where}; its keys: {', '.join(known)}")
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = _coerce(types[key], value, key)
    changes = dict(direct)
    for head, sub in nested.items():
        changes[head] = apply_overrides(getattr(config, head), sub, where=where)
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as e:
        raise FamilyError(f"{where}: {e}") from None


def flatten(table: MappingABC[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested TOML table as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of an accelerator file; a folder, a missing, unreadable, invalid or empty
    file is a :class:`FamilyError` naming the file."""
    from chipforge.config import read_toml as read_file

    try:
        data = read_file(path)
    except ValueError as e:
        raise FamilyError(str(e)) from None
    if not data:
        raise FamilyError(f"config file {path} is empty: it must name a preset "
                          "(preset = \"NAME\") or set the fields of an accelerator")
    return data


# -- the interface ------------------------------------------------------------------------

Option = str | Callable[[Any, Any], Any]
"""A convenience option: a dotted config key, or ``(config, value) -> config``."""


class AcceleratorFamily:
    """Base class of an accelerator family; subclass, fill in the class attributes and
    :meth:`map`, :meth:`run` (and :meth:`cost` where there is a cost model), then
    ``register_family(MyFamily())``."""

    name: ClassVar[str] = ""
    """Family name (``reram``, ``pim``, ``aqfp``, ``heatvit``, ...)."""
    description: ClassVar[str] = ""
    config_type: ClassVar[type[ConfigBase]]
    presets: ClassVar[MappingABC[str, ConfigBase]] = {}
    options: ClassVar[MappingABC[str, Option]] = {}
    rtl_blocks: ClassVar[tuple[str, ...]] = ()
    """Names of this family's blocks in :data:`chipforge.hw.generate.BLOCKS`."""
    integer_model: ClassVar[bool] = True
    """The hardware needs integer weights and activations: the main job quantizes a float
    model (post-training, 8 bits) before :meth:`map`. False for families that take the
    model as it is (binarized or fixed-point inside the family)."""
    rtl_loop: ClassVar[bool] = False
    run_options: ClassVar[dict[str, str]] = {}
    """Keyword options of :meth:`run` that are not hardware (memory budget, array device,
    ...) -> what they do; the CLI refuses the ones a family lacks."""
    """``chipforge simulate --rtl`` can run one layer of this family through Verilog."""

    # -- configs --------------------------------------------------------------------------
    def config_name(self, config: ConfigBase) -> str:
        """The name reports show for a config (its ``name`` field, else a preset's name)."""
        name = getattr(config, "name", None)
        if isinstance(name, str) and name:
            return name
        for preset, cfg in self.presets.items():
            if cfg == config:
                return preset
        return f"{self.name}-custom"

    def configure(self, base: ConfigBase, *, overrides: MappingABC[str, Any] | None = None,
                  options: MappingABC[str, Any] | None = None, label: str = "") -> ConfigBase:
        """``base`` with convenience ``options`` then ``overrides`` (dotted keys) applied.

        An option or key this family lacks is a :class:`FamilyError` naming it, the
        accelerator, the family and what it accepts."""
        where = f"accelerator {label or self.config_name(base)} (family {self.name})"
        config = base
        for option, value in (options or {}).items():
            if value is None:
                continue
            action = self.options.get(option)
            if action is None:
                accepted = ", ".join(f"--{o.replace('_', '-')}" for o in self.options) or "none"
                raise FamilyError(
                    f"option --{option.replace('_', '-')} does not apply to {where}; its "
                    f"options: {accepted}; or --set KEY=VALUE with keys: "
                    f"{', '.join(config_keys(self.config_type))}")
            if isinstance(action, str):
                config = apply_overrides(config, {action: value}, where=where)
            else:
                try:
                    config = action(config, value)
                except (TypeError, ValueError) as e:
                    raise FamilyError(f"{where}: --{option.replace('_', '-')} {value!r}: "
                                      f"{e}") from None
        return apply_overrides(config, dict(overrides or {}), where=where)

    def config_from_table(self, table: MappingABC[str, Any], *, source: str) -> ConfigBase:
        """A config from a TOML table: ``preset = NAME`` (optional) then the other keys."""
        table = dict(table)
        preset = table.pop("preset", None)
        if preset is not None and preset not in self.presets:
            raise FamilyError(f"{source}: family {self.name} has no preset {preset!r}; "
                              f"presets: {', '.join(self.presets)}")
        fields = {f.name for f in dataclasses.fields(self.config_type)}
        if preset is None and "name" in fields and "name" not in table:
            # a partial file is refused rather than completed with defaults
            raise FamilyError(f"{source}: field(s) name required, missing (it sets "
                              f"{', '.join(table) or 'nothing'}); or start from a preset: "
                              f"preset = \"{next(iter(self.presets), 'NAME')}\"")
        base = self.presets[preset] if preset is not None else self.config_type()
        return apply_overrides(base, flatten(table),
                               where=f"{source} (family {self.name})")

    # -- inputs ---------------------------------------------------------------------------
    def load_model(self, spec: Any):
        """A :class:`~chipforge.sim.graph.Graph` from a Graph, ONNX / npz file or zoo name."""
        from chipforge.importers.model import load_model

        return load_model(spec)

    def check_run_options(self, options: dict[str, Any]) -> None:
        """Refuse bad :attr:`run_options` values (ValueError naming the option and the rule)
        before any work: the main job calls it before the model loads. Default: none."""

    def load_data(self, data: Any, graph, samples: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Test inputs and labels: ``"digits"``, an ``.npz`` (only ``samples`` of it read),
        an ``(x, y)`` pair or a Dataset (its test split)."""
        from chipforge.families import test_data

        return test_data(graph, data, samples)

    def prepare(self, graph, x_calib: np.ndarray, *, mode: str, calib_label: str,
                notes: list[str]):
        """The graph as this hardware takes it (default: quantize float layers when
        ``integer_model``)."""
        if not self.integer_model:
            return graph
        from chipforge.families import quantize_if_needed

        return quantize_if_needed(graph, x_calib, mode, calib_label, notes)

    # -- the three steps ------------------------------------------------------------------
    def map(self, graph, config: ConfigBase) -> Mapping:
        raise NotImplementedError

    def run(self, graph, mapped: Mapping, config: ConfigBase, x: np.ndarray, *,
            seed: int = 0, progress: Callable[[int], None] | None = None) -> RunOutput:
        """The functional run. A family that streams the batch calls ``progress(n)`` after
        each chunk of ``n`` samples of the hardware run; chunking never changes results."""
        raise NotImplementedError

    def cost(self, graph, mapped: Mapping, config: ConfigBase,
             x: np.ndarray) -> CostReport | None:
        """Cycles, latency, energy, area (None: this family has no cost model)."""
        return None

    def report_section(self, config: ConfigBase, mapped: Mapping, output: RunOutput,
                       cost: CostReport | None) -> dict[str, Any]:
        """Family-specific numbers for the report's section named after the family."""
        return dict(cost.details) if cost is not None else {}

    def __repr__(self) -> str:
        return f"<accelerator family {self.name}: {', '.join(self.presets)}>"
