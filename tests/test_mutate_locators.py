"""The sabotage runner's Python mutants stay aimed at live code: a refactor that rewrites a
guarded line must update its mutant, or the runner would report it stale instead of
testing the claim (issue 27: a stale locator is a sabotage nobody runs)."""

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("chipforge_mutate_tool",
                                                  ROOT / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_python_mutant_matches_exactly_one_line_and_changes_it():
    runner = _runner()
    assert len(runner.PYTHON_MUTANTS) >= 30
    stale = []
    for mutant in runner.PYTHON_MUTANTS:
        text = (ROOT / mutant.file).read_text()
        matches = list(re.finditer(mutant.pattern, text))
        if len(matches) != 1:
            stale.append(f"{mutant.id}: {len(matches)} matches in {mutant.file}")
            continue
        mutated = (text[:matches[0].start()] + matches[0].expand(mutant.replacement)
                   + text[matches[0].end():])
        if mutated == text:
            stale.append(f"{mutant.id}: the replacement changes nothing")
    assert not stale, stale


def test_every_python_mutant_names_tests_that_exist():
    runner = _runner()
    missing = []
    for mutant in runner.PYTHON_MUTANTS:
        for arg in mutant.tests:
            path = arg.split("::")[0]
            if path.startswith("tests/") and not (ROOT / path).is_file():
                missing.append(f"{mutant.id}: {path}")
    assert not missing, missing
    assert len({m.id for m in runner.PYTHON_MUTANTS}) == len(runner.PYTHON_MUTANTS)
