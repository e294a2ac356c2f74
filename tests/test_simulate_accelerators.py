"""`chipforge simulate` on the AQFP (superbnn) and HeatViT accelerators."""


import pytest

from chipforge.cli import main
from chipforge.simulate import simulate


def test_superbnn_runs_the_bundled_bnn_and_reports_energy():
    a = simulate("bnn-digits", accelerator="superbnn", seed=3)
    b = simulate("bnn-digits", accelerator="superbnn", seed=3)
    assert a.accuracy_hardware == b.accuracy_hardware          # the seed fixes the noise
    assert 0.8 < a.accuracy_ideal < 1 and abs(a.accuracy_hardware - a.accuracy_ideal) < 0.05
    assert 0 < a.agreement <= 1
    chip = a.cost["energy_j"]                                   # the 4.2 K chip alone
    assert 0 < chip and a.cost["latency_s"] > 0
    # area: the counted junctions at the assumed density, not a free number
    junctions = a.cost["extra"]["josephson_junctions"]
    assert a.cost["area_mm2"] == pytest.approx(junctions / 4340.0, rel=1e-12)
    assert a.cost["area_mm2"] > 0
    narrow = simulate("bnn-digits", accelerator="superbnn", seed=3, sigma_ua=64.0)
    assert narrow.accuracy_hardware < a.accuracy_hardware - 0.1  # wide gray zone: noise wins


def test_heatvit_reports_token_savings_and_speedup():
    r = simulate("vit-digits-keep50", accelerator="heatvit", samples=60)
    assert r.samples == 60 and 0.5 < r.agreement <= 1   # same predictions as no selectors
    assert r.metrics["mac_reduction"] > 0.3
    dense_cost = simulate("vit-digits-keep50", accelerator="heatvit", samples=60,
                          selectors="none").cost
    assert r.cost["cycles"] < dense_cost["cycles"]       # fewer tokens, fewer cycles
    dense = simulate("vit-digits", accelerator="heatvit", samples=60, selectors="none")
    assert dense.metrics["mac_reduction"] == 0


def test_heatvit_rejects_models_that_are_not_vits():
    with pytest.raises(ValueError, match="is not a ViT the HeatViT engine runs"):
        simulate("lenet-digits", accelerator="heatvit")
    with pytest.raises(ValueError, match="variant of the bundled vit-digits"):
        simulate("vit-digits-keep80", accelerator="heatvit", selectors="keep50")


def test_cli_main_job_on_both(tmp_path, capsys):
    assert main(["simulate", "bnn-digits", "--accelerator", "superbnn", "--bitstream-length",
                 "16", "--out", str(tmp_path / "sb"), "--samples", "50"]) == 0
    assert main(["simulate", "vit-digits", "--accelerator", "heatvit", "--selectors", "keep80",
                 "--out", str(tmp_path / "hv"), "--samples", "40"]) == 0
    out = capsys.readouterr().out
    assert "superbnn" in out and "keep80" in out
    assert (tmp_path / "sb" / "report.json").exists() and (tmp_path / "hv" / "report.json").exists()


def test_python_api_mirrors_the_cli():
    import chipforge

    result = chipforge.simulate("mlp-digits", accelerator="isaac", data="digits", samples=40)
    assert result.samples == 40 and result.accelerator == "isaac"
    assert result.accuracy_hardware == result.accuracy_ideal   # ideal devices: exact
    with pytest.raises(ValueError, match="not polarized for fragment size 8"):
        chipforge.simulate("mlp-digits", accelerator="forms8", samples=10)
