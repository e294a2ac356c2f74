"""HeatViT: the fixed-point units against their float functions, the fixed-point ViT with
token selectors against the float baseline, the FPGA cycle model, the zoo files and the
runner."""

import dataclasses

import numpy as np
import pytest
from scipy.special import erf

from chipforge.config import (
    HEATVIT_EXP,
    HEATVIT_GELU,
    HEATVIT_SIGMOID,
    PlanSigmoidConfig,
    PolyExpConfig,
    PolyGeluConfig,
    TokenPackagerConfig,
)
from chipforge.sim.ref.plan_sigmoid import plan_sigmoid, plan_sigmoid_float, sigmoid_float
from chipforge.sim.ref.poly_exp import int_softmax, poly_exp
from chipforge.sim.ref.poly_gelu import poly_gelu, poly_gelu_float
from chipforge.sim.ref.token_packager import package_token, packager_beats, token_packager


def _gelu(x):
    return x / 2 * (1 + erf(x / np.sqrt(2)))


def test_ibert_erf_polynomial_is_a_gelu():
    # The published coefficients: the float polynomial GELU is within 0.02 of GELU
    # everywhere and tends to x (not 0.75x, the delta1 = 0.5 form of papers.md §5.3).
    x = np.linspace(-10, 10, 20001)
    assert np.abs(poly_gelu_float(x) - _gelu(x)).max() < 0.02
    assert poly_gelu_float(np.array([100.0]))[0] == pytest.approx(100.0)


@pytest.mark.parametrize("cfg", [HEATVIT_GELU, PolyGeluConfig(frac_bits=5)])
def test_poly_gelu_error_within_one_lsb(cfg):
    x = np.arange(-(1 << (cfg.data_bits - 1)), 1 << (cfg.data_bits - 1))
    lsb = 2.0 ** -cfg.frac_bits
    err = np.abs(poly_gelu(x, cfg) * lsb - _gelu(x * lsb))
    # The polynomial's own error (< 0.0182) plus half an output LSB of rounding, plus the
    # erf term's truncation: measured 0.040 for Q3.4, 0.031 for Q2.5.
    assert err.max() < 0.0182 + lsb / 2 + 0.002


def test_poly_exp_error():
    cfg = HEATVIT_EXP
    x = np.arange(-(1 << (cfg.in_bits - 1)), 1)
    e = poly_exp(x, cfg) * 2.0 ** -cfg.out_frac_bits
    assert np.abs(e - np.exp(x * 2.0 ** -cfg.frac_bits)).max() < 0.01   # measured 0.0087
    assert np.all(np.diff(e) >= 0)                                       # monotonic
    with pytest.raises(ValueError, match="<= 0"):
        poly_exp(np.array([1]), cfg)


def test_plan_sigmoid_error_and_symmetry():
    cfg = HEATVIT_SIGMOID
    x = np.arange(-(1 << (cfg.in_bits - 1)), 1 << (cfg.in_bits - 1))
    s = plan_sigmoid(x, cfg) * 2.0 ** -cfg.out_frac_bits
    xf = x * 2.0 ** -cfg.frac_bits
    assert np.abs(plan_sigmoid_float(xf) - sigmoid_float(xf)).max() < 0.019  # PLAN: 0.0189
    assert np.abs(s - sigmoid_float(xf)).max() < 0.019 + 2.0 ** -cfg.out_frac_bits
    inside = x[1:]                                   # -x of the most negative code overflows
    assert np.array_equal(plan_sigmoid(inside, cfg) + plan_sigmoid(-inside, cfg),
                          np.full(inside.shape, 1 << cfg.out_frac_bits))


def test_int_softmax_masking_equals_removal():
    cfg = HEATVIT_EXP
    rng = np.random.default_rng(0)
    x = rng.integers(-200, 200, (50, 12))
    mask = rng.random((50, 12)) < 0.6
    mask[:, 0] = True
    p = int_softmax(x, cfg, 8, mask)
    assert np.all(p[~mask] == 0)
    for row in range(50):
        alone = int_softmax(x[row, mask[row]][None], cfg, 8)[0]
        assert np.array_equal(p[row, mask[row]], alone)
    assert np.all(np.abs(p.sum(1) - 256) <= 12)


def test_token_packager_reference_is_eq10():
    cfg = TokenPackagerConfig(channels=4, threshold=64)
    tokens = np.array([[1, 2, 3, 4], [10, 20, 30, 40], [-5, 0, 5, 7], [8, 8, 8, 8]])
    scores = np.array([100, 30, 10, 64])
    force = np.array([True, False, False, False])
    out = token_packager(tokens, scores, force, cfg)
    assert out.kept_index.tolist() == [0, 3]
    assert out.numerator.tolist() == (30 * tokens[1] + 10 * tokens[2]).tolist()
    assert out.denominator == 40
    pkg = package_token(out.numerator, out.denominator)
    assert np.allclose(pkg, (30 * tokens[1] + 10 * tokens[2]) / 40, atol=0.5)
    beats = packager_beats(tokens, scores, force, cfg)
    assert [b["package"] for b in beats] == [0, 0, 1] and beats[-1]["last"] == 1


