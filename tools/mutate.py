#!/usr/bin/env python3
"""Sabotage runner: one-line faults in the Python models and the generated Verilog, each run
against the tests that guard it; prints the kill ratio (issue 27).

Python sabotages (``PYTHON_MUTANTS``): a file, a regular expression that must match exactly
once in it (a structural locator: the code line as written, so a refactor that moves or
rewrites the line makes the runner say "locator stale" instead of silently testing nothing),
its replacement, and the tests that guard the claim. The file is edited in place, the tests
run in a subprocess, and the file is restored (``finally``; a stale backup is refused on the
next start). A mutant is *killed* when the tests fail; *survived* when they pass.

Verilog mutations (``--verilog``): every mutation list of the repository's mutation tests
(``testbenches/*/test_*_mutations.py``, driven through pytest with ``-m slow``; each case
is one mutant) plus the operator mutations below, generated structurally from the
committed ``rtl/`` (every n-th binary ``+``/``-``, comparison and constant of a block's
main always-blocks, located by yosys' own structure, not by copied strings) and run against
the block's cocotb testbench through :func:`chipforge.verify.runner.run_cocotb`.

Usage::

    .venv/bin/python tools/mutate.py                 # all Python sabotages
    .venv/bin/python tools/mutate.py --only exact    # those whose id contains "exact"
    .venv/bin/python tools/mutate.py --list          # list them, run nothing
    .venv/bin/python tools/mutate.py --verilog       # the Verilog mutation tests as well

``make mutate`` runs the Python set and the Verilog mutation tests. It is not part of
``make test`` (tens of minutes). Exit status 1 when a non-equivalent mutant survives.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    pattern: str
    """A regular expression matching exactly one place in ``file``."""
    replacement: str
    tests: tuple[str, ...]
    """pytest arguments (files, node ids, ``-k`` expressions) that guard the claim."""
    claim: str
    equivalent: str = ""
    """Non-empty: the mutant cannot change any result, and why (it is not counted)."""


T_COUNTS = "tests/test_counts_exact.py"
T_XBAR = "tests/test_reram_crossbars.py"
T_EXACT = "tests/test_exact_conv.py"
T_MEM = "tests/test_memory_chunking.py"
T_AQFP = "tests/test_aqfp.py"
T_PHYS = "tests/test_claims_physics.py"
T_CYCLE = "tests/test_cycle_model.py"
T_ADC = "tests/test_adc_config.py"

PYTHON_MUTANTS: tuple[Mutant, ...] = (
    # --- crossbar counts (placement) --------------------------------------------------
    Mutant("place-outputs-per-crossbar-2x", "mappings/placement.py",
           r"outputs_per_xbar = accel\.cols // per\n    col_tiles",
           "outputs_per_xbar = accel.cols // per * (2 if scheme is PlacementScheme.POLARIZED "
           "else 1)\n    col_tiles", (T_COUNTS,),
           "a polarized layer puts cols / cells_per_weight outputs on a crossbar"),
    Mutant("place-outputs-per-crossbar-half", "mappings/placement.py",
           r"outputs_per_xbar = accel\.cols // per\n    col_tiles",
           "outputs_per_xbar = accel.cols // (2 * per)\n    col_tiles", (T_COUNTS,),
           "column tiles = ceil(outputs / outputs per crossbar)"),
    Mutant("place-row-tiles", "mappings/placement.py",
           r"row_tiles = -\(-groups \* r // accel\.rows\)",
           "row_tiles = -(-groups * r // (2 * accel.rows))", (T_COUNTS,),
           "row tiles = ceil(kept rows / crossbar rows)"),
    Mutant("place-cells", "mappings/placement.py", r"cells = k_kept \* n_kept \* per\b",
           "cells = k_kept * n_kept", (T_COUNTS,), "programmed cells = K' N' cells/weight"),
    Mutant("place-isaac-offset", "mappings/placement.py",
           r"offset = \(1 << \(accel\.weight_bits - 1\)\)",
           "offset = (1 << (accel.weight_bits - 2))",
           (T_XBAR + "::test_ideal_devices_reproduce_the_quantized_model_exactly",),
           "ISAAC offset encoding 2**(B-1): ideal crossbars reproduce the quantized model"),
    Mutant("place-forms-sign-dropped", "mappings/placement.py",
           r"coef \*= np\.repeat\(signs, per, axis=1\)", "coef *= 1",
           (T_XBAR + "::test_forms_polarized_mapping_is_exact_for_every_fragment_size_and_order",),
           "FORMS applies one sign per fragment digitally"),
    Mutant("place-polarization-check-off", "mappings/placement.py",
           r"mixed = int\(\(has_neg & has_pos\)\.sum\(\)\)", "mixed = 0",
           (T_XBAR + "::test_forms_rejects_unpolarized_weights_and_mismatched_fragments",),
           "unpolarized weights are refused on FORMS"),
    Mutant("place-flip-rule-strict", "mappings/placement.py",
           r"flipped = 2 \* levels\.sum\(axis=1\) > rows_used",
           "flipped = 2 * levels.sum(axis=1) >= rows_used",
           (T_COUNTS,), "ISAAC/FORMS flip rule: flip past half the maximum (the reference's)"),
    # --- cycle model, zero-skipping -----------------------------------------------------
    Mutant("cycle-phys-cols-half", "sim/cycle/model.py",
           r"phys_cols = n \* arch\.cells_per_weight",
           "phys_cols = n * arch.cells_per_weight // 2", (T_COUNTS,),
           "the cycle model's own column tiling"),
    Mutant("cycle-skip-saving-2x", "sim/cycle/model.py",
           r"return 1\.0 - used / full", "return 2 * (1.0 - used / full)", (T_COUNTS,),
           "FORMS zero-skip saving of the cycle model"),
    Mutant("paper-skip-saving-2x", "sim/cycle/paper.py",
           r'"saving": 1\.0 - mean / input_bits', '"saving": 2 * (1.0 - mean / input_bits)',
           (T_COUNTS,), "FORMS Fig. 8(b) zero-skip savings"),
    Mutant("cycle-no-load-cycle", "sim/cycle/model.py",
           r"_vector_cycles\(eic \+ arch\.group_overhead_cycles, row_tiles",
           "_vector_cycles(eic, row_tiles", (T_COUNTS,),
           "a fragment takes EIC + 1 cycles (the RTL's load/trigger cycle)"),
    Mutant("cycle-groups-parallel", "sim/cycle/model.py",
           r"combine = per_crossbar\.max if arch\.parallel_groups else per_crossbar\.sum",
           "combine = per_crossbar.max", (T_COUNTS,),
           "FORMS activates one fragment at a time"),
    Mutant("eic-negative-inputs", "sim/ref/forms_fragment.py",
           r"mag = np\.where\(x < 0, \(1 << bits\) - 1, x\)", "mag = np.abs(x)",
           ("tests/test_forms_fragment.py::test_effective_bits_and_the_papers_example",),
           "negative two's-complement inputs take every bit"),
    Mutant("cycle-adc-count", "sim/cycle/model.py",
           r"adc = float\(eic\.sum\(\)\) \* col_conversions / work\.frames",
           "adc = float(eic.sum()) * phys_cols / work.frames / 2", (T_COUNTS,),
           "ADC conversions = EIC x occupied columns"),
    # --- exact convolution and product --------------------------------------------------
    Mutant("exact-conv-l1-bound-4x", "sim/executor.py", r"if x_max \* l1 < 2\.0\*\*24:",
           "if x_max * l1 < 2.0**26:", (T_EXACT,), "exact_conv: sums below 2**24 only"),
    Mutant("exact-conv-cs-bound-4x", "sim/executor.py",
           r"return patch_norm\[0\] \* l2 \* \(1 \+ 1e-9\) < 2\.0\*\*24",
           "return patch_norm[0] * l2 * (1 + 1e-9) < 2.0**26", (T_EXACT,),
           "exact_conv: the Cauchy-Schwarz bound below 2**24"),
    Mutant("exact-product-bound-4x", "sim/executor.py",
           r"if x_max \* w_max \* k < 2\.0\*\*24 or ", "if x_max * w_max * k < 2.0**26 or ",
           (T_EXACT,), "exact_product: one float32 GEMM below 2**24 only"),
    Mutant("exact-product-norms-bound-4x", "sim/executor.py",
           r"math\.sqrt\(cols\) \* \(1 \+ 1e-9\) < 2\.0\*\*24",
           "math.sqrt(cols) * (1 + 1e-9) < 2.0**26", (T_EXACT,),
           "exact_product: the Cauchy-Schwarz bound below 2**24"),
    Mutant("exact-product-split-bound-4x", "sim/executor.py",
           r"if x_max \* max\(half, \(w_max \+ half\) >> shift\) \* k < 2\.0\*\*24:",
           "if x_max * max(half, (w_max + half) >> shift) * k < 2.0**26:", (T_EXACT,),
           "exact_product: split halves below 2**24"),
    Mutant("exact-digit-halves", "sim/executor.py",
           r"w_lo = \(\(w \+ half\) & \(\(1 << shift\) - 1\)\) - half",
           "w_lo = ((w + half) & ((1 << shift) - 1))", (T_EXACT,),
           "w = w_lo + 2**s w_hi"),
    Mutant("exact-float64-bound", "sim/executor.py",
           r"if x_max \* w_max \* k < 2\.0\*\*53:", "if x_max * w_max * k < 2.0**63:",
           (T_EXACT,), "float64 holds sums below 2**53 only"),
    # --- memory chunking ----------------------------------------------------------------
    Mutant("memory-kernel-unchunked", "sim/reram.py",
           r"chunk = max\(1, int\(chunk_bytes or _CHUNK_BYTES\) // per_row\)",
           "chunk = m_total", (T_MEM,), "kernels stream input rows in chunks of the budget"),
    Mutant("memory-batch-unbounded", "sim/memory.py",
           r"batch = int\(max\(1, min\(max_batch, samples, \(free - chunk\) // per_sample\)\)\)",
           "batch = samples", (T_MEM,), "the executor's batch fits the budget"),
    Mutant("memory-chunks-overlap", "sim/reram.py", r"\n            del sums, ones, squares",
           "", (T_MEM,), "one kernel chunk alive at a time (the traced peak within budget)"),
    Mutant("memory-programming-peak-uncounted", "sim/memory.py",
           r"return total \+ transient", "return total", (T_MEM,),
           "the estimate counts the programming temporaries"),
    # --- SupeRBNN energy ----------------------------------------------------------------
    Mutant("aqfp-energy-per-jj-2x", "sim/aqfp.py",
           r"per_jj = cfg\.jj_switch_energy_zj \* 1e-21 \* cfg\.bitstream_length",
           "per_jj = 2 * cfg.jj_switch_energy_zj * 1e-21 * cfg.bitstream_length",
           (T_COUNTS,), "1.4 zJ per junction per cycle"),
    Mutant("aqfp-energy-per-jj-3x", "sim/aqfp.py",
           r"per_jj = cfg\.jj_switch_energy_zj \* 1e-21 \* cfg\.bitstream_length",
           "per_jj = 3 * cfg.jj_switch_energy_zj * 1e-21 * cfg.bitstream_length",
           (T_COUNTS,), "1.4 zJ per junction per cycle"),
    Mutant("aqfp-preset-junction-energy", "sim/aqfp.py",
           r"jj_switch_energy_zj: float = 1\.4", "jj_switch_energy_zj: float = 2.8",
           (T_COUNTS,), "the cited 1.4 zJ"),
    Mutant("aqfp-splitter-count", "sim/aqfp.py",
           r'"splitters": crossbars \* n \* \(n - 1\) \* cfg\.jj_per_splitter',
           '"splitters": crossbars * n * n * cfg.jj_per_splitter', (T_COUNTS,),
           "N - 1 splitters per crossbar row"),
    Mutant("aqfp-counter-bits", "sim/aqfp.py",
           r"count_bits = \(k \* length\)\.bit_length\(\)",
           "count_bits = (k * length).bit_length() + 1", (T_COUNTS,),
           "a COUNT accumulator of bit_length(K L) bits"),
    Mutant("aqfp-cryocooler", "sim/aqfp.py",
           r"return self\.chip_j \* \(1\.0 \+ self\.cryocooler_overhead\)",
           "return self.chip_j * self.cryocooler_overhead", (T_COUNTS,),
           "wall-plug energy = chip x (1 + overhead)"),
    # --- physics constants --------------------------------------------------------------
    Mutant("phys-isaac-row-read", "sim/cycle/components.py",
           r"ISAAC_ROW_READ_PJ = \(2\.4 \+ 0\.01\) \* 1e-3 / \(8 \* 128",
           "ISAAC_ROW_READ_PJ = (2.4 + 0.01) * 1e-3 / (4 * 128", (T_COUNTS, T_PHYS),
           "0.2354 pJ per ISAAC row read"),
    Mutant("phys-forms-read-time", "sim/cycle/components.py",
           r"FORMS_ROW_READ_NS = 128 / \(4 \* 2\.1e9\) \* 1e9",
           "FORMS_ROW_READ_NS = 128 / (2 * 2.1e9) * 1e9", (T_COUNTS, T_PHYS),
           "a FORMS row is read for 128 / (4 x 2.1 GHz)"),
    Mutant("phys-sar-exponent", "sim/cycle/components.py",
           r"return SAR_LINEAR_PJ_PER_BIT \* bits \+ SAR_DAC_PJ_PER_LEVEL \* 2\*\*bits",
           "return SAR_LINEAR_PJ_PER_BIT * bits + SAR_DAC_PJ_PER_LEVEL * 2**(bits - 1)",
           (T_PHYS,), "SAR ADC energy through Accelergy's 1.667 and 0.226 pJ"),
    # --- ADC and crossbar reads ---------------------------------------------------------
    Mutant("adc-full-scale-off-by-one", "sim/reram.py",
           r"    full = \(1 << layer\.adc_bits\) - 1\n    # Pad the inputs",
           "    full = (1 << layer.adc_bits)\n    # Pad the inputs",
           (T_XBAR + "::test_executor_matches_the_reference_crossbar_even_when_saturating",),
           "an N-bit ADC saturates at 2**N - 1"),
    Mutant("read-noise-variance-2x", "sim/reram.py",
           r"noise_mode, indep_var = 2, float\(\(device\.read_noise \* mask\) \*\* 2\)",
           "noise_mode, indep_var = 2, 2 * float((device.read_noise * mask) ** 2)",
           (T_XBAR + "::test_read_noise_has_the_variance_of_per_cell_noise",),
           "independent read noise of the configured sigma"),
)


def _apply(m: Mutant) -> tuple[Path, str]:
    path = ROOT / m.file
    text = path.read_text()
    matches = list(re.finditer(m.pattern, text))
    if len(matches) != 1:
        raise LookupError(f"{m.id}: locator matches {len(matches)} places in {m.file}")
    start, end = matches[0].span()
    return path, text[:start] + matches[0].expand(m.replacement) + text[end:]


def baseline(mutants, timeout: int) -> list[str]:
    """The guarding tests must pass on the unmutated code, else a kill means nothing."""
    failing = []
    for tests in sorted({m.tests for m in mutants}):
        cmd = [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
        if subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout).returncode:
            failing.append(" ".join(tests))
    return failing


def run_python(mutants, timeout: int) -> list[tuple[Mutant, str, float]]:
    results = []
    for m in mutants:
        t0 = time.time()
        try:
            path, mutated = _apply(m)
        except LookupError as e:
            print(f"  STALE     {m.id}: {e}", flush=True)
            results.append((m, "stale", 0.0))
            continue
        original = path.read_text()
        backup = path.with_name(path.name + ".mutate-backup")
        backup.write_text(original)
        try:
            path.write_text(mutated)
            cmd = [str(PYTHON), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                   *m.tests]
            try:
                rc = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout,
                                    env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
                                    ).returncode
                outcome = "survived" if rc == 0 else "killed"
            except subprocess.TimeoutExpired:
                outcome = "killed"       # a hang is a detected fault
        finally:
            path.write_text(original)
            backup.unlink()
        if m.equivalent:
            outcome = f"equivalent ({outcome})"
        dt = time.time() - t0
        print(f"  {outcome.upper():9} {m.id} ({dt:.0f} s): {m.claim}", flush=True)
        results.append((m, outcome, dt))
    return results


def run_verilog_tests(timeout: int) -> tuple[int, int]:
    """The repository's Verilog mutation tests (one pytest case per mutant)."""
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("testbenches/*/test_*_mutations.py"))
    cmd = [str(PYTHON), "-m", "pytest", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider",
           "-rA", *files]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout).stdout
    killed = len(re.findall(r"^PASSED .*test_.*mutation", out, re.M))
    survived = len(re.findall(r"^FAILED .*test_.*mutation", out, re.M))
    for line in out.splitlines():
        if line.startswith(("PASSED", "FAILED")):
            print("  " + line.replace("PASSED", "KILLED  ").replace("FAILED", "SURVIVED"))
    return killed, survived


