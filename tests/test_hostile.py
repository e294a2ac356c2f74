"""Hostile and careless input (issue 19): every case is one line on stderr naming the input
and the rule, exit status 2, and nothing outside the output folder changes.

The CLI runs in-process (``chipforge.cli.main``); only the SIGKILL test needs a subprocess.
Each test snapshots the whole temporary tree (and the working directory) before and after
and compares every file's bytes and modification time.
"""

import concurrent.futures as cf
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chipforge.cli import main
from chipforge.sim.sweep import SweepError, load_results, run_sweep

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
helpers = importlib.import_module("sweep_helpers")


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mtime_ns); folders too."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and not path.is_symlink():
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            out[rel] = ("dir" if path.is_dir() else "other", 0)
    return out


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def run_cli(argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of ``chipforge ARGV`` run in-process."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A working directory inside tmp_path (so relative paths land there)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


# --- injection and paths ----------------------------------------------------------------

def test_rtl_out_with_shell_metacharacters_writes_only_there(work, capsys):
    """Issue 19: `--out 'DIR; exec -- touch PWNED; #'` ran the injected command through
    the yosys script (given a readable file DIR, yosys' `read_verilog DIR` succeeds and the
    `exec` runs: measured on the old code). Now yosys and verilator never see the path."""
    (work / "cwd" / "DIR").write_text("module dummy; endmodule\n")
    before = snapshot(work)
    out = "DIR; exec -- touch PWNED; #"
    code = main(["rtl", "shift-add", "--synth", "generic", "--out", out])
    printed = capsys.readouterr()
    assert not list(work.rglob("PWNED")) and not Path("/PWNED").exists()
    assert code == 0, printed.err
    assert "cells" in printed.out
    code = main(["rtl", "shift-add", "--lint", "--out", out])
    assert code == 0, capsys.readouterr().err
    new = changed(before, snapshot(work))
    inside = f"cwd/{out}"
    assert new and all(p == inside or p.startswith(inside + "/") for p in new), new
    # A folder whose name reads as an option: still only a folder.
    code = main(["rtl", "shift-add", "--lint", "--out=-rf"])
    assert code == 0, capsys.readouterr().err
    assert (work / "cwd" / "-rf" / "shift-add" / "shift_add.v").is_file()


@pytest.mark.parametrize("field,value", [("module", "../../evil"), ("module", "a/b"),
                                         ("module", "x; touch PWNED"),
                                         ("verilog", "../../../etc/passwd"),
                                         ("verilog", "/etc/passwd")])
def test_manifest_names_are_checked_before_use(work, capsys, field, value):
    """A block folder given to --rtl-dir whose manifest names a path: refused before any
    copy into the cache or a build."""
    block = work / "block"
    block.mkdir()
    manifest = json.loads((TESTS.parent / "rtl" / "shift-add" / "manifest.json").read_text())
    manifest[field] = value
    (block / "manifest.json").write_text(json.dumps(manifest))
    (block / "shift_add.v").write_text("module shift_add; endmodule\n")
    before = snapshot(work)
    code, err = run_cli(["simulate", "lenet-digits", "--rtl", "fc3", "--rtl-dir", block,
                         "--samples", "2"], capsys)
    line = one_line(err)
    assert code == 2
    assert f"manifest {block / 'manifest.json'}: field {field!r} must be" in line
    assert repr(value) in line
    assert not changed(before, snapshot(work))


# --- bad model files ----------------------------------------------------------------------

def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy_header(shape, dtype="<f8") -> bytes:
    import io

    from numpy.lib import format as npy

    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False,
                                        "shape": shape})
    return buffer.getvalue()


