"""``chipforge compare``: one model across accelerator presets, on one footing.

::

    import chipforge
    table = chipforge.compare("cnn.onnx", ["isaac", "forms8=cnn-forms8.npz", "cap-ram",
                                           "superbnn=bnn.onnx"],
                              data="test.npz", chips=4, out="build/compare")
    table.rows[0]["accuracy_hardware"], table.skipped, table.paths["csv"]

Each preset runs :func:`chipforge.simulate.simulate` (the one entry point ``chipforge
simulate`` uses: same import, post-training quantization, chips, cost model) on the model,
or on the model named for that preset (``PRESET=MODEL``). An accelerator ``.toml`` file
(``chipforge accelerators`` describes the keys) stands where a preset does, labelled by its
``name``: the way to compare non-ideal devices (variation, faults, ADC bits) per preset.
A preset whose family refuses the model is skipped, with the family's own error text as
the reason.

Columns (CSV in SI base units; Markdown and LaTeX with SI prefixes):

- ``accuracy_float`` / ``accuracy_ideal`` / ``accuracy_hardware``: as in ``simulate``;
  the hardware accuracy is the mean over ``chips`` programmed chips, with the sample
  standard deviation and the Student-t 95 % interval of the mean
  (:func:`chipforge.chips.spread`, clipped to [0, 1]);
- ``latency_s``, ``throughput_per_s``, ``energy_j`` (per inference), ``area_mm2``: the
  family's cost report, as ``simulate`` reports it (what each includes is the family's
  ``basis``, in the preset's JSON file);
- ``edp_js``: energy x latency of one inference;
- ``ops_per_inference``: 2 x the multiply-accumulates of one inference of the model the
  preset ran, counted densely from its layer shapes (conv, linear and activation x
  activation matmuls; zero weights and pruned tokens counted too, so every preset running
  the same model does the same nominal work); ``tops_per_w`` = ops / energy / 1e12, an
  effective figure, not the peak of the chip;
- ``notes``: why a cell is empty ("no cost model", "one chip: no interval", ...).

With ``out``, every finished preset is saved at once as ``presets/<preset>.json``
(atomically); a rerun with the same arguments skips the presets already there, and one
with different arguments is refused. Presets run one after the other, or on a local process
pool (``workers``), a Dask ``LocalCluster`` (``dask``) or an existing Dask scheduler
(``scheduler``), as ``chipforge sweep`` does (:mod:`chipforge.sim.sweep`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import textwrap
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "Comparison", "compare", "count_macs", "pareto_figure",
           "parse_accelerators"]

SCHEMA = 1

COLUMNS = ("preset", "family", "model", "conditions", "status", "accuracy_float",
           "accuracy_ideal", "accuracy_hardware", "accuracy_hardware_std",
           "accuracy_hardware_ci95_low", "accuracy_hardware_ci95_high", "chips", "latency_s",
           "throughput_per_s", "energy_j", "energy_wall_plug_j", "area_mm2", "edp_js",
           "ops_per_inference", "tops_per_w", "notes")
"""The CSV columns (SI base units; accuracies as fractions)."""


class CompareError(ValueError):
    """Bad compare input: one line, exit status 2 from the CLI."""


@dataclasses.dataclass
class Comparison:
    """What ``compare`` measured and wrote."""

    rows: list[dict[str, Any]]
    """One row per preset that ran (the :data:`COLUMNS`), in the order given."""
    skipped: list[dict[str, Any]]
    """``{"preset", "model", "reason"}`` of each preset whose family refused its model."""
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    """csv, markdown, latex, pareto (PNG) and the per-preset JSON folder, with ``out``."""
    computed: list[str] = dataclasses.field(default_factory=list)
    """Presets this call ran (the others came from ``out``)."""

    def markdown(self) -> str:
        return to_markdown(self.rows, self.skipped)

    def summary(self) -> str:
        lines = [self.markdown()]
        if self.paths:
            lines.append("wrote: " + ", ".join(str(p) for p in self.paths.values()))
        return "\n".join(lines)


# -- input ---------------------------------------------------------------------------------

def parse_accelerators(accelerators: str | Sequence[str], model: Any = None
                       ) -> list[tuple[str, str, Any]]:
    """``"isaac,forms8=cnn-forms8.npz,my-chip.toml"`` or a list of such entries ->
    ``[(label, accelerator, model)]``. An entry is a registered preset (``chipforge
    accelerators``) or an accelerator ``.toml`` file (labelled by the config's name), with
    ``=MODEL`` to run its own model instead of ``model``; each label at most once."""
    from chipforge.families import get_accelerator_spec, preset_names

    items = accelerators.split(",") if isinstance(accelerators, str) else list(accelerators)
    known = preset_names()
    triples: list[tuple[str, str, Any]] = []
    for item in items:
        if isinstance(item, tuple):
            accelerator, own = item
        else:
            accelerator, sep, own = str(item).strip().partition("=")
            accelerator, own = accelerator.strip(), (own.strip() if sep else None)
            if sep and not own:
                raise CompareError(f"--accelerators entry {item!r}: give PRESET or "
                                   "PRESET=MODEL")
        if not accelerator:
            continue
        if accelerator.lower().endswith(".toml"):
            if not Path(accelerator).is_file():
                raise CompareError(f"--accelerators: {accelerator} does not exist")
            label = get_accelerator_spec(accelerator).name   # validates the file first
        elif accelerator in known:
            label = accelerator
        else:
            raise CompareError(f"--accelerators: unknown preset {accelerator!r}; presets: "
                               f"{', '.join(known)} (or an accelerator .toml file)")
        if any(t[0] == label for t in triples):
            raise CompareError(f"--accelerators: {label!r} given twice")
        chosen = own if own is not None else model
        if chosen is None:
            raise CompareError(f"--accelerators: {label!r} has no model (give MODEL or "
                               f"{accelerator}=MODEL)")
        _check_model_file(chosen, label)
        triples.append((label, accelerator, chosen))
    if not triples:
        raise CompareError("--accelerators: give at least one preset (e.g. isaac,forms8)")
    return triples


def _check_model_file(model: Any, preset: str) -> None:
    if isinstance(model, str | Path) and Path(str(model)).suffix.lower() in (".onnx", ".npz") \
            and not Path(str(model)).is_file():
        raise CompareError(f"model for {preset}: {model} does not exist")


def _identifier(text: str) -> str:
    """A file-name-safe identifier of a preset name (presets come from the registry)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".") or "preset"


