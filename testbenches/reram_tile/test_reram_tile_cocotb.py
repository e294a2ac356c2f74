"""cocotb testbench of a generated ReRAM tile (rtl/tile-isaac, rtl/tile-forms8, or a tile
written by ``chipforge rtl tile``).

The case (``CHIPFORGE_TILE_CASE``, an ``.npz`` of :mod:`chipforge.verify.tile_case`) is one
layer of a bundled CNN from the ideal simulated run: integer inputs, weights, the
requantization registers and the expected outputs. The analog crossbar is a cocotb model:
on each plane request it reads ``xbar_dac``/``xbar_active`` and answers, ``adc_latency``
cycles later, with the ADC codes of :meth:`chipforge.sim.ref.reram_tile.TileProgram.plane_codes`
(junk codes on every other cycle). One clocked loop drives random idle input cycles and
output stalls of up to 100 cycles and checks *every* output port in *every* cycle against
the cycle model (:func:`chipforge.sim.ref.reram_tile.tile_timeline`) and the reference:
``s_axis_tready``, ``m_axis_tvalid`` (no extra outputs), ``m_axis_tdata``/``tlast`` (stable
while stalled, the expected value), ``xbar_dac_valid``, ``xbar_dac``/``xbar_active`` (the
expected plane), and ``busy``. The reset test applies reset in the middle of a vector and
checks that nothing pending survives, then runs the case again from scratch.
"""

import os
import random
from pathlib import Path

import cocotb
import numpy as np
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly

from chipforge.hw.reram_tile import TileConfig
from chipforge.sim.ref.reram_tile import TileProgram, tile_timeline
from chipforge.verify.cocotb_regmap import RegisterMapDriver, handshake_patterns
from chipforge.verify.manifest import load_manifest
from chipforge.verify.tile_case import column_pass, load_case


def _env(whole_layer=False):
    """The manifest, tile config, case and vector count. The case's first column pass
    unless ``whole_layer`` (a layer wider than the tile runs in column passes)."""
    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = TileConfig.from_dict(manifest.config)
    case = load_case(os.environ["CHIPFORGE_TILE_CASE"])
    if not whole_layer and case.weights.shape[1] > cfg.cols:
        case = column_pass(case, 0, cfg.cols)
    vectors = int(os.environ.get("CHIPFORGE_TILE_VECTORS", len(case.x)))
    return manifest, cfg, case, vectors


def kick_combinational(dut):
    """Re-evaluate every ``always @*`` block of yosys' Verilog once.

    yosys adds a dummy register to each such block so that simulators run it at time 0;
    Icarus does not, and a block whose inputs keep their initial values (a multiplexer
    select that stays 0 until its first use) would output X. Toggling the register fixes
    that without touching the design.
    """
    for name in ("$auto$verilog_backend.cc:2355:dump_module$1",):
        try:
            handle = dut._id(name, extended=False)
        except (AttributeError, KeyError):
            continue
        handle.value = 1


