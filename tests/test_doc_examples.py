"""The Python examples of README.md and docs/*.md run as written, so they cannot drift.

Every ```python block is collected. A block runs (all blocks of a file in order, one
namespace, in a temporary working directory) unless it is listed in FRAGMENTS: a fragment
shows a call on names the page defines in prose (``graph``, ``x``, a user's file); it is
compiled and every ``chipforge`` name it imports or calls must exist, so a renamed function
still fails here."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# (page, block index) -> why it does not run on its own
FRAGMENTS = {
    ("docs/accelerators.md", 0): "defines a fifth family; registering it in the test "
                                 "process would change the registry of other tests",
    ("docs/compress.md", 0): "the user's my_cnn.onnx, train.npz and torch MLP",
    ("docs/cycle-model.md", 0): "graph and images from the page's prose",
    ("docs/heatvit.md", 0): "graph, x_test, x_train from the page's prose",
    ("docs/models-onnx-pytorch.md", 0): "the user's net, model.onnx and inputs",
    ("docs/models-onnx-pytorch.md", 1): "the user's lenet.onnx and my_data.npz",
    ("docs/pim-adc.md", 0): "graph and x from the page's prose",
    ("docs/sweeps.md", 0): "evaluate() and load_model() are the user's",
}
SLOW = {"docs/rtl-in-the-loop.md": "runs a layer through Icarus Verilog"}


def _blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def _pages_with_blocks() -> list[Path]:
    return [p for p in PAGES if _blocks(p)]


def _check_chipforge_names(code: str, where: str) -> None:
    """Every ``from chipforge... import NAME`` and ``chipforge.NAME`` exists."""
    import chipforge

    for node in ast.walk(ast.parse(code, where)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chipforge"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        pytest.fail(f"{where}: {node.module} has no {alias.name}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "chipforge":
            assert hasattr(chipforge, node.attr), f"{where}: chipforge has no {node.attr}"


def test_fragment_list_names_existing_blocks():
    for page, index in FRAGMENTS:
        assert index < len(_blocks(ROOT / page)), f"{page} has no Python block {index}"


@pytest.mark.parametrize("page", [pytest.param(p, id=str(p.relative_to(ROOT)),
                                               marks=[pytest.mark.slow]
                                               if str(p.relative_to(ROOT)) in SLOW else [])
                                  for p in _pages_with_blocks()])
def test_page_examples_run(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    name = str(page.relative_to(ROOT))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    for index, code in enumerate(_blocks(page)):
        where = f"{name} block {index}"
        _check_chipforge_names(code, where)
        compiled = compile(code, where, "exec")
        if (name, index) not in FRAGMENTS:
            exec(compiled, namespace)
