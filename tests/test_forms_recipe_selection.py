"""tools/forms_recipe_selection.py (issue 27: the FORMS recipe of the user-CNN claim is
chosen on the validation split by a rule fixed before the runs), on hand-made runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("forms_recipe_selection",
                                               ROOT / "tools" / "forms_recipe_selection.py")
sel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sel)


def test_the_pruned_comparison_is_shared_only_where_the_pruning_is_the_same():
    keys = {r: sel._pruned_key(r) for r in sel.RECIPES}
    # joint pruning acts only while polarizing: the same pruned model as the default
    assert keys["joint-pruning"] == keys["default"] == "pruned"
    assert keys["joint-lr-2e-3"] == keys["lr-2e-3"] != keys["default"]
    assert keys["joint-finetune-60"] == keys["finetune-60"] != keys["lr-2e-3"]
    # every option of a pruned run reaches the pruning stage (none is polarization-only)
    assert "joint_pruning" in sel.POLARIZE_ONLY and "lr" not in sel.POLARIZE_ONLY


def test_the_allowance_is_one_point_of_the_validation_images():
    rows = [{"recipe": r, "seed": s, "val_images": 287, "val_lost": lost,
             "within_claim": lost <= sel.CLAIM_POINTS / 100 * 287, "compress_seconds": 20.0}
            for r, losses in (("default", (3, 3, 2)), ("lr-2e-3", (2, 2, 5)))
            for s, lost in enumerate(losses)]
    chosen, table = sel.choose(rows, [0, 1, 2], {"default": {}, "lr-2e-3": {}})
    # 2.87 images: 2 is within, 3 is not; two seeds within beat a lower mean with one
    assert [t["within"] for t in table] == [1, 2]
    assert chosen == "lr-2e-3"


def test_the_test_phase_refuses_to_read_the_test_split_twice(tmp_path):
    (tmp_path / "test.json").write_text("{}")
    with pytest.raises(SystemExit, match="already read once"):
        sel.test_once(tmp_path, [0, 1, 2], [0, 1, 2])