def _bad_models(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, text the error line must hold)."""
    rng = np.random.default_rng(0)
    cases = {}
    p = d / "random.npz"
    p.write_bytes(rng.bytes(3000))
    cases["random bytes"] = (p, "is not an .npz archive")
    p = d / "objects.npz"
    np.savez(p, __graph__=np.array("{}"), w=np.array([{"a": 1}], dtype=object))
    cases["pickle"] = (p, "array 'w' holds Python objects, which need pickle")
    p = _zip(d / "forged.npz", {"__graph__.npy": _npy_header((10**6, 10**6)) + b"\0" * 64})
    cases["forged header"] = (p, "declares shape (1000000, 1000000)")
    p = _zip(d / "notnpy.npz", {"evil.txt": b"hello"})
    cases["not npy"] = (p, "member 'evil.txt' is not an .npy array")
    p = d / "listgraph.npz"
    np.savez(p, __graph__=np.array(json.dumps([1, 2])))
    cases["graph not an object"] = (p, "__graph__ entry must be a JSON object")
    p = d / "nonodes.npz"
    np.savez(p, __graph__=np.array(json.dumps({"format": 1, "name": "x"})))
    cases["graph without nodes"] = (p, "the __graph__ entry is malformed (KeyError: 'nodes')")
    p = d / "dangling.npz"
    np.savez(p, __graph__=np.array(json.dumps({
        "format": 1, "name": "x", "input_shape": [4], "nodes": [
            {"op": "relu", "name": "r", "inputs": ["nowhere"], "attrs": {}, "params": []}]})))
    cases["dangling input"] = (p, "node 'r' reads 'nowhere'")
    p = d / "folder.onnx"
    p.mkdir()
    cases["folder .onnx"] = (p, "is a folder, not a .onnx file")
    p = d / "folder.npz"
    p.mkdir()
    cases["folder .npz"] = (p, "is a folder, not a .npz file")
    p = d / "random.onnx"
    p.write_bytes(rng.bytes(500))
    cases["random .onnx"] = (p, "is not a valid ONNX file")
    p = d / "empty.onnx"
    p.write_bytes(b"")
    cases["empty .onnx"] = (p, "is not a valid ONNX file")
    cases["missing"] = (d / "missing.npz", "does not exist")
    return cases


def test_malformed_model_files_are_one_line_naming_the_file(work, capsys):
    bad = work / "bad"
    bad.mkdir()
    cases = _bad_models(bad)
    before = snapshot(work)
    for name, (path, text) in cases.items():
        code, err = run_cli(["import", path], capsys)
        line = one_line(err)
        assert code == 2, name
        assert str(path) in line, (name, line)
        assert text in line, (name, line)
        assert "allow_pickle" not in line and "unsafely" not in line
    assert not changed(before, snapshot(work))


def test_model_archive_beyond_the_memory_budget_is_refused_before_inflating(work, capsys,
                                                                            monkeypatch):
    """A small file whose arrays inflate beyond the budget (a quarter of the available
    memory; CHIPFORGE_MAX_FILE_MEMORY here) is refused from the zip directory alone."""
    path = work / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("w.npy", "w", force_zip64=True) as f:
        f.write(_npy_header((64 << 20,), "|u1"))  # 64 MiB of zeros
        for _ in range(16):
            f.write(bytes(4 << 20))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("CHIPFORGE_MAX_FILE_MEMORY", str(16 << 20))
    tracemalloc.start()
    code, err = run_cli(["import", path], capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    line = one_line(err)
    assert code == 2
    assert f"model file {path} inflates to 64.0 MiB" in line and "16.0 MiB allowed" in line
    assert peak < 8 << 20, f"inflated {peak / 2**20:.1f} MiB before refusing"


# --- bad data files, options and outputs of `simulate` -------------------------------------

def test_data_file_samples_are_read_lazily(work, monkeypatch):
    """`--samples 10` inflates 10 samples, not the file: a 50 MiB data set within a 4 MiB
    budget."""
    from chipforge.importers.model import load_data
    from chipforge.zoo import load

    graph = load("lenet-digits")
    n = 25_600  # x: 25600 x 16 x 16 float64 = 50 MiB inflated, well under 1 MiB on disk
    path = work / "big.npz"
    x = np.zeros((n, 1, 16, 16), dtype=np.float64)
    x[:, 0, 0, 0] = np.arange(n)
    np.savez_compressed(path, x=x, y=np.arange(n) % 10)
    assert path.stat().st_size < (1 << 20)
    monkeypatch.setenv("CHIPFORGE_MAX_FILE_MEMORY", str(4 << 20))
    with pytest.raises(ValueError, match=r"25600 samples of 'x' .* use --samples"):
        load_data(path, graph)
    import chipforge.sim.executor  # noqa: F401 - its first import (2 MiB) is not the data's
    tracemalloc.start()
    xs, ys = load_data(path, graph, samples=10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert xs.shape == (10, 1, 16, 16) and xs[:, 0, 0, 0].tolist() == list(range(10))
    assert ys.tolist() == list(range(10))
    assert peak < 1 << 20, f"{peak / 2**20:.1f} MiB for 10 samples"


def test_simulate_bad_inputs_are_one_line_with_the_rule(work, capsys):
    d = work / "in"
    d.mkdir()
    rng = np.random.default_rng(1)
    (d / "empty.toml").write_bytes(b"")
    (d / "partial.toml").write_text("[device]\nprogramming_sigma = 0.05\n")
    (d / "binary.toml").write_bytes(rng.bytes(200))
    (d / "folder.toml").mkdir()
    np.savez(d / "objects.npz", x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    (d / "random.npz").write_bytes(rng.bytes(1000))
    np.savez(d / "labels.npz", x=np.zeros((3, 1, 16, 16)), y=np.array([0, 10, 3]))
    (d / "a_file").write_text("not a folder")
    out = work / "report"
    model = "lenet-digits-forms8"
    cases = [
        (["--accelerator", d / "empty.toml"], f"config file {d / 'empty.toml'} is empty"),
        (["--accelerator", d / "partial.toml"],
         f"config file {d / 'partial.toml'}: field(s) name required"),
        (["--accelerator", d / "binary.toml"], "is not valid TOML"),
        (["--accelerator", d / "folder.toml"], "is a folder, not a .toml file"),
        (["--seed", "-1"], "--seed must be >= 0, not -1"),
        (["--samples", "0"], "--samples must be >= 1, not 0"),
        (["--data", d / "objects.npz"],
         f"data file {d / 'objects.npz'}: array 'x' holds Python objects"),
        (["--data", d / "random.npz"], f"data file {d / 'random.npz'} is not an .npz"),
        (["--data", d / "labels.npz"], "labels must be class indices below the model's 10 "
                                         "outputs, found 10"),
        (["--out", d / "a_file" / "sub"], "is a file, so the folder cannot be created"),
        (["--out", d / "a_file"], "exists and is not a folder"),
        (["--out", "/proc/chipforge-report"], "cannot write in /proc"),
    ]
    before = snapshot(work)
    for extra, text in cases:
        argv = ["simulate", model, "--samples", "3", "--cycle-samples", "2", "--out", out,
                *extra]
        start = time.perf_counter()
        code, err = run_cli(argv, capsys)
        line = one_line(err)
        assert code == 2, (extra, line)
        assert text in line, (extra, line)
        # Refused up front (the unwritable --out used to fail after the simulation).
        assert time.perf_counter() - start < 20
    assert not changed(before, snapshot(work))
    assert not out.exists()


# --- sweeps -------------------------------------------------------------------------------

def _quiet(**kw):
    return {"progress": False, "echo": None, "plot": False, **kw}


def _user_folder(d: Path) -> Path:
    """A folder of the user's own files, named like a sweep's."""
    d.mkdir()
    (d / "results.csv").write_text("header only\n")
    (d / "sweep.json").write_text('{"mine": true}\n')
    (d / "summary.csv").write_text("a,b\n1,2\n")
    (d / "summary.txt").write_text("my notes\n")
    (d / "thesis.tex").write_text("\\chapter{}\n")
    return d


def test_sweep_into_a_folder_of_unrelated_files_refuses_and_keeps_every_byte(work, capsys):
    user = _user_folder(work / "mine")
    before = snapshot(work)
    base = ["sweep", "sweep_helpers:TOY", "--trials", "1", "--workers", "1", "--no-plot",
            "--no-progress", "--out", user]
    code, err = run_cli(base, capsys)
    assert code == 2 and "is not empty and holds no sweep" in one_line(err)
    code, err = run_cli([*base, "--resume"], capsys)
    assert code == 2 and f"{user / 'sweep.json'} is not a readable sweep manifest" in \
        one_line(err)
    (user / "sweep.json").unlink()
    before = snapshot(work)
    code, err = run_cli([*base, "--resume"], capsys)
    assert code == 2 and "its columns ['header only'] are not this sweep's" in one_line(err)
    assert not changed(before, snapshot(work))  # not even a lock file
    # --force writes the sweep's files and keeps the others, byte for byte.
    code, err = run_cli([*base, "--force"], capsys)
    assert code == 0, err
    new = changed(before, snapshot(work))
    assert new == {"mine/results.csv", "mine/sweep.json", "mine/summary.csv",
                   "mine/summary.txt", "mine/.lock"}, new
    assert (user / "thesis.tex").read_text() == "\\chapter{}\n"


def test_sweep_refuses_a_different_or_finished_sweep_without_resume(work):
    pool = cf.ThreadPoolExecutor(1)
    out = work / "s"
    run_sweep(helpers.TOY, out, seed=3, trials=2, executor=pool, shared={}, **_quiet())
    before = snapshot(work)
    with pytest.raises(SweepError, match="already holds sweep results; pass --resume"):
        run_sweep(helpers.TOY, out, seed=3, trials=2, executor=pool, shared={}, **_quiet())
    with pytest.raises(SweepError, match=r"holds a different sweep \(seed: file has 3"):
        run_sweep(helpers.TOY, out, seed=4, trials=2, executor=pool, shared={}, **_quiet())
    assert not changed(before, snapshot(work))
    # Killed before its first result (header only): the same sweep starts; nothing lost.
    header = (out / "results.csv").read_text().splitlines()[0]
    (out / "results.csv").write_text(header + "\n")
    result = run_sweep(helpers.TOY, out, seed=3, trials=2, executor=pool, shared={},
                       **_quiet())
    assert result.computed == 12
    pool.shutdown()


@pytest.mark.parametrize("edit", ["value", "nan", "seed-and-value"])
def test_tampered_results_are_refused_on_resume_naming_the_row(work, capsys, edit):
    out = work / "s"
    with cf.ThreadPoolExecutor(1) as pool:
        run_sweep(helpers.TOY, out, seed=3, trials=2, executor=pool, shared={}, **_quiet())
    header, rows = load_results(out)
    text = (out / "results.csv").read_text().splitlines()
    cells = text[5].split(",")
    mean = header.index("mean")
    cells[mean] = {"value": "0.5", "nan": "nan", "seed-and-value": "0.5"}[edit]
    if edit == "seed-and-value":
        cells[header.index("seed")] = "1"
    text[5] = ",".join(cells)
    (out / "results.csv").write_text("\n".join(text) + "\n")
    before = snapshot(work)
    code, err = run_cli(["sweep", "sweep_helpers:TOY", "--trials", "2", "--seed", "3",
                         "--workers", "1", "--no-plot", "--no-progress", "--out", out,
                         "--resume"], capsys)
    line = one_line(err)
    assert code == 2
    assert f"{out / 'results.csv'} line 6: its checksum does not match its values" in line
    assert text[5] in line
    assert not changed(before, snapshot(work))


def test_sweep_options_workers_capped_and_unreachable_scheduler_fast(work, capsys):
    out = work / "w"
    code = main(["sweep", "sweep_helpers:TOY", "--trials", "1", "--workers", "500",
                 "--no-plot", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    cores = len(os.sched_getaffinity(0))
    assert (f"500 workers asked for, but this machine gives {cores} cores: using {cores} "
            "worker processes") in printed.out
    assert f"process pool ({cores} workers)" in printed.out
    before = snapshot(work)
    start = time.perf_counter()
    code, err = run_cli(["sweep", "sweep_helpers:TOY", "--scheduler", "tcp://127.0.0.1:1",
                         "--out", work / "d"], capsys)
    assert code == 2
    assert "--scheduler tcp://127.0.0.1:1: cannot reach the Dask scheduler" in one_line(err)
    assert time.perf_counter() - start < 5
    code, err = run_cli(["sweep", "sweep_helpers:TOY", "--scheduler", "tcp://nohost",
                         "--out", work / "d"], capsys)
    assert code == 2 and "is not an address like tcp://host:8786" in one_line(err)
    assert not changed(before, snapshot(work))


def test_a_scheduler_address_that_is_not_dask_is_one_line(work, capsys):
    """Something answers at the address, but not Dask (a web server, a proxy): Dask's
    client read its bytes as a frame length and died of MemoryError."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 64)

    threading.Thread(target=answer, daemon=True).start()
    try:
        start = time.perf_counter()
        code, err = run_cli(["sweep", "sweep_helpers:TOY", "--scheduler",
                             f"tcp://127.0.0.1:{port}", "--no-progress", "--out", work / "d"],
                            capsys)
        elapsed = time.perf_counter() - start
    finally:
        server.close()
    assert code == 2
    assert f"--scheduler tcp://127.0.0.1:{port}: no Dask scheduler answers there" in \
        one_line(err)
    assert elapsed < 15