def _accelerator_fingerprint(accelerator: str) -> str:
    """A preset's name, or a TOML file's path and content digest (an edited file is
    another accelerator)."""
    if not accelerator.lower().endswith(".toml"):
        return accelerator
    return _fingerprint(accelerator)


def _fingerprint(value: Any) -> Any:
    """What identifies a model or data argument in the manifest (arrays by digest)."""
    from chipforge.sim.graph import Graph

    if isinstance(value, str | Path) and Path(value).is_file():
        # a file's content, not only its name: a retrained model is another compare
        digest = hashlib.sha256()
        with open(value, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{value} sha256:{digest.hexdigest()[:16]}"
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Graph):
        digest = hashlib.sha256()
        for node in value.nodes:
            digest.update(node.name.encode())
            for key in sorted(node.params):
                digest.update(np.ascontiguousarray(node.params[key]).tobytes())
        return f"graph {value.name} sha256:{digest.hexdigest()[:16]}"
    if hasattr(value, "x_test"):
        value = (value.x_test, value.y_test)
    if isinstance(value, tuple | list):
        digest = hashlib.sha256()
        for part in value:
            array = np.ascontiguousarray(np.asarray(part))
            digest.update(str((array.shape, array.dtype)).encode())
            digest.update(array.tobytes())
        return f"arrays sha256:{digest.hexdigest()[:16]}"
    return repr(value)


# -- counting ops ----------------------------------------------------------------------------

def count_macs(graph) -> int:
    """Multiply-accumulates of one inference of ``graph``, counted densely from the layer
    output shapes: conv (outputs x in-channels/groups x kernel), linear (outputs x inputs)
    and activation x activation matmul (outputs x inner size). Zero weights are counted
    (the model's nominal work, the same for every preset that runs it)."""
    from chipforge.sim.executor import run_graph
    from chipforge.sim.graph import Op

    values = run_graph(graph, np.zeros((1, *graph.input_shape)), quantized=False,
                       return_all=True)
    macs = 0
    for node in graph.nodes:
        out = values[node.name]
        if node.op == Op.CONV2D:
            macs += out.size * int(np.prod(node.params["weight"].shape[1:]))
        elif node.op == Op.LINEAR:
            macs += out.size * int(node.params["weight"].shape[1])
        elif node.op == Op.MATMUL:
            macs += out.size * int(values[node.inputs[0]].shape[-1])
    return int(macs)