# --- Verilog operator mutations ---------------------------------------------------------
# A site: an ``assign`` of yosys' generated Verilog whose right side is one binary operation
# (``a OP b``). The locator is structural (the n-th such site of the block, by the parse
# below), so it survives the renumbering of yosys' wires. Replacement: the operator's twin.
_SWAP = {"+": "-", "-": "+", "==": "!=", "!=": "==", "<": "<=", "<=": "<", ">": ">=",
         ">=": ">", "&": "|", "|": "&", "^": "|"}
_SITE = re.compile(r"^(\s*assign \S+\s+= )(\S.*?) (\+|-|==|!=|<=|>=|<|>|&|\||\^) (.+;)$")

VERILOG_BLOCKS = {   # block: (testbench, mutants drawn, extra env, cocotb test filter)
    "shift-add": ("testbenches/shift_add/test_shift_add_cocotb.py", 6, {}, None),
    "forms-fragment": ("testbenches/forms_fragment/test_forms_fragment_cocotb.py", 8, {}, None),
    "sc-accumulator": ("testbenches/sc_accumulator/test_sc_accumulator_cocotb.py", 5, {}, None),
    "token-linear": ("testbenches/token_linear/test_token_linear_cocotb.py", 6, {}, None),
    "token-packager": ("testbenches/token_packager/test_token_packager_cocotb.py", 5, {}, None),
    "poly-exp": ("testbenches/elementwise_units/test_elementwise_units_cocotb.py", 4,
                 {"CHIPFORGE_UNIT": "poly-exp"}, None),
    "poly-gelu": ("testbenches/elementwise_units/test_elementwise_units_cocotb.py", 4,
                  {"CHIPFORGE_UNIT": "poly-gelu"}, None),
    "plan-sigmoid": ("testbenches/elementwise_units/test_elementwise_units_cocotb.py", 4,
                     {"CHIPFORGE_UNIT": "plan-sigmoid"}, None),
    "token-selector": ("testbenches/token_selector/test_token_selector_cocotb.py", 8,
                       {"CHIPFORGE_SELECTOR_CASE": "selector"}, "selector_real"),
    "tile-forms8": ("testbenches/reram_tile/test_reram_tile_cocotb.py", 8,
                    {"CHIPFORGE_TILE_CASE": "tile-forms8"},
                    "tile_layer_idle_and_stalls|tile_random_vectors|tile_reset_while_busy|"
                    "tile_random_weights_and_rails|tile_random_registers"),
    "tile-isaac": ("testbenches/reram_tile/test_reram_tile_cocotb.py", 8,
                   {"CHIPFORGE_TILE_CASE": "tile-isaac"},
                   "tile_layer_idle_and_stalls|tile_random_vectors|tile_reset_while_busy|"
                    "tile_random_weights_and_rails|tile_random_registers"),
}