def _session_members(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes in session ``sid`` (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                found.append((int(entry), cmd.decode(errors="replace")[:120]))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_driver_alone_leaves_no_orphans(work):
    """Only the driver is killed (not its process group): its workers, the forkserver and
    the resource tracker must all exit on their own."""
    out = work / "k"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS),
                                                          os.environ.get("PYTHONPATH", "")]),
           "SWEEP_TEST_DELAY": "0.2"}
    cmd = [sys.executable, "-m", "chipforge", "sweep", "sweep_helpers:TOY", "--out", str(out),
           "--trials", "10", "--workers", "2", "--no-plot", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    results = out / "results.csv"
    try:
        deadline = time.monotonic() + 60
        while not (results.exists() and results.read_bytes().count(b"\n") >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no results in 60 s"
            time.sleep(0.02)
        helpers_running = _session_members(proc.pid)
        kinds = " ".join(c for _, c in helpers_running)
        assert "forkserver" in kinds and "resource_tracker" in kinds, helpers_running
        assert len(helpers_running) >= 4  # tracker, forkserver, 2 workers (+ the driver)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait()
        deadline = time.monotonic() + 15
        while (left := [m for m in _session_members(proc.pid) if m[0] != proc.pid]):
            if time.monotonic() > deadline:
                pytest.fail(f"orphans 15 s after the driver died: {left}")
            time.sleep(0.05)
    finally:
        for pid, _ in _session_members(proc.pid):  # never leave a stray process behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.stderr.close()


# --- bad options --------------------------------------------------------------------------

def test_bad_options_are_one_line_naming_the_option(work, capsys, monkeypatch):
    (work / "a_file").write_text("x")
    (work / "big.onnx").write_bytes(bytes(4096))
    monkeypatch.setenv("CHIPFORGE_MAX_FILE_MEMORY", "1024")
    cases = [
        (["ref", "crossbar", "--seed", "-1"], "--seed must be >= 0, not -1"),
        (["heatvit", "--images", "0"], "--images must be >= 1, not 0"),
        (["cycles", "lenet-digits", "--images", "0"], "--images must be >= 1, not 0"),
        (["cycles", "lenet-digits", "--plot", work / "a_file" / "p.png"],
         "--plot " + str(work / "a_file" / "p.png") + ": " + str(work / "a_file")
         + " is a file"),
        (["sweep", "sweep_helpers:TOY", "--seed", "-1"], "--seed must be >= 0, not -1"),
        (["sweep", "sweep_helpers:TOY", "--workers", "0"], "--workers must be >= 1, not 0"),
        (["sweep", "sweep_helpers:TOY", "--resume", "--force", "--out", work / "s"],
         "--resume continues the sweep in --out, --force starts it over: give one"),
        (["sweep", "sweep_helpers:TOY", "--out", work / "a_file"],
         f"--out {work / 'a_file'}: exists and is not a folder"),
        (["import", "lenet-digits", "--out", work], "is a folder; give a file name"),
        (["rtl", "shift-add", "--out", work / "a_file"], "exists and is not a folder"),
        (["zoo", "train", "mlp-digits", "--out", "/proc/m.npz"],
         "--out /proc/m.npz: cannot write in /proc"),
        (["import", work / "big.onnx"], f"model file {work / 'big.onnx'} has 0.00 GiB, more "
                                        "than the 0.00 GiB allowed"),
    ]
    before = snapshot(work)
    for argv, text in cases:
        code, err = run_cli(argv, capsys)
        line = one_line(err)
        assert code == 2, (argv, line)
        assert text in line, (argv, line)
    assert not changed(before, snapshot(work))


def test_npz_rows_stream_out_exactly(tmp_path):
    """read_npz_rows gives the arrays np.load gives (C and Fortran order, scalars, partial)."""
    from chipforge.guard import inspect_npz, read_npz_rows

    rng = np.random.default_rng(3)
    arrays = {"c": rng.random((7, 3, 2)), "f": np.asfortranarray(rng.random((5, 4))),
              "i": rng.integers(-9, 9, 11).astype(np.int16), "s": np.array(2.5)}
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **arrays)
    members = inspect_npz(path)
    for key, array in arrays.items():
        assert np.array_equal(read_npz_rows(path, members[key], None), array), key
        if array.ndim:
            part = read_npz_rows(path, members[key], 2)
            assert part.dtype == array.dtype and np.array_equal(part, array[:2]), key
    assert members["f"].bytes_for(2) == arrays["f"].nbytes  # read whole in Fortran order
    assert members["c"].bytes_for(2) == arrays["c"][:2].nbytes


# --- round three (issue 28): links, full disks, tampered models, sizes, options -----------

MODEL = "lenet-digits-forms8"
SIM = ["--samples", "3", "--cycle-samples", "2", "--no-progress"]


def _outside(work: Path) -> dict[str, Path]:
    """Files outside every --out, which links point at: they must keep their bytes."""
    d = work / "outside"
    d.mkdir(exist_ok=True)
    files = {}
    for name in ("report.json", "accuracy.png", "shift_add.v", "results.csv", "plot.png",
                 "model.npz", "model.onnx", "summary.csv"):
        files[name] = d / name
        files[name].write_text(f"the user's own {name}\n")
    return files


def _untouched(files: dict[str, Path]) -> None:
    for name, path in files.items():
        assert path.read_text() == f"the user's own {name}\n", name


def test_atomic_write_replaces_a_link_and_keeps_the_file_on_failure(tmp_path):
    from chipforge.files import atomic_open, atomic_write

    outside = _outside(tmp_path)
    target = tmp_path / "out.json"
    target.symlink_to(outside["report.json"])
    atomic_write(target, "new\n")
    assert not target.is_symlink() and target.read_text() == "new\n"
    _untouched(outside)
    with pytest.raises(RuntimeError, match="half way"):  # the bytes' producer fails
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("half way")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "outside"]  # no temp