# -- one preset ----------------------------------------------------------------------------

def run_preset(task: dict[str, Any]) -> dict[str, Any]:
    """Run one preset (a pure function of ``task``, so it runs the same on any worker);
    returns its row, or ``status`` "skipped" with the family's reason."""
    from chipforge.families import get_accelerator_spec
    from chipforge.simulate import simulate

    preset, model = task["preset"], task["model"]
    accelerator = task.get("accelerator", preset)
    spec = get_accelerator_spec(accelerator)
    # the family options (non-idealities) this preset's family has; the others do not
    # apply to it, and the row's conditions say which were used
    options = {k: v for k, v in (task.get("options") or {}).items()
               if k in spec.family.options}
    conditions = ", ".join(f"{k}={v}" for k, v in options.items()) or "preset defaults"
    base = {"preset": preset, "family": spec.family.name, "model": _model_label(model),
            "conditions": conditions}
    try:
        result = simulate(model, accelerator=accelerator, data=task["data"],
                          samples=task["samples"], seed=task["seed"], chips=task["chips"],
                          cycle_samples=task["cycle_samples"], progress=False, **options)
    except ValueError as e:   # FamilyError included: the family refuses this model
        return base | {"status": "skipped", "reason": " ".join(str(e).split())}
    notes: list[str] = []
    spread = result.accuracy_hardware_spread
    row = base | {"status": "done", "accuracy_float": result.accuracy_float,
                  "accuracy_ideal": result.accuracy_ideal,
                  "accuracy_hardware": result.accuracy_hardware,
                  "accuracy_hardware_std": None if spread is None else spread["std"],
                  "accuracy_hardware_ci95_low": None if spread is None else spread["ci95_low"],
                  "accuracy_hardware_ci95_high":
                      None if spread is None else spread["ci95_high"],
                  "chips": len(result.chips) or 1, "samples": result.samples,
                  "per_chip": result.chips, "model_name": result.model}
    if result.accuracy_float is None:
        notes.append("accuracy float: the model has no float view on this family")
    if spread is None:
        notes.append("accuracy interval: one chip")
    cost = result.cost or {}
    for key in ("latency_s", "throughput_per_s", "energy_j", "area_mm2"):
        row[key] = cost.get(key)
    if not result.cost:
        notes.append(f"latency, throughput, energy, area, EDP, TOPS/W: no cost model "
                     f"(family {spec.family.name})")
    else:
        missing = [k.split("_")[0] for k in ("energy_j", "area_mm2") if cost.get(k) is None]
        if missing:
            notes.append(f"{', '.join(missing)}: not in the family's cost model"
                         + (" (so no EDP, TOPS/W)" if "energy" in missing else ""))
        row["cost_basis"] = cost.get("basis", "")
        extra = cost.get("extra") or {}
        if extra.get("energy_per_inference_wall_plug_j") is not None:
            # a 4 K chip's energy and its wall-plug energy are two footings: say both
            row["energy_wall_plug_j"] = extra["energy_per_inference_wall_plug_j"]
            notes.append(f"energy: the chip at 4.2 K; with the cryocooler "
                         f"(x{extra.get('cryocooler_factor', 0):g} W/W) "
                         f"{_si(row['energy_wall_plug_j'], 'J')} wall-plug")
    row["edp_js"] = (row["energy_j"] * row["latency_s"]
                     if row["energy_j"] is not None and row["latency_s"] is not None else None)
    try:
        ops = 2 * count_macs(spec.family.load_model(model))
    except Exception as e:  # a graph the dense counter cannot run: say so, keep the row
        ops = None
        notes.append(f"ops: not counted ({type(e).__name__}: {e})")
    row["ops_per_inference"] = ops
    row["tops_per_w"] = (ops / row["energy_j"] / 1e12
                         if ops is not None and row["energy_j"] else None)
    row["notes"] = "; ".join(notes)
    return row


def _model_label(model: Any) -> str:
    from chipforge.sim.graph import Graph

    if isinstance(model, Graph):
        return model.name
    return Path(str(model)).name if isinstance(model, Path) or os.sep in str(model) \
        else str(model)


