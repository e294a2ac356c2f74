"""Execute notebooks in place (outputs and plots kept) and refresh docs/img/.

``python tools/execute_notebooks.py notebooks/NAME.ipynb ...``: the committed notebooks
are executed, so the repository page shows each result; CI (tests/test_notebooks.py)
re-executes them and checks their assertions.
"""

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

os.environ["CHIPFORGE_SAVE_DOCS_IMG"] = "1"
(Path(__file__).resolve().parents[1] / "docs" / "img").mkdir(parents=True, exist_ok=True)
for arg in sys.argv[1:]:
    path = Path(arg).resolve()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    print(f"executed {path.name}")