@pytest.mark.parametrize("make", [
    lambda: PolyGeluConfig(frac_bits=8),
    lambda: PolyExpConfig(in_bits=1),
    lambda: PlanSigmoidConfig(frac_bits=2),
    lambda: TokenPackagerConfig(threshold=256),
])
def test_configs_reject_bad_values(make):
    with pytest.raises(ValueError, match="must be"):
        make()


# ---- the model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_results():
    from chipforge.sim.vit import run_vit
    from chipforge.zoo.data import digits
    from chipforge.zoo.vit import load_vit

    data = digits(8)
    out = {}
    for name in ("vit-digits", "vit-digits-keep50"):
        model = load_vit(name)
        out[name, "float"] = run_vit(model, data.x_test, fixed=False)
        out[name, "fixed"] = run_vit(model, data.x_test, fixed=True)
    return out, data.y_test


def test_fixed_point_backbone_matches_float(vit_results):
    results, y = vit_results
    float_acc = results["vit-digits", "float"].accuracy(y)
    fixed_acc = results["vit-digits", "fixed"].accuracy(y)
    assert float_acc > 0.95
    assert abs(fixed_acc - float_acc) <= 0.01


def test_selectors_cut_30_percent_of_macs_for_at_most_one_point(vit_results):
    # HeatViT: 28.4-65.3 % less computation at similar accuracy (DeiT/LV-ViT on ImageNet).
    results, y = vit_results
    baseline = results["vit-digits", "float"]
    pruned = results["vit-digits-keep50", "fixed"]
    reduction = 1 - pruned.macs.mean() / baseline.macs.mean()
    assert reduction >= 0.30
    assert pruned.accuracy(y) >= baseline.accuracy(y) - 0.01
    # Image-adaptive: the kept token count varies from image to image.
    assert pruned.kept[:, -1].std() > 0
    assert np.all(pruned.tokens_per_block[:, 0] == 17)
    assert np.all(pruned.tokens_per_block[:, -1] < 17)


def test_zoo_files_are_ir_graphs_loaded_without_pickle_and_reject_bad_files(tmp_path):
    from chipforge import zoo
    from chipforge.sim.graph import Op
    from chipforge.zoo.vit import VIT_VARIANTS, load_vit, save_vit

    for name in VIT_VARIANTS:
        model = load_vit(name)
        assert len(model.config.keep_thresholds) == len(model.config.selector_blocks)
        graph = zoo.load(name)                       # an ordinary IR graph
        assert sum(n.op is Op.TOKEN_SELECT for n in graph.nodes) == len(
            model.config.selector_blocks)
    model = load_vit("vit-digits-keep50")
    save_vit(model, tmp_path / "m.npz")
    again = load_vit(tmp_path / "m.npz")
    assert again.config == model.config
    broken = dict(np.load(tmp_path / "m.npz"))
    del broken["blocks.0.qkv/weight"]
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(ValueError, match="missing"):
        load_vit(tmp_path / "broken.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid npz"):
        load_vit(tmp_path / "junk.npz")


# ---- the cycle model ---------------------------------------------------------------------

def test_gemm_cycles_formula():
    from chipforge.sim.cycle.heatvit import FpgaEngineConfig, gemm_cycles

    engine = FpgaEngineConfig(pe_in=16, pe_out=8, tile_fill_cycles=3)
    assert gemm_cycles(10, 33, 9, engine) == 3 * 2 * (10 + 3)
    with pytest.raises(ValueError, match="exceeds dsp_budget"):
        FpgaEngineConfig(pe_in=128, pe_out=64, macs_per_dsp=1)


def test_deit_speedups_grow_with_pruning():
    from chipforge.sim.cycle.heatvit import deit_speedups

    mild = deit_speedups((0.9, 0.9, 0.9))
    strong = deit_speedups((0.5, 0.5, 0.5))
    for a, b in zip(mild, strong, strict=True):
        assert 1 < a["speedup_same_engine"] < b["speedup_same_engine"]
        assert a["mac_reduction"] < b["mac_reduction"]
        # 8-bit packing doubles the MACs per DSP: about 2x on top of token pruning.
        assert b["speedup_vs_16bit_baseline"] == pytest.approx(
            2 * b["speedup_same_engine"], rel=0.1)


