"""ONNX's own backend node tests, regenerated from the ``onnx`` package's test-case
generators (``onnx.backend.test.case.node``), for every operator chipforge lists as
supported (:data:`~chipforge.importers.onnx.SUPPORTED_OPS`).

Each case is one small model with inputs and expected outputs computed by ONNX's reference
implementation. chipforge must either import it and reproduce the outputs (onnxruntime's
backend-test tolerance: rtol 1e-3, atol 1e-7, on the float IR run) or refuse it with an
:class:`~chipforge.importers.onnx.OnnxImportError` that names the op (or the input/output
rule of the IR). Anything else — a different number, a shape mismatch, a crash — is
*wrong*, and there must be none.

``python -m chipforge.importers.conformance`` prints the counts (pass / clear refusal /
wrong) and, with ``-v``, every case.
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["CaseResult", "run_conformance"]

RTOL, ATOL = 1e-3, 1e-7     # onnx's backend test runner defaults


@dataclass(frozen=True)
class CaseResult:
    name: str
    op: str
    outcome: str            # "pass", "refused" or "wrong"
    detail: str = ""


def _clear(message: str, op: str) -> bool:
    """A refusal names the op, or the IR's rule on graph inputs/outputs."""
    return (f"({op})" in message or f"op {op!r}" in message or "input" in message
            or "output" in message)


def with_constant_operands(model, inputs):
    """The model with its graph inputs after the first turned into initializers holding
    the test's values: chipforge imports one activation input, and weights, bounds, shapes
    and indices are constants in the models it reads."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph_inputs = list(m.graph.input)
    del m.graph.input[1:]
    for info, value in zip(graph_inputs[1:], inputs[1:], strict=False):
        if isinstance(value, onnx.TensorProto):      # exotic types are stored as protos
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = info.name
        else:
            tensor = numpy_helper.from_array(np.asarray(value), info.name)
        m.graph.initializer.append(tensor)
    return m


def run_case(case) -> CaseResult:
    import onnx
    from onnx import numpy_helper

    from chipforge.importers.onnx import OnnxImportError, load_onnx
    from chipforge.sim.executor import run_graph

    op = case.model.graph.node[0].op_type
    ops = {op}
    if len(case.data_sets) != 1:
        return CaseResult(case.name, op, "refused", "several data sets (not generated)")
    inputs, outputs = case.data_sets[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = load_onnx(with_constant_operands(case.model, inputs).SerializeToString(),
                              name=case.name)
    except OnnxImportError as e:
        message = str(e)
        if any(_clear(message, o) for o in ops):
            return CaseResult(case.name, op, "refused", message.splitlines()[0][:200])
        return CaseResult(case.name, op, "wrong", f"unclear refusal: {message[:200]}")
    except Exception as e:     # a crash is wrong
        return CaseResult(case.name, op, "wrong", f"crash: {type(e).__name__}: {e}"[:200])
    for _ in (0,):
        if len(outputs) != 1:
            return CaseResult(case.name, op, "wrong", "imported a multi-output model")
        try:
            with np.errstate(all="ignore"):
                x = inputs[0]
                if isinstance(x, onnx.TensorProto):
                    x = numpy_helper.to_array(x)
                got = run_graph(graph, np.asarray(x, dtype=np.float64), quantized=False)
        except Exception as e:
            return CaseResult(case.name, op, "wrong", f"run: {type(e).__name__}: {e}"[:200])
        want = np.asarray(outputs[0])
        if got.shape != want.shape or not np.allclose(got, want.astype(np.float64),
                                                      rtol=RTOL, atol=ATOL, equal_nan=True):
            detail = (f"shape {got.shape} vs {want.shape}" if got.shape != want.shape else
                      f"max |diff| {np.nanmax(np.abs(got - want)):.3g}")
            return CaseResult(case.name, op, "wrong", detail)
    return CaseResult(case.name, op, "pass")


def supported_cases() -> list:
    """The generated node test cases whose one node is a supported op (the ``_expanded``
    variants, function bodies of other ops, are left out)."""
    import importlib

    import onnx.backend.test.case.node as generators

    from chipforge.importers.onnx import SUPPORTED_OPS

    # collect_testcases() runs all ~190 generator modules (90 s here); importing one
    # module runs its generators (its `expect` calls fill the package's case list), so
    # only the modules of the supported ops are imported.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")      # the generators' own overflow notes
        for op in SUPPORTED_OPS:
            for module in {op.lower(), re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()}:
                try:
                    importlib.import_module(f"{generators.__name__}.{module}")
                except ModuleNotFoundError:
                    pass
    cases = list(generators._NodeTestCases)
    return [c for c in cases if c.kind == "node" and len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in SUPPORTED_OPS]


def run_conformance() -> list[CaseResult]:
    """Every generated node test case of a supported op."""
    return [run_case(case) for case in supported_cases()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = run_conformance()
    counts = {k: sum(r.outcome == k for r in results) for k in ("pass", "refused", "wrong")}
    if "-v" in argv:
        for r in results:
            print(f"{r.outcome:8s} {r.name}  {r.detail}")
    print(f"ONNX backend node tests of the {len({r.op for r in results})} supported ops: "
          f"{len(results)} cases, {counts['pass']} pass, {counts['refused']} clearly refused, "
          f"{counts['wrong']} wrong")
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