class Tile(RegisterMapDriver):
    word_mask = (1 << 64) - 1

    def __init__(self, dut, manifest, cfg):
        super().__init__(dut, ("s_axis_tvalid", "s_axis_tdata", "m_axis_tready",
                               "xbar_adc_valid", "xbar_adc_codes"))
        self.cfg = cfg
        fields = manifest.data["ports"]["xbar_adc_codes"]["fields"]
        self.offsets = {f["name"]: f["offset"] for f in fields}
        self.adc_width = manifest.port_width("xbar_adc_codes")
        kick_combinational(dut)

    async def write(self, addr, value):
        await self.tick()              # a cycle between writes, as a bus bridge leaves
        await super().write(addr, value)

    async def program(self, prog, rq, k, n):
        await self.write(0x000, int(rq.relu) | (int(rq.raw) << 1))
        await self.write(0x001, k)
        await self.write(0x002, n)
        await self.write(0x003, rq.shift)
        for c in range(n):
            await self.write(0x100 + c, int(rq.mult[c]))
            await self.write(0x200 + c, int(rq.bias[c]))
        meta = prog.meta()
        for g in range(self.cfg.row_groups):
            for c in range(self.cfg.cols):
                await self.write(0x400 + g * self.cfg.cols + c, int(meta[g, c]))

    def pack_codes(self, codes, unit):
        word = 0
        for g in range(codes.shape[0]):
            for c in range(codes.shape[1]):
                for p in range(codes.shape[2]):
                    word |= int(codes[g, c, p]) << self.offsets[f"groups[{g}]cols[{c}][{p}]"]
            if f"groups[{g}]unit" in self.offsets:
                word |= int(unit[g]) << self.offsets[f"groups[{g}]unit"]
        return word

    async def run(self, prog, x, expected, *, seed, idle, stall, adc_latency, stop_at=None,
                  ready_prob=0.8):
        """Stream the vectors; check every port every cycle; return the measured cycles (from
        reset to the last output beat the Verilog handed over, inclusive)."""
        dut, cfg = self.dut, self.cfg
        k, n = x.shape[1], expected.shape[1]
        plane_lists = [prog.planes(v) for v in x]
        horizon = 200 * len(x) * (k + n + 40) + 10_000
        valid_p, ready_p = handshake_patterns(seed, idle, stall, horizon, ready_prob=ready_prob)
        tl = tile_timeline(k, n, [len(p) for p in plane_lists], forms=cfg.forms,
                           adc_latency=adc_latency,
                           valid=lambda c: valid_p[c], ready=lambda c: ready_p[c])
        full_cycles = {c for a, b in tl.full for c in range(a, b + 1)}
        busy_cycles = {c for a, b in tl.busy for c in range(a, b + 1)}
        requests = {c: (v, j) for v, rs in enumerate(tl.requests) for j, c in enumerate(rs)}
        out_valid = {}
        for v, (start, beats) in enumerate(zip(tl.output_start, tl.outputs, strict=True)):
            index = 0
            for c in range(start, beats[-1] + 1):
                out_valid[c] = (v, index)
                if c == beats[index]:
                    index += 1
        beats = x.reshape(-1)
        sent, pending, junk = 0, {}, random.Random(seed + 99)
        rows, groups = cfg.crossbar.rows, cfg.row_groups
        got = np.zeros_like(expected)
        measured = 0                        # one past the last output beat the DUT gave
        last_end = tl.cycles + 50          # idle cycles after the last output: no extras
        for cycle in range(last_end):
            if stop_at is not None and cycle == stop_at:
                await self.tick()
                return cycle
            await self.tick()
            offer = valid_p[cycle] and sent < len(beats)
            dut.s_axis_tvalid.value = int(offer)
            dut.s_axis_tdata.value = int(beats[sent]) if offer else junk.getrandbits(
                cfg.crossbar.input_bits)
            dut.m_axis_tready.value = int(ready_p[cycle])
            if cycle in pending:
                codes, unit = pending.pop(cycle)
                dut.xbar_adc_valid.value = 1
                dut.xbar_adc_codes.value = self.pack_codes(codes, unit)
            else:
                dut.xbar_adc_valid.value = 0
                dut.xbar_adc_codes.value = junk.getrandbits(self.adc_width)
            await ReadOnly()
            where = f"cycle {cycle}"
            if os.environ.get("TILE_DEBUG") and cycle < 3:
                dut._log.info(f"{cycle} state={dut.tile_state.value} full={dut.full.value} "
                              f"fill={dut.fill.value} k={dut.reg_k.value} rst={dut.rst.value}")
            tready = int(dut.s_axis_tready.value)
            assert tready == int(cycle not in full_cycles), f"{where}: s_axis_tready={tready}"
            if offer and tready:
                assert tl.accepted[sent] == cycle, f"{where}: beat {sent} accepted early/late"
                sent += 1
            assert int(dut.busy.value) == int(cycle in busy_cycles), f"{where}: busy"
            req = int(dut.xbar_dac_valid.value)
            assert req == int(cycle in requests), f"{where}: xbar_dac_valid={req}"
            if req:
                v, j = requests[cycle]
                plane = int(dut.xbar_dac.value)
                assert plane == plane_lists[v][j], (
                    f"{where}: vector {v} plane {j}: xbar_dac {plane:#x}, "
                    f"expected {plane_lists[v][j]:#x}")
                active = int(dut.xbar_active.value)
                if cfg.forms:
                    left = [int(val) >> j for val in x[v]] + [0] * (rows * groups - k)
                    want = sum(1 << g for g in range(groups)
                               if any(left[g * rows:(g + 1) * rows]))
                else:
                    want = (1 << groups) - 1
                assert active == want, f"{where}: xbar_active {active:#x}, expected {want:#x}"
                # The analog array answers from what the port drives, not from the case.
                pending[cycle + adc_latency] = prog.plane_codes(plane, active)
            tvalid = int(dut.m_axis_tvalid.value)
            assert tvalid == int(cycle in out_valid), f"{where}: m_axis_tvalid={tvalid}"
            if tvalid:
                v, j = out_valid[cycle]
                data = dut.m_axis_tdata.value.to_signed()
                assert data == int(expected[v, j]), (
                    f"{where}: vector {v} column {j}: tdata {data}, expected "
                    f"{int(expected[v, j])}")
                assert int(dut.m_axis_tlast.value) == int(j == n - 1), f"{where}: tlast"
                if ready_p[cycle]:
                    got[v, j] = data
                    measured = cycle + 1
        assert not pending, "crossbar answers left over"
        assert np.array_equal(got, expected)
        assert measured == tl.cycles, f"measured {measured} cycles, cycle model {tl.cycles}"
        self.model_cycles = tl.cycles
        await self.tick()
        return measured


