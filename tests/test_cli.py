import subprocess
import sys

import pytest

from chipforge.cli import main


def test_help_lists_the_three_flows(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flow in ("simulate", "rtl", "sweep"):
        assert flow in out


def test_rtl_generation_is_byte_identical(tmp_path):
    for run in ("a", "b"):
        assert main(["rtl", "all", "--out", str(tmp_path / run)]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                     if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                     if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_ref_crossbar_matches_numpy(capsys):
    assert main(["ref", "crossbar", "--batch", "8"]) == 0
    assert "0 mismatches" in capsys.readouterr().out


def test_bad_arguments_get_one_line_error(capsys):
    assert main(["ref", "crossbar", "--batch", "0"]) == 2
    assert "--batch must be >= 1, not 0" in capsys.readouterr().err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "chipforge", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("chipforge ")
