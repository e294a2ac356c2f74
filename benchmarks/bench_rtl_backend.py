"""RTL in the loop: clock cycles per second of the shift-and-add RTL through pyverilator-mm
(``chipforge.sim.rtl_backend``) vs cocotb + Icarus, on the same block and the same data.

The data is a real ISAAC crossbar readout (``adc_codes`` of random 16-bit x and W on a
128-row crossbar) streamed back to back: every dot product is ``input_cycles`` beats.
Three drivers, all checked against the reference ``shift_add``:

- pyverilator-mm through the backend's cycle loop (ctypes setters/getters bound once,
  two evaluations per cycle);
- pyverilator-mm through its own ``sim.io.<port> = value`` interface (a name lookup and
  an evaluation per write), on a prefix of the stream, to show what the direct calls buy;
- cocotb 2.1 + Icarus 11 with the project's StreamDriver/StreamMonitor (the baseline).

Build times are excluded (the Verilated model comes from the cache; Icarus builds in <1 s).
Run: ``.venv/bin/python benchmarks/bench_rtl_backend.py [--batch 200]``.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from chipforge.sim.ref.crossbar import adc_codes, encode_weights, shift_add
from chipforge.sim.rtl_layer import DEFAULT_SHIFT_ADD_DIR, ShiftAddRtl
from chipforge.verify.runner import run_cocotb

HERE = Path(__file__).resolve().parent


def pyverilator_io_loop(rtl: ShiftAddRtl, beats: np.ndarray, n_results: int):
    """The same stream through pyverilator-mm's high-level ``sim.io`` interface."""
    import pyverilator

    sim = pyverilator.PyVerilator(str(rtl.block.so_path))
    io = sim.io
    words = [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in beats]
    io.rst = 1
    for _ in range(2):
        io.clk = 0
        io.clk = 1
    io.rst = 0
    io.o_stream__ready = 1
    results, sent, cycles = [], 0, 0
    start = time.perf_counter()
    while len(results) < n_results:
        cycles += 1
        io.clk = 0
        offered = sent < len(words)
        if offered:
            io.i_stream__payload = words[sent]
        io.i_stream__valid = int(offered)
        if offered and io.i_stream__ready:
            sent += 1
        if io.o_stream__valid:
            results.append(int(io.o_stream__payload))
        io.clk = 1
    seconds = time.perf_counter() - start
    width = rtl.block.out_width
    results = [r - (1 << width) if r >> (width - 1) else r for r in results]
    return np.array(results, dtype=np.int64), cycles, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200, help="input vectors (default 200)")
    parser.add_argument("--cols", type=int, default=10, help="weight columns (default 10)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    rtl = ShiftAddRtl()
    load_s = time.perf_counter() - t0
    cfg = rtl.cfg
    rng = np.random.default_rng(0)
    w = rng.integers(*cfg.weight_range, endpoint=True, size=(cfg.rows, args.cols))
    x = rng.integers(*cfg.input_range, endpoint=True, size=(args.batch, cfg.rows))
    readout = adc_codes(x, encode_weights(w, cfg), cfg)
    want = shift_add(readout.codes, readout.unit, readout.flipped, cfg)
    n = want.size
    beats = rtl.beats(readout.codes, readout.unit, readout.flipped)
    tools = rtl.block.toolchain
    how = "from the cache" if rtl.block.from_cache else "built"
    print(f"shift-add RTL (ISAAC preset), {n} dot products x {cfg.input_cycles} beats = "
          f"{len(beats)} beats; Verilated model {how} in {load_s:.1f} s "
          f"({tools.version_text}, pyverilator-mm {tools.pyverilator})")

    t0 = time.perf_counter()
    got, run = rtl.shift_add(readout.codes, readout.unit, readout.flipped)
    tall_s = time.perf_counter() - t0
    assert np.array_equal(got, want), "pyverilator backend differs from the reference"
    fast_cps = run.cycles / run.seconds
    print(f"  pyverilator-mm, backend loop : {run.cycles:>7} cycles in {run.seconds:6.2f} s "
          f"= {fast_cps:>9,.0f} cycles/s")

    # Tall batch (all input vectors in one stream) vs one stream per input vector.
    t0 = time.perf_counter()
    for i in range(args.batch):
        row, _ = rtl.shift_add(readout.codes[i:i + 1], readout.unit[i:i + 1], readout.flipped)
        assert np.array_equal(row, want[i:i + 1]), "per-vector streaming differs"
    per_vector_s = time.perf_counter() - t0
    print(f"  {n} dot products, packing included: one tall stream {tall_s:.2f} s, one stream "
          f"per input vector {per_vector_s:.2f} s (ratio {per_vector_s / tall_s:.2f}x)")

    prefix = min(len(beats), 8000) // cfg.input_cycles
    io_res, io_cycles, io_s = pyverilator_io_loop(rtl, beats[:prefix * cfg.input_cycles], prefix)
    assert np.array_equal(io_res, want.reshape(-1)[:prefix]), "sim.io path differs"
    io_cps = io_cycles / io_s
    print(f"  pyverilator-mm, sim.io       : {io_cycles:>7} cycles in {io_s:6.2f} s "
          f"= {io_cps:>9,.0f} cycles/s (first {prefix} dot products)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "beats.npy", beats)
        t0 = time.perf_counter()
        run_cocotb(DEFAULT_SHIFT_ADD_DIR, HERE / "cocotb_shift_add_stream.py",
                   simulator="icarus", build_root=tmp / "build",
                   extra_env={"BENCH_BEATS": str(tmp / "beats.npy"), "BENCH_RESULTS": str(n),
                              "BENCH_OUT": str(tmp / "out.json")})
        cocotb_wall = time.perf_counter() - t0
        out = json.loads((tmp / "out.json").read_text())
    assert np.array_equal(np.array(out["results"]), want.reshape(-1)), "cocotb differs"
    cocotb_cps = out["cycles"] / out["seconds"]
    print(f"  cocotb + Icarus              : {out['cycles']:>7} cycles in {out['seconds']:6.2f} s "
          f"= {cocotb_cps:>9,.0f} cycles/s ({cocotb_wall:.1f} s with build and start-up)")
    print(f"  ratio pyverilator backend / cocotb+Icarus: {fast_cps / cocotb_cps:.1f}x")
    print(f"  ratio pyverilator sim.io  / cocotb+Icarus: {io_cps / cocotb_cps:.1f}x")
    print(f"  ratio backend loop / sim.io              : {fast_cps / io_cps:.1f}x")


if __name__ == "__main__":
    main()
