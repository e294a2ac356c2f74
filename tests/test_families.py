"""The accelerator interface (chipforge.families): a user's own ONNX model on every family,
options validated by the family's config, and a fifth family registered in a few lines."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from chipforge.cli import main
from chipforge.config import ConfigBase, check_float
from chipforge.families import (
    AcceleratorFamily,
    FamilyError,
    Mapping,
    RunOutput,
    families,
    get_accelerator_spec,
    register_family,
    unregister_family,
)
from chipforge.importers.onnx import load_onnx
from chipforge.importers.torch import torch_to_onnx
from chipforge.mainjob import run_main_job
from chipforge.zoo.data import digits

REPORT_KEYS = {"schema", "simulation", "cost", "family", "notes"}


def _ridge(features, y, lam=10.0):
    """Least-squares readout (weights (classes, features), bias) onto +-1 class targets."""
    a = np.c_[features, np.ones(len(features))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (2 * np.eye(10)[y] - 1))
    return w[:-1].T, w[-1]


def _features(module, x):
    with torch.no_grad():
        return module(torch.tensor(x, dtype=torch.float32)).numpy().astype(np.float64)


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    """A user's small CNN written in torch and exported to ONNX: as it is (float), and
    polarized in fragments of 16 rows (so also of 8 and 4) for FORMS. Fitted in closed
    form to stay fast: random single-signed 3x3 filters, a least-squares readout; the
    polarized readout keeps the fragment signs of FORMS' rule (mappings/polarize.py) and
    is refitted under them (non-negative least squares on sign-flipped features)."""
    from scipy.optimize import nnls

    from chipforge.mappings.polarize import polarize_graph
    from chipforge.sim.fragments import expand_signs

    torch.manual_seed(0)
    data = digits(8)
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    with torch.no_grad():
        signs = torch.tensor([1.0, -1.0] * 4).reshape(8, 1, 1, 1)
        conv.weight.copy_(conv.weight.abs() * signs)
    body = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Flatten())
    head = torch.nn.Linear(128, 10)
    feats = _features(body, data.x_train)
    w, b = _ridge(feats, data.y_train)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w)), head.bias.copy_(torch.as_tensor(b))
    net = torch.nn.Sequential(body, head).eval()
    tmp = tmp_path_factory.mktemp("cnn")
    example = torch.rand(2, 1, 8, 8)
    (tmp / "cnn.onnx").write_bytes(torch_to_onnx(net, example))
    fc = polarize_graph(load_onnx(tmp / "cnn.onnx"), 16).weighted_nodes()[-1]
    allowed = expand_signs(w.shape, fc.params["fragment_signs"], 16,
                           fc.attrs["fragment_order"])
    targets = 2 * np.eye(10)[data.y_train] - 1
    a = np.c_[feats, np.ones(len(feats))]
    for j in range(10):   # readout of class j with every weight of its fragment's sign
        flip = np.r_[allowed[j], 1.0]
        coef, _ = nnls(np.c_[a * flip, -a[:, -1]], targets[:, j])
        w[j], b[j] = (coef[:-2] * flip[:-1]), coef[-2] - coef[-1]
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w)), head.bias.copy_(torch.as_tensor(b))
    (tmp / "cnn-polarized.onnx").write_bytes(torch_to_onnx(net, example))
    return tmp / "cnn.onnx", tmp / "cnn-polarized.onnx"


class _Sign(torch.nn.Module):
    """The binarization a user exports: Where(x >= 0, 1, -1)."""

    def forward(self, x):
        return torch.where(x >= 0, 1.0, -1.0)


@pytest.fixture(scope="module")
def bnn_file(tmp_path_factory):
    """A user's binarized MLP in torch (sign activations, +-1 weights, batch norm with
    gammas of both signs), exported to ONNX (the importer folds the batch norm into the
    layer). Fitted in closed form: random +-1 hidden weights, batch-norm statistics from
    the training split, +-1 readout from the signs of a least-squares fit."""
    torch.manual_seed(0)
    data = digits(8)
    hidden, bn, out = torch.nn.Linear(64, 128, bias=False), torch.nn.BatchNorm1d(128), \
        torch.nn.Linear(128, 10)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), _Shift(), _Sign())
    x_pm = _features(encoder, data.x_train)
    with torch.no_grad():
        hidden.weight.copy_(torch.where(torch.rand(128, 64) < 0.5, 1.0, -1.0))
        mac = hidden(torch.tensor(x_pm, dtype=torch.float32))
        bn.running_mean.copy_(mac.mean(0)), bn.running_var.copy_(mac.var(0))
        bn.weight.copy_(torch.where(torch.rand(128) < 0.3, -1.0, 1.0) * (0.5 + torch.rand(128)))
        bn.bias.copy_(0.1 * torch.randn(128))
    net = torch.nn.Sequential(encoder, hidden, bn, _Sign(), out).eval()
    h = _features(net[:4], data.x_train)
    w, b = _ridge(h, data.y_train)
    scale = np.abs(w).mean()
    with torch.no_grad():
        out.weight.copy_(torch.as_tensor(np.where(w >= 0, 1.0, -1.0)))
        out.bias.copy_(torch.as_tensor(b / scale))
    path = tmp_path_factory.mktemp("bnn") / "bnn.onnx"
    path.write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    return path, _features(net, data.x_test).argmax(1), net


class _Shift(torch.nn.Module):
    def forward(self, x):
        return x - 0.47


def _report(out):
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    for png in ("accuracy.png", "layers.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report


# -- a user's ONNX model on every family ---------------------------------------------------

@pytest.mark.parametrize("preset", ["isaac", "forms4", "forms8", "forms16", "isqed-two-column",
                                    "isqed-differential"])
def test_users_cnn_on_every_reram_preset(cnn_files, preset, tmp_path, capsys):
    _, polarized = cnn_files
    out = tmp_path / preset
    assert main(["simulate", str(polarized), "--accelerator", preset, "--samples", "120",
                 "--cycle-samples", "8", "--out", str(out)]) == 0
    report = _report(out)
    sim = report["simulation"]
    assert sim["family"] == "reram" and report["family"]["name"] == "reram"
    assert sim["accuracy_ideal"] > 0.7                 # the user's model really classifies
    assert sim["accuracy_hardware"] == sim["accuracy_ideal"] and sim["agreement"] == 1.0
    assert sim["metrics"]["crossbars"] == sum(la["crossbars"] for la in sim["layers"]) >= 2
    # every preset has a cost model (ISQED: ISAAC tiles with paired columns)
    cost = report["cost"]
    assert cost["latency_s"] > 0 and cost["energy_j"] > 0 and cost["area_mm2"] > 0
    assert [la["name"] for la in cost["layers"]] == [la["node"] for la in sim["layers"]]
    # the layers' latencies add up to the model's (pipeline stages counted per layer)
    assert sum(la["latency_s"] for la in cost["layers"]) == pytest.approx(cost["latency_s"])
    assert cost["extra"]["crossbars_one_copy"] == sim["metrics"]["crossbars"]
    assert cost["extra"]["crossbars_priced_in_area"] >= sim["metrics"]["crossbars"]
    assert set(cost["includes"]) == {"latency", "energy", "area"}
    assert "accuracy hardware" in capsys.readouterr().out


def test_unpolarized_cnn_on_forms_is_one_clear_line(cnn_files, capsys):
    plain, _ = cnn_files
    assert main(["simulate", str(plain), "--accelerator", "forms8", "--samples", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not polarized for fragment size 8" in err and len(err.splitlines()) == 1


def test_users_quantized_cnn_on_the_pim_macro(cnn_files, tmp_path):
    plain, _ = cnn_files
    ideal = run_main_job(plain, "pim-ideal", out=tmp_path / "ideal", samples=150,
                         cycle_samples=4, progress=False).simulation
    assert ideal.accuracy_ideal > 0.7 and ideal.agreement == 1.0   # a wide ideal ADC: exact
    job = run_main_job(plain, "cap-ram", out=tmp_path / "cap", samples=150, cycle_samples=4,
                       progress=False)
    report = _report(tmp_path / "cap")
    assert report["family"]["name"] == "pim" and report["simulation"]["accelerator"] == "cap-ram"
    # 6-bit ADC on a 2048-MAC full scale: small partial sums are lost (PIM-QAT's point)
    assert job.simulation.agreement < 1.0
    cost = report["cost"]
    assert cost["energy_j"] > 0 and cost["latency_s"] > 0 and cost["area_mm2"] > 0
    assert set(cost["energy_by_component_j"]) == {"adc", "array_dac_periphery"}
    # more ADC bits, through the same nested-key path as --set: closer to ideal
    wide = run_main_job(plain, "cap-ram", samples=150, cycle_samples=4, progress=False,
                        overrides={"adc.bits": 10}).simulation
    assert wide.agreement > job.simulation.agreement
    assert wide.config["adc"]["bits"] == 10


def test_users_binarized_mlp_on_superbnn(bnn_file, tmp_path):
    path, torch_pred, net = bnn_file
    job = run_main_job(path, "superbnn", out=tmp_path / "sb", seed=1, cycle_samples=4,
                       progress=False)
    sim = job.simulation
    report = _report(tmp_path / "sb")
    assert report["family"]["name"] == "aqfp" and report["cost"]["energy_j"] > 0
    assert sim.accuracy_ideal > 0.6
    assert sim.accuracy_hardware > sim.accuracy_ideal - 0.15 and sim.agreement > 0.7
    # the imported graph (batch norm folded into the weights by the importer) is the torch
    # model: same predictions on every test image
    from chipforge.sim.executor import run_graph

    graph = load_onnx(path)
    x = digits(8).x_test
    assert np.array_equal(run_graph(graph, x, quantized=False).argmax(1), torch_pred)
    # the same module straight from torch, through chipforge.from_torch and simulate()
    import chipforge

    direct = chipforge.simulate(chipforge.from_torch(net, torch.tensor(x[:4])),
                                accelerator="superbnn", seed=1)
    assert direct.accuracy_ideal == sim.accuracy_ideal
    assert direct.accuracy_hardware == sim.accuracy_hardware      # same seed, same chip


def test_folded_batch_norm_becomes_the_exact_column_threshold(bnn_file):
    """Each hidden layer's threshold decision on the array equals the graph's SIGN output."""
    from chipforge.sim.aqfp import binary_layers
    from chipforge.sim.executor import run_graph

    graph = load_onnx(bnn_file[0])
    encoder, layers = binary_layers(graph)
    x = digits(8).x_test
    values = run_graph(graph, x, quantized=False, return_all=True)
    signs = [n.name for n in graph.nodes if n.op.value == "sign"]
    h = run_graph(encoder, x, quantized=False).reshape(len(x), -1)
    for layer, sign_name in zip(layers[:-1], signs[1:], strict=True):
        h = np.where(h @ layer.weights >= layer.threshold, 1.0, -1.0)
        assert np.array_equal(h, values[sign_name].reshape(len(x), -1))


# -- options belong to a family --------------------------------------------------------------

@pytest.mark.parametrize(("accelerator", "model", "flag"), [
    ("forms8", "lenet-digits-forms8", ["--selectors", "keep80"]),
    ("isaac", "lenet-digits", ["--crossbar-size", "16"]),
    ("cap-ram", "lenet-digits", ["--variation", "0.1"]),
    ("superbnn", "bnn-digits", ["--fault-rate", "0.01"]),
    ("heatvit", "vit-digits", ["--bitstream-length", "8"]),
])
def test_a_foreign_option_is_one_line_naming_the_family(accelerator, model, flag, capsys):
    family = get_accelerator_spec(accelerator).family.name
    assert main(["simulate", model, "--accelerator", accelerator, *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"option {flag[0]} does not apply" in err and f"(family {family})" in err


@pytest.mark.parametrize(("accelerator", "key"), [
    ("forms8", "adc.bits"), ("cap-ram", "adc.bitz"), ("superbnn", "adc_bits"),
    ("heatvit", "engine.pe"),
])
def test_an_unknown_set_key_names_the_key_family_and_keys(accelerator, key, capsys):
    assert main(["simulate", "lenet-digits", "--accelerator", accelerator, "--set",
                 f"{key}=3"]) == 2
    err = capsys.readouterr().err.strip()
    family = get_accelerator_spec(accelerator).family.name
    assert len(err.splitlines()) == 1
    assert f"unknown key {key!r}" in err and f"(family {family})" in err and "keys:" in err


def test_set_values_are_typed_and_validated_by_the_config():
    spec = get_accelerator_spec("cap-ram", overrides={"adc.bits": 5, "decomposition":
                                                      "bit_serial", "adc.calibrate": "false"})
    assert spec.config.adc.bits == 5 and spec.config.adc.calibrate is False
    assert spec.config.decomposition.value == "bit_serial" and spec.name == "cap-ram"
    with pytest.raises(FamilyError, match="bits must be an integer in 1..16, not 0"):
        get_accelerator_spec("cap-ram", overrides={"adc.bits": 0})
    with pytest.raises(FamilyError, match="decomposition must be one of"):
        get_accelerator_spec("cap-ram", overrides={"decomposition": "diagonal"})
    forms = get_accelerator_spec("forms8", options={"fault_rate": 0.01, "variation": 0.1})
    assert forms.config.device.programming_sigma == 0.1
    assert forms.config.device.p_stuck_on + forms.config.device.p_stuck_off == \
        pytest.approx(0.01)


def test_accelerators_command_lists_families_and_a_presets_config(capsys):
    assert main(["accelerators"]) == 0
    out = capsys.readouterr().out
    for text in ("reram:", "pim:", "aqfp:", "heatvit:", "cap-ram", "--sigma-ua", "adc.bits"):
        assert text in out
    assert main(["accelerators", "cap-ram"]) == 0
    assert "adc.thermal_noise_lsb = 0.35" in capsys.readouterr().out


def test_rtl_with_another_family_is_refused(capsys):
    assert main(["simulate", "bnn-digits", "--accelerator", "superbnn", "--rtl", "fc1"]) == 2
    err = capsys.readouterr().err
    assert "--rtl" in err and "family aqfp" in err


def test_accelerator_files_name_their_family(tmp_path):
    from pathlib import Path

    import chipforge

    old = Path(chipforge.__file__).parent / "presets" / "forms8_clip.toml"
    assert get_accelerator_spec(old).family.name == "reram"      # old ReRAM files still work
    mine = tmp_path / "my-macro.toml"
    mine.write_text('family = "pim"\npreset = "cap-ram"\nrows = 64\n[adc]\nbits = 5\n')
    spec = get_accelerator_spec(mine)
    assert spec.family.name == "pim" and spec.config.rows == 64 and spec.config.adc.bits == 5
    assert spec.config.dac_bits == 4                               # the rest from the preset
    bad = tmp_path / "bad.toml"
    bad.write_text('family = "pim"\npreset = "cap-ram"\nrowz = 64\n')
    with pytest.raises(FamilyError, match="unknown key 'rowz'.*family pim"):
        get_accelerator_spec(bad)
    partial = tmp_path / "partial.toml"     # neither a preset nor a name: not completed
    partial.write_text('family = "pim"\nrows = 64\n')
    with pytest.raises(FamilyError, match="field\\(s\\) name required"):
        get_accelerator_spec(partial)
    with pytest.raises(FamilyError, match="unknown accelerator 'forms9'"):
        get_accelerator_spec("forms9")


def test_the_four_families_and_their_rtl_blocks():
    from chipforge.hw.generate import BLOCKS

    fams = families()
    assert {"reram", "pim", "aqfp", "heatvit"} <= set(fams)
    for fam in fams.values():
        assert set(fam.rtl_blocks) <= set(BLOCKS)
        for preset, config in fam.presets.items():
            assert get_accelerator_spec(preset).config is config


# -- a fifth family in a few lines ----------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(ConfigBase):
    noise: float = 0.0
    """Gaussian noise added to every logit."""

    def __post_init__(self):
        check_float("noise", self.noise, 0.0)


class ToyFamily(AcceleratorFamily):
    name, config_type, presets = "toy", ToyConfig, {"toy1": ToyConfig()}
    options = {"noise": "noise"}          # also a CLI flag: --noise

    def map(self, graph, config):
        return Mapping(self.name, [{"node": n.name} for n in graph.weighted_nodes()])

    def run(self, graph, mapped, config, x, *, seed=0):
        from chipforge.sim.executor import run_graph

        ideal = run_graph(graph, x)
        noise = np.random.default_rng(seed).normal(0, config.noise, ideal.shape)
        return RunOutput(ideal + noise, ideal, "exact")


def test_a_fifth_family_runs_the_main_job(cnn_files, tmp_path, capsys):
    register_family(ToyFamily())
    try:
        assert main(["simulate", str(cnn_files[0]), "--accelerator", "toy1", "--samples", "60",
                     "--noise", "1e6", "--out", str(tmp_path / "toy")]) == 0
        report = _report(tmp_path / "toy")
        sim = report["simulation"]
        assert sim["family"] == "toy" and sim["accuracy_ideal"] > 0.7
        assert sim["accuracy_hardware"] < 0.5            # the noise reached the logits
        assert report["cost"] is None and sim["config"] == {"noise": 1e6}
        assert main(["simulate", str(cnn_files[0]), "--accelerator", "toy1", "--samples", "60",
                     "--set", "noise=-1"]) == 2
        assert "noise must be a finite number in [0.0, inf), not -1" in \
            capsys.readouterr().err
        assert main(["simulate", str(cnn_files[0]), "--accelerator", "toy1",
                     "--variation", "0.1"]) == 2
        assert "does not apply to accelerator toy1 (family toy)" in capsys.readouterr().err
    finally:
        unregister_family("toy")
    assert "toy" not in families()


def test_pim_cost_counts_the_conversions_the_simulation_makes(cnn_files, monkeypatch):
    """The cost model's conversions per inference are those the functional PIM run makes."""
    from chipforge.families import quantize_if_needed
    from chipforge.importers.model import digits_train_inputs
    from chipforge.sim.adc import PimAdc

    graph = load_onnx(cnn_files[0])
    graph = quantize_if_needed(graph, digits_train_inputs(graph)[:64], "auto", "digits", [])
    spec = get_accelerator_spec("cap-ram-ternary")
    mapped = spec.family.map(graph, spec.config)
    x = digits(8).x_test[:3]
    cost = spec.family.cost(graph, mapped, spec.config, x)
    seen = []
    convert = PimAdc.convert
    monkeypatch.setattr(PimAdc, "convert", lambda self, sums, index=0, **kw: (
        seen.append(np.size(sums)), convert(self, sums, index, **kw))[1])
    spec.family.run(graph, mapped, spec.config, x)
    assert sum(seen) == 3 * cost.details["conversions_per_inference"] > 0
    assert cost.energy_j == pytest.approx(cost.details["conversions_per_inference"]
                                          * spec.config.conversion_energy_pj * 1e-12)


