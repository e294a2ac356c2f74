"""Mutation testing of generated Verilog: a copy of a block with one deliberate fault, for
checking that its testbench fails."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["mutated_copy"]


def mutated_copy(block: Path, verilog_name: str, pattern: str, replacement: str,
                 into: Path) -> Path:
    """Copy the generated ``block`` folder to ``into / block.name`` and apply one regex
    substitution to its ``verilog_name`` (exactly one match, or AssertionError: the
    pattern no longer fits the regenerated Verilog). Returns the copy."""
    copy = Path(into) / Path(block).name
    shutil.copytree(block, copy)
    verilog = copy / verilog_name
    text, count = re.subn(pattern, replacement, verilog.read_text(), count=1)
    assert count == 1, f"mutation {pattern!r} did not apply: regenerate its pattern"
    from chipforge.files import atomic_write

    atomic_write(verilog, text)
    return copy
