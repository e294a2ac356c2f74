"""``chipforge simulate --rtl LAYER --rtl-tile ACCEL``: a whole layer through a generated
ReRAM tile (slow: it generates the tile and runs Icarus)."""

import pytest

from chipforge.cli import main


@pytest.mark.slow
def test_simulate_rtl_tile_fc3(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["simulate", "lenet-digits-forms8", "--rtl", "fc3", "--rtl-tile", "forms8",
               "--samples", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "bit-exact with the ideal simulated run" in out
    assert "cycles measured back to back" in out
    assert (tmp_path / "build" / "rtl-tile" / "tile-forms8-fc3" / "manifest.json").exists()
