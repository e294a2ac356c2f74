"""chipforge: simulate compressed neural networks on virtual accelerators, generate and
verify the Verilog of their digital blocks, and sweep faults and design parameters.

Sub-packages (each imported by its full name, never bare):

- ``chipforge.config``   frozen configuration dataclasses and named presets
- ``chipforge.sim``      reference models, functional and cycle-level simulation, sweeps
- ``chipforge.mappings`` compression and placement passes
- ``chipforge.hw``       Amaranth components of the digital blocks

This module imports the standard library only, so ``import chipforge.sim`` never pulls in
Amaranth and ``import chipforge.hw`` never pulls in torch.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("chipforge")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "compare", "compress", "from_torch", "load_onnx", "simulate"]

# Frontends that need torch / onnx load on first use, so `import chipforge` stays stdlib-only.
_LAZY = {"from_torch": "chipforge.importers.torch", "load_onnx": "chipforge.importers.onnx"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("simulate", "compress", "compare"):   # modules callable as simulate(...), ...
        import importlib

        return importlib.import_module(f"chipforge.{name}")
    raise AttributeError(f"module 'chipforge' has no attribute {name!r}")