# Verilog mutants that cannot change any output, with the argument (re-check when rtl/
# changes: the labels name generated line numbers). The element-wise units' testbench
# drives every input code of the unit's domain and checks every result and its cycle, so
# a mutant it does not kill equals the original on every input: equivalent by exhaustion.
EQUIVALENT_VERILOG = {
    "poly-exp:74 '>' -> '>='": "a range boundary; every input code checked, all equal",
    "poly-gelu:78 '<' -> '<='": "a range boundary; every input code checked, all equal",
    "plan-sigmoid:50 '<' -> '<='": "the sign test at 0; every input code checked, all equal",
    "plan-sigmoid:60 '<' -> '<='": "the sign test at 0; every input code checked, all equal",
    "token-selector:1369 '==' -> '!='": "dead logic: the compare's wire is never read "
                                        "(only its declaration and assign exist)",
    # The packager inside the selector: its output transfer `valid & ready` turned `|`.
    # The two differ only when valid != ready. The selector drives the packager's ready
    # high in exactly its SCORE state. valid=0, ready=1 (SCORE): `|` clears a valid that
    # is already 0, no change. valid=1, ready=0 (outside SCORE): cannot happen. The
    # packager's valid rises only on an input transfer (its input valid is score_valid,
    # set only while scoring, in SCORE) or on its pending package (set by such a
    # transfer); the selector leaves SCORE on the beat carrying `last`, which is the
    # packager's final beat of the image (no input and no pending package remain), and
    # the original clears valid on that same edge; reset clears both. The selector
    # testbench asserts the invariant (packager valid => ready) on every cycle it runs,
    # and the same operator in the standalone packager (token-packager, under
    # back-pressure) is a drawn mutant that its testbench kills.
    "token-selector:8478 '&' -> '|'": "the packager's output transfer: its ready is high "
                                      "whenever its valid can be (SCORE state), so valid|ready"
                                      " and valid&ready clear the same valid; invariant "
                                      "checked every cycle by the selector testbench; the "
                                      "standalone packager's copy is killed",
}


