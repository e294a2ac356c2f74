"""The named sweeps of ``chipforge sweep NAME``: name -> ``"module:ATTRIBUTE"`` of a
:class:`chipforge.sim.sweep.SweepDef`.

Add a sweep by writing a module with a module-level ``SweepDef`` (its trial function must be
importable by the workers) and listing it here. Modules are imported only when the sweep is
run or listed, so a heavy sweep (torch, a model zoo) costs nothing to the others.
A ``module:ATTRIBUTE`` given on the command line works too, for sweeps outside chipforge
(a module in the working directory included). On a remote Dask cluster, the workers must
be able to import that module too.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chipforge.sim.sweep import SweepDef

__all__ = ["SWEEPS", "get_sweep"]

SWEEPS: dict[str, str] = {
    "crossbar-adc": "chipforge.sim.sweeps.crossbar_adc:SWEEP",
    "aqfp": "chipforge.mappings.sweeps.aqfp:SWEEP",
    "adc": "chipforge.mappings.sweeps.adc:SWEEP",
    "faults": "chipforge.mappings.sweeps.faults:SWEEP",
    "keep": "chipforge.mappings.sweeps.keep:SWEEP",
    "accelerator": "chipforge.mappings.sweeps.accelerator:SWEEP",
}


def get_sweep(name: str) -> SweepDef:
    """The ``SweepDef`` of a registered name, or of a ``package.module:ATTRIBUTE`` path."""
    from chipforge.sim.sweep import SweepDef

    target = SWEEPS.get(name, name)
    module_name, sep, attribute = target.partition(":")
    if not sep:
        raise ValueError(f"unknown sweep {name!r}; known sweeps: {', '.join(SWEEPS)} "
                         "(or give package.module:ATTRIBUTE of a SweepDef)")
    if name not in SWEEPS and os.getcwd() not in sys.path:
        # like `python -m`: a user's sweep module in the working directory is importable
        # (and the local workers started after this inherit the path)
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"sweep {name!r}: cannot import {module_name}: {e}") from None
    sweep = getattr(module, attribute, None)
    if not isinstance(sweep, SweepDef):
        raise ValueError(f"sweep {name!r}: {target} is not a SweepDef")
    return sweep