def test_token_counts_no_selectors_is_dense():
    from chipforge.sim.cycle.heatvit import DEIT_S, HEATVIT_ZCU102, model_cycles, token_counts

    tokens, candidates = token_counts(DEIT_S, (), ())
    assert np.all(tokens == 197) and candidates.size == 0
    pruned, cand = token_counts(DEIT_S, (3,), (0.5,))
    assert pruned[3] == 1 + 98 + 1 and cand.tolist() == [196]
    dense = model_cycles(DEIT_S, tokens, HEATVIT_ZCU102)
    assert model_cycles(DEIT_S, pruned, HEATVIT_ZCU102, cand) < dense
    bigger = dataclasses.replace(HEATVIT_ZCU102, tile_fill_cycles=0)
    assert model_cycles(DEIT_S, tokens, bigger) < dense


def test_run_heatvit_and_cli(capsys):
    from chipforge.cli import main
    from chipforge.heatvit import run_heatvit

    r = run_heatvit("vit-digits", selectors="keep50", n_images=60)
    assert r["images"] == 60 and r["speedup"] > 1.05
    assert r["cycles_per_image"]["min"] < r["cycles_per_image"]["max"]   # image-adaptive
    with pytest.raises(ValueError, match="selectors must be one of"):
        run_heatvit(selectors="keep10")
    assert main(["heatvit", "--images", "20"]) == 0
    assert "speedup" in capsys.readouterr().out


def test_sim_selector_layer_is_the_token_linear_reference():
    # The fixed-point simulator's selector GEMM + requantization is exactly what the
    # token-linear RTL computes (both equal chipforge.sim.ref.token_linear).
    from chipforge.config import TokenLinearConfig
    from chipforge.sim.ref.token_linear import token_linear
    from chipforge.sim.vit import _Arith, _frac_for
    from chipforge.zoo.vit import load_vit

    model = load_vit("vit-digits-keep50")
    w = model.params["selectors.0.fc1.weight"]
    b = model.params["selectors.0.fc1.bias"]
    x = np.random.default_rng(0).integers(-128, 128, (50, w.shape[1]))
    x_frac, out_frac = 5, 4
    arith = _Arith(True, {"out": out_frac}, None)
    sim_out, _ = arith.linear("sel", x, w, b, x_frac, out="out")
    w_frac = _frac_for(float(np.abs(w).max()))
    w_q = np.round(w * 2.0 ** w_frac).astype(np.int64)
    b_q = np.round(b * 2.0 ** (x_frac + w_frac)).astype(np.int64)
    cfg = TokenLinearConfig(in_features=w.shape[1], out_features=w.shape[0],
                            out_shift=x_frac + w_frac - out_frac)
    assert np.array_equal(sim_out, token_linear(x, w_q, b_q, cfg))


@pytest.mark.slow
def test_retraining_keep50_reproduces_the_shipped_model():
    """`train_vit` rebuilds the shipped vit-digits-keep50 from the shipped backbone.
    Bit-identical only on the same CPU kernels: torch's float rounding differs between its
    AVX-512 and AVX2 paths, and 60 epochs of hard Gumbel decisions amplify it (measured,
    8-bit, test split: 98.06 % on the AVX-512 path the shipped file was regenerated with,
    98.61 % with ATEN_CPU_CAPABILITY=avx2; the earlier file, 97.50 %, came from kernels
    neither path reproduces). Hence the 1-point and 2 % tolerances (docs/heatvit-engine.md)."""
    from chipforge.sim.vit import run_vit
    from chipforge.zoo.data import digits
    from chipforge.zoo.vit import load_vit, train_vit

    data = digits(8)
    rebuilt = train_vit("vit-digits-keep50", backbone=load_vit("vit-digits"))
    shipped = load_vit("vit-digits-keep50")
    for model in (rebuilt, shipped):
        assert model.config.keep_thresholds
    a, b = (run_vit(m, data.x_test, fixed=True) for m in (rebuilt, shipped))
    assert abs(a.accuracy(data.y_test) - b.accuracy(data.y_test)) <= 0.01
    assert abs(a.macs.mean() - b.macs.mean()) / b.macs.mean() <= 0.02


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_selector_claim_holds_for_other_fine_tuning_seeds(seed):
    """Selectors fine-tuned with other seeds still cut >= 30 % of the MACs for <= 1 point
    (measured, 8-bit: seed 1 97.5 % at 38.2 % fewer MACs, seed 2 98.1 % at 37.9 %; float
    baseline 97.5 %)."""
    from chipforge.sim.vit import run_vit
    from chipforge.zoo.data import digits
    from chipforge.zoo.vit import load_vit, train_vit

    data = digits(8)
    backbone = load_vit("vit-digits")
    base = run_vit(backbone, data.x_test, fixed=False)
    pruned = run_vit(train_vit("vit-digits-keep50", backbone=backbone, seed=seed),
                     data.x_test, fixed=True)
    assert 1 - pruned.macs.mean() / base.macs.mean() >= 0.30
    assert pruned.accuracy(data.y_test) >= base.accuracy(data.y_test) - 0.01