def verilog_sites(text: str) -> list[int]:
    """Line numbers of the mutable binary-operator assigns."""
    return [i for i, line in enumerate(text.splitlines()) if _SITE.match(line)]


def verilog_mutants(block: str, count: int) -> list[tuple[str, int]]:
    """``count`` sites spread evenly over the block's sites: (verilog file, line index)."""
    (verilog,) = sorted((ROOT / "rtl" / block).glob("*.v"))
    sites = verilog_sites(verilog.read_text())
    if not sites:
        return []
    picks = sorted({sites[(2 * j + 1) * len(sites) // (2 * count)] for j in range(count)})
    return [(verilog.name, i) for i in picks]


def _case_files(where: Path) -> dict[str, str]:
    """The data cases the tile and selector testbenches read (built once)."""
    from chipforge import zoo
    from chipforge.verify.selector_case import save_case as save_selector
    from chipforge.verify.selector_case import selector_cases
    from chipforge.verify.tile_case import layer_case, save_case
    from chipforge.zoo.data import digits

    files = {}
    x = digits(16).x_test[:1]
    for block, (model, accel) in {"tile-isaac": ("lenet-digits", "isaac"),
                                  "tile-forms8": ("lenet-digits-forms8", "forms8")}.items():
        case = layer_case(zoo.load(model), x, "conv1", accel)
        files[block] = str(save_case(case, where / f"{block}.npz"))
    data = digits(8)
    case = selector_cases("vit-digits-keep60", data.x_test[:1], data.x_train[:256])[0]
    files["selector"] = str(save_selector(case, where / "selector.npz"))
    return files


def run_verilog_operators(only: str, timeout: int) -> tuple[int, int, list[str]]:
    import shutil
    import tempfile

    sys.path.insert(0, str(ROOT))
    from chipforge.verify.runner import run_cocotb

    killed = survived = 0
    survivors = []
    with tempfile.TemporaryDirectory(prefix="mutate-rtl-") as tmp:
        cases = _case_files(Path(tmp))
        for block, (bench, count, env, test_filter) in VERILOG_BLOCKS.items():
            if only not in block:
                continue
            extra = {k: cases.get(v, v) for k, v in env.items()}
            # baseline: the testbench must pass on the block as committed, else a kill
            # means nothing
            work = Path(tempfile.mkdtemp(dir=tmp))
            shutil.copytree(ROOT / "rtl" / block, work / block)
            try:
                run_cocotb(work / block, ROOT / bench, simulator="icarus", build_root=work,
                           extra_env=extra, test_filter=test_filter)
            except Exception as e:
                raise SystemExit(f"mutate: {bench} fails on the unmutated {block}: {e}") from e
            shutil.rmtree(work, ignore_errors=True)
            for name, line_no in verilog_mutants(block, count):
                work = Path(tempfile.mkdtemp(dir=tmp))
                copy = work / block
                shutil.copytree(ROOT / "rtl" / block, copy)
                lines = (copy / name).read_text().splitlines(keepends=True)
                m = _SITE.match(lines[line_no].rstrip("\n"))
                lines[line_no] = (f"{m.group(1)}{m.group(2)} {_SWAP[m.group(3)]} "
                                  f"{m.group(4)}\n")
                (copy / name).write_text("".join(lines))
                label = f"{block}:{line_no + 1} '{m.group(3)}' -> '{_SWAP[m.group(3)]}'"
                t0 = time.time()
                try:
                    run_cocotb(copy, ROOT / bench, simulator="icarus", build_root=work,
                               extra_env=extra, test_filter=test_filter)
                    outcome = "survived"
                except AssertionError:
                    outcome = "killed"
                except Exception as e:          # a build error is a detected fault too
                    outcome = f"killed ({type(e).__name__})"
                print(f"  {outcome.upper():9} {label} ({time.time() - t0:.0f} s)", flush=True)
                if outcome == "survived" and label in EQUIVALENT_VERILOG:
                    print(f"            equivalent: {EQUIVALENT_VERILOG[label]}")
                elif outcome == "survived":
                    survived += 1
                    survivors.append(label)
                else:
                    killed += 1
                shutil.rmtree(work, ignore_errors=True)
    return killed, survived, survivors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the mutants whose id contains this")
    ap.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    ap.add_argument("--verilog", action="store_true",
                    help="also run the Verilog mutation tests (slow)")
    ap.add_argument("--verilog-only", action="store_true",
                    help="only the Verilog mutations (--only then filters blocks)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per mutant")
    args = ap.parse_args(argv)
    stale = [p for p in ROOT.rglob("*.mutate-backup") if ".venv" not in p.parts]
    if stale and not args.list:
        print(f"mutate: a previous run left {stale[0]}: restore it by hand first",
              file=sys.stderr)
        return 2
    chosen = [m for m in PYTHON_MUTANTS if args.only in m.id and not args.verilog_only]
    if args.list and args.verilog_only:
        for block, (_, count, _, _) in VERILOG_BLOCKS.items():
            for name, line_no in verilog_mutants(block, count):
                print(f"{block:16} {name}:{line_no + 1}")
        return 0
    if args.list:
        for m in chosen:
            print(f"{m.id:38} {m.file:28} {' '.join(m.tests)}")
        return 0
    print(f"Python sabotages: {len(chosen)}; baseline: the guarding tests on the code as it is")
    broken = baseline(chosen, args.timeout) if chosen else []
    if broken:
        print("mutate: these guarding tests fail without any mutation: " + "; ".join(broken),
              file=sys.stderr)
        return 2
    results = run_python(chosen, args.timeout)
    counted = [r for r in results if not r[0].equivalent]
    killed = sum(1 for _, o, _ in counted if o == "killed")
    survivors = [m.id for m, o, _ in counted if o != "killed"]
    print(f"Python: {killed}/{len(counted)} non-equivalent mutants killed "
          f"({len(results) - len(counted)} equivalent, listed with their reason)")
    for m, _, _ in results:
        if m.equivalent:
            print(f"  equivalent {m.id}: {m.equivalent}")
    failed = bool(survivors)
    if args.verilog or args.verilog_only:
        o_killed, o_survived, o_left = run_verilog_operators(args.only, args.timeout)
        print(f"Verilog operator mutations: {o_killed}/{o_killed + o_survived} non-equivalent "
              "killed")
        for label in o_left:
            print(f"  survived: {label}")
        v_killed, v_survived = (0, 0) if args.only else run_verilog_tests(args.timeout * 6)
        print(f"Verilog mutation tests: {v_killed}/{v_killed + v_survived} killed")
        failed |= (o_survived + v_survived) > 0
    if survivors:
        print("survived or stale: " + ", ".join(survivors))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
