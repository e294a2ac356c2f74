"""`chipforge cycles --data`: the cycle model on the quantized model and the data that
`chipforge simulate` runs (issue 16)."""

import numpy as np

from chipforge.cli import main
from chipforge.cycles import cycles_on_data
from chipforge.mainjob import run_main_job
from chipforge.sim.cycle.report import format_report

MODEL = "lenet-digits-forms8"          # polarized: the forms8 preset maps it


def _npz(path, x):
    np.savez(path, x=x, y=np.arange(len(x)) % 10)
    return path


def _conv1(report):
    return next(la for la in report.layers if la.name == "conv1")


def test_cycles_data_follows_the_inputs_zero_skipping(tmp_path, capsys):
    sparse = _npz(tmp_path / "sparse.npz", np.zeros((12, 1, 16, 16)))
    dense = _npz(tmp_path / "dense.npz", np.ones((12, 1, 16, 16)))
    runs = {name: cycles_on_data(MODEL, path, ["forms8"]).reports[0]
            for name, path in (("sparse", sparse), ("dense", dense))}
    assert main(["cycles", MODEL, "--arch", "forms8", "--images", "12"]) == 0
    out = capsys.readouterr().out
    assert "data: 12 digits test images" in out and "model: lenet-digits-forms8" in out
    digits_eic = float(next(line for line in out.splitlines()
                            if line.strip().startswith("conv1")).split()[7])
    # all-zero images: conv1's inputs have no bits to convert; all-one images: every
    # input is the 8-bit model's largest code; digits lie between
    assert _conv1(runs["sparse"]).mean_group_eic == 0
    assert 0 < digits_eic < _conv1(runs["dense"]).mean_group_eic <= 8
    assert runs["sparse"].cycles < runs["dense"].cycles
    assert runs["sparse"].skip_saving > runs["dense"].skip_saving


def test_cycles_data_gives_simulates_cycle_figures(tmp_path, capsys):
    x = np.random.default_rng(0).random((20, 1, 16, 16)) * (np.arange(16) % 3 == 0)
    data = _npz(tmp_path / "mine.npz", x)
    job = run_main_job(MODEL, "forms8", data, samples=20, cycle_samples=15, progress=False)
    assert main(["cycles", MODEL, "--data", str(data), "--samples", "20", "--images", "15",
                 "--arch", "forms8", "isaac8"]) == 0
    out = capsys.readouterr().out
    assert format_report(job.cycles) in out                  # figure for figure
    assert f"the first 15 inputs of {data}" in out
    assert "8-bit weights, 8-bit activations" in out
    assert "FORMS-8 (8-bit inputs of the model): the ReRAM family's placement" in out
    # isaac8 (no ReRAM preset) at the model's widths too: like work in the comparison
    assert "ISAAC (8-bit weights) (8-bit inputs of the model): the cycle model's own tiling" \
        in out


def test_cycles_data_refuses_data_that_does_not_fit_in_one_line(tmp_path, capsys):
    small = _npz(tmp_path / "eight.npz", np.zeros((4, 64)))           # 8x8, not 16x16
    assert main(["cycles", MODEL, "--data", str(small)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eight.npz" in err and "(1, 16, 16)" in err
    assert main(["cycles", MODEL, "--samples", "3"]) == 2
    assert "--samples applies to --data" in capsys.readouterr().err


def test_a_float_model_runs_at_8_bits_with_data_as_in_simulate(tmp_path, capsys):
    import torch

    from chipforge.importers.torch import torch_to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    path = tmp_path / "mlp.onnx"
    path.write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    assert main(["cycles", str(path), "--arch", "forms8", "--images", "10"]) == 0
    default = capsys.readouterr().out
    assert "float (activations taken at 16 bits" in default
    assert main(["cycles", str(path), "--arch", "forms8", "--data", "digits", "--images",
                 "10"]) == 0
    quantized = capsys.readouterr().out
    assert "quantized: 8-bit weights, 8-bit activations" in quantized
    assert "quantized after training to 8 bits" in quantized

    def eic(text):   # the second layer's inputs: ReLU outputs at 16 vs 8 bits
        return float(next(line for line in text.splitlines()
                          if "32x10" in line).split()[7])

    assert 8 < eic(default) <= 16 and 0 < eic(quantized) <= 8