def test_simulate_writes_through_no_link_and_results_are_byte_identical(work, capsys):
    """Issue 28: `DIR/report.json` and `DIR/accuracy.png` linked to outside files: the
    outside files held the report afterwards. And report.json differed between identical
    runs (memory_budget_bytes, from free memory): the run-dependent facts are now in `run`."""
    outside = _outside(work)
    first, second = work / "first", work / "second"
    first.mkdir()
    (first / "report.json").symlink_to(outside["report.json"])
    (first / "accuracy.png").symlink_to(outside["accuracy.png"])
    reports = []
    for out in (first, second):
        code, err = run_cli(["simulate", MODEL, *SIM, "--out", out], capsys)
        assert code == 0, err
        assert not (out / "report.json").is_symlink()
        assert not (out / "accuracy.png").is_symlink()
        assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
        reports.append(json.loads((out / "report.json").read_text()))
    _untouched(outside)
    runs = [r.pop("run") for r in reports]
    assert json.dumps(reports[0], sort_keys=True) == json.dumps(reports[1], sort_keys=True)
    for run, out in zip(runs, (first, second), strict=True):
        assert run["report_dir"] == str(out) and run["memory"]["memory_budget_bytes"] > 0
        assert {r["stage"] for r in run["stages"]} >= {"import", "data", "run"}
    assert "memory_budget_bytes" not in reports[0]["simulation"]["metrics"]