def test_the_accelerator_sweep_reaches_any_family_through_the_interface(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from chipforge.sim.sweep import run_sweep
    from chipforge.sweeps import get_sweep

    grid = {"model": ["lenet-digits"], "accelerator": ["cap-ram"], "key": ["adc.bits"],
            "value": [4, 9], "samples": [60]}
    with ThreadPoolExecutor(1) as pool:
        result = run_sweep(get_sweep("accelerator"), tmp_path / "pim", executor=pool, trials=1,
                           grid=grid, plot=False, progress=False, echo=None)
    by_bits = {row["value"]: row for row in result.summary}
    assert by_bits[9]["accuracy_mean"] > by_bits[4]["accuracy_mean"] + 0.3   # PIM-QAT's point
    bnn = grid | {"model": ["bnn-digits"], "accelerator": ["superbnn"], "key": ["sigma_ua"],
                  "value": [0.5, 64.0]}
    with ThreadPoolExecutor(1) as pool:
        result = run_sweep(get_sweep("accelerator"), tmp_path / "aqfp", executor=pool,
                           trials=1, grid=bnn, plot=False, progress=False, echo=None)
    by_sigma = {row["value"]: row for row in result.summary}
    assert by_sigma[0.5]["accuracy_mean"] > by_sigma[64.0]["accuracy_mean"] + 0.1
    with pytest.raises(ValueError, match="unknown key 'adc.bitz'"):
        run_sweep(get_sweep("accelerator"), tmp_path / "bad", grid=grid | {"key": ["adc.bitz"]},
                  trials=1, plot=False, progress=False, echo=None)


def test_a_custom_reram_config_gets_the_cycle_model_of_its_geometry():
    from pathlib import Path

    import chipforge
    from chipforge.families.reram import cycle_architecture
    from chipforge.sim.cycle.report import ARCHITECTURES

    clip = get_accelerator_spec(Path(chipforge.__file__).parent / "presets" / "forms8_clip.toml")
    derived = cycle_architecture(clip.config)
    assert derived.name == "forms8-clip"
    assert dataclasses.replace(derived, name="x") == dataclasses.replace(
        ARCHITECTURES["forms8"], name="x")                  # same FORMS-8 geometry
    small = cycle_architecture(get_accelerator_spec("forms8", overrides={"rows": 64}).config)
    assert small.crossbar_rows == 64 and small.fragment_size == 8
    isqed = cycle_architecture(get_accelerator_spec("isqed-two-column").config)
    assert isqed.columns_per_weight == 2 and not isqed.unit_column and isqed.adc_bits == 9


def test_isqed_pair_columns_cost_twice_the_conversions_of_one_column():
    """Same 8-bit model and ISAAC tiles: the pair of columns per weight doubles the ADC
    conversions (and the placement's crossbars) of ISAAC-8 without its unit column."""
    from chipforge import zoo
    from chipforge.families import quantize_if_needed
    from chipforge.sim.cycle.components import sar_adc_energy_pj
    from chipforge.zoo.data import digits

    data = digits(16)
    x = data.x_test[:4]
    graph = quantize_if_needed(zoo.load("lenet-digits"), data.x_train[:64], "auto",
                               "digits", [])
    costs = {}
    for preset in ("isaac", "isqed-two-column", "isqed-differential"):
        spec = get_accelerator_spec(preset)
        mapped = spec.family.map(graph, spec.config)
        costs[preset] = (mapped, spec.family.cost(graph, mapped, spec.config, x))
    (m_isaac, c_isaac), (m_two, c_two), (m_diff, c_diff) = costs.values()
    assert m_two.totals["crossbars"] == m_diff.totals["crossbars"]
    assert m_two.totals["crossbars"] > m_isaac.totals["crossbars"]
    isaac_conversions = sum(la.actions["adc"] for la in c_isaac.native.layers)
    two_conversions = sum(la.actions["adc"] for la in c_two.native.layers)
    # ISAAC-8: 4 cells per weight + a unit column per crossbar; ISQED: 2 x 4 cells, no
    # unit column: close to, not exactly, twice
    assert 1.8 * isaac_conversions < two_conversions < 2 * isaac_conversions
    adc_j = sum(la.energy_by_component_j["ADC"] for la in c_two.layers)
    assert adc_j == pytest.approx(two_conversions * sar_adc_energy_pj(9) * 1e-12)
    assert c_two.energy_j == pytest.approx(c_diff.energy_j)


def test_report_json_has_one_schema_for_every_family(tmp_path):
    def keys(model, accelerator, **kw):
        job = run_main_job(model, accelerator, out=tmp_path / accelerator, samples=20,
                           cycle_samples=3, progress=False, **kw)
        report = json.loads(job.paths["json"].read_text())
        assert set(job.paths) == {"json", "accuracy", "layers"}
        return (set(report), set(report["simulation"]), set(report["cost"]),
                {k for la in report["cost"]["layers"] for k in la})

    reram = keys("lenet-digits-forms8", "forms8")
    assert keys("lenet-digits", "cap-ram") == reram
    assert keys("bnn-digits", "superbnn") == reram
    assert keys("vit-digits", "heatvit") == reram


def test_a_binarized_conv_on_superbnn_is_one_clear_line(tmp_path, capsys):
    """Convolutions before the first linear layer would run on the host: refused."""
    net = torch.nn.Sequential(_Shift(), _Sign(), torch.nn.Conv2d(1, 2, 3), _Sign(),
                              torch.nn.Flatten(), torch.nn.Linear(72, 10))
    path = tmp_path / "bconv.onnx"
    path.write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    assert main(["simulate", str(path), "--accelerator", "superbnn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "binarized convolutions are not supported" in err