@cocotb.test()
async def tile_layer_idle_and_stalls(dut):
    """The layer's vectors with idle input cycles and output stalls up to 100 cycles, then
    back-to-back (no idle, no stall: the cycle model's plain count)."""
    manifest, cfg, case, vectors = _env()
    x, expected = case.x[:vectors], case.expected[:vectors]
    prog = TileProgram(cfg, case.weights)
    Clock(dut.clk, 10, unit="ns").start()
    tile = Tile(dut, manifest, cfg)
    latency = int(os.environ.get("CHIPFORGE_ADC_LATENCY", "1"))
    for seed, idle, stall, count in ((3, 0.3, 0.03, len(x)), (4, 0.0, 0.0, 48)):
        await tile.reset()
        await tile.program(prog, case.requant, x.shape[1], expected.shape[1])
        cycles = await tile.run(prog, x[:count], expected[:count], seed=seed, idle=idle,
                                stall=stall, adc_latency=latency)
        dut._log.info(f"{count} vectors, idle {idle}, stalls {stall}: {cycles} cycles "
                      "(= cycle model)")


@cocotb.test()
async def tile_whole_layer(dut):
    """Every output of the case's layer: each column pass programmed in turn (MULT, BIAS,
    META and N of its columns; the crossbar model holds its weights), all vectors back to
    back (input always valid, output always ready), the measured cycles equal to the cycle
    model's; the first pass once more with idle input (20 %), output ready 80 % and output
    stalls of up to 100 cycles. Writes a JSON summary to
    ``CHIPFORGE_TILE_REPORT`` when set."""
    import json

    manifest, cfg, case, _ = _env(whole_layer=True)
    Clock(dut.clk, 10, unit="ns").start()
    tile = Tile(dut, manifest, cfg)
    n_total = case.weights.shape[1]
    passes = []
    for start in range(0, n_total, cfg.cols):
        part = column_pass(case, start, min(start + cfg.cols, n_total))
        prog = TileProgram(cfg, part.weights)
        runs = [(0.0, 0.0)] + ([(0.2, 0.03)] if start == 0 else [])
        for idle, stall in runs:
            await tile.reset()
            await tile.program(prog, part.requant, part.x.shape[1], part.expected.shape[1])
            measured = await tile.run(prog, part.x, part.expected, seed=11 + start,
                                      idle=idle, stall=stall, adc_latency=1,
                                      ready_prob=0.8 if idle else 1.0)
            passes.append({"columns": [start, start + part.weights.shape[1]],
                           "vectors": len(part.x), "outputs_checked": int(part.expected.size),
                           "idle": idle, "stall": stall, "measured_cycles": measured,
                           "model_cycles": tile.model_cycles})
            dut._log.info(f"columns {start}..{start + part.weights.shape[1] - 1}, idle {idle}, "
                          f"stalls {stall}: {measured} cycles measured (= cycle model)")
    if os.environ.get("CHIPFORGE_TILE_REPORT"):
        with open(os.environ["CHIPFORGE_TILE_REPORT"], "w") as f:
            json.dump(passes, f, indent=1)