# -- the comparison ------------------------------------------------------------------------

def compare(model: Any, accelerators: str | Sequence[str], data: Any = "digits", *,
            chips: int = 1, samples: int | None = None, seed: int = 0,
            out: str | Path | None = None, cycle_samples: int = 100,
            workers: int | None = None, dask: bool = False, scheduler: str | None = None,
            log: Callable[[str], None] | None = None, **options: Any) -> Comparison:
    """Compare ``model`` over ``accelerators`` (``"isaac,forms8=cnn-forms8.npz"`` or a list
    of such entries); see the module doc. ``log(line)`` is told each preset as it finishes
    or is skipped (the CLI prints it). ``options`` are the families' convenience options
    (``variation=0.05, read_noise=0.02, fault_rate=0.001`` for ReRAM, ``sigma_ua`` for
    AQFP, ...): each preset takes those its family has (its row's ``conditions`` list
    them); an option no compared family has is refused."""
    from chipforge.chips import chip_seeds
    from chipforge.families import get_accelerator_spec

    chip_seeds(seed, chips)      # checks seed and chips
    if samples is not None and (isinstance(samples, bool) or samples < 1):
        raise CompareError(f"samples must be >= 1, not {samples}")
    if isinstance(cycle_samples, bool) or not isinstance(cycle_samples, int) \
            or cycle_samples < 1:
        raise CompareError(f"cycle_samples must be an integer >= 1, not {cycle_samples!r}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise CompareError(f"workers must be >= 1, not {workers}")
    if scheduler is not None and (dask or workers):
        raise CompareError("scheduler runs on an existing Dask cluster: it takes neither "
                           "dask nor workers")
    data = "digits" if data is None else data
    triples = parse_accelerators(accelerators, model)
    accepted = {o for _, a, _ in triples for o in get_accelerator_spec(a).family.options}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise CompareError(f"option(s) {', '.join(unknown)} apply to none of the compared "
                           f"presets' families (their options: "
                           f"{', '.join(sorted(accepted)) or 'none'})")
    log = log or (lambda line: None)
    manifest = {"schema": SCHEMA, "chips": chips, "samples": samples, "seed": seed,
                "options": {k: _fingerprint(v) for k, v in sorted(options.items())},
                "cycle_samples": cycle_samples, "data": _fingerprint(data),
                "presets": {label: [_accelerator_fingerprint(a), _fingerprint(m)]
                            for label, a, m in triples}}
    folder = None
    done: dict[str, dict[str, Any]] = {}
    if out is not None:
        folder = Path(out)
        done = _open_out(folder, manifest)
    tasks = [{"preset": label, "accelerator": a, "model": m, "data": data,
              "samples": samples, "seed": seed, "chips": chips, "cycle_samples": cycle_samples,
              "options": dict(options)}
             for label, a, m in triples if label not in done]
    for preset in done:
        log(f"{preset}: already in {folder} (resumed)")
    computed: list[str] = []

    def finished(row: dict[str, Any]) -> None:
        done[row["preset"]] = row
        computed.append(row["preset"])
        if folder is not None:
            _write_json_atomic(folder / "presets" / f"{_identifier(row['preset'])}.json",
                               row)
        log(_row_line(row))

    if tasks and (workers or dask or scheduler):
        _run_parallel(tasks, finished, workers=workers, dask=dask, scheduler=scheduler)
    else:
        for number, task in enumerate(tasks, 1):
            log(f"{task['preset']}: running ({number} of {len(tasks)})")
            finished(run_preset(task))
    ordered = [done[label] for label, _, _ in triples]
    rows = [r for r in ordered if r["status"] == "done"]
    skipped = [{"preset": r["preset"], "model": r["model"], "reason": r["reason"]}
               for r in ordered if r["status"] != "done"]
    result = Comparison(rows, skipped, computed=computed)
    if folder is not None:
        result.paths = write_tables(result, folder)
    if not rows:   # nothing to compare: most likely the data or model, not the presets
        raise CompareError(f"no preset ran the model; {skipped[0]['preset']}: "
                           f"{skipped[0]['reason']}")
    return result


def _row_line(row: dict[str, Any]) -> str:
    if row["status"] != "done":
        return f"{row['preset']}: skipped ({row['model']}): {row['reason']}"
    return (f"{row['preset']}: hardware accuracy {100 * row['accuracy_hardware']:.2f} %"
            + (f", energy {_si(row['energy_j'], 'J')}" if row.get("energy_j") else "")
            + (f", latency {_si(row['latency_s'], 's')}" if row.get("latency_s") else ""))


def _run_parallel(tasks: list[dict[str, Any]], finished: Callable[[dict], None], *,
                  workers: int | None, dask: bool, scheduler: str | None) -> None:
    """The presets on a process pool / Dask, through the sweeps' executor set-up."""
    import concurrent.futures as cf

    from chipforge.sim.sweep import SweepError, executor_backend

    try:
        with executor_backend(executor=None, workers=workers, scheduler=scheduler,
                              dask_local=dask, shared={}) as backend:
            futures = [backend.executor.submit(run_preset, task) for task in tasks]
            for future in cf.as_completed(futures):
                finished(future.result())
    except SweepError as e:
        raise CompareError(str(e)) from None


def _write_json_atomic(path: Path, data: Any) -> None:
    from chipforge.files import make_folder
    from chipforge.report import finite, plain

    make_folder(path.parent)         # a symlinked presets/ folder is refused, not followed
    _write_text_atomic(path, json.dumps(finite(plain(data)), indent=2, sort_keys=True,
                                        allow_nan=False) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    """Through :func:`chipforge.files.atomic_write`: a reader (or a resumed compare) never
    sees half a file, a symlink in the way is replaced, never followed."""
    from chipforge.files import atomic_write

    atomic_write(path, text)


def _open_out(folder: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows already in ``folder`` (a compare with the same arguments), after writing or
    checking its ``compare.json``; a folder of another compare is refused in one line."""
    from chipforge.guard import check_output_dir

    check_output_dir(folder, option="--out")
    path = folder / "compare.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CompareError(f"--out {folder}: compare.json is unreadable ({e}); use "
                               "another --out") from None
        expected = json.loads(json.dumps(manifest))
        if old != expected:
            keys = sorted(k for k in set(old) | set(expected) if old.get(k) != expected.get(k))
            raise CompareError(f"--out {folder} holds a compare with other arguments "
                               f"({', '.join(keys)} differ); rerun with the same arguments "
                               "to resume, or use another --out")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(path, manifest)
    done = {}
    for preset in manifest["presets"]:
        file = folder / "presets" / f"{_identifier(preset)}.json"
        if file.exists():
            try:
                row = json.loads(file.read_text())
            except ValueError:
                continue          # a torn file cannot exist (atomic writes); recompute it
            if row.get("preset") == preset:
                done[preset] = row
    return done


# -- tables --------------------------------------------------------------------------------

_PREFIXES = [(1e-24, "y"), (1e-21, "z"), (1e-18, "a"), (1e-15, "f"), (1e-12, "p"),
             (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""), (1e3, "k"), (1e6, "M"),
             (1e9, "G"), (1e12, "T")]


def _si(value: float | None, unit: str) -> str:
    """``value`` with an SI prefix: 2.6e-7 J -> '260 nJ'."""
    if value is None:
        return ""
    if value == 0:
        return f"0 {unit}"
    factor, prefix = _PREFIXES[0]
    for f, p in _PREFIXES:
        if abs(value) >= f:
            factor, prefix = f, p
    return f"{value / factor:.3g} {prefix}{unit}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _hardware_cell(row: dict[str, Any]) -> str:
    text = _pct(row["accuracy_hardware"])
    if row.get("accuracy_hardware_ci95_low") is not None:
        text += (f" [{_pct(row['accuracy_hardware_ci95_low'])}, "
                 f"{_pct(row['accuracy_hardware_ci95_high'])}]")
    return text


_HEADERS = ("preset", "family", "model", "conditions", "float acc. (%)", "ideal acc. (%)",
            "hardware acc. (%), mean [95 % CI]", "chips", "latency", "throughput",
            "energy / inference", "area", "EDP", "TOPS/W", "notes")


def _display_cells(row: dict[str, Any]) -> list[str]:
    area = row.get("area_mm2")
    return [row["preset"], row["family"], row["model"], row.get("conditions", ""),
            _pct(row["accuracy_float"]),
            _pct(row["accuracy_ideal"]), _hardware_cell(row), str(row["chips"]),
            _si(row.get("latency_s"), "s"),
            _si(row.get("throughput_per_s"), "inf/s"), _si(row.get("energy_j"), "J"),
            "" if area is None else f"{area:.3g} mm²", _si(row.get("edp_js"), "J·s"),
            "" if row.get("tops_per_w") is None else f"{row['tops_per_w']:.3g}",
            row.get("notes", "")]


def to_csv(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in COLUMNS])
    for s in skipped:
        writer.writerow([s["preset"], "", s["model"], "", "skipped"]
                        + [""] * (len(COLUMNS) - 6)
                        + [s["reason"]])
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(_HEADERS), line(["---"] * len(_HEADERS))]
    lines += [line(_display_cells(r)) for r in rows]
    lines.append("")
    lines.append("Ops = 2 x the model's dense multiply-accumulates per inference; TOPS/W = "
                 "ops / energy per inference. Hardware accuracy: mean over the chips, 95 % "
                 "Student-t interval of the mean.")
    for s in skipped:
        lines.append(f"- skipped {s['preset']} ({s['model']}): {s['reason']}")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                  "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "µ": r"$\mu$", "²": r"$^2$", "·": r"$\cdot$"}


def _latex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def to_latex(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    """A ``tabular`` (booktabs) of the rows; the notes become numbered footnote marks."""
    headers = _HEADERS[:-1]
    lines = [r"% chipforge compare; needs \usepackage{booktabs}",
             r"\begin{tabular}{" + "l" * 4 + "r" * (len(headers) - 4) + "}", r"\toprule",
             " & ".join(_latex(h) for h in headers) + r" \\", r"\midrule"]
    notes: list[str] = []
    for row in rows:
        cells = [_latex(c) for c in _display_cells(row)[:-1]]
        if row.get("notes"):
            notes.append(row["notes"])
            cells[0] += f"$^{{{len(notes)}}}$"
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for i, note in enumerate(notes, 1):
        lines.append(f"% {i}: {note}")
        lines.append(rf"\par\noindent\footnotesize $^{{{i}}}$ {_latex(note)}")
    for s in skipped:
        lines.append(rf"\par\noindent\footnotesize skipped {_latex(s['preset'])}: "
                     f"{_latex(s['reason'])}")
    return "\n".join(lines) + "\n"


def write_tables(result: Comparison, folder: Path) -> dict[str, Path]:
    """``compare.csv``, ``compare.md``, ``compare.tex`` and ``pareto.png`` in ``folder``."""
    paths = {"csv": folder / "compare.csv", "markdown": folder / "compare.md",
             "latex": folder / "compare.tex", "pareto": folder / "pareto.png",
             "presets": folder / "presets"}
    _write_text_atomic(paths["csv"], to_csv(result.rows, result.skipped))
    _write_text_atomic(paths["markdown"], to_markdown(result.rows, result.skipped))
    _write_text_atomic(paths["latex"], to_latex(result.rows, result.skipped))
    import matplotlib.pyplot as plt

    from chipforge.files import atomic_savefig

    fig = pareto_figure(result.rows)
    try:
        atomic_savefig(fig, paths["pareto"], dpi=150)
    finally:
        plt.close(fig)
    return paths


# -- the Pareto figure ---------------------------------------------------------------------

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher accuracy (y),
    sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _label_offsets(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str]
                   ) -> list[tuple[int, int]]:
    """Label offsets (points) that keep labels off each other: each label takes the first
    offset of a fan around its point whose box (estimated from the text length at 7 pt)
    overlaps no label placed before it, nor a point (the least overlapping one if none)."""
    fig = ax.figure
    box = ax.get_position()
    width_pt = box.width * fig.get_figwidth() * 72
    height_pt = box.height * fig.get_figheight() * 72
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    span = math.log10(x1 / x0) or 1.0

    def where(x: float, y: float) -> tuple[float, float]:   # in points from the corner
        return (math.log10(x / x0) / span * width_pt, (y - y0) / ((y1 - y0) or 1) * height_pt)

    fan = [(4, 4), (4, -12), (-4, 10), (6, 14), (-4, -18), (8, -24), (-10, 20), (10, 26),
           (-12, -30), (12, 34), (-14, 38), (14, -38)]
    points = [where(x, y) for x, y in zip(xs, ys, strict=True)]
    placed: list[tuple[float, float, float, float]] = []
    offsets = []
    for (px, py), text in zip(points, texts, strict=True):
        w, h = 4.2 * len(text), 8.0

        def overlap(offset: tuple[int, int], w: float = w, h: float = h,
                    px: float = px, py: float = py) -> float:
            left = px + offset[0] - (w if offset[0] < 0 else 0)
            bottom = py + offset[1]
            total = 0.0
            for a, b, c, d in placed:
                dx = min(left + w, a + c) - max(left, a)
                dy = min(bottom + h, b + d) - max(bottom, b)
                total += max(dx, 0) * max(dy, 0)
            for qx, qy in points:
                if left - 2 <= qx <= left + w + 2 and bottom - 2 <= qy <= bottom + h + 2:
                    total += 20.0
            return total

        best = min(fan, key=lambda o: (overlap(o) > 0, overlap(o), fan.index(o)))
        offsets.append(best)
        placed.append((px + best[0] - (w if best[0] < 0 else 0), py + best[1], w, h))
    return offsets


def pareto_figure(rows: Sequence[dict[str, Any]]):
    """Hardware accuracy against energy per inference and against latency (log x axes in
    SI-prefixed units), one labelled point per preset with its 95 % interval over chips,
    the Pareto front (lower cost, higher accuracy) drawn and ringed. Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    chips = sorted({int(r.get("chips") or 1) for r in rows}) or [1]
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.4), sharey=True)
    for ax, key, word, unit in ((axes[0], "energy_j", "energy per inference", "J"),
                                (axes[1], "latency_s", "latency per inference", "s")):
        have = [r for r in rows if r.get(key)]
        missing = [r["preset"] for r in rows if not r.get(key)]
        xs = [float(r[key]) for r in have]
        ys = [100 * float(r["accuracy_hardware"]) for r in have]
        low = [100 * (r["accuracy_hardware"] - r["accuracy_hardware_ci95_low"])
               if r.get("accuracy_hardware_ci95_low") is not None else 0.0 for r in have]
        high = [100 * (r["accuracy_hardware_ci95_high"] - r["accuracy_hardware"])
                if r.get("accuracy_hardware_ci95_high") is not None else 0.0 for r in have]
        if have:
            ax.errorbar(xs, ys, yerr=[low, high], fmt="o", color="#4c72b0", ecolor="#8da0cb",
                        capsize=2, markersize=4, label="preset (95 % interval)")
            front = pareto_front(list(zip(xs, ys, strict=True)))
            ax.step([xs[i] for i in front], [ys[i] for i in front], where="post",
                    color="#dd8452", linestyle="--", linewidth=1, label="Pareto front")
            ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=80,
                       facecolors="none", edgecolors="#dd8452", zorder=3)
            ax.set_xscale("log")
            lo, hi = min(xs), max(xs)
            ax.set_xlim(lo / 3, hi * 3)    # room for the labels
            ax.set_ylim(top=min(106.0, max(ys) + 8))
            names = [r["preset"] for r in have]
            for name, offset, x, y in zip(names, _label_offsets(ax, xs, ys, names), xs, ys,
                                          strict=True):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=offset,
                            fontsize=7, ha="right" if offset[0] < 0 else "left",
                            arrowprops={"arrowstyle": "-", "color": "#999999",
                                        "linewidth": 0.5})
        ax.xaxis.set_major_formatter(EngFormatter(unit=unit))
        label = f"{word} ({unit}, log scale)"
        if missing:                        # said under the axis, where a reader looks
            label += "\n" + textwrap.fill(f"not shown (no {word.split()[0]}): "
                                          f"{', '.join(missing)}", 48)
        ax.set_xlabel(label, fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("hardware accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, frameon=False)
    chip_text = (f"{chips[0]} chip" + ("s" if chips[0] > 1 else "")) if len(chips) == 1 \
        else f"{chips[0]}-{chips[-1]} chips"
    fig.suptitle(f"accuracy vs cost per preset (mean over {chip_text}; bars: 95 % interval)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


class _CallableModule(types.ModuleType):
    """Lets ``chipforge.compare(model, accelerators, ...)`` call :func:`compare` while
    ``chipforge.compare`` stays the module that holds it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Comparison:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
