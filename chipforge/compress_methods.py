"""The ``chipforge compress`` methods (see :mod:`chipforge.compress` for the signature).

Each method takes the user's graph back to torch (:class:`chipforge.mappings.torch_export
.GraphModule`: any graph the float executor runs, residual adds, concatenations, grouped
and depthwise convolutions included), runs the papers' passes of :mod:`chipforge.mappings`
on the training split, and exports a graph again with the original node names. Stages are
checkpointed (``checkpoint.stage``) so an interrupted run resumes at the last finished
stage. Training is single-threaded and seeded (:func:`chipforge.mappings.train
.deterministic`): same seed, same model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from chipforge.chips import chip_seeds, spread
from chipforge.compress_options import parse_ratios
from chipforge.sim.graph import Graph, Op

__all__ = ["PIM_QAT_CHIPS", "forms", "isqed", "pim_qat", "superbnn"]

PIM_QAT_CHIPS = 4
"""Chips pim-qat measures its PIM validation accuracy on (chip 0 = the run seed's)."""

_QUANT_ATTRS = ("weight_bits", "weight_scale", "act_bits", "act_scale", "act_signed")
_FRAGMENT_ATTRS = ("fragment_size", "fragment_order")


# -- graph <-> torch ----------------------------------------------------------------------

def _float_graph(graph: Graph, *, keep_fragments: bool = False) -> Graph:
    """A copy without quantization (and fragment) state: weights stay as they are."""
    out = graph.copy()
    for n in out.weighted_nodes():
        for k in _QUANT_ATTRS + ("pim_gain",):
            n.attrs.pop(k, None)
        if not keep_fragments:
            for k in _FRAGMENT_ATTRS:
                n.attrs.pop(k, None)
            n.params.pop("fragment_signs", None)
    return out


def _module(graph: Graph, method: str):
    """The torch module of the graph (:class:`~chipforge.mappings.torch_export.GraphModule`:
    any graph the float executor runs, residual adds and concatenations included), or a
    ValueError saying why the method cannot train this model."""
    from chipforge.mappings.torch_export import graph_module

    if not graph.weighted_nodes():
        raise ValueError(f"{method}: model {graph.name!r} has no conv or linear layer to "
                         "compress")
    try:
        return graph_module(graph, keep_zeros=True)
    except ValueError as e:
        raise ValueError(f"{method}: cannot train model {graph.name!r} in torch: {e}") from None


def _module_name(node_name: str) -> str:
    from chipforge.mappings.torch_export import module_name

    return module_name(node_name)


def _export(module, template: Graph, *, quantize: bool) -> Graph:
    """The template graph with the trained weights of ``module`` (same nodes and names)."""
    from chipforge.mappings.torch_export import graph_from_module

    out = graph_from_module(module, template, quantize=quantize)
    out.meta = dict(template.meta)
    return out


class _Monitor:
    """Training-epoch callback: validation accuracy of the torch model, to the progress bar."""

    def __init__(self, progress, data) -> None:
        self.progress, self.data = progress, data
        self.last: float | None = None

    def __call__(self, model, epoch: int, loss: float) -> None:
        from chipforge.mappings.train import torch_accuracy

        self.last = torch_accuracy(model, self.data.x_test, self.data.y_test)
        self.progress.epoch(loss=loss, val_accuracy=self.last)


def _calibration_inputs(data, count: int = 512):
    import torch

    return torch.from_numpy(np.ascontiguousarray(data.x_train[:count], dtype=np.float32))


def _qat_stage(module, td, data, *, weight_bits: int, act_bits: int, epochs: int, lr: float,
               seed: int, progress, template: Graph) -> Graph:
    """8-bit (or ``weight_bits``) quantization-aware fine-tuning with constraints held."""
    from chipforge.mappings.quantize import QuantizeConfig, prepare_qat
    from chipforge.mappings.train import deterministic, train, training_monitor

    qcfg = QuantizeConfig(weight_bits=weight_bits, act_bits=act_bits, qat_epochs=epochs)
    with deterministic():
        prepare_qat(module, _calibration_inputs(data), qcfg)
    with progress.stage("quantize", epochs), training_monitor(_Monitor(progress, td)):
        train(module, td, epochs=epochs, lr=min(lr, qcfg.qat_lr), seed=seed, constrained=True)
    return _export(module, template, quantize=True)


def _map_names(graph: Graph, ratios: dict[str, float], method: str) -> dict[str, float]:
    weighted = [n.name for n in graph.weighted_nodes()]
    unknown = sorted(set(ratios) - set(weighted))
    if unknown:
        raise ValueError(f"{method}: prune_ratios name unknown layers {', '.join(unknown)}; "
                         f"weighted layers: {', '.join(weighted)}")
    return {_module_name(k): v for k, v in ratios.items()}


# -- forms --------------------------------------------------------------------------------

def forms(graph: Graph, data, *, seed: int, progress, checkpoint, options) -> Graph:
    """FORMS: ADMM pruning -> ADMM fragment polarization -> QAT (options: FormsOptions)."""
    from chipforge.mappings.admm import AdmmConfig, admm_prune
    from chipforge.mappings.polarize import PolarizeConfig, admm_polarize
    from chipforge.mappings.train import torch_accuracy, training_monitor
    from chipforge.sim.compression import compression_stats
    from chipforge.sim.fragments import FragmentOrder

    o = options
    base = _float_graph(graph)
    _module(base, "forms")                                  # refuse before any training
    ratios = dict.fromkeys((_module_name(n.name) for n in base.weighted_nodes()),
                           o.prune_ratio)
    ratios |= _map_names(base, parse_ratios(o.prune_ratios), "forms")
    td = data.train_data()
    result: dict[str, Any] = {}

    def prune() -> Graph:
        module = _module(base, "forms")
        if any(r > 0 for r in ratios.values()):
            cfg = AdmmConfig(rho=o.rho, epochs=o.prune_epochs, lr=o.lr,
                             finetune_epochs=o.finetune_epochs, finetune_lr=o.lr)
            with progress.stage("admm prune", o.prune_epochs + o.finetune_epochs), \
                    training_monitor(_Monitor(progress, td)):
                admm_prune(module, td, {k: v for k, v in ratios.items() if v > 0}, cfg,
                           seed=seed + 10)
        return _export(module, base, quantize=False)

    pruned = checkpoint.stage("prune", prune)
    result["val_accuracy_pruned_float"] = torch_accuracy(_module(pruned, "forms"), td.x_test,
                                                         td.y_test)

    def polarize() -> Graph:
        module = _module(pruned, "forms")
        cfg = PolarizeConfig(fragment_size=o.fragment_size,
                             order=FragmentOrder(o.fragment_order),
                             sign_update_every=o.sign_update_every,
                             joint_pruning=o.joint_pruning,
                             admm=AdmmConfig(rho=o.rho, epochs=o.polarize_epochs, lr=o.lr,
                                             finetune_epochs=o.finetune_epochs,
                                             finetune_lr=o.lr))
        with progress.stage("admm polarize", o.polarize_epochs + o.finetune_epochs), \
                training_monitor(_Monitor(progress, td)):
            admm_polarize(module, td, cfg, seed=seed + 20)
        return _export(module, base, quantize=False)

    shaped = checkpoint.stage("polarize", polarize) if o.polarize else pruned
    if o.polarize:
        result["val_accuracy_polarized_float"] = torch_accuracy(
            _module(shaped, "forms"), td.x_test, td.y_test)

    def quantize() -> Graph:
        module = _module(shaped, "forms")
        return _qat_stage(module, td, data, weight_bits=o.weight_bits, act_bits=o.act_bits,
                          epochs=o.qat_epochs, lr=o.lr, seed=seed + 30, progress=progress,
                          template=base)

    out = checkpoint.stage("quantize", quantize)
    stats = compression_stats(out)
    result |= {"sparsity": stats.sparsity, "pruning_ratio": stats.pruning_ratio,
               "idealized_crossbar_reduction (formula, not counted)":
                   stats.idealized_crossbar_reduction}
    if o.polarize:
        result["fragments"] = f"{o.fragment_size} ({o.fragment_order})"
        out.meta["compress_runs_on"] = (f"forms{o.fragment_size}" if o.fragment_size in (4, 8, 16)
                                        else f"a polarized ReRAM .toml with fragment_size="
                                             f"{o.fragment_size}")
    else:
        out.meta["compress_runs_on"] = "isaac, isqed-two-column, isqed-differential"
    out.meta["compress_result"] = result
    out.meta["idealized_crossbar_reduction"] = stats.idealized_crossbar_reduction
    return out


# -- isqed --------------------------------------------------------------------------------

def _fault_accuracy(graph: Graph, data, *, mapping: str, fault_rate: float, trials: int,
                    seed: int) -> float:
    """Mean accuracy over ``trials`` chips with stuck-at faults, on the validation split."""
    from chipforge.families.reram import run_reram
    from chipforge.sim.executor import run_graph

    x = data.x_val.astype(np.float64)
    ideal = run_graph(graph, x)
    accs = [run_reram(graph, mapping, x, data.y_val, seed=seed + t, ideal_logits=ideal,
                      float_accuracy=False, fault_rate=fault_rate).accuracy_hardware
            for t in range(trials)]
    return float(np.mean(accs))


def isqed(graph: Graph, data, *, seed: int, progress, checkpoint, options) -> Graph:
    """ISQED'21 progressive pruning with a fault-injected evaluate (options: IsqedOptions)."""
    from chipforge.mappings.admm import AdmmConfig
    from chipforge.mappings.progressive import ProgressiveConfig, progressive_prune
    from chipforge.mappings.quantize import QuantizeConfig, quantize_graph
    from chipforge.mappings.train import deterministic, training_monitor
    from chipforge.sim.compression import compression_stats

    o = options
    base = _float_graph(graph)
    _module(base, "isqed")
    td = data.train_data()
    calib = data.x_train[:512].astype(np.float64)
    qcfg = QuantizeConfig(weight_bits=o.weight_bits, act_bits=o.act_bits)
    fault_seed = seed * 1000 + 7

    def evaluate(module) -> float:
        float_graph = _export(module, base, quantize=False)
        with deterministic():
            q = quantize_graph(float_graph, calib, qcfg)
        return _fault_accuracy(q, data, mapping=o.mapping, fault_rate=o.fault_rate,
                               trials=o.fault_trials, seed=fault_seed)

    steps: list[dict] = []

    def prune() -> Graph:
        module = _module(base, "isqed")
        cfg = ProgressiveConfig(threshold=o.threshold, ratios=o.ratios,
                                admm=AdmmConfig(epochs=o.prune_epochs, lr=o.lr,
                                                finetune_epochs=o.finetune_epochs,
                                                finetune_lr=o.lr))

        def logged(m) -> float:
            acc = evaluate(m)
            progress.note(f"fault-injected validation accuracy {100 * acc:.2f} % "
                          f"(rate {o.fault_rate}, {o.fault_trials} chips)")
            return acc

        with progress.stage("progressive prune"), training_monitor(_Monitor(progress, td)):
            r = progressive_prune(module, td, cfg, evaluate=logged, seed=seed + 10)
        steps.extend(r.history)
        g = _export(r.model, base, quantize=False)
        g.meta["isqed_progress"] = {"reference_fault_accuracy": r.reference_accuracy,
                                    "fault_accuracy": r.accuracy,
                                    "ratios": {n.name: r.ratios[_module_name(n.name)]
                                               for n in base.weighted_nodes()},
                                    "history": [{k: v for k, v in h.items() if k != "blocks"}
                                                for h in r.history]}
        return g

    pruned = checkpoint.stage("progressive", prune)
    record = pruned.meta.get("isqed_progress", {})

    def quantize() -> Graph:
        module = _module(pruned, "isqed")
        return _qat_stage(module, td, data, weight_bits=o.weight_bits, act_bits=o.act_bits,
                          epochs=o.qat_epochs, lr=o.lr, seed=seed + 30, progress=progress,
                          template=base)

    out = checkpoint.stage("quantize", quantize)
    out.meta.pop("isqed_progress", None)
    stats = compression_stats(out)
    out.meta["compress_result"] = {
        "mapping": o.mapping, "fault_rate": o.fault_rate,
        "val_fault_accuracy_source": record.get("reference_fault_accuracy"),
        "val_fault_accuracy_pruned (PTQ)": record.get("fault_accuracy"),
        "val_fault_accuracy": _fault_accuracy(out, data, mapping=o.mapping,
                                              fault_rate=o.fault_rate,
                                              trials=o.fault_trials, seed=fault_seed),
        "sparsity": stats.sparsity,
        "layer_ratios": record.get("ratios"),
        "steps": record.get("history"),
    }
    return out


# -- pim-qat ------------------------------------------------------------------------------

def _pim_macro(o):
    """The PIM macro: a preset of the PIM family with the options' overrides."""
    from chipforge.families.pim import PIM_PRESETS
    from chipforge.sim.pim import Decomposition

    if o.preset not in PIM_PRESETS:
        raise ValueError(f"pim-qat: unknown PIM macro preset {o.preset!r}; presets: "
                         f"{', '.join(PIM_PRESETS)}")
    macro = PIM_PRESETS[o.preset]
    changes: dict[str, Any] = {}
    if o.decomposition:
        changes["decomposition"] = Decomposition(o.decomposition)
    if o.rows:
        changes["rows"] = o.rows
    if o.dac_bits:
        changes["dac_bits"] = o.dac_bits
    if o.b_pim:
        changes["adc"] = dataclasses.replace(macro.adc, bits=o.b_pim)
    return macro.replace(**changes) if changes else macro


def _pim_overrides(o) -> list[str]:
    """The ``chipforge simulate --set`` arguments that give the trained-for macro."""
    out = []
    for key, value in (("decomposition", o.decomposition), ("rows", o.rows),
                       ("dac_bits", o.dac_bits), ("adc.bits", o.b_pim)):
        if value:
            out.append(f"{key}={value}")
    return out


def _pim_config(o):
    """The functional simulator's PimConfig of the options' macro."""
    return _pim_macro(o).pim_config()


def _pim_modules():
    """Torch modules of pim-qat, built lazily (torch is imported on use)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from chipforge.mappings.pim_qat import _QuantPimMixin

    class PimLayer(_QuantPimMixin):
        """A conv or linear layer with fake quantization and the PIM product."""

        def __init__(self, layer: nn.Module, *, weight_bits: int, act_bits: int,
                     act_clip: float, layer_index: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(layer.weight.detach().clone())
            bias = layer.bias.detach().clone() if layer.bias is not None else \
                torch.zeros(layer.weight.shape[0])
            self.bias = nn.Parameter(bias)
            self.conv = isinstance(layer, nn.Conv2d)
            if self.conv:
                self.kernel = int(layer.kernel_size[0])
                self.stride, self.padding = int(layer.stride[0]), int(layer.padding[0])
            self.layer_index = layer_index
            self._setup_quant(weight_bits, act_bits, act_clip, channels=layer.weight.shape[0])

        def forward(self, x):
            x_q, a_scale = self.quantize_input(x)
            w_q, w_scale = self.quantize_weight()
            if not self.conv:
                return self.product(x_q, w_q.t()) * a_scale * w_scale[None, :] + self.bias
            n, _, h, w = x.shape
            cols = F.unfold(x_q, self.kernel, padding=self.padding, stride=self.stride)
            oh = (h + 2 * self.padding - self.kernel) // self.stride + 1
            ow = (w + 2 * self.padding - self.kernel) // self.stride + 1
            x_cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            y = self.product(x_cols, w_q.reshape(w_q.shape[0], -1).t())
            y = y * a_scale * w_scale[None, :] + self.bias[None, :]
            return y.reshape(n, oh * ow, -1).transpose(1, 2).reshape(n, -1, oh, ow)

    return PimLayer


def _layer_inputs(module, x) -> dict[str, Any]:
    """Float input and output of every conv/linear of ``module`` on ``x``."""
    import torch
    from torch import nn

    seen: dict[str, Any] = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, out, name=name: seen.__setitem__(name, (args[0].detach(),
                                                                  out.detach())))
        for name, m in module.named_children() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            module.eval()
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _build_pim_model(base: Graph, data, o):
    """(model, [(node name, PimLayer, BatchNorm or None)]) from the float graph."""
    import torch
    from torch import nn

    module = _module(base, "pim-qat")
    x = _calibration_inputs(data)
    seen = _layer_inputs(module, x)
    names = {_module_name(n.name): n.name for n in base.weighted_nodes()}
    for mname, (inp, _) in seen.items():
        if float(inp.min()) < 0:
            raise ValueError(f"pim-qat: layer {names[mname]!r} sees negative inputs (min "
                             f"{float(inp.min()):.3g} on the training data); the PIM macro "
                             "takes unsigned activations: inputs >= 0 and a ReLU before "
                             "every later conv/linear")
    PimLayer = _pim_modules()
    children = list(module.named_children())
    last = max(i for i, (_, m) in enumerate(children) if isinstance(m, nn.Conv2d | nn.Linear))
    record = []
    for i, (mname, m) in enumerate(children):
        if not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        inp, out = seen[mname]
        clip = float(torch.quantile(inp.flatten()[:200_000].double(), 0.999)) or 1.0
        pim = PimLayer(m, weight_bits=o.weight_bits, act_bits=o.act_bits, act_clip=clip,
                       layer_index=i)
        bn = None
        if i != last:    # a batch norm after every hidden layer, initialized as identity
            dims = (0, 2, 3) if out.ndim == 4 else (0,)
            mean, var = out.mean(dims), out.var(dims)
            bn = (nn.BatchNorm2d if out.ndim == 4 else nn.BatchNorm1d)(out.shape[1])
            with torch.no_grad():
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.weight.copy_(torch.sqrt(var + bn.eps))
                bn.bias.copy_(mean)
        # the graph module runs whatever sits under the layer's name
        setattr(module, mname, pim if bn is None else nn.Sequential(pim, bn))
        record.append((names[mname], pim, bn))
    return module, record


def _pim_train(model, data, *, epochs: int, lr: float, mode, seed: int, progress, stage: str,
               cfg_label: str) -> None:
    """:func:`chipforge.mappings.pim_qat.train` with the progress bar (validation accuracy
    on the same macro after every epoch), single-threaded and deterministic."""
    import torch

    from chipforge.mappings.pim_qat import train
    from chipforge.mappings.train import deterministic

    if epochs == 0:
        return
    xv = torch.from_numpy(np.ascontiguousarray(data.x_val, dtype=np.float32))

    def on_epoch(model, epoch: int, loss: float) -> None:
        with torch.no_grad():
            acc = float((model(xv).argmax(1).numpy() == data.y_val).mean())
        progress.epoch(loss=loss, val_accuracy=acc, on=cfg_label)

    with deterministic(), progress.stage(stage, epochs):
        train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, mode=mode, seed=seed,
              on_epoch=on_epoch)


def _pim_export(record, base: Graph, o, cfg) -> Graph:
    """The trained PIM model as a quantized graph: batch norms folded into the per-channel
    weight scales and biases (the integer weights only change sign where gamma < 0), the
    rescaling gains (one per output channel) as attr ``pim_gain``."""
    import torch

    out = base.copy()
    for name, pim, bn in record:
        node = out.node(name)
        with torch.no_grad():
            w_q, w_scale = pim.quantize_weight()
            w_q = torch.round(w_q).double()
            w_scale = w_scale.double()
            bias = pim.bias.detach().double()
            if bn is not None:
                k = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
                bias = (bias - bn.running_mean.double()) * k + bn.bias.detach().double()
                w_q = w_q * torch.sign(k).reshape((-1,) + (1,) * (w_q.dim() - 1))
                w_scale = w_scale * k.abs()
            clip = float(pim.act_clip.detach().abs()) + 1e-3
        scale = w_scale.numpy()
        node.params["weight"] = w_q.numpy() * scale.reshape((-1,) + (1,) * (w_q.dim() - 1))
        node.params["bias"] = bias.numpy()
        node.attrs.update(weight_bits=o.weight_bits, weight_scale=[float(s) for s in scale],
                          act_bits=o.act_bits, act_scale=clip / ((1 << o.act_bits) - 1),
                          act_signed=False,
                          pim_gain=[float(g) for g in pim.pim_gain.reshape(-1)])
    out.meta["pim"] = {"preset": o.preset, "overrides": _pim_overrides(o),
                       "macro": _pim_macro(o).to_dict(), "pim_config": cfg.to_dict(),
                       "note": "pim_gain multiplies each output channel's PIM product "
                               "(digital rescaling, folded into requantization in hardware)"}
    return out


def _pim_accuracy(graph: Graph, data, cfg, seed: int) -> float:
    from chipforge.sim.executor import run_graph
    from chipforge.sim.pim import PimMatmul

    logits = run_graph(graph, data.x_val.astype(np.float64), matmul=PimMatmul(cfg, seed=seed))
    return float((logits.argmax(1) == data.y_val).mean())


def pim_qat(graph: Graph, data, *, seed: int, progress, checkpoint, options) -> Graph:
    """PIM-aware training for a PIM ADC macro (options: PimQatOptions)."""
    import torch

    from chipforge.mappings.pim_qat import PimMode, bn_calibrate, calibrate_ranges
    from chipforge.mappings.quantize import QuantizeConfig, quantize_graph
    from chipforge.sim.executor import run_graph

    o = options
    cfg = _pim_config(o)
    base = _float_graph(graph)
    torch.manual_seed(seed)
    model, record = _build_pim_model(base, data, o)     # refuses before training
    label = (f"{o.preset}: {cfg.decomposition.value}, {cfg.rows} rows, b_PIM {cfg.adc.bits}"
             + (", noisy ADC" if cfg.adc.thermal_noise_lsb else ""))

    def state() -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    def load(arrays: dict[str, np.ndarray]) -> None:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})

    def digital() -> dict[str, np.ndarray]:
        _pim_train(model, data, epochs=o.qat_epochs, lr=o.lr, mode=PimMode(), seed=seed + 1,
                   progress=progress, stage="digital QAT", cfg_label="digital")
        return state()

    load(checkpoint.arrays("digital-qat", digital))

    def pim() -> dict[str, np.ndarray]:
        mode = PimMode(cfg=cfg, seed=seed)
        if o.calibrate_ranges:
            with _deterministic():
                ranges = calibrate_ranges([r[1] for r in record], model, data.x_train, mode)
            for (name, _, _), r in zip(record, ranges, strict=True):
                progress.note(f"{name}: activation clip x{r['act_clip_fraction']:g}, weight "
                              f"clip x{r['weight_clip']:g}, PIM error "
                              f"{r['relative_error_before']:.3f} -> {r['relative_error']:.3f}")
        _pim_train(model, data, epochs=o.epochs, lr=o.lr, mode=mode, seed=seed + 2,
                   progress=progress, stage="PIM-aware training", cfg_label=label)
        with _deterministic():
            bn_calibrate(model, data.x_train, mode, batches=o.bn_batches, seed=seed + 3)
        return state()

    load(checkpoint.arrays("pim-aware", pim))
    from chipforge.mappings.pim_qat import evaluate

    torch_pim = evaluate(model, np.ascontiguousarray(data.x_val, dtype=np.float32),
                         data.y_val, PimMode(cfg=cfg, seed=seed)) / 100.0
    out = _pim_export(record, base, o, cfg)
    with _deterministic():
        naive = quantize_graph(base, data.x_train[:512].astype(np.float64),
                               QuantizeConfig(weight_bits=o.weight_bits,
                                              act_bits=max(2, o.act_bits)))
    x_val = data.x_val.astype(np.float64)
    # The numpy PIM path and its torch twin share each chip's gain and offset spread but
    # draw the thermal noise from different generators (numpy, torch): two realizations
    # of the same noise. Measured on the same validation split: the spread over chips,
    # and both paths without thermal noise, where they agree (docs/pim-adc.md).
    chips = [_pim_accuracy(out, data, cfg, s) for s in chip_seeds(seed, PIM_QAT_CHIPS)]
    pim_accuracy = chips[0]                  # chip 0 is the run seed's chip
    noise_check = {}
    if cfg.adc.thermal_noise_lsb:
        quiet = dataclasses.replace(cfg, adc=dataclasses.replace(cfg.adc,
                                                                 thermal_noise_lsb=0.0))
        noise_check = {
            "val_accuracy_pim_no_thermal_noise": _pim_accuracy(out, data, quiet, seed),
            "val_accuracy_pim_torch_no_thermal_noise": evaluate(
                model, np.ascontiguousarray(data.x_val, dtype=np.float32), data.y_val,
                PimMode(cfg=quiet, seed=seed)) / 100.0}
    out.meta["compress_result"] = {
        "macro": label,
        "val_accuracy_naive_digital (PTQ)": float(
            (run_graph(naive, x_val).argmax(1) == data.y_val).mean()),
        "val_accuracy_naive_pim (PTQ)": _pim_accuracy(naive, data, cfg, seed),
        "val_accuracy_digital": float((run_graph(out, x_val).argmax(1) == data.y_val).mean()),
        "val_accuracy_pim": pim_accuracy,
        "val_accuracy_pim_torch": torch_pim,
        f"val_accuracy_pim_{PIM_QAT_CHIPS}_chips": spread(chips),
        **noise_check,
        "headline": {"accuracy": pim_accuracy,
                     "on": f"the simulated PIM macro ({label}; chip seed {seed})"},
    }
    out.meta["compress_runs_on"] = " ".join([o.preset, *(f"--set {a}"
                                                          for a in _pim_overrides(o))])
    return out


def _deterministic():
    from chipforge.mappings.train import deterministic

    return deterministic()


# -- superbnn -----------------------------------------------------------------------------

_MLP_OPS = {Op.LINEAR, Op.RELU, Op.FLATTEN, Op.BATCHNORM, Op.CLIP, Op.SIGN}


def superbnn(graph: Graph, data, *, seed: int, progress, checkpoint, options) -> Graph:
    """Randomized-BNN training with BN matching for the AQFP arrays (SuperbnnOptions)."""
    import torch

    from chipforge.mappings.superbnn import RbnnTrainConfig, _modules
    from chipforge.mappings.superbnn import _export as export_bnn
    from chipforge.mappings.train import deterministic
    from chipforge.sim.aqfp import SUPERBNN

    o = options
    encoder_threshold = _input_sign_threshold(graph)
    if encoder_threshold is not None:
        # the user's BNN binarizes its inputs itself: the AQFP encoder uses its threshold
        o = dataclasses.replace(o, input_threshold=encoder_threshold)
        graph = _without_input_encoder(graph)
    bad = [n for n in graph.nodes if n.op not in _MLP_OPS]
    if bad:
        raise ValueError(f"superbnn: layer {bad[0].name!r} is a {bad[0].op.value}; this "
                         "method binarizes MLPs (linear layers with ReLU / batch-norm / "
                         "flatten between them) for the AQFP arrays, whose mapping takes "
                         "binary linear layers only")
    linears = graph.weighted_nodes()
    sizes = [int(np.prod(graph.input_shape))] + [int(n.params["weight"].shape[0])
                                                  for n in linears]
    for a, n in zip(sizes, linears, strict=False):
        if n.params["weight"].shape[1] != a:
            raise ValueError(f"superbnn: linear {n.name!r} takes {n.params['weight'].shape[1]}"
                             f" inputs after {a}; the MLP must be a plain chain")
    if data.x_train.min() < 0 or data.x_train.max() > 1:
        raise ValueError(f"superbnn: inputs must lie in [0, 1] (the encoder thresholds pixels "
                         f"at {o.input_threshold}); they span {data.x_train.min():.3g}.."
                         f"{data.x_train.max():.3g}")
    hw = SUPERBNN
    recipe = RbnnTrainConfig(hidden=tuple(sizes[1:-1]) or (sizes[-1],), epochs=o.epochs,
                             batch_size=o.batch_size, lr=o.lr,
                             input_threshold=o.input_threshold, randomized=o.randomized,
                             seed=seed)
    if len(sizes) < 3:
        raise ValueError(f"superbnn: model {graph.name!r} has one linear layer; a BNN for the "
                         "AQFP arrays needs at least one hidden layer")

    def train() -> dict[str, np.ndarray]:
        with deterministic():
            torch.manual_seed(seed)
            model = _modules()(sizes, hw, o.randomized, hw.bitstream_length,
                               o.input_threshold)
            if o.init_from_model:
                with torch.no_grad():
                    for layer, node in zip(model.layers, linears, strict=True):
                        w = torch.from_numpy(node.params["weight"].astype(np.float32))
                        w = w / w.abs().max().clamp_min(1e-12)
                        if _binarized(node.params["weight"]):
                            # +-1 latent weights sit on the clamp and hardly flip: start
                            # them where PyTorch's initialization would, with the user's signs
                            w = w * BINARIZED_INIT / np.sqrt(w.shape[1])
                        layer.weight.copy_(w)
            x = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
            y = torch.from_numpy(np.ascontiguousarray(data.y_train))
            xv = torch.from_numpy(np.ascontiguousarray(data.x_val, dtype=np.float32))
            opt = torch.optim.Adam(model.parameters(), lr=o.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, o.epochs * -(-len(x) // o.batch_size))
            gen = torch.Generator().manual_seed(seed)
            with progress.stage("randomized-BNN training", o.epochs):
                from chipforge.mappings.train import minibatches

                for _ in range(o.epochs):
                    model.train()
                    order = torch.randperm(len(x), generator=gen)
                    total = 0.0
                    for lo, hi in minibatches(len(x), o.batch_size):
                        idx = order[lo:hi]
                        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        sched.step()
                        with torch.no_grad():
                            for layer in model.layers:
                                layer.weight.clamp_(-1.0, 1.0)
                        total += float(loss.detach()) * len(idx)
                    model.eval()
                    with torch.no_grad():
                        acc = float((model(xv).argmax(1).numpy() == data.y_val).mean())
                    progress.epoch(loss=total / len(x), val_accuracy=acc)
            return {k: v.detach().numpy() for k, v in model.state_dict().items()}

    arrays = checkpoint.arrays("rbnn", train)
    model = _modules()(sizes, hw, o.randomized, hw.bitstream_length, o.input_threshold)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    model.eval()
    holder = _Split(data)
    out = export_bnn(model, holder, recipe, hw, graph.name)
    # the exported encoder reads the user's input shape; its meta describes the training
    out.meta.pop("dataset", None)
    out.meta.pop("test_accuracy_deterministic", None)
    out.meta["compress_result"] = {"layers": "-".join(map(str, sizes)),
                                   "trained_for": "superbnn (AQFP arrays, noise_mac "
                                                  f"{hw.noise_mac:.3g})"}
    if encoder_threshold is not None:
        out.meta["compress_result"]["input_threshold (the model's own sign encoder)"] = \
            encoder_threshold
    return out


_ENCODER_OPS = {Op.FLATTEN, Op.ADD_CONST, Op.MUL_CONST, Op.SIGN}


def _encoder_nodes(graph: Graph) -> list:
    """The nodes before the first linear layer when they binarize the input: flatten,
    scalar shifts / positive scales, then a sign (a user BNN's input encoder)."""
    nodes = []
    for n in graph.nodes:
        if n.op is Op.LINEAR:
            break
        if n.op not in _ENCODER_OPS or (n.op in (Op.ADD_CONST, Op.MUL_CONST)
                                        and np.asarray(n.params["constant"]).size != 1):
            return []
        nodes.append(n)
    signs = [i for i, n in enumerate(nodes) if n.op is Op.SIGN]
    return nodes if len(signs) == 1 and signs[0] == len(nodes) - 1 else []


def _input_sign_threshold(graph: Graph) -> float | None:
    """The input value where a user BNN's encoder (``sign(a * x + b)``, any chain of
    scalar shifts and positive scales) flips to +1, or None when it has none."""
    nodes = _encoder_nodes(graph)
    if not nodes:
        return None
    scale, shift = 1.0, 0.0
    for n in nodes:
        c = float(np.asarray(n.params["constant"]).reshape(-1)[0]) if "constant" in n.params \
            else None
        if n.op is Op.ADD_CONST:
            shift += c
        elif n.op is Op.MUL_CONST:
            if c <= 0:
                return None
            scale, shift = scale * c, shift * c
    return -shift / scale


def _without_input_encoder(graph: Graph) -> Graph:
    """``graph`` with its input encoder replaced by a flatten (the AQFP encoder replaces it)."""
    from chipforge.sim.graph import Node

    encoder = _encoder_nodes(graph)
    names = {n.name for n in encoder}
    out = graph.copy()
    flatten = Node(Op.FLATTEN, "input_flatten", ("input",))
    nodes = [flatten] + [n for n in out.nodes if n.name not in names]
    for n in nodes[1:]:
        n.inputs = tuple("input_flatten" if i in names else i for i in n.inputs)
    out.nodes = nodes
    return out


BINARIZED_INIT = 0.5
"""superbnn starts an already binarized layer's +-1 weights (``init_from_model``) at latent
magnitude ``BINARIZED_INIT / sqrt(fan_in)``, the mean magnitude of PyTorch's default
uniform initialization, keeping their signs: at +-1 (the clamp) they hardly flip (measured:
6 epochs on digits 8x8, validation accuracy 11 % from +-1, see docs/compress.md)."""


def _binarized(weight: np.ndarray) -> bool:
    """A layer of +-c weights (one magnitude, no zeros): an already binarized model."""
    magnitudes = np.unique(np.abs(np.asarray(weight)))
    return magnitudes.size == 1 and magnitudes[0] > 0


@dataclasses.dataclass
class _Split:
    """The validation split under the names mappings.superbnn._export reads."""

    data: Any

    def __post_init__(self) -> None:
        self.x_test = self.data.x_val
        self.y_test = self.data.y_val
        self.input_shape = self.data.input_shape