@cocotb.test()
async def tile_random_vectors(dut):
    """Random inputs over the whole input range (extremes included) on the layer's weights:
    every DAC row toggles, every plane is used; expected from the reference model."""
    from chipforge.sim.ref.reram_tile import requantize

    manifest, cfg, case, _ = _env()
    prog = TileProgram(cfg, case.weights)
    rng = np.random.default_rng(8)
    top = (1 << cfg.crossbar.input_bits) - 1
    x = rng.integers(0, top + 1, size=(12, case.x.shape[1]))
    x[0], x[1] = top, 0
    x[2] = rng.integers(0, 2, size=case.x.shape[1])        # FORMS: one plane only
    expected = requantize(prog.dots(x), case.requant)
    assert np.array_equal(prog.dots(x), x @ case.weights)  # no ADC saturates
    Clock(dut.clk, 10, unit="ns").start()
    tile = Tile(dut, manifest, cfg)
    await tile.reset()
    await tile.program(prog, case.requant, x.shape[1], expected.shape[1])
    await tile.run(prog, x, expected, seed=9, idle=0.2, stall=0.05, adc_latency=2)


def random_full_weights(cfg, rng):
    """Random weights over the whole weight range on every row and column of the tile (all
    K = rows_total rows, every column, every row group non-zero), the extremes included:
    every slice of every column takes both flip states somewhere. FORMS: one random sign
    per (fragment, column), magnitudes up to 127."""
    xb = cfg.crossbar
    lo, hi = xb.weight_range
    shape = (cfg.rows_total, cfg.cols)
    if not cfg.forms:
        w = rng.integers(lo, hi + 1, size=shape)
        w[0, 0], w[1, 0] = lo, hi
        w[:, 1] = hi                        # all high: every slice of column 1 flips
        w[:, 2] = lo
        return w
    mag = rng.integers(0, hi + 1, size=shape)
    mag[:, 1] = hi                          # all at the largest magnitude: flipped
    mag[:, 2] = rng.integers(0, 2, size=cfg.rows_total) * 85   # 0b01010101: mixed slices
    signs = rng.choice([-1, 1], size=(cfg.row_groups, cfg.cols))
    return mag * np.repeat(signs, xb.rows, axis=0)


