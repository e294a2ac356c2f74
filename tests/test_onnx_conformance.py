"""ONNX's backend node tests (regenerated from the onnx package's generators) for every op
chipforge lists as supported: each passes or is refused clearly; none is wrong.
``python -m chipforge.importers.conformance`` prints the counts."""

from __future__ import annotations

from chipforge.importers.conformance import run_conformance


def test_onnx_backend_node_tests_pass_or_are_refused_clearly_none_wrong(capsys):
    results = run_conformance()
    wrong = [f"{r.name}: {r.detail}" for r in results if r.outcome == "wrong"]
    passed = [r for r in results if r.outcome == "pass"]
    with capsys.disabled():
        print(f"\nONNX node tests: {len(results)} cases, {len(passed)} pass, "
              f"{len(results) - len(passed) - len(wrong)} clearly refused, {len(wrong)} wrong")
    assert not wrong, "\n".join(wrong)
    # every supported op has cases, and the ops that carry networks pass some of them
    ops_passing = {r.op for r in passed}
    assert len({r.op for r in results}) >= 38
    assert {"Conv", "Gemm", "MatMul", "Relu", "Softmax", "Gelu", "MaxPool", "AveragePool",
            "Transpose", "Reshape", "BatchNormalization", "Flatten"} <= ops_passing, ops_passing
