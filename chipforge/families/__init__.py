"""The registry of accelerator families.

::

    from chipforge.families import get_accelerator_spec, register_family
    acc = get_accelerator_spec("cap-ram", overrides={"adc.bits": 5})
    mapped = acc.family.map(graph, acc.config)
    out = acc.family.run(graph, mapped, acc.config, x, seed=0)

An accelerator is named by a preset (``forms8``, ``cap-ram``, ``superbnn``, ``heatvit``,
...), a ``FAMILY:PRESET`` pair, a TOML file, or passed as a config object of a registered
family. A TOML file names its family (``family = "pim"``) and optionally a preset to start
from (``preset = "cap-ram"``); its other keys and tables set config fields. Without
``family``, the one family whose config has every key of the file is used (old ReRAM
files keep working).

Adding a family: subclass :class:`~chipforge.families.base.AcceleratorFamily` and call
:func:`register_family` with an instance (``docs/accelerators.md`` has a ten-line example).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.families.base import (
    AcceleratorFamily,
    CostReport,
    FamilyError,
    LayerCost,
    Mapping,
    RunOutput,
    config_keys,
    read_toml,
)

__all__ = [
    "AcceleratorFamily",
    "AcceleratorSpec",
    "CostReport",
    "FamilyError",
    "LayerCost",
    "Mapping",
    "RunOutput",
    "describe",
    "families",
    "get_accelerator_spec",
    "get_family",
    "preset_names",
    "register_family",
    "unregister_family",
]

_BUILTIN = ("chipforge.families.reram", "chipforge.families.pim",
            "chipforge.families.aqfp", "chipforge.families.heatvit")
"""Modules whose import registers the bundled families."""

_FAMILIES: dict[str, AcceleratorFamily] = {}
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _BUILTIN:
        importlib.import_module(module)


def register_family(family: AcceleratorFamily, *, replace: bool = False) -> AcceleratorFamily:
    """Make ``family`` and its presets reachable by name. Preset names must be unique over
    all families (``replace=True`` replaces a family of the same name)."""
    if isinstance(family, type):
        family = family()
    if not isinstance(family, AcceleratorFamily):
        raise TypeError(f"register_family needs an AcceleratorFamily, not {family!r}")
    if not family.name or not isinstance(family.name, str):
        raise ValueError(f"family {family!r} needs a name")
    if family.name in _FAMILIES and not replace:
        raise ValueError(f"a family named {family.name!r} is already registered")
    for preset, config in family.presets.items():
        if not isinstance(config, family.config_type):
            raise ValueError(f"family {family.name}: preset {preset!r} is a "
                             f"{type(config).__name__}, not a {family.config_type.__name__}")
        for other in _FAMILIES.values():
            if other.name != family.name and preset in other.presets:
                raise ValueError(f"preset {preset!r} of family {family.name} is already a "
                                 f"preset of family {other.name}")
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove a family (tests register toy families and remove them again)."""
    _FAMILIES.pop(name, None)


def families() -> dict[str, AcceleratorFamily]:
    """The registered families by name."""
    _load_builtin()
    return dict(_FAMILIES)


def get_family(name: str) -> AcceleratorFamily:
    fams = families()
    if name not in fams:
        raise FamilyError(f"unknown accelerator family {name!r}; families: {', '.join(fams)}")
    return fams[name]


def preset_names() -> dict[str, str]:
    """Preset name -> family name, over all families."""
    return {preset: fam.name for fam in families().values() for preset in fam.presets}


@dataclasses.dataclass(frozen=True)
class AcceleratorSpec:
    """One accelerator: its family, its validated config and the name reports show."""

    family: AcceleratorFamily
    config: Any
    name: str

    def with_changes(self, *, overrides: dict[str, Any] | None = None,
                     options: dict[str, Any] | None = None) -> AcceleratorSpec:
        config = self.family.configure(self.config, overrides=overrides, options=options,
                                       label=self.name)
        return dataclasses.replace(self, config=config)


def _known() -> str:
    return (f"presets: {', '.join(preset_names())} (or FAMILY:PRESET, or a .toml file; "
            f"families: {', '.join(families())})")


def get_accelerator_spec(accelerator: Any, *, overrides: dict[str, Any] | None = None,
                         options: dict[str, Any] | None = None) -> AcceleratorSpec:
    """Resolve a preset name, ``FAMILY:PRESET``, ``.toml`` file, config object or
    :class:`AcceleratorSpec`; then apply convenience ``options`` and dotted ``overrides``,
    validated by the family's config (:class:`FamilyError` on an unknown key or option)."""
    spec = _resolve(accelerator)
    if overrides or any(v is not None for v in (options or {}).values()):
        spec = spec.with_changes(overrides=overrides, options=options)
    return spec