@cocotb.test()
async def tile_random_weights_and_rails(dut):
    """Random full-range weights on every row and column (every row group non-zero),
    inputs over the whole range: the raw dot products (RAW mode), then requantized with a
    multiplier that drives results onto both rails, with ReLU (0 and 2**out_bits - 1) and
    without (the signed out_bits range). Then every physical column flipped with non-zero
    stored levels: every cell at level 2 or 3 at random (FORMS: slices 0-2) and, for FORMS,
    all weights at -128 (the top slice at level 2), raw: every flip correction shows."""
    from chipforge.sim.ref.reram_tile import Requant, requantize

    manifest, cfg, case, _ = _env()
    rng = np.random.default_rng(12)
    lo_w, hi_w = cfg.crossbar.weight_range
    shape = (cfg.rows_total, cfg.cols)
    # every cell level 2 or 3 at random: every column flipped, stored levels 0 or 1 (a
    # flipped column's codes must be non-zero for its correction to show)
    xb = cfg.crossbar
    slices = xb.slices - (1 if cfg.forms else 0)        # FORMS: magnitudes below 128
    levels = rng.integers(2, 4, size=(*shape, slices))
    high = (levels << (xb.cell_bits * np.arange(slices))).sum(axis=-1)
    weight_sets = [random_full_weights(cfg, rng),
                   high if cfg.forms else high + lo_w]          # ISAAC: offset code
    if cfg.forms:
        weight_sets.append(np.full(shape, lo_w))       # -128: the top slice at level 2
    top = (1 << cfg.crossbar.input_bits) - 1
    x = rng.integers(0, top + 1, size=(8, cfg.rows_total))
    x[0], x[1] = top, 0
    n = cfg.cols
    raw = Requant(mult=np.ones(n, np.int64), bias=np.zeros(n, np.int64), shift=0,
                  relu=False, raw=True, out_bits=cfg.out_bits)
    Clock(dut.clk, 10, unit="ns").start()
    tile = Tile(dut, manifest, cfg)
    flipped = []
    for i, w in enumerate(weight_sets):
        prog = TileProgram(cfg, w)
        flipped.append(np.array([c.flipped for c in prog.cells]))   # (G, cols, P)
        dots = prog.dots(x)
        assert np.array_equal(dots, x @ w)                          # no ADC saturates
        runs = [raw]
        if i == 0:
            big = int(np.abs(dots).max()) or 1
            mult = np.full(n, -(-(4 << cfg.out_bits) * 16 // big), dtype=np.int64)
            runs += [Requant(mult=mult, bias=np.full(n, 8, np.int64), shift=4, relu=relu,
                             out_bits=cfg.out_bits) for relu in (True, False)]
        for rq in runs:
            expected = requantize(dots, rq)
            if not rq.raw:
                lo = 0 if rq.relu else -(1 << (cfg.out_bits - 1))
                hi = (1 << cfg.out_bits) - 1 if rq.relu else (1 << (cfg.out_bits - 1)) - 1
                assert (expected == lo).any() and (expected == hi).any(), "no rail reached"
            await tile.reset()
            await tile.program(prog, rq, x.shape[1], n)
            await tile.run(prog, x, expected, seed=13 + i, idle=0.1, stall=0.05,
                           adc_latency=1)
    assert np.logical_or.reduce(flipped).all()      # every physical column flipped once


def random_register_cases(cfg, seed=21):
    """Register configurations for :func:`tile_random_registers`, each with its weights,
    inputs, registers and expected outputs: ``(k, n, mode, weights, x, requant, expected)``.

    K over 1, a row group's rows, one more, every row and random values; N over 1, every
    column and random values; every mode (``relu``, ``signed``, ``raw``) three times; S
    over 0, 63 (the register's maximum), random values and the largest S whose MULT stays
    inside its register (as a compiled layer's). Weights: random over the whole range
    (:func:`random_full_weights`, every row group of the K rows non-zero, FORMS signs per
    fragment); inputs over the whole range. MULT (both signs) and BIAS (up to the 64-bit
    register's range) are drawn per column at the scale of S so that acc * MULT spans
    about 1.5 output ranges and BIAS shifts it by up to one: results on both rails and in
    between where S allows (at S = 63 only the rounding term and BIAS matter). In the two
    compiled-layer configurations BIAS then puts the first vector's result of column 0
    below the lower rail, of column 1 above the upper one and of the other columns at
    distinct values between them, so every tile shape reaches both rails and the
    interior."""
    from chipforge.sim.ref.reram_tile import Requant, requantize

    rng = np.random.default_rng(seed)
    rows, total, cols, out_bits = cfg.crossbar.rows, cfg.rows_total, cfg.cols, cfg.out_bits
    top = (1 << cfg.crossbar.input_bits) - 1
    mult_top, word = (1 << (cfg.mult_bits - 1)) - 1, (1 << 63) - 1
    ks = [1, total, rows, min(rows + 1, total), *rng.integers(1, total + 1, 5)]
    ns = [cols, 1, cols, *rng.integers(1, cols + 1, 3), cols, cols, int(rng.integers(1, cols + 1))]
    modes = ["relu", "signed", "raw"] * 3
    # relu S=63, signed S=0, raw; relu S=0, signed S=63, raw; relu/signed natural; raw
    shifts = [63, 0, 0, 0, 63, int(rng.integers(1, 64)), None, None,
              int(rng.integers(1, 64))]
    cases = []
    for k, n, mode, shift in zip(ks, ns, modes, shifts, strict=True):
        k, n = int(k), int(n)
        w = random_full_weights(cfg, rng)[:k, :n]
        x = rng.integers(0, top + 1, size=(6, k))
        x[0] = top
        dots = x @ w
        big = int(np.abs(dots).max()) or 1
        natural = shift is None
        if natural:
            shift = max(0, min(63, cfg.mult_bits - 3 - out_bits + big.bit_length()))
        if mode == "raw":
            rq = Requant(mult=np.ones(n, np.int64), bias=np.zeros(n, np.int64), shift=shift,
                         relu=False, raw=True, out_bits=out_bits)
        else:
            scale = min(mult_top, max(1, ((3 << out_bits) << shift) // (2 * big)))
            mult = rng.integers(scale // 2, scale + 1, n) * rng.choice([-1, 1], n)
            reach = min(word, (1 << out_bits) << shift)
            bias = np.array([int(rng.integers(-reach, reach, dtype=np.int64, endpoint=True))
                             for _ in range(n)], dtype=np.int64)
            if natural:     # vector 0's results: below, above, between the rails
                lo = 0 if mode == "relu" else -(1 << (out_bits - 1))
                hi = lo + (1 << out_bits) - 1
                targets = [lo - 50, hi + 50] + [lo + (hi - lo) * j // n for j in range(1, n - 1)]
                bias = np.array([(target << shift) - int(dots[0, c]) * int(mult[c])
                                 for c, target in enumerate(targets[:n])], dtype=np.int64)
            rq = Requant(mult=mult.astype(np.int64), bias=bias, shift=shift,
                         relu=mode == "relu", out_bits=out_bits)
        cases.append((k, n, mode, w, x, rq, requantize(dots, rq)))
    return cases


@cocotb.test()
async def tile_random_registers(dut):
    """Random register configurations in one simulation (:func:`random_register_cases`: K
    from 1 to every row, N from 1 to every column, each mode, S from 0 to 63), each on its
    own random full-range weights and inputs; the results reach both rails of the ReLU
    and the signed modes and the values between; the rounding term ``2**(S-1)`` and the
    shift of 63 included. Idle input, stalls, every port and cycle checked."""
    manifest, cfg, _, _ = _env()
    Clock(dut.clk, 10, unit="ns").start()
    tile = Tile(dut, manifest, cfg)
    cases = random_register_cases(cfg)
    for i, (k, n, mode, w, x, rq, expected) in enumerate(cases):
        prog = TileProgram(cfg, w)
        assert np.array_equal(prog.dots(x), x @ w)                  # no ADC saturates
        dut._log.info(f"config {i}: K={k} N={n} {mode} S={rq.shift}")
        await tile.reset()
        await tile.program(prog, rq, k, n)
        await tile.run(prog, x, expected, seed=30 + i, idle=0.2, stall=0.05, adc_latency=1)
    out_bits = cfg.out_bits
    for mode, lo, hi in (("relu", 0, (1 << out_bits) - 1),
                         ("signed", -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1)):
        seen = {int(v) for c in cases if c[2] == mode for v in c[6].reshape(-1)}
        assert {lo, hi} <= seen and len(seen - {lo, hi}) >= 3, f"{mode}: {sorted(seen)}"


@cocotb.test()
async def tile_reset_while_busy(dut):
    """Reset in the middle of a vector (and while an output waits): nothing survives."""
    manifest, cfg, case, vectors = _env()
    pick = np.arange(4) % len(case.x)            # 4 vectors, repeated if fewer
    x, expected = case.x[pick], case.expected[pick]
    prog = TileProgram(cfg, case.weights)
    Clock(dut.clk, 10, unit="ns").start()
    tile = Tile(dut, manifest, cfg)
    tl = tile_timeline(x.shape[1], expected.shape[1], [len(prog.planes(v)) for v in x],
                       forms=cfg.forms)
    for stop in (tl.requests[1][0] + 2 if tl.requests[1] else tl.busy[1][0] + 2,
                 tl.output_start[2] + 1):
        await tile.reset()
        await tile.program(prog, case.requant, x.shape[1], expected.shape[1])
        await tile.run(prog, x, expected, seed=5, idle=0.0, stall=0.0, adc_latency=1,
                       stop_at=stop)
        # Hold the output stalled and reset: every output must be idle after it.
        dut.m_axis_tready.value = 0
        dut.s_axis_tvalid.value = 0
        await tile.reset(cycles=1)
        for _ in range(30):
            await ReadOnly()
            assert int(dut.m_axis_tvalid.value) == 0, "a result survived the reset"
            assert int(dut.xbar_dac_valid.value) == 0, "a plane request survived the reset"
            assert int(dut.busy.value) == 0, "busy after reset"
            assert int(dut.s_axis_tready.value) == 1, "input buffer still full after reset"
            await tile.tick()
    # Registers are reset too; program again and run the whole case from scratch.
    await tile.reset()
    await tile.program(prog, case.requant, x.shape[1], expected.shape[1])
    await tile.run(prog, x, expected, seed=6, idle=0.1, stall=0.02, adc_latency=1)


# ---------------------------------------------------------------------------- pytest side

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl"
MODELS = {"tile-isaac": ("lenet-digits", "isaac"), "tile-forms8": ("lenet-digits-forms8", "forms8")}


def _case(tmp_path, block, layer, images):
    from chipforge import zoo
    from chipforge.verify.tile_case import layer_case, save_case
    from chipforge.zoo.data import digits

    model, accelerator = MODELS[block]
    x = digits(16).x_test[:images]
    case = layer_case(zoo.load(model), x, layer, accelerator)
    return save_case(case, tmp_path / f"{block}-{layer}.npz"), case


FAST_TESTS = ("tile_layer_idle_and_stalls|tile_random_vectors|tile_reset_while_busy|"
              "tile_random_weights_and_rails|tile_random_registers")


@pytest.mark.parametrize("block", sorted(MODELS))
def test_tile_conv1_one_image(block, tmp_path):
    """lenet-digits conv1 of one digits image (256 patches) on the committed tile: bit-exact
    with the ideal simulated run (requantized), every port and cycle as the cycle model."""
    from chipforge.verify.runner import run_cocotb

    path, case = _case(tmp_path, block, "conv1", 1)
    assert np.array_equal(case.ideal, case.x @ case.weights)
    run_cocotb(RTL / block, __file__, simulator="icarus", build_root=tmp_path,
               extra_env={"CHIPFORGE_TILE_CASE": str(path)}, test_filter=FAST_TESTS)


LAYERS = ["conv1", "conv2", "fc1", "fc2", "fc3"]
SLOW_SIMULATOR = os.environ.get("CHIPFORGE_TILE_SIMULATOR", "verilator")


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("block", sorted(MODELS))
def test_tile_every_layer(block, layer, tmp_path):
    """Every layer of lenet-digits (ISAAC) / lenet-digits-forms8 (FORMS-8) on a tile
    generated for it (``chipforge rtl tile``): every output of the layer for one image
    (conv: all its patches) or 4 images (fc), every column pass, bit-exact with the ideal
    simulated run and every cycle as the cycle model; the first pass also with idle input,
    stalls, random vectors and reset while busy. One build per layer (Verilator unless
    ``CHIPFORGE_TILE_SIMULATOR=icarus``); the per-pass numbers go to ``tile-report.json``."""
    import json
    import resource
    import time

    from chipforge.hw.generate import generate_tile
    from chipforge.verify.runner import run_cocotb

    model, accelerator = MODELS[block]
    path, case = _case(tmp_path, block, layer, 1 if layer.startswith("conv") else 4)
    assert np.array_equal(case.ideal, case.x @ case.weights)
    verilog, _ = generate_tile(accelerator, f"{model}:{layer}", tmp_path / "rtl")
    report = tmp_path / "tile-report.json"
    def cpu():
        own, sims = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
        return own.ru_utime + own.ru_stime + sims.ru_utime + sims.ru_stime

    start, wall = cpu(), time.perf_counter()
    run_cocotb(verilog.parent, __file__, simulator=SLOW_SIMULATOR, build_root=tmp_path,
               extra_env={"CHIPFORGE_TILE_CASE": str(path), "CHIPFORGE_TILE_REPORT": str(report)})
    passes = json.loads(report.read_text())
    checked = sum(p["outputs_checked"] for p in passes if p["idle"] == 0)
    assert checked == case.expected.size
    assert all(p["measured_cycles"] == p["model_cycles"] for p in passes)
    out = Path(os.environ.get("CHIPFORGE_TILE_SUMMARY", tmp_path / "summary.jsonl"))
    with out.open("a") as f:
        f.write(json.dumps({"tile": block, "layer": layer, "outputs_checked": checked,
                            "passes": passes, "simulator": SLOW_SIMULATOR,
                            "cpu_seconds": round(cpu() - start, 1),
                            "wall_seconds": round(time.perf_counter() - wall, 1)}) + "\n")