def test_rtl_writes_through_no_link(work, capsys):
    """Issue 28: `rtl shift-add --out DIR` with `DIR/shift-add/shift_add.v` a link replaced
    the link's target by Verilog; a linked block folder would put every file outside."""
    outside = _outside(work)
    out = work / "rtl"
    (out / "shift-add").mkdir(parents=True)
    (out / "shift-add" / "shift_add.v").symlink_to(outside["shift_add.v"])
    code, err = run_cli(["rtl", "shift-add", "--out", out], capsys)
    assert code == 0, err
    assert not (out / "shift-add" / "shift_add.v").is_symlink()
    assert "module shift_add" in (out / "shift-add" / "shift_add.v").read_text()
    _untouched(outside)
    linked = work / "rtl2"
    linked.mkdir()
    (linked / "shift-add").symlink_to(work / "outside", target_is_directory=True)
    before = snapshot(work)
    code, err = run_cli(["rtl", "shift-add", "--out", linked], capsys)
    line = one_line(err)
    assert code == 2 and f"{linked / 'shift-add'}: " in line and "symbolic link" in line
    assert not changed(before, snapshot(work))


def test_import_cycles_and_sweep_write_through_no_link(work, capsys):
    outside = _outside(work)
    out = work / "out"
    out.mkdir()
    for name in ("model.npz", "model.onnx", "plot.png"):
        (out / name).symlink_to(outside[name])
    code, err = run_cli(["import", "lenet-digits", "--out", out / "model.npz",
                         "--to-onnx", out / "model.onnx"], capsys)
    assert code == 0, err
    code, err = run_cli(["cycles", "lenet-digits", "--images", "2", "--plot",
                         out / "plot.png"], capsys)
    assert code == 0, err
    for name in ("model.npz", "model.onnx", "plot.png"):
        assert not (out / name).is_symlink(), name
    assert zipfile.is_zipfile(out / "model.npz")
    _untouched(outside)
    # A sweep's summary is replaced, its results file (appended to) is never followed.
    sweep = work / "s"
    base = ["sweep", "sweep_helpers:TOY", "--trials", "1", "--workers", "1", "--no-progress",
            "--out", sweep]
    code, err = run_cli(base, capsys)
    assert code == 0, err
    (sweep / "summary.csv").unlink()
    (sweep / "summary.csv").symlink_to(outside["summary.csv"])
    code, err = run_cli([*base, "--resume"], capsys)
    assert code == 0, err
    assert not (sweep / "summary.csv").is_symlink()
    outside["results.csv"].write_bytes((sweep / "results.csv").read_bytes())
    (sweep / "results.csv").unlink()
    (sweep / "results.csv").symlink_to(outside["results.csv"])
    kept = outside["results.csv"].read_bytes()
    code, err = run_cli([*base, "--resume"], capsys)
    line = one_line(err)
    assert code == 2 and f"{sweep / 'results.csv'}: is a symbolic link" in line, line
    assert outside["results.csv"].read_bytes() == kept
    outside["results.csv"].write_text("the user's own results.csv\n")
    _untouched(outside)


def test_compress_writes_through_no_link(work, capsys):
    from chipforge.zoo.data import digits

    outside = _outside(work)
    d = digits(16)
    np.savez(work / "train.npz", x=d.x_train[:200].reshape(-1, 1, 16, 16), y=d.y_train[:200])
    out = work / "c.npz"
    out.symlink_to(outside["model.npz"])
    code, err = run_cli(["compress", "forms", "lenet-digits", "--data", work / "train.npz",
                         "--out", out, "--overwrite", "--prune-epochs", "1",
                         "--polarize-epochs", "1", "--finetune-epochs", "1", "--qat-epochs",
                         "1"], capsys)
    assert code == 0, err
    assert not out.is_symlink() and zipfile.is_zipfile(out)
    _untouched(outside)


