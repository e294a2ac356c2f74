"""The ``accelerator`` sweep: any family, any config field, through the accelerator
interface (:mod:`chipforge.families`).

A point names a model, an accelerator (preset, ``FAMILY:PRESET`` or TOML file), one config
key (dotted, as ``--set`` takes it; empty: the preset as it is) and its value; a trial is
one chip instance (the seed) on the first ``samples`` test inputs of the ``data`` axis
(``chipforge sweep accelerator --data FILE.npz``; default: the digits test split at the
model's input size)::

    chipforge sweep accelerator --grid accelerator=cap-ram,pim-bit-serial \\
        --grid key=adc.bits --grid value=4,5,6,7,8
    chipforge sweep accelerator --grid accelerator=forms8 --grid model=lenet-digits-forms8 \\
        --grid key=device.programming_sigma --grid value=0,0.05,0.1,0.2

A model is a zoo name or the user's ``.onnx`` / ``.npz`` file; a float model is quantized
after training to 8 bits, as in ``chipforge simulate`` (the same calibration rule:
:func:`chipforge.mainjob.load_inputs`). ``--chips N`` runs the same N chips at every point.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from chipforge.sim.sweep import SweepDef

METRICS = ("accuracy", "accuracy_ideal", "accuracy_drop", "agreement")


def _overrides(point: dict[str, Any]) -> dict[str, Any]:
    key = str(point.get("key", "") or "")
    return {key: point["value"]} if key else {}


def check_point(point: dict[str, Any]) -> None:
    """Resolve the accelerator and apply the key (the family's config validates it)."""
    from chipforge.families import get_accelerator_spec

    get_accelerator_spec(point["accelerator"], overrides=_overrides(point))
    samples = point.get("samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, not {samples!r}")


@lru_cache(maxsize=8)
def _prepared(model: str, accelerator: str, samples: int, data: str = "digits"):
    """The graph as the accelerator's family takes it and its test data (per worker), read
    as ``chipforge simulate`` reads them (:func:`chipforge.mainjob.load_inputs`)."""
    from chipforge.families import get_accelerator_spec
    from chipforge.mainjob import load_inputs

    family = get_accelerator_spec(accelerator).family
    graph, x, y = load_inputs(family, model, data, quantize="auto")
    return graph, x[:samples], y[:samples]


def trial(point: dict[str, Any], seed: int) -> dict[str, float]:
    from chipforge.families import get_accelerator_spec
    from chipforge.simulate import simulate_graph

    spec = get_accelerator_spec(point["accelerator"], overrides=_overrides(point))
    graph, x, y = _prepared(str(point["model"]), str(point["accelerator"]),
                            int(point.get("samples", 100)), str(point.get("data", "digits")))
    r = simulate_graph(spec, graph, x, y, seed=seed).result
    return {"accuracy": r.accuracy_hardware, "accuracy_ideal": r.accuracy_ideal,
            "accuracy_drop": r.accuracy_drop, "agreement": r.agreement}


SWEEP = SweepDef(
    name="accelerator",
    trial=trial,
    grid={"model": ["lenet-digits"], "accelerator": ["cap-ram"], "key": ["adc.bits"],
          "value": [4, 5, 6, 7, 8], "samples": [100]},
    metrics=METRICS,
    x_axis="value",
    trials=2,
    check_point=check_point,
    takes_data=True,
    description="any accelerator family: accuracy vs one config field (--set key), "
                "through the accelerator interface",
)
