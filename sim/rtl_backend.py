"""Run a generated block's Verilog inside the simulator, through Verilator and pyverilator-mm.

:class:`VerilatedBlock` loads what ``chipforge rtl`` wrote under ``rtl/<block>/`` (the
Verilog and ``manifest.json``; ``sim`` never imports ``hw``), compiles it with Verilator
through pyverilator-mm once, and drives its ``lib.stream`` ports from numpy arrays:
:meth:`VerilatedBlock.run_stream` sends a (beats, words) array of payload words on the
input stream with the valid/ready handshake (optionally with random idle cycles and
back-pressure), collects the output stream's payloads and counts the clock cycles.

Compiled models are cached, keyed by the hash of the Verilog, the Verilator version and the
pyverilator-mm version, under ``$CHIPFORGE_RTL_CACHE`` (default
``$XDG_CACHE_HOME/chipforge/verilated``, i.e. ``~/.cache/chipforge/verilated``), so a
second run, in this process or any later one, loads the shared object without rebuilding.

Why not ``sim.io.port = value``: pyverilator-mm's signal objects look the port up by name
and evaluate the model after every write. The cycle loop here calls the model's generated
C setters/getters directly (bound once through ctypes) and evaluates twice per cycle,
which runs about 3x more cycles per second (``benchmarks/bench_rtl_backend.py``).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chipforge.files import atomic_write
from chipforge.toolchain import PyverilatorToolchain, pyverilator_verilator
from chipforge.verify.manifest import Manifest, load_manifest

__all__ = ["StreamRun", "VerilatedBlock", "default_cache_dir"]

# Bump when the build recipe below changes, so old cache entries are not reused.
_BUILD_RECIPE = 1
_VERILATOR_ARGS = ("-Wno-WIDTH",)  # Amaranth's Verilog always trips WIDTH (see toolchain)


def default_cache_dir() -> Path:
    """``$CHIPFORGE_RTL_CACHE``, else ``$XDG_CACHE_HOME/chipforge/verilated``."""
    if os.environ.get("CHIPFORGE_RTL_CACHE"):
        return Path(os.environ["CHIPFORGE_RTL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chipforge" / "verilated"


@dataclass(frozen=True)
class StreamRun:
    """What one :meth:`VerilatedBlock.run_stream` call observed."""

    words: np.ndarray
    """(results, words) uint32: the output payloads in arrival order, least significant
    32-bit word first."""
    results: np.ndarray | dict[str, np.ndarray]
    """The payloads decoded by the manifest: int64 (sign-extended if the port is signed)
    for a plain port up to 64 bits; ``{field: int64 array}`` for a port with payload
    fields (``PayloadCodec.unpack_array``); Python ints (object array) otherwise."""
    cycles: int
    """Clock cycles from the first cycle after reset through the cycle of the last output
    transfer, inclusive."""
    result_cycles: np.ndarray
    """(results,) the cycle (1-based, as ``cycles``) in which each output transferred."""
    seconds: float
    """Wall time of the cycle loop."""

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("inf")


def _stream_ports(manifest: Manifest, direction: str) -> str:
    """The one stream port (``<name>__valid/ready/payload``) whose payload flows ``direction``."""
    ports = manifest.data["ports"]
    names = [p[: -len("__payload")] for p, e in ports.items()
             if p.endswith("__payload") and e["direction"] == direction]
    if len(names) != 1:
        raise ValueError(f"{manifest.module}: run_stream drives blocks with one input and one "
                         f"output stream, found {direction} streams {names}")
    return names[0]


class VerilatedBlock:
    """A generated block compiled by Verilator (via pyverilator-mm), driven from numpy.

    ``block_dir`` is ``rtl/<block>`` (or its ``manifest.json``). The first use of a given
    Verilog builds it (8-40 s); later ones load the cached model (``from_cache`` is True).
    """

    def __init__(self, block_dir: str | Path, *, cache_dir: str | Path | None = None):
        self.manifest = load_manifest(block_dir)
        if not self.manifest.verilog.exists():
            raise ValueError(f"{self.manifest.path}: names Verilog {self.manifest.verilog}, "
                             "which does not exist: run `chipforge rtl` again")
        reset = self.manifest.data.get("reset", {}).get("kind", "synchronous, active high")
        if "active high" not in reset:
            raise ValueError(f"{self.manifest.path}: run_stream drives an active-high reset, "
                             f"this block's is {reset!r}")
        self.toolchain = pyverilator_verilator()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.in_port = _stream_ports(self.manifest, "input")
        self.out_port = _stream_ports(self.manifest, "output")
        self.in_width = self.manifest.port_width(f"{self.in_port}__payload")
        self.out_width = self.manifest.port_width(f"{self.out_port}__payload")
        self.out_signed = self.manifest.port_signed(f"{self.out_port}__payload")
        self.key = self.cache_key(self.manifest.verilog.read_bytes(), self.toolchain)
        self.model_dir = self.cache_dir / f"{self.manifest.module}-{self.key}"
        self.from_cache = self._ensure_built()
        self._load()

    @staticmethod
    def cache_key(verilog: bytes, toolchain: PyverilatorToolchain) -> str:
        """Hash of everything the compiled model depends on."""
        blob = json.dumps({"verilog": hashlib.sha256(verilog).hexdigest(),
                           "verilator": toolchain.version_text,
                           "pyverilator-mm": toolchain.pyverilator, "cargs": toolchain.cargs,
                           "args": _VERILATOR_ARGS, "recipe": _BUILD_RECIPE}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def so_path(self) -> Path:
        return self.model_dir / "obj" / f"V{self.manifest.module}"

    def _ensure_built(self) -> bool:
        """Build the model into the cache unless it is there; return whether it was."""
        if self.so_path.exists():
            return True
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Parallel test workers may ask for the same model: one builds, the others wait.
        # O_NOFOLLOW: a link named like the lock is refused, never written through.
        fd = os.open(self.cache_dir / f"{self.model_dir.name}.lock",
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with open(fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.so_path.exists():
                return True
            staging = Path(tempfile.mkdtemp(prefix=f"{self.model_dir.name}.", dir=self.cache_dir))
            try:
                self._build(staging)
                os.replace(staging, self.model_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return False

    def _build(self, staging: Path) -> None:
        import pyverilator

        module = self.manifest.module
        # pyverilator-mm takes the top module's name from the file name.
        source = staging / f"{module}.v"
        shutil.copyfile(self.manifest.verilog, source)
        cwd = os.getcwd()
        try:
            os.chdir(staging)  # keep relative paths (and any stray output) inside the cache
            sim = pyverilator.PyVerilator.build(
                source.name, build_dir="obj", quiet=True, args=list(_VERILATOR_ARGS),
                cargs=self.toolchain.cargs)
        except Exception as e:
            raise RuntimeError(f"building the Verilated model of {self.manifest.verilog} with "
                               f"{self.toolchain.version_text} failed: {e}") from e
        finally:
            os.chdir(cwd)
        del sim
        atomic_write(staging / "key.json", json.dumps({
            "verilog": str(self.manifest.verilog), "verilator": self.toolchain.version_text,
            "pyverilator-mm": self.toolchain.pyverilator}, indent=2) + "\n")

    def _load(self) -> None:
        lib = ctypes.CDLL(str(self.so_path))
        construct = lib.construct
        construct.restype = ctypes.c_void_p
        self._lib = lib
        self._model = ctypes.c_void_p(construct())
        self._destruct = lib.destruct
        self._destruct.argtypes = [ctypes.c_void_p]

    def __del__(self):
        model = getattr(self, "_model", None)
        if model is not None and model.value:
            self._destruct(model)
            self._model = None

    def _fn(self, kind: str, port: str, width: int):
        """Bound ctypes setter/getter of a port (Verilator spells ``__`` as ``___05F``)."""
        fn = getattr(self._lib, f"{kind}_{port.replace('__', '___05F')}")
        value = ctypes.c_uint32 if width <= 32 else ctypes.c_uint64
        if kind == "set":
            fn.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64] if width > 64
                           else [ctypes.c_void_p, value])
            fn.restype = ctypes.c_int
        else:
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int] if width > 64 else [ctypes.c_void_p]
            fn.restype = ctypes.c_uint32 if width > 64 else value
        return fn

    def run_stream(self, beats: np.ndarray, n_results: int, *, idle_prob: float = 0.0,
                   ready_prob: float = 1.0, seed: int = 0,
                   max_cycles: int | None = None) -> StreamRun:
        """Reset, send ``beats`` ((n, words) uint32 payload words, least significant first,
        e.g. from ``PayloadCodec.pack_array``), and collect ``n_results`` output payloads.

        Each cycle the input stream is idle with probability ``idle_prob`` (a beat once
        offered stays valid until accepted) and the output stream is ready with probability
        ``ready_prob``. Raises ``TimeoutError`` after ``max_cycles`` (default: generous).
        """
        for name, p in (("idle_prob", idle_prob), ("ready_prob", ready_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], not {p!r}")
        if ready_prob == 0.0 and n_results:
            raise ValueError("ready_prob must be > 0, or no result can ever be received")
        if idle_prob == 1.0 and len(beats):
            raise ValueError("idle_prob must be < 1, or no beat can ever be sent")
        beats = np.asarray(beats)
        words = max(1, -(-self.in_width // 32))
        if beats.ndim != 2 or beats.shape[1] != words:
            raise ValueError(f"beats must have shape (n, {words}) for the {self.in_width}-bit "
                             f"{self.in_port} payload, not {beats.shape}")
        n_beats = beats.shape[0]
        if max_cycles is None:
            stall = 1.0 / max(1e-3, 1.0 - idle_prob) / ready_prob
            max_cycles = int(20 * stall * (n_beats + n_results)) + 1000

        m = self._model
        set_clk = self._fn("set", self.manifest.data.get("clock", "clk"), 1)
        set_rst = self._fn("set", self.manifest.data.get("reset", {}).get("name", "rst"), 1)
        set_valid = self._fn("set", f"{self.in_port}__valid", 1)
        set_ready = self._fn("set", f"{self.out_port}__ready", 1)
        set_payload = self._fn("set", f"{self.in_port}__payload", self.in_width)
        get_in_ready = self._fn("get", f"{self.in_port}__ready", 1)
        get_out_valid = self._fn("get", f"{self.out_port}__valid", 1)
        get_out = self._fn("get", f"{self.out_port}__payload", self.out_width)
        ev = self._lib.eval
        ev.argtypes, ev.restype = [ctypes.c_void_p], ctypes.c_int
        out_words = -(-self.out_width // 32)

        # Payload words as Python ints: the fastest thing to hand ctypes. A wide payload is
        # written 32 bits at a time; when most words repeat from beat to beat (e.g. weights
        # carried in the payload), each beat lists only the (word, value) pairs that differ
        # from the previous beat's (the first beat of a run writes all of them).
        sparse = False
        if self.in_width > 64:
            changed = np.ones(beats.shape, dtype=bool)
            changed[1:] = beats[1:] != beats[:-1]
            sparse = bool(changed.mean() < 0.5)
            if sparse:
                index = np.broadcast_to(np.arange(words), beats.shape)
                pairs = list(zip(index[changed].tolist(), beats[changed].tolist(), strict=True))
                bounds = np.concatenate([[0], np.cumsum(changed.sum(axis=1))]).tolist()
                rows = [pairs[bounds[i]:bounds[i + 1]] for i in range(n_beats)]
            else:
                rows = list(zip(*(beats[:, w].tolist() for w in range(words)), strict=True))
        else:
            wide = beats.astype(np.uint64)
            packed = wide[:, 0] | (wide[:, 1] << np.uint64(32)) if words == 2 else wide[:, 0]
            rows = packed.tolist()

        # Synchronous reset for two cycles, then the loop. Each cycle: drive the inputs with
        # the clock low, evaluate, sample the handshakes, raise the clock and evaluate.
        set_valid(m, 0)
        set_ready(m, 0)
        set_rst(m, 1)
        for _ in range(2):
            set_clk(m, 0)
            ev(m)
            set_clk(m, 1)
            ev(m)
        set_rst(m, 0)

        results: list[int] = []
        result_cycles: list[int] = []
        rng = np.random.default_rng(seed)
        stalls = idle_prob > 0.0 or ready_prob < 1.0
        sent, cycle, offered = 0, 0, False
        start = time.perf_counter()
        if not stalls:
            set_ready(m, 1)
        while len(results) < n_results:
            cycle += 1
            if cycle > max_cycles:
                raise TimeoutError(f"{self.manifest.module}: {len(results)} of {n_results} "
                                   f"results and {sent} of {n_beats} beats after "
                                   f"{max_cycles} cycles")
            set_clk(m, 0)
            if stalls:
                if not offered and sent < n_beats:
                    offered = rng.random() >= idle_prob
                ready = rng.random() < ready_prob
                set_ready(m, int(ready))
            else:
                offered, ready = sent < n_beats, True
            if offered:
                row = rows[sent]
                if sparse:
                    for w, value in row:
                        set_payload(m, w, value)
                elif self.in_width > 64:
                    for w, value in enumerate(row):
                        set_payload(m, w, value)
                else:
                    set_payload(m, row)
            set_valid(m, int(offered))
            ev(m)
            if offered and get_in_ready(m):
                sent += 1
                offered = False
            if ready and get_out_valid(m):
                if out_words > 2:
                    results.append([get_out(m, w) for w in range(out_words)])
                else:
                    results.append(get_out(m))
                result_cycles.append(cycle)
            set_clk(m, 1)
            ev(m)
        seconds = time.perf_counter() - start
        if sent != n_beats:
            raise ValueError(f"{self.manifest.module}: all {n_results} results arrived after "
                             f"{sent} of {n_beats} beats: the beats do not match n_results")
        words_out = self._words(results)
        return StreamRun(words=words_out, results=self._decode(words_out), cycles=cycle,
                         result_cycles=np.asarray(result_cycles, dtype=np.int64),
                         seconds=seconds)

    def _words(self, values: list) -> np.ndarray:
        """Collected payloads -> (n, words) uint32."""
        n_words = max(1, -(-self.out_width // 32))
        if self.out_width > 64:
            return np.array(values, dtype=np.uint32).reshape(len(values), n_words)
        raw = np.array(values, dtype=np.uint64)
        return np.stack([(raw >> np.uint64(32 * w)) & np.uint64(0xFFFFFFFF)
                         for w in range(n_words)], axis=1).astype(np.uint32)

    def _decode(self, words: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        port = f"{self.out_port}__payload"
        if "fields" in self.manifest.data["ports"][port]:
            return self.manifest.codec(port).unpack_array(words)
        width = self.out_width
        if width > 64:
            values = [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in words]
            if self.out_signed:
                values = [v - (1 << width) if v >> (width - 1) else v for v in values]
            return np.array(values, dtype=object)
        raw = np.zeros(len(words), dtype=np.uint64)
        for w in range(words.shape[1]):
            raw |= words[:, w].astype(np.uint64) << np.uint64(32 * w)
        if self.out_signed and width < 64:
            sign = np.uint64(1 << (width - 1))
            return (raw ^ sign).astype(np.int64) - np.int64(1 << (width - 1))
        return raw.astype(np.int64)