@pytest.fixture()
def full_disk(tmp_path):
    """A 64 KiB tmpfs (CI runs as root): a disk that fills up. The test fails if it
    cannot be mounted (it does not skip)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (run as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last block."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(512))
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_disk_keeps_the_previous_report_and_names_the_path(work, capsys, full_disk):
    """Issue 28: a report written on a full disk left a truncated 8 KB report.json (a valid
    one there before was destroyed) and the message named no path."""
    out = full_disk / "report"
    out.mkdir()
    previous = json.dumps({"schema": 3, "simulation": {"accuracy_hardware": 0.5}})
    (out / "report.json").write_text(previous)
    _fill(full_disk)
    code, err = run_cli(["simulate", MODEL, *SIM, "--out", out], capsys)
    line = one_line(err)
    assert code == 2
    assert str(out) in line and "No space left on device" in line, line
    assert (out / "report.json").read_text() == previous
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]   # no temporary file


def test_full_disk_leaves_whole_lines_in_an_appended_file(full_disk):
    """A sweep's results file grows by whole lines: a line that does not fit is cut off
    again, and the error names the file."""
    from chipforge.files import AppendFile

    path = full_disk / "results.csv"
    line = "a," + "x" * 997 + "\n"
    with AppendFile(path) as f, pytest.raises(OSError) as caught:
        for _ in range(1000):
            f.append(line)
    assert caught.value.filename == str(path) and "No space left" in str(caught.value)
    text = path.read_text()
    assert text and text.endswith("\n") and set(text.splitlines()) == {line[:-1]}


# --- tampered and careless models ------------------------------------------------------------

def _edited_graph(path: Path, edit) -> Path:
    from chipforge.sim.graph import save_graph
    from chipforge.zoo import load

    graph = load("lenet-digits-forms8")
    edit(graph.weighted_nodes()[0])
    save_graph(graph, path)
    return path


def _nan(node):
    node.params["weight"] = node.params["weight"].copy()
    node.params["weight"][0, 0, 0, 0] = np.nan


def _inf_bias(node):
    node.params["bias"] = np.full_like(node.params["bias"], np.inf)


def test_careless_ir_models_are_one_line_naming_file_node_and_field(work, capsys):
    """Issue 28: NaN weights in an IR .npz ran ("float 8 %, hardware 98 %", rc 0; compress
    forms too), a string weight or weight_bits="eight" named no file or node, act_scale=0
    said "not -9223372036854775808..255"."""
    d = work / "models"
    d.mkdir()
    cases = {
        "nan": (_nan, "parameter 'weight' must be finite; it holds 1 NaN"),
        "inf": (_inf_bias, "parameter 'bias' must be finite"),
        "string": (lambda n: n.params.update(weight=np.full((2, 1, 3, 3), "w")),
                   "parameter 'weight' must be an array of real numbers, not <U1"),
        "bits": (lambda n: n.attrs.update(weight_bits="eight"),
                 "weight_bits must be an integer in 1..32, not 'eight'"),
        "act0": (lambda n: n.attrs.update(act_scale=0),
                 "act_scale must be a finite number > 0 (the step of the input quantizer"),
        "scale": (lambda n: n.attrs.update(weight_scale=[1.0, 2.0]),
                  "weight_scale must be a finite number > 0 or a list of one per output"),
        "signed": (lambda n: n.attrs.update(act_signed="yes"),
                   "act_signed must be true or false, not 'yes'"),
    }
    paths = {k: _edited_graph(d / f"{k}.npz", edit) for k, (edit, _) in cases.items()}
    before = snapshot(work)
    for key, (_, text) in cases.items():
        for argv in (["import", paths[key]],
                     ["simulate", paths[key], *SIM, "--out", work / "r"]):
            code, err = run_cli(argv, capsys)
            line = one_line(err)
            assert code == 2, (key, line)
            assert f"model file {paths[key]}: node 'conv1' (conv2d): {text}" in line, line
    code, err = run_cli(["compress", "forms", paths["nan"], "--out", work / "c.npz"], capsys)
    assert code == 2 and "must be finite" in one_line(err)
    assert not changed(before, snapshot(work))


def test_onnx_weight_bits_metadata_of_the_wrong_type_is_one_line(work, capsys):
    import onnx

    from chipforge.importers.onnx_export import to_onnx
    from chipforge.zoo import load

    model = to_onnx(load("lenet-digits-forms8"))
    entry = model.metadata_props.add()
    entry.key, entry.value = "chipforge.weight_bits", "[1,2,3]"
    path = work / "meta.onnx"
    onnx.save(model, str(path))
    code, err = run_cli(["import", path], capsys)
    line = one_line(err)
    assert code == 2
    assert f"{path}: metadata 'chipforge.weight_bits' must be a JSON object" in line
    assert "'[1,2,3]'" in line


def _deflate_bomb(path: Path, x_shape: tuple[int, ...]) -> Path:
    """An .npz whose 'x' (float64 zeros of ``x_shape``, 1 MiB multiples) and 'y' inflate to
    gigabytes from a few MB: repeated full-flush deflate blocks, CRCs forged (a reader that
    inflated it all would find out only at the end)."""
    import struct
    import zlib

    def member(name: str, header: bytes, zeros: int) -> tuple[bytes, bytes, int, int]:
        z = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = z.compress(header) + z.flush(zlib.Z_FULL_FLUSH)
        block = z.compress(bytes(1 << 20)) + z.flush(zlib.Z_FULL_FLUSH)
        tail = z.flush(zlib.Z_FINISH)
        assert zeros % (1 << 20) == 0
        body = head + block * (zeros >> 20) + tail
        return name.encode(), body, len(body), len(header) + zeros

    n = x_shape[0]
    members = [member("x.npy", _npy_header(x_shape), int(np.prod(x_shape)) * 8),
               member("y.npy", _npy_header((n,), "<i8"), n * 8)]
    local, central = b"", b""
    for name, body, csize, usize in members:
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, 0, csize, usize,
                             len(name), 0) + name + body
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, 0,
                               csize, usize, len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                      len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path


@pytest.mark.parametrize("shape_matches", [False, True])
def test_a_3_gb_data_bomb_is_refused_from_its_headers(work, capsys, monkeypatch,
                                                      shape_matches):
    """Issue 28: a 3 GB deflate bomb given as --data without --samples took 85 s and 5.9 GB
    before a shape error the header already shows. Now: refused from the headers, < 2 s,
    < 100 MB (tracemalloc's peak, which counts numpy's buffers)."""
    from chipforge.importers.model import load_data
    from chipforge.zoo import load

    per = (1, 16, 16) if shape_matches else (3, 32, 32)       # lenet-digits takes 1x16x16
    n = (3 << 30) // (8 * int(np.prod(per)))
    path = _deflate_bomb(work / "bomb.npz", (n, *per))
    assert path.stat().st_size < 16 << 20
    # within the budget: before the ratio rule this case inflated 3 GB (6.3 GB peak, 42 s)
    monkeypatch.setenv("CHIPFORGE_MAX_FILE_MEMORY", str(8 << 30))
    graph = load("lenet-digits-forms8")
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        load_data(path, graph)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    text = str(caught.value)
    if shape_matches:
        assert f"data file {path}: array 'x' inflates to 3.00 GiB from " in text
        assert "a decompression bomb, not data" in text
    else:
        assert "each input has shape (3, 32, 32) (3072 values)" in text
        assert "read from the file's header" in text
    assert seconds < 2, f"{seconds:.1f} s"
    assert peak < 100 << 20, f"{peak / 2**20:.0f} MiB"
    print(f"bomb refused in {seconds * 1e3:.0f} ms, peak {peak / 2**20:.2f} MiB")
    code, err = run_cli(["simulate", MODEL, "--data", path, "--out", work / "r"], capsys)
    assert code == 2 and str(path) in one_line(err)


def test_a_model_input_beyond_the_budget_is_refused_before_allocating(work, capsys):
    """Issue 28: a model with input shape [1, 100000, 100000] reached 5.8 GB before "out of
    memory"."""
    from chipforge.sim.graph import Graph, Node, Op, save_graph

    path = work / "wide.npz"
    save_graph(Graph("wide", (1, 100_000, 100_000), [
        Node(Op.FLATTEN, "flat", ("input",)),
        Node(Op.RELU, "r", ("flat",))]), path)
    tracemalloc.start()
    code, err = run_cli(["simulate", path, *SIM, "--out", work / "r"], capsys)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    line = one_line(err)
    assert code == 2
    assert f"model {path}: input shape (1, 100000, 100000) is 74.51 GiB per sample" in line
    assert peak < 100 << 20