def _resolve(accelerator: Any) -> AcceleratorSpec:
    fams = families()
    if isinstance(accelerator, AcceleratorSpec):
        return accelerator
    if isinstance(accelerator, AcceleratorFamily):
        accelerator = next(iter(accelerator.presets), accelerator.name)
    for fam in fams.values():
        if isinstance(accelerator, fam.config_type):
            return AcceleratorSpec(fam, accelerator, fam.config_name(accelerator))
    if not isinstance(accelerator, str | Path):
        raise FamilyError(f"accelerator must be a preset name, a .toml file or a config of a "
                          f"registered family, not {type(accelerator).__name__}; {_known()}")
    text = str(accelerator)
    if text.lower().endswith(".toml"):
        return _from_file(Path(text))
    family_name, sep, preset = text.partition(":")
    if sep:
        fam = get_family(family_name)
        if preset not in fam.presets:
            raise FamilyError(f"family {family_name} has no preset {preset!r}; presets: "
                              f"{', '.join(fam.presets)}")
        return AcceleratorSpec(fam, fam.presets[preset], preset)
    owners = preset_names()
    if text in owners:
        fam = fams[owners[text]]
        return AcceleratorSpec(fam, fam.presets[text], text)
    if text in fams:            # a family name: its first preset
        fam = fams[text]
        if fam.presets:
            first = next(iter(fam.presets))
            return AcceleratorSpec(fam, fam.presets[first], first)
    raise FamilyError(f"unknown accelerator {text!r}; {_known()}")


def _from_file(path: Path) -> AcceleratorSpec:
    table = read_toml(path)
    fams = families()
    family_name = table.pop("family", None)
    if family_name is not None:
        fam = get_family(str(family_name))
    elif "preset" in table and str(table["preset"]) in preset_names():
        fam = fams[preset_names()[str(table["preset"])]]
    else:
        keys = set(table) - {"preset"}
        fits = [f for f in fams.values()
                if keys <= {k.split(".")[0] for k in config_keys(f.config_type)}]
        if len(fits) != 1:
            raise FamilyError(f"config file {path}: say which family it describes "
                              f"(family = \"NAME\"; families: {', '.join(fams)})")
        fam = fits[0]
    config = fam.config_from_table(table, source=f"config file {path}")
    name = fam.config_name(config)
    if name.endswith("-custom") or name == "custom":
        name = path.stem
    return AcceleratorSpec(fam, config, name)


def describe(name: str | None = None) -> str:
    """A readable list of the families: presets, options, config keys, RTL blocks (one
    family with its config values when ``name`` is a family or preset)."""
    fams = families()
    lines = []
    if name is not None:
        spec = get_accelerator_spec(name) if name not in fams else None
        fam = spec.family if spec is not None else fams[name]
        lines.append(f"{fam.name}: {fam.description}")
        config = spec.config if spec is not None else next(iter(fam.presets.values()), None)
        if config is not None:
            from chipforge.families.base import flatten

            label = spec.name if spec is not None else "first preset"
            lines.append(f"  config ({label}), --set KEY=VALUE:")
            for key, value in flatten(config.to_dict()).items():
                lines.append(f"    {key} = {value!r}")
        return "\n".join(lines)
    for fam in fams.values():
        options = ", ".join(f"--{o.replace('_', '-')}" for o in fam.options) or "none"
        lines += [f"{fam.name}: {fam.description}",
                  f"  presets: {', '.join(fam.presets)}",
                  f"  options: {options}",
                  f"  --set keys: {', '.join(config_keys(fam.config_type))}",
                  f"  RTL blocks: {', '.join(fam.rtl_blocks) or 'none'}"]
    return "\n".join(lines)


# -- shared helpers of the families' default inputs ---------------------------------------

CALIBRATION_SAMPLES = 256


def test_data(graph, data: Any, samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels shaped for ``graph``: ``"digits"`` / None (the shared digits test
    split), an ``.npz`` path (only the first ``samples`` decompressed), an ``(x, y)`` pair or
    a Dataset (its test split)."""
    if isinstance(data, str | Path) or data is None:
        from chipforge.importers.model import load_data

        return load_data("digits" if data is None else data, graph, samples=samples)
    if hasattr(data, "x_test"):
        x, y = data.x_test, data.y_test
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError("data must be a Dataset, an (x, y) pair or None, "
                             f"not {type(data).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"data needs as many labels as samples (> 0), not {len(x)} samples "
                         f"and {len(y)} labels")
    per_sample = int(np.prod(graph.input_shape))
    if x[0].size != per_sample:
        raise ValueError(f"data samples have {x[0].size} values, graph {graph.name!r} expects "
                         f"shape {graph.input_shape}")
    return x.reshape((len(x), *graph.input_shape)), y


def quantize_if_needed(graph, x_calib: np.ndarray, mode: str, calib_label: str,
                       notes: list[str]):
    """Post-training 8-bit quantization of a float graph (``mode="auto"``), or an error
    (``mode="off"``)."""
    float_layers = [n.name for n in graph.weighted_nodes() if not n.quantized]
    if not float_layers:
        return graph
    if mode == "off":
        raise ValueError(f"layers {', '.join(float_layers)} of {graph.name!r} are not "
                         "quantized; this accelerator needs integer weights and inputs "
                         "(quantize the model, e.g. onnxruntime quantize_static, or use "
                         "--quantize auto)")
    from chipforge.mappings.quantize import quantize_graph

    if any(n.quantized for n in graph.weighted_nodes()):
        raise ValueError(f"graph {graph.name!r} is partly quantized (float layers: "
                         f"{', '.join(float_layers)}); quantize all weighted layers")
    notes.append(f"{len(float_layers)} float layers quantized after training to 8 bits "
                 f"(per-channel weights; activations calibrated on {calib_label})")
    return quantize_graph(graph, x_calib)
