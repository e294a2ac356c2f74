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