# --- options, inputs and calibration -------------------------------------------------------

def test_run_options_are_refused_before_the_model_loads(work, capsys, monkeypatch):
    """Issue 28: --max-memory and --adc-range errors came after 20-40 s of loading;
    --device cuda without CUDA was `internal error: AssertionError`."""
    import torch

    import chipforge.mainjob as mainjob

    def loaded(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(mainjob, "load_inputs", loaded)
    cases = [
        (["--max-memory", "lots"], "--max-memory must be a size such as 2G"),
        (["--max-memory", "1k"], "--max-memory must be at least 16M, not '1k'"),
        (["--adc-range", "bogus"], "--adc-range must be max, fraction:F (0 < F <= 1) or "
                                   "calibrated, not 'bogus'"),
        (["--adc-range", "fraction:nan"], "not 'fraction:nan'"),
        (["--adc-range", "fraction:2"], "not 'fraction:2'"),
        (["--layer-errors", "-1"], "--layer-errors must be an integer >= 0, not -1"),
        (["--adc-calibration", "digits"], "--adc-calibration applies to --adc-range "
                                          "calibrated, not 'max'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "--device cuda: no CUDA GPU is usable here"))
    before = snapshot(work)
    for extra, text in cases:
        code, err = run_cli(["simulate", MODEL, *SIM, "--out", work / "r", *extra], capsys)
        line = one_line(err)
        assert code == 2 and text in line, (extra, line)
    assert not changed(before, snapshot(work))


def test_pipes_given_as_files_are_refused_not_read(work, capsys):
    """A FIFO given as a model, data or config file blocked chipforge forever (found by the
    round-three tally, tools/hostile_tally.py)."""
    for name in ("m.npz", "m.onnx", "d.npz", "c.toml"):
        os.mkfifo(work / name)
    cases = [(["import", work / "m.npz"], f"model file {work / 'm.npz'} is not a regular"),
             (["import", work / "m.onnx"], f"ONNX file {work / 'm.onnx'} is not a regular"),
             (["simulate", MODEL, *SIM, "--data", work / "d.npz", "--out", work / "r"],
              f"data file {work / 'd.npz'} is not a regular file"),
             (["simulate", MODEL, *SIM, "--accelerator", work / "c.toml", "--out", work / "r"],
              f"config file {work / 'c.toml'} is not a regular file")]
    import threading

    def unblock(fifo: Path) -> None:   # a reader gets EOF instead of waiting forever
        with open(fifo, "wb"):
            pass

    for name in ("m.npz", "m.onnx", "d.npz", "c.toml"):
        threading.Thread(target=unblock, args=(work / name,), daemon=True).start()
    for argv, text in cases:
        code, err = run_cli(argv, capsys)
        line = one_line(err)
        assert code == 2 and text in line, (argv, line)


def test_absurd_inputs_and_output_names_are_one_line(work, capsys):
    """Issue 28: inputs of 1e300 were accepted; `import --out g.txt` wrote an npz named
    .txt."""
    x = np.zeros((4, 1, 16, 16))
    x[2, 0, 3, 3] = 1e300
    np.savez(work / "huge.npz", x=x, y=np.arange(4))
    before = snapshot(work)
    cases = [
        (["simulate", MODEL, "--data", work / "huge.npz", *SIM, "--out", work / "r"],
         "inputs must be at most 1e+09 in magnitude, found 1e+300"),
        (["import", "lenet-digits", "--out", work / "g.txt"],
         f"--out {work / 'g.txt'}: must end in .npz"),
        (["import", "lenet-digits", "--to-onnx", work / "g.npz"],
         f"--to-onnx {work / 'g.npz'}: must end in .onnx"),
    ]
    for argv, text in cases:
        code, err = run_cli(argv, capsys)
        line = one_line(err)
        assert code == 2 and text in line, (argv, line)
    assert not changed(before, snapshot(work))


def test_adc_calibration_never_uses_the_scored_inputs_unless_asked(work, capsys,
                                                                   monkeypatch):
    """Issue 28: `--adc-range calibrated --samples 1` calibrated on the scored image
    itself, without a note. Now: the inputs after the scored ones (or the digits training
    split, or --adc-calibration), and the report says which."""
    import chipforge.sim.reram as reram
    from chipforge.zoo.data import digits

    seen = []
    real = reram.calibrate_adc
    monkeypatch.setattr(reram, "calibrate_adc",
                        lambda graph, x, hook: seen.append(np.array(x)) or real(graph, x, hook))
    d = digits(16)
    x = d.x_test[:10].reshape(10, 1, 16, 16)
    np.savez(work / "data.npz", x=x, y=d.y_test[:10])
    out = work / "r"
    base = ["simulate", MODEL, "--cycle-samples", "2", "--no-progress", "--out", out,
            "--adc-range", "calibrated", "--data", work / "data.npz"]
    code, err = run_cli([*base, "--samples", "4"], capsys)
    assert code == 0, err
    assert np.array_equal(seen.pop(), x[4:10])
    report = json.loads((out / "report.json").read_text())
    assert report["simulation"]["metrics"]["adc_calibration"] == \
        f"inputs 5..10 of {work / 'data.npz'} (after the 4 scored)"
    assert any("ADC full scale calibrated on inputs 5..10" in n for n in report["notes"])
    code, err = run_cli([*base, "--samples", "10"], capsys)
    line = one_line(err)
    assert code == 2 and "has no inputs beyond the 10 scored" in line and not seen
    code, err = run_cli([*base, "--samples", "3", "--adc-calibration", "scored"], capsys)
    assert code == 0, err
    assert np.array_equal(seen.pop(), x[:3])
    report = json.loads((out / "report.json").read_text())
    assert "scored inputs themselves" in report["simulation"]["metrics"]["adc_calibration"]
    code, err = run_cli(["simulate", MODEL, *SIM, "--out", out, "--adc-range", "calibrated"],
                        capsys)
    assert code == 0, err
    train = d.x_train[:64].reshape(64, 1, 16, 16)
    assert np.array_equal(seen.pop(), train)


def test_compare_writes_through_no_link_and_derives_its_file_names(work, capsys):
    """compare's tables and Pareto plot replace links in --out, never follow them; a
    symlinked presets/ folder is refused; a model path given per preset never becomes a
    file name."""
    outside = _outside(work)
    out = work / "cmp"
    out.mkdir()
    for name, link in (("summary.csv", "compare.csv"), ("plot.png", "pareto.png"),
                       ("report.json", "compare.md")):
        (out / link).symlink_to(outside[name])
    weird = work / "a;b" / ".." / "lenet digits.npz"
    (work / "a;b").mkdir()
    code, err = run_cli(["import", "lenet-digits", "--out", work / "lenet digits.npz"],
                        capsys)
    assert code == 0, err
    before = snapshot(work)
    code, err = run_cli(["compare", "lenet-digits", "--accelerators",
                         f"isaac,cap-ram={weird}", "--samples", "8", "--out", out], capsys)
    assert code == 0, err
    for link in ("compare.csv", "pareto.png", "compare.md"):
        assert not (out / link).is_symlink(), link
    assert sorted(p.name for p in (out / "presets").iterdir()) == ["cap-ram.json",
                                                                    "isaac.json"]
    assert {c.split("/")[0] for c in changed(before, snapshot(work))} == {"cmp"}
    _untouched(outside)
    linked = work / "cmp2"
    linked.mkdir()
    (linked / "presets").symlink_to(work / "outside", target_is_directory=True)
    code, err = run_cli(["compare", "lenet-digits", "--accelerators", "isaac",
                         "--samples", "8", "--out", linked], capsys)
    line = one_line(err)
    assert code == 2 and "presets" in line and "symbolic link" in line, line
    assert sorted(p.name for p in (work / "outside").iterdir()) == sorted(outside)
    _untouched(outside)
