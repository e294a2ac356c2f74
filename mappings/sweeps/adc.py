"""The ``adc`` sweep (PIM-QAT): accuracy of the bundled ResNet vs the PIM ADC resolution.

It reproduces an experiment on the bundled models, so it runs on the digits data set they
were trained on (documented default; ``--data`` does not apply: use the ``accelerator``
sweep with ``--data`` for your own model and data).

For each b_PIM from 3 to 8 bits, with an ideal ADC or with CAP-RAM-like thermal noise,
gain/offset spread and S-shaped nonlinearity, four ways to deploy the model on the macro
:data:`chipforge.mappings.pim_qat.PIM_SWEEP_CFG`:

- ``naive``: the conventionally quantized (digital QAT) model, as is;
- ``bn_calibrated``: the same with batch-norm statistics re-estimated on the hardware;
- ``pim_aware``: the model fine-tuned through the PIM quantizer at this b_PIM (and noise);
- ``adjusted``: adjusted-precision training: the PIM-aware model trained one bit lower,
  deployed at this b_PIM.

PIM-aware models ship for b_PIM in :data:`chipforge.mappings.pim_qat.PIM_TRAIN_BITS`; a
point that needs another one reports a NaN accuracy (a gap in the table and the plot), not
a stand-in model.

The models are the bundled ``resnet-digits-pim`` (its recipe:
:func:`chipforge.mappings.pim_qat.train_pim_models`). A trial's seed draws the ADC
mismatch, the thermal noise and the calibration batches, so spread over trials is the
spread over chips.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Any

import numpy as np

from chipforge.sim.sweep import SweepDef

METHODS = ("naive", "bn_calibrated", "pim_aware", "adjusted")


@lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    from chipforge.zoo.pim import load_arrays

    return load_arrays()


@lru_cache(maxsize=1)
def _digital_accuracy() -> float:
    from chipforge.mappings.pim_qat import evaluate, load_pim_model
    from chipforge.zoo.data import digits

    data = digits()
    return evaluate(load_pim_model(_arrays(), None, False), data.x_test, data.y_test)


def check_point(point: dict[str, Any]) -> None:
    if point["method"] not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {point['method']!r}")
    if not 1 <= int(point["b_pim"]) <= 16:
        raise ValueError(f"b_pim must be in 1..16, not {point['b_pim']!r}")


def trial(point: dict[str, Any], seed: int) -> dict[str, float]:
    import torch

    from chipforge.mappings.pim_qat import (
        PIM_SWEEP_CFG,
        PIM_TRAIN_BITS,
        PimMode,
        adc_variant,
        bn_calibrate,
        evaluate,
        load_pim_model,
    )
    from chipforge.zoo.data import digits

    torch.set_num_threads(1)  # trials run side by side; threads would only oversubscribe
    bits, method, noisy = int(point["b_pim"]), point["method"], bool(point["noise"])
    data = digits()
    mode = PimMode(cfg=PIM_SWEEP_CFG.replace(adc=adc_variant(bits, noisy=noisy)), seed=seed)
    arrays = _arrays()
    digital = _digital_accuracy()
    if method in ("naive", "bn_calibrated"):
        model = load_pim_model(arrays, None, False)
    else:
        trained = bits if method == "pim_aware" else bits - 1
        if trained not in PIM_TRAIN_BITS:  # no model shipped for it: a gap, not a guess
            return {"accuracy": math.nan, "digital_accuracy": digital}
        model = load_pim_model(arrays, trained, noisy)
    if method != "naive":
        model = copy.deepcopy(model)
        bn_calibrate(model, data.x_train, mode, seed=seed)
    return {"accuracy": evaluate(model, data.x_test, data.y_test, mode),
            "digital_accuracy": digital}


SWEEP = SweepDef(
    name="adc",
    trial=trial,
    grid={"b_pim": [3, 4, 5, 6, 7, 8], "method": list(METHODS), "noise": [False, True]},
    metrics=("accuracy", "digital_accuracy"),
    x_axis="b_pim",
    trials=3,
    check_point=check_point,
    description="PIM-QAT: ResNet accuracy vs ADC bits, naive / BN-calibrated / PIM-aware",
)
