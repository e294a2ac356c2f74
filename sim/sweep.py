"""Resumable Monte-Carlo sweeps on any ``concurrent.futures.Executor`` (local or Dask).

A sweep is a grid of points (each a dict of JSON-able values: fault rates, ADC bits, sigma,
keep ratio, ...) times Monte-Carlo trials. A trial is a pure function::

    trial(point: dict, seed: int, **shared) -> dict[str, float]   # metric name -> value

Its seed is derived from (base seed, point, trial index) only (:func:`trial_seed`), so the
results never depend on the executor, the number of workers or the order of completion.
With ``chips=N`` (``chipforge sweep --chips N``) the trials are N programmed chips, the
same at every point: trial ``t`` gets :func:`chipforge.chips.chip_seeds` ``(seed, N)[t]``
and the summary the spread over chips (:func:`chipforge.chips.spread`).

The engine (:func:`run_sweep`):

- runs trials on a local process pool (default), a Dask ``LocalCluster`` or an existing
  Dask scheduler, or on any executor you pass;
- ships the large shared inputs (mapped models, data sets) to each worker once: a process
  pool gets them through its initializer, a Dask cluster through a worker plugin;
- appends every finished trial to ``OUT/results.csv`` at once (flushed and fsync'd), with
  the point's fields, the trial index, the seed, the metrics and the trial's compute time,
  so a killed sweep resumes (``resume=True``) without recomputing or losing a trial; a
  half-written last line is discarded; a file from a different sweep, grid or seed, or
  with more trials per point, is an error (more trials than the file has extend it);
  every row carries a checksum, so an edited row is refused on resume, naming it;
- never deletes or overwrites a file it did not write: ``OUT`` must be new or empty, or
  hold this sweep (``resume=True``), or ``force=True`` replaces only the engine's own
  files (:data:`OWN_FILES`); local workers exit when the driver dies, even by SIGKILL;
- shows a tqdm progress bar, and at the end writes ``OUT/summary.csv`` (mean, standard
  deviation and 95% confidence interval per point and metric, printed as a table too) and
  ``OUT/plot.png`` (each metric against one axis, one curve per value of the other axes).

Named sweeps are :class:`SweepDef` objects, listed in ``chipforge.sweeps`` for the CLI
(``chipforge sweep NAME``).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.files import AppendFile, atomic_savefig, atomic_write

__all__ = [
    "SweepDef",
    "SweepError",
    "SweepResult",
    "executor_backend",
    "expand_grid",
    "format_summary",
    "load_results",
    "parse_grid_args",
    "plot_summary",
    "point_key",
    "run_sweep",
    "summarize",
    "t_quantile_975",
    "trial_seed",
]

RESULTS_FILE = "results.csv"
MANIFEST_FILE = "sweep.json"
SUMMARY_FILE = "summary.csv"
SUMMARY_TEXT_FILE = "summary.txt"
PLOT_FILE = "plot.png"
FORMAT_VERSION = 2
# Columns the engine adds to the point's fields and the metrics.
TRIAL_COLUMN, SEED_COLUMN, TIME_COLUMN = "trial", "seed", "trial_s"
DATA_AXIS = "data"
"""The optional axis of a sweep with ``takes_data``: the data its trials run the model on."""
CHECK_COLUMN = "check"
"""Per row: a checksum of the sweep's name and the row's cells (all but ``trial_s``), so a
hand-edited or damaged row is refused on resume instead of trusted."""
# Files the engine writes in its output folder (and so may replace); any other file there
# belongs to the user and is never touched.
OWN_FILES = frozenset({RESULTS_FILE, MANIFEST_FILE, SUMMARY_FILE, SUMMARY_TEXT_FILE, PLOT_FILE,
                       ".lock", MANIFEST_FILE + ".tmp", SUMMARY_FILE + ".tmp"})

Point = dict[str, Any]
Trial = Callable[..., Mapping[str, Any]]


class SweepError(Exception):
    """A sweep could not run or finish: bad grid, mismatched results file, failing trial."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepDef:
    """A named sweep: what a trial computes, over which default grid, and how to plot it."""

    name: str
    """Name on the command line (``chipforge sweep NAME``)."""
    trial: Trial
    """``trial(point, seed, **shared) -> {metric: number}``; a module-level function, so that
    workers can import it. Pure: the same (point, seed, shared) always gives the same
    metrics."""
    grid: Mapping[str, Sequence[Any]]
    """Default grid: axis name -> values (bool, int, float or str). An axis with one value
    is a fixed setting. ``--grid AXIS=v1,v2`` replaces an axis' values, parsed with the
    type of its default values."""
    metrics: tuple[str, ...]
    """Names of the metrics every trial returns."""
    x_axis: str
    """Grid axis on the x axis of the plot (the other axes give one curve each)."""
    trials: int = 10
    """Default Monte-Carlo trials per point."""
    shared: Callable[[], Mapping[str, Any]] | None = None
    """Builds the large inputs every trial needs (a mapped model, a data set) once, in the
    driver; they reach each worker once and each trial as keyword arguments."""
    takes_data: bool = False
    """The trial runs a model on data and reads the point's optional ``data`` axis (a
    ``.npz`` of inputs and labels or ``digits``; ``chipforge sweep --data``); without it
    the sweep's documented default data set."""
    check_point: Callable[[Point], None] | None = None
    """Raises ``ValueError`` for a point the trial cannot run (e.g. a bit width out of
    range); called for every point before any work starts."""
    description: str = ""
    """One line for ``chipforge sweep --list``."""
    log_x: bool = False
    """Plot the x axis on a log scale."""
    log_y: tuple[str, ...] = ()
    """Metrics plotted on a log scale."""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"SweepDef.name must be a non-empty string, not {self.name!r}")
        if not callable(self.trial):
            raise ValueError(f"SweepDef.trial must be callable, not {self.trial!r}")
        _check_grid(self.grid, f"sweep {self.name!r} default grid")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"SweepDef.metrics must be distinct names, not {self.metrics!r}")
        clash = set(self.metrics) & (set(self.grid) | {TRIAL_COLUMN, SEED_COLUMN, TIME_COLUMN,
                                                       CHECK_COLUMN})
        if clash:
            raise ValueError(f"metric names must differ from the grid axes and the engine's "
                             f"columns, but {sorted(clash)} clash")
        if self.x_axis not in self.grid:
            raise ValueError(f"SweepDef.x_axis must be a grid axis ({', '.join(self.grid)}), "
                             f"not {self.x_axis!r}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"SweepDef.trials must be an integer >= 1, not {self.trials!r}")


# --- grid and seeds -----------------------------------------------------------------------

def _check_value(axis: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"grid axis {axis!r}: values must be finite, not {value!r}")
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"grid axis {axis!r}: values must be bool, int, float or str, "
                         f"not {value!r} ({type(value).__name__})")


def _check_grid(grid: Mapping[str, Sequence[Any]], what: str) -> None:
    if not grid:
        raise ValueError(f"{what} must have at least one axis")
    reserved = {TRIAL_COLUMN, SEED_COLUMN, TIME_COLUMN, CHECK_COLUMN, "n"}  # n: summary's
    for axis, values in grid.items():
        if not isinstance(axis, str) or not axis.isidentifier():
            raise ValueError(f"{what}: axis names must be identifiers, not {axis!r}")
        if axis in reserved:
            raise ValueError(f"{what}: axis name {axis!r} is reserved for the engine")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{what}: axis {axis!r} needs a non-empty list of values, "
                             f"not {values!r}")
        for value in values:
            _check_value(axis, value)
        keys = [json.dumps(v) for v in values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{what}: axis {axis!r} repeats a value: {list(values)!r}")


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[Point]:
    """All points of a grid, in axis order (the last axis varies fastest)."""
    _check_grid(grid, "grid")
    axes = list(grid)
    return [dict(zip(axes, combo, strict=True))
            for combo in itertools.product(*(grid[a] for a in axes))]


def point_key(point: Mapping[str, Any]) -> str:
    """Canonical JSON of a point (sorted keys): what its seeds are derived from.

    ``1`` and ``1.0`` are different points; the CLI parses values with the type of the
    default grid, so the same command line always gives the same keys.
    """
    return json.dumps(dict(point), sort_keys=True, separators=(",", ":"), allow_nan=False)


def trial_seed(base_seed: int, point: Mapping[str, Any], trial: int) -> int:
    """The 64-bit seed of one trial: a SeedSequence over (base seed, hash of point, trial).

    Depends on nothing else, so no scheduling can change a result.
    """
    if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {base_seed!r}")
    digest = hashlib.sha256(point_key(point).encode()).digest()
    words = [int(w) for w in np.frombuffer(digest[:16], dtype="<u4")]
    sequence = np.random.SeedSequence([base_seed, *words, trial])
    return int(sequence.generate_state(1, np.uint64)[0])


def _seed_of(base_seed: int, chips: int | None) -> Callable[[Point, int], int]:
    """The seed of trial ``t`` at a point: :func:`trial_seed`, or with ``chips`` the seed of
    chip ``t`` (:func:`chipforge.chips.chip_seeds`), the same N chips at every point."""
    if chips is None:
        return lambda point, t: trial_seed(base_seed, point, t)
    from chipforge.chips import chip_seeds

    seeds = chip_seeds(base_seed, chips)
    return lambda point, t: seeds[t]


def _parse_value(axis: str, text: str, defaults: Sequence[Any]) -> Any:
    kinds = {type(v) for v in defaults}
    text = text.strip()
    if kinds == {bool}:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"--grid {axis}: values must be true or false, not {text!r}")
    if kinds == {int}:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--grid {axis}: values must be integers, not {text!r}") from None
    if kinds <= {int, float}:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--grid {axis}: values must be numbers, not {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"--grid {axis}: values must be finite, not {text!r}")
        return value
    if kinds == {str}:
        if not text:
            raise ValueError(f"--grid {axis}: empty value")
        return text
    try:  # mixed defaults: take JSON scalars, else the string
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    _check_value(axis, value)
    return value


def parse_grid_args(items: Sequence[str], defaults: Mapping[str, Sequence[Any]]
                    ) -> dict[str, list[Any]]:
    """Apply ``AXIS=v1,v2,...`` overrides to a default grid (values typed like the defaults)."""
    grid = {axis: list(values) for axis, values in defaults.items()}
    seen = set()
    for item in items:
        axis, sep, values = item.partition("=")
        axis = axis.strip()
        if not sep or not axis or not values.strip():
            raise ValueError(f"--grid takes AXIS=v1,v2,..., not {item!r}")
        if axis not in defaults:
            raise ValueError(f"--grid {axis}: not an axis of this sweep; "
                             f"axes: {', '.join(defaults)}")
        if axis in seen:
            raise ValueError(f"--grid {axis} is given twice")
        seen.add(axis)
        grid[axis] = [_parse_value(axis, v, defaults[axis]) for v in values.split(",")]
    _check_grid(grid, "--grid")
    return grid


# --- results file -------------------------------------------------------------------------

def _cell(value: Any) -> str:
    """The CSV text of a value; floats round-trip exactly through ``repr``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Columns and lookup tables of one sweep's results file."""

    axes: tuple[str, ...]
    metrics: tuple[str, ...]
    points: tuple[Point, ...]
    sweep: str = ""
    """The sweep's name: part of every row's checksum."""

    @property
    def columns(self) -> list[str]:
        return [*self.axes, TRIAL_COLUMN, SEED_COLUMN, *self.metrics, CHECK_COLUMN,
                TIME_COLUMN]

    def point_cells(self, point: Point) -> tuple[str, ...]:
        return tuple(_cell(point[a]) for a in self.axes)

    def checksum(self, cells: Sequence[str]) -> str:
        """Checksum of a row's cells before the check column (point, trial, seed,
        metrics)."""
        blob = json.dumps([self.sweep, *cells], separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_rows(path: Path, layout: _Layout, trials: int, base_seed: int, *,
               repair: bool, chips: int | None = None
               ) -> tuple[dict[tuple[int, int], dict[str, float]], int]:
    """Completed trials in a results file: {(point index, trial): {metric/trial_s: value}}.

    A last line without its newline (the process was killed while writing it) is dropped,
    and with ``repair`` cut off the file, once every complete line has been checked (a
    file that is not this sweep's is never changed). Returns the rows and the count of
    dropped lines.
    """
    raw = path.read_bytes()
    dropped, cut = 0, len(raw)
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        dropped = 1
    try:
        lines = list(csv.reader(io.StringIO(raw[:cut].decode())))
    except (UnicodeDecodeError, csv.Error) as e:
        raise SweepError(f"{path} is not a sweep results file ({e}); choose another "
                         "--out") from None
    columns = layout.columns
    if not lines:
        if dropped and not _csv_line(columns).encode().startswith(raw):
            raise SweepError(f"{path} is not a sweep results file (its first line is not "
                             "a header); choose another --out")
        rows: dict[tuple[int, int], dict[str, float]] = {}
    else:
        rows = _check_rows(path, lines, layout, trials, base_seed, chips)
    if dropped and repair:
        if path.is_symlink():
            raise SweepError(f"{path} is a symbolic link; chipforge does not write through "
                             "links: replace it by a file")
        with path.open("r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    return rows, dropped


def _check_rows(path: Path, lines: list[list[str]], layout: _Layout, trials: int,
                base_seed: int, chips: int | None = None
                ) -> dict[tuple[int, int], dict[str, float]]:
    columns = layout.columns
    seed_of = _seed_of(base_seed, None if chips is None else max(chips, trials))
    if lines[0] != columns:
        if lines[0] == [c for c in columns if c != CHECK_COLUMN]:
            raise SweepError(f"{path} was written by an older chipforge (rows without "
                             "checksums): it cannot be resumed; choose another --out")
        raise SweepError(f"{path}: its columns {lines[0]} are not this sweep's {columns}: "
                         "it comes from a different sweep; choose another --out")
    by_cells = {layout.point_cells(p): i for i, p in enumerate(layout.points)}
    n_axes = len(layout.axes)
    rows: dict[tuple[int, int], dict[str, float]] = {}
    for number, cells in enumerate(lines[1:], start=2):
        where = f"{path} line {number}"
        if len(cells) != len(columns):
            raise SweepError(f"{where} has {len(cells)} fields, not {len(columns)}: "
                             "the file is corrupt")
        index = by_cells.get(tuple(cells[:n_axes]))
        if index is None:
            point = dict(zip(layout.axes, cells[:n_axes], strict=True))
            raise SweepError(f"{where}: point {point} is not in the requested grid: the "
                             "results come from a different grid; choose another --out")
        n_checked = len(columns) - 2  # the cells the checksum covers
        if cells[n_checked] != layout.checksum(cells[:n_checked]):
            raise SweepError(f"{where}: its checksum does not match its values (the row was "
                             f"edited or damaged): {','.join(cells)}. Restore it, or delete "
                             "the line to compute that trial again")
        try:
            trial = int(cells[n_axes])
            seed = int(cells[n_axes + 1])
            values = [float(c) for c in (*cells[n_axes + 2:n_checked], cells[-1])]
        except ValueError:
            raise SweepError(f"{where} holds a non-number: the file is corrupt") from None
        if not 0 <= trial < trials:
            raise SweepError(f"{where}: trial {trial} is outside 0..{trials - 1}")
        if seed != seed_of(layout.points[index], trial):
            raise SweepError(f"{where}: seed {seed} is not the seed of trial {trial} under "
                             f"base seed {base_seed}: the results come from another --seed")
        if (index, trial) in rows:
            raise SweepError(f"{where} repeats trial {trial} of point "
                             f"{layout.points[index]}: the file is corrupt")
        rows[(index, trial)] = dict(zip([*layout.metrics, TIME_COLUMN], values, strict=True))
    return rows


class _ResultsWriter:
    """Appends rows; each batch is flushed and fsync'd before the call returns."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        # O_NOFOLLOW: a link is refused; a failed append is cut off again (no half line)
        self._file = AppendFile(path)
        if self._file.size == 0:
            self.write([columns])

    def write(self, rows: Sequence[Sequence[str]]) -> None:
        self._file.append("".join(_csv_line(r) for r in rows))

    def close(self) -> None:
        self._file.close()


def _manifest(sweep: SweepDef, grid: Mapping[str, Sequence[Any]], trials: int,
              seed: int, layout: _Layout, chips: int | None = None) -> dict[str, Any]:
    manifest = {"format": FORMAT_VERSION, "sweep": sweep.name, "seed": seed,
                "trials": trials, "grid": {a: list(v) for a, v in grid.items()},
                "metrics": list(sweep.metrics), "columns": layout.columns}
    if chips is not None:
        manifest["chips"] = chips   # trial t = chip t, seeds from chipforge.chips.chip_seeds
    return manifest


def _check_manifest(path: Path, expected: dict[str, Any]) -> None:
    differences = _manifest_differences(path, expected)
    if differences is None:
        raise SweepError(f"{path} is not a readable sweep manifest; choose another --out")
    if differences:
        raise SweepError(f"cannot resume: {path.parent} holds a different sweep ("
                         + "; ".join(differences) + "). Repeat the original arguments, "
                         "or choose another --out")


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


# --- workers ------------------------------------------------------------------------------

# Shared inputs installed in a worker process by the pool initializer, by token.
_WORKER_SHARED: dict[str, Mapping[str, Any]] = {}


@dataclasses.dataclass(frozen=True)
class _InstalledShared:
    """Stands for shared inputs the worker already holds (sent once, by the initializer)."""

    token: str


def _install_shared(token: str, shared: Mapping[str, Any]) -> None:
    _WORKER_SHARED[token] = shared


def _die_with_driver(driver_pid: int) -> None:
    """Make this worker process exit as soon as the sweep's driver does, however it dies
    (SIGKILL included), so no worker, forkserver or resource tracker outlives it.

    A forkserver worker's parent is the forkserver, not the driver, and each worker holds
    the forkserver's "driver alive" pipe and its own task queue open, so none of them sees
    the driver go: a daemon thread waits on a pidfd of the driver (Linux >= 5.3; polling
    once a second elsewhere) and ends the process. Once the workers are gone the forkserver
    and the resource tracker read EOF and exit too. ``PR_SET_PDEATHSIG`` covers a worker
    whose parent is the driver itself (fork and spawn pools)."""
    import signal
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    try:
        pidfd = os.pidfd_open(driver_pid)
    except ProcessLookupError:
        os._exit(1)  # the driver died before this worker got here
    except (AttributeError, OSError):  # pragma: no cover - no pidfd: poll
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            import select

            select.select([pidfd], [], [])
        else:  # pragma: no cover
            while True:
                time.sleep(1.0)
                try:
                    os.kill(driver_pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os._exit(1)

    threading.Thread(target=watch, name="chipforge-sweep-driver-watch", daemon=True).start()


def _init_pool_worker(token: str, shared: Mapping[str, Any], driver_pid: int | None = None
                      ) -> None:
    """Process pool initializer: die with the driver, one BLAS/OpenMP thread per worker (the
    pool supplies the parallelism, as Dask's nanny does with OMP_NUM_THREADS=1), then the
    shared inputs."""
    if driver_pid is not None:
        _die_with_driver(driver_pid)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    else:
        threadpool_limits(limits=1)
    _install_shared(token, shared)


def _started() -> int:
    return os.getpid()


def _run_trials(trial: Trial, jobs: Sequence[tuple[int, int, Point, int]], shared_ref: Any
                ) -> list[tuple[int, int, int, dict[str, Any], float]]:
    """Worker side: run some trials. ``shared_ref`` is the inputs themselves or an
    :class:`_InstalledShared` token naming the copy the worker already holds."""
    if isinstance(shared_ref, _InstalledShared):
        shared = _WORKER_SHARED[shared_ref.token]
    else:
        shared = shared_ref
    out = []
    for index, trial_index, point, seed in jobs:
        start = time.perf_counter()
        metrics = trial(dict(point), seed, **shared)
        out.append((index, trial_index, seed, dict(metrics), time.perf_counter() - start))
    return out


@dataclasses.dataclass
class _Backend:
    executor: cf.Executor
    shared_ref: Any
    workers: int
    description: str


def _is_dask_executor(executor: cf.Executor) -> bool:
    return type(executor).__module__.startswith("distributed")


@contextmanager
def _shared_on_dask(client, shared: Mapping[str, Any]) -> Iterator[_InstalledShared]:
    from chipforge.sim import _dask_shared as plugin

    token = uuid.uuid4().hex
    name = plugin.install(client, token, shared)
    try:
        yield _InstalledShared(token)
    finally:
        try:
            plugin.uninstall(client, name)
        except Exception:  # the cluster may be gone already; nothing to free then
            pass


LEAN_LOCAL_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}
"""Dask settings of the local clusters chipforge starts (``--dask``): no statistical
profiler in the workers (a stack sample every 10 ms), and the event-loop tick (20 ms), the
system monitor (0.5 s) and the nannies' memory monitor (0.1 s) slowed down. An idle
2-worker LocalCluster with its client then burns 1.1 % of one core instead of 6.1 %
(measured, 2026-12-07): on a 2-core machine whose workers take both cores, that is time
the shards got back. The dashboard stays. A ``--scheduler`` cluster keeps its own
settings."""


@contextmanager
def executor_backend(*, executor: cf.Executor | None, workers: int | None,
                     scheduler: str | None, dask_local: bool, shared: Mapping[str, Any]
                     ) -> Iterator[_Backend]:
    """Where tasks run: ``executor`` as given, a Dask scheduler at ``scheduler``, a Dask
    ``LocalCluster`` of ``workers`` processes (``dask_local``) or a forkserver process pool
    of ``workers`` (default: the cores this process may use). ``shared`` goes to each
    worker once (pool initializer or Dask worker plugin); tasks find it through the
    backend's ``shared_ref`` (see :func:`_run_trials`). Local workers exit with the driver.
    Used by the sweeps, ``chipforge compare`` and the campaigns (:mod:`chipforge.campaign`).
    """
    with ExitStack() as stack:
        if executor is not None:
            if _is_dask_executor(executor):
                client = executor._client
                ref = stack.enter_context(_shared_on_dask(client, shared))
                n = sum(client.nthreads().values()) or 1
                yield _Backend(executor, ref, n, f"Dask executor ({n} threads)")
            else:  # an executor we cannot reach into: the inputs travel with each task
                n = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
                yield _Backend(executor, dict(shared), n, type(executor).__name__)
            return
        if scheduler is not None or dask_local:
            from distributed import Client, LocalCluster

            if scheduler is not None:
                try:
                    client = stack.enter_context(Client(scheduler, timeout="10s"))
                except Exception as e:  # OSError, TimeoutError, or garbage from a non-Dask
                    # server (a huge "frame length" even gives MemoryError)
                    raise SweepError(f"--scheduler {scheduler}: no Dask scheduler answers "
                                     f"there ({type(e).__name__}: {e})") from None
                where = f"Dask scheduler {scheduler}"
            else:
                n = workers or _cores()
                import dask

                stack.enter_context(dask.config.set(LEAN_LOCAL_DASK))
                cluster = stack.enter_context(LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True,
                    dashboard_address=":0"))
                client = stack.enter_context(Client(cluster))
                where = (f"Dask LocalCluster ({n} worker processes, dashboard "
                         f"{client.dashboard_link})")
            ref = stack.enter_context(_shared_on_dask(client, shared))
            n = sum(client.nthreads().values()) or 1
            yield _Backend(client.get_executor(pure=False), ref, n, f"{where}, {n} threads")
            return
        import multiprocessing

        n = workers or _cores()
        token = uuid.uuid4().hex
        # forkserver: workers start clean (no threads inherited from the driver), and the
        # initializer sends the shared inputs once per worker process.
        pool = cf.ProcessPoolExecutor(
            max_workers=n, mp_context=multiprocessing.get_context("forkserver"),
            initializer=_init_pool_worker, initargs=(token, dict(shared), os.getpid()))
        # On an error or Ctrl-C, drop the queued trials and wait only for running ones.
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        # Start the workers now (they start on demand), so start-up is timed on its own.
        for future in [pool.submit(_started) for _ in range(n)]:
            future.result()
        yield _Backend(pool, _InstalledShared(token), n, f"process pool ({n} workers)")


_backend = executor_backend   # the name compare and older callers import


# --- the engine ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What a finished sweep wrote and computed."""

    out_dir: Path
    summary: list[dict[str, Any]]
    """One row per point (see :func:`summarize`)."""
    computed: int
    """Trials computed by this call (the others were already in the results file)."""
    reused: int
    """Trials found in the results file and not computed again."""
    elapsed_s: float
    """Wall time of the trial phase of this call, worker start-up included."""
    startup_s: float
    """Part of ``elapsed_s`` spent starting the workers (process pool, Dask cluster)."""
    compute_s: float
    """Sum of the computed trials' own run times, measured inside the workers."""
    backend: str


def run_sweep(sweep: SweepDef, out_dir: str | Path, *,
              grid: Mapping[str, Sequence[Any]] | None = None,
              trials: int | None = None,
              seed: int = 0,
              resume: bool = False,
              force: bool = False,
              executor: cf.Executor | None = None,
              workers: int | None = None,
              scheduler: str | None = None,
              dask_local: bool = False,
              shared: Mapping[str, Any] | None = None,
              batch: int = 1,
              progress: bool | None = None,
              plot: bool = True,
              x_axis: str | None = None,
              chips: int | None = None,
              echo: Callable[[str], None] | None = print) -> SweepResult:
    """Run (or resume) a sweep and write results, summary and plot under ``out_dir``.

    - ``grid``: axis -> values (default ``sweep.grid``); ``trials`` per point (default
      ``sweep.trials``); ``seed``: the base seed of :func:`trial_seed`.
    - Where trials run: ``executor`` (any ``concurrent.futures.Executor``; a Dask
      ``client.get_executor()`` gets the shared inputs once per worker, any other executor
      with every task), else
      ``scheduler`` (a Dask scheduler address), else a Dask ``LocalCluster`` of ``workers``
      processes if ``dask_local``, else a local process pool of ``workers`` (default: all
      cores).
    - ``shared``: inputs every trial takes as keyword arguments (default:
      ``sweep.shared()``), sent to each worker once.
    - ``batch``: trials per task (more amortizes the per-task overhead of tiny trials).
    - ``out_dir`` must be empty or new: a folder with other files is refused (nothing there
      is touched) unless ``resume`` (continue the sweep there: its ``sweep.json`` and every
      row's checksum are checked) or ``force`` (start over: the engine's own files
      :data:`OWN_FILES` are replaced, every other file is kept).
    - ``progress``: tqdm bar (default: when stderr is a terminal).
    - ``chips``: run N programmed chips per point instead of ``trials``: trial ``t`` is chip
      ``t`` with the seed :func:`chipforge.chips.chip_seeds` gives (the same N chips at
      every point), and the summary's mean, std and 95 % interval come from
      :func:`chipforge.chips.spread` (``METRIC_ci95_low`` / ``_high`` columns added).
    - A sweep with ``takes_data`` accepts a ``data`` axis on top of its own (the data set
      its trials run the model on; absent: the sweep's documented default).
    """
    grid = {a: list(v) for a, v in (grid if grid is not None else sweep.grid).items()}
    _check_grid(grid, f"sweep {sweep.name!r} grid")
    allowed = set(sweep.grid) | ({DATA_AXIS} if sweep.takes_data else set())
    if not set(sweep.grid) <= set(grid) <= allowed:
        raise ValueError(f"grid axes {sorted(grid)} must be the sweep's axes "
                         f"{sorted(sweep.grid)}"
                         + (f" (and optionally {DATA_AXIS!r})" if sweep.takes_data else ""))
    if chips is not None:
        if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
            raise ValueError(f"chips must be an integer >= 1, not {chips!r}")
        if trials is not None and trials != chips:
            raise ValueError(f"chips ({chips}) are the trials of each point: give chips or "
                             f"trials ({trials}), not both")
        trials = chips
    trials = sweep.trials if trials is None else trials
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, not {trials!r}")
    trial_seed(seed, {}, 0)  # validates the seed
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, not {batch!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, not {workers!r}")
    if resume and force:
        raise ValueError("resume continues the sweep in out_dir, force starts it over: not both")
    cores = _cores()
    if workers is not None and workers > cores and executor is None and scheduler is None:
        if echo:
            echo(f"note: {workers} workers asked for, but this machine gives {cores} cores: "
                 f"using {cores} worker processes")
        workers = cores
    if scheduler is not None and executor is None:
        _check_scheduler(scheduler)
    x_axis = x_axis or sweep.x_axis
    if x_axis not in grid:
        raise ValueError(f"x axis must be a grid axis ({', '.join(grid)}), not {x_axis!r}")
    points = expand_grid(grid)
    if sweep.check_point is not None:
        for point in points:
            try:
                sweep.check_point(point)
            except ValueError as e:
                raise ValueError(f"point {point}: {e}") from None

    out_dir = Path(out_dir)
    layout = _Layout(tuple(grid), tuple(sweep.metrics), tuple(points), sweep.name)
    manifest = _manifest(sweep, grid, trials, seed, layout, chips)
    from chipforge.guard import InputError, check_output_dir

    try:
        check_output_dir(out_dir, option="--out")
    except InputError as e:
        raise SweepError(str(e)) from None
    _check_out_dir(out_dir, manifest, layout, resume=resume, force=force)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        # again under the lock: another sweep may have written in between
        _check_out_dir(out_dir, manifest, layout, resume=resume, force=force)
        return _run_locked(sweep, out_dir, layout, manifest, points, trials, seed, resume,
                           force, executor, workers, scheduler, dask_local, shared, batch,
                           progress, plot, x_axis, echo, chips)


def _cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a batch job's share)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_scheduler(address: str, timeout_s: float = 3.0) -> None:
    """A quick TCP connect to a ``tcp://host:port`` scheduler: an unreachable address is one
    clear error in at most ``timeout_s`` (Dask's own client waits 30 s, then a traceback)."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise SweepError(f"--scheduler {address!r} is not an address like "
                         f"tcp://host:8786 ({e})") from None
    if parts.scheme not in ("tcp", "tls") or not host or port is None:
        if parts.scheme in ("tcp", "tls"):
            raise SweepError(f"--scheduler {address!r} is not an address like tcp://host:8786")
        return  # inproc://, ucx://...: Dask checks those itself
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise SweepError(f"--scheduler {address}: cannot reach the Dask scheduler "
                         f"({reason}); is it running, and is the address right?") from None


def _own_files_only(names: Sequence[str]) -> bool:
    return all(name in OWN_FILES for name in names)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _manifest_differences(path: Path, expected: dict[str, Any]) -> list[str] | None:
    """How the sweep in ``path`` differs from ``expected`` (empty: the same sweep; more
    trials requested extend it); ``None`` if the file is not a readable sweep manifest."""
    try:
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(found, dict) or "format" not in found or "sweep" not in found:
        return None
    differences = []
    if bool(found.get("chips")) != bool(expected.get("chips")):
        differences.append("chips: one run has --chips (the same chips at every point), "
                           "the other per-point trials")
    for key in ("format", "sweep", "seed", "trials", "grid", "metrics", "columns"):
        if key == "trials" and isinstance(found.get(key), int) \
                and found[key] <= expected[key]:
            continue  # more trials extend the sweep: seeds do not depend on the count
        if found.get(key) != expected[key]:
            differences.append(f"{key}: file has {found.get(key)!r}, requested "
                               f"{expected[key]!r}")
    return differences


def _check_out_dir(out_dir: Path, manifest: dict[str, Any], layout: _Layout, *,
                   resume: bool, force: bool) -> None:
    """Refuse an output folder whose files the sweep did not write (see :func:`run_sweep`).

    Raises :class:`SweepError` before anything in the folder is touched.
    """
    if not out_dir.is_dir():
        return
    names = sorted(p.name for p in out_dir.iterdir() if p.name != ".lock")
    if not names or force:
        return
    results, manifest_path = out_dir / RESULTS_FILE, out_dir / MANIFEST_FILE
    if resume:
        if not results.exists() and not manifest_path.exists():
            raise SweepError(f"cannot resume: {out_dir} holds no sweep (no {MANIFEST_FILE} "
                             f"or {RESULTS_FILE}), only {_listing(names)}; choose another "
                             "--out")
        if manifest_path.exists():
            _check_manifest(manifest_path, manifest)
        if results.exists():  # read only: a refusal leaves every byte in place
            _read_rows(results, layout, manifest["trials"], manifest["seed"], repair=False,
                       chips=manifest.get("chips"))
        return
    differences = (_manifest_differences(manifest_path, manifest)
                   if manifest_path.exists() else None)
    rows = results.read_bytes().count(b"\n") - 1 if results.exists() else 0
    if differences == [] and _own_files_only(names) and rows <= 0:
        return  # this sweep, killed before its first result: nothing to lose
    if differences == [] or (differences is None and results.exists()
                             and _own_files_only(names)):
        raise SweepError(f"{out_dir} already holds sweep results; pass --resume "
                         "(resume=True) to continue them, --force to start over, or choose "
                         "another --out")
    if differences:
        raise SweepError(f"{out_dir} holds a different sweep ({'; '.join(differences)}): "
                         "choose another --out (or --force to replace it)")
    raise SweepError(f"{out_dir} is not empty and holds no sweep ({_listing(names)}): "
                     "choose a new or empty --out (or --force to add this sweep's files "
                     "there, keeping the others)")


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One sweep per output directory at a time (the OS drops the lock if we are killed)."""
    from chipforge.files import exclusive_lock

    with exclusive_lock(out_dir / ".lock",
                        lambda: SweepError(f"another sweep is running in {out_dir}")):
        yield


def _run_locked(sweep: SweepDef, out_dir: Path, layout: _Layout, manifest: dict[str, Any],
                points: list[Point], trials: int, seed: int, resume: bool, force: bool,
                executor: cf.Executor | None, workers: int | None, scheduler: str | None,
                dask_local: bool, shared: Mapping[str, Any] | None, batch: int,
                progress: bool | None, plot: bool, x_axis: str,
                echo: Callable[[str], None] | None, chips: int | None = None) -> SweepResult:
    grid = {a: list(v) for a, v in manifest["grid"].items()}
    results_path, manifest_path = out_dir / RESULTS_FILE, out_dir / MANIFEST_FILE
    say = echo or (lambda _: None)
    done: dict[tuple[int, int], dict[str, float]] = {}
    if force and results_path.exists():
        results_path.unlink()  # --force: start over (the engine's own file, see OWN_FILES)
    if results_path.exists():
        if manifest_path.exists():
            _check_manifest(manifest_path, manifest)
        done, dropped = _read_rows(results_path, layout, trials, seed, repair=True,
                                   chips=chips)
        if dropped:
            say(f"{results_path}: discarded a half-written last line (the sweep was killed "
                "while writing it); that trial runs again")
        say(f"resuming: {len(done)} of {len(points) * trials} trials already in "
            f"{results_path}")
    _write_json_atomic(manifest_path, manifest)

    seed_of = _seed_of(seed, chips)
    todo = [(i, t, points[i], seed_of(points[i], t))
            for i in range(len(points)) for t in range(trials) if (i, t) not in done]
    computed, compute_s, elapsed, startup = 0, 0.0, 0.0, 0.0
    where = "none (all trials were done)"
    writer = _ResultsWriter(results_path, layout.columns)
    try:
        if todo:
            shared_inputs = dict(shared if shared is not None
                                 else (sweep.shared() if sweep.shared else {}))
            start = time.perf_counter()
            with executor_backend(executor=executor, workers=workers, scheduler=scheduler,
                          dask_local=dask_local, shared=shared_inputs) as backend:
                where = backend.description
                startup = time.perf_counter() - start
                say(f"sweep {sweep.name}: {len(todo)} trials to run "
                    f"({len(points)} points x {trials} trials) on {backend.description}")
                for rows in _drive(sweep, backend, todo, batch, layout, len(done),
                                   len(points) * trials, progress):
                    writer.write([r for r, _ in rows])
                    for _, (key, values) in rows:
                        done[key] = values
                        compute_s += values[TIME_COLUMN]
                    computed += len(rows)
            elapsed = time.perf_counter() - start
    finally:
        writer.close()

    # The summary comes from the file, so an interrupted-and-resumed sweep and an
    # uninterrupted one give the same table bit for bit.
    rows, _ = _read_rows(results_path, layout, trials, seed, repair=False, chips=chips)
    missing = len(points) * trials - len(rows)
    if missing:
        raise SweepError(f"{results_path} lacks {missing} trials after the sweep")
    summary = summarize(points, rows, sweep.metrics, trials, chips=chips is not None)
    _write_summary(out_dir, layout, summary, sweep.metrics, chips=chips is not None)
    table = format_summary(summary, list(grid), sweep.metrics)
    atomic_write(out_dir / SUMMARY_TEXT_FILE, table + "\n")
    say(table)
    if plot:
        plot_summary(summary, grid, sweep.metrics, x_axis, out_dir / PLOT_FILE,
                     title=sweep.name, log_x=sweep.log_x, log_y=sweep.log_y)
    say(f"wrote {results_path}, {out_dir / SUMMARY_FILE}"
        + (f", {out_dir / PLOT_FILE}" if plot else ""))
    return SweepResult(out_dir=out_dir, summary=summary, computed=computed,
                       reused=len(points) * trials - computed, elapsed_s=elapsed,
                       startup_s=startup,
                       compute_s=compute_s, backend=where)


def _drive(sweep: SweepDef, backend: _Backend, todo: list[tuple[int, int, Point, int]],
           batch: int, layout: _Layout, already: int, total: int,
           progress: bool | None) -> Iterator[list[tuple[list[str], tuple]]]:
    """Submit trials (a bounded number in flight), yield each finished task's rows."""
    from tqdm import tqdm

    chunks = (todo[i:i + batch] for i in range(0, len(todo), batch))
    window = max(4, 4 * backend.workers)
    in_flight: dict[cf.Future, list] = {}
    disable = None if progress is None else not progress
    bar = tqdm(total=total, initial=already, desc=sweep.name, unit="trial",
               disable=disable, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    expected = set(sweep.metrics)

    def top_up() -> None:
        while len(in_flight) < window:
            chunk = next(chunks, None)
            if chunk is None:
                return
            future = backend.executor.submit(_run_trials, sweep.trial, chunk, backend.shared_ref)
            in_flight[future] = chunk

    def rows_of(future: cf.Future, chunk: list) -> list[tuple[list[str], tuple]]:
        try:
            results = future.result()
        except Exception as e:
            where = ", ".join(f"trial {t} of point {p} (seed {s})" for _, t, p, s in chunk)
            raise SweepError(f"sweep {sweep.name}: {where} failed: "
                             f"{type(e).__name__}: {e}") from e
        rows = []
        for index, t, seed, metrics, seconds in results:
            point = layout.points[index]
            if set(metrics) != expected:
                raise SweepError(f"sweep {sweep.name}: trial {t} of point {point} returned "
                                 f"metrics {sorted(metrics)}, not the declared "
                                 f"{sorted(expected)}")
            try:
                values = {m: float(metrics[m]) for m in sweep.metrics}
            except (TypeError, ValueError):
                raise SweepError(f"sweep {sweep.name}: trial {t} of point {point} returned "
                                 f"a non-number: {metrics}") from None
            values[TIME_COLUMN] = float(seconds)
            cells = [*layout.point_cells(point), str(t), str(seed),
                     *(_cell(values[m]) for m in sweep.metrics)]
            cells += [layout.checksum(cells), _cell(seconds)]
            rows.append((cells, ((index, t), values)))
        return rows

    try:
        top_up()
        while in_flight:
            finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
            rows, failure = [], None  # every task finished by now: one write and fsync
            for future in finished:
                chunk = in_flight.pop(future)
                try:
                    rows += rows_of(future, chunk)
                except SweepError as e:
                    failure = failure or e
            if failure is None:
                top_up()  # keep the workers busy while the driver writes
            if rows:
                yield rows  # the good trials are kept even when another one failed
                bar.update(len(rows))
            if failure is not None:
                raise failure
    finally:
        for future in in_flight:
            future.cancel()
        bar.close()


# --- summary, table, plot -----------------------------------------------------------------

def _t_two_sided_mass(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with an integer number of degrees of freedom: the finite
    series of Abramowitz & Stegun 26.7.3 (exact, no special functions needed)."""
    theta = math.atan(t / math.sqrt(dof))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2:
        term, total = math.cos(theta), 0.0
        for k in range(1, (dof - 1) // 2 + 1):  # cos + 2/3 cos^3 + 2*4/(3*5) cos^5 + ...
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return (2 / math.pi) * (theta + s * total)
    term, total = 1.0, 0.0
    for k in range(1, dof // 2 + 1):  # 1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile_975(dof: int) -> float:
    """The 97.5% quantile of Student's t (the 95% two-sided interval's factor).

    Bisection on the exact CDF up to 1000 degrees of freedom, the Cornish-Fisher expansion
    beyond (error < 1e-9 there). Saves importing scipy in every sweep.
    """
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {dof}")
    if dof > 1000:
        z = 1.959963984540054
        return (z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
                + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3))
    lo, hi = 1.9, 13.0  # t(0.975) lies in (1.96, 12.71] for dof >= 1
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, dof) < 0.95:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _metric_range(metric: str) -> tuple[float | None, float | None]:
    """Where a metric can lie, for clipping its interval over chips: accuracies and
    agreement in [0, 1], an accuracy drop in [-1, 1], anything else unbounded."""
    if metric.endswith("drop"):
        return -1.0, 1.0
    if metric.startswith("accuracy") or metric == "agreement":
        return 0.0, 1.0
    return None, None


def summarize(points: Sequence[Point], rows: Mapping[tuple[int, int], Mapping[str, float]],
              metrics: Sequence[str], trials: int, *, chips: bool = False
              ) -> list[dict[str, Any]]:
    """Per point: the point's fields, ``n``, and ``METRIC_mean``, ``METRIC_std`` (sample,
    ddof=1), ``METRIC_ci95`` (half width of the Student-t 95% interval of the mean). With
    ``chips`` (the trials are chips), mean, std and the interval come from
    :func:`chipforge.chips.spread`, clipped to the metric's range, and ``METRIC_ci95_low``
    / ``METRIC_ci95_high`` are added (``METRIC_ci95``: half their distance)."""
    if chips:
        from chipforge.chips import spread
    summary = []
    for index, point in enumerate(points):
        values = np.array([[rows[(index, t)][m] for m in metrics]
                           for t in range(trials) if (index, t) in rows], dtype=np.float64)
        n = len(values)
        row: dict[str, Any] = {**point, "n": n}
        for j, metric in enumerate(metrics):
            column = values[:, j] if n else np.empty(0)
            mean = float(column.mean()) if n else math.nan
            std = float(column.std(ddof=1)) if n > 1 else math.nan
            ci = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
            row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_ci95"] = mean, std, ci
            if chips and n:
                lower, upper = _metric_range(metric)
                over = spread(column, lower=lower, upper=upper)
                low = math.nan if over["ci95_low"] is None else over["ci95_low"]
                high = math.nan if over["ci95_high"] is None else over["ci95_high"]
                row[f"{metric}_mean"] = over["mean"]
                row[f"{metric}_std"] = over["std"] if n > 1 else math.nan
                row[f"{metric}_ci95"] = (high - low) / 2
                row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"] = low, high
        summary.append(row)
    return summary


def _summary_columns(axes: Sequence[str], metrics: Sequence[str], *,
                     chips: bool = False) -> list[str]:
    stats = ("mean", "std", "ci95", "ci95_low", "ci95_high") if chips else ("mean", "std",
                                                                           "ci95")
    return [*axes, "n", *(f"{m}_{s}" for m in metrics for s in stats)]


def _write_summary(out_dir: Path, layout: _Layout, summary: list[dict[str, Any]],
                   metrics: Sequence[str], *, chips: bool = False) -> None:
    columns = _summary_columns(layout.axes, metrics, chips=chips)
    text = "".join(_csv_line(r) for r in
                   [columns, *([_cell(row[c]) for c in columns] for row in summary)])
    atomic_write(out_dir / SUMMARY_FILE, text)


def format_summary(summary: Sequence[Mapping[str, Any]], axes: Sequence[str],
                   metrics: Sequence[str]) -> str:
    """A plain-text table: one line per point, ``mean ± ci95 (std s)`` per metric."""
    header = [*axes, "n", *metrics]
    body = []
    for row in summary:
        cells = [_cell(row[a]) for a in axes] + [str(row["n"])]
        for m in metrics:
            mean, std, ci = row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_ci95"]
            cells.append(f"{mean:.4g} ± {ci:.2g} (std {std:.2g})")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
             for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("(mean ± half width of the 95% Student-t confidence interval of the mean; "
                 "std = sample standard deviation of the trials)")
    return "\n".join(lines)


def load_results(out_dir: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a sweep's results file (complete lines only), as text."""
    raw = (Path(out_dir) / RESULTS_FILE).read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[:raw.rfind(b"\n") + 1]
    lines = list(csv.reader(io.StringIO(raw.decode())))
    return (lines[0], lines[1:]) if lines else ([], [])


COLUMN_WIDTH_IN = 3.5
"""Width of a sweep plot: one column of a two-column paper."""


def _words(name: str) -> str:
    """An identifier as words (``fault_rate`` -> ``fault rate``)."""
    return name.replace("_", " ").replace(".", " ")


def _is_constant(summary: Sequence[Mapping[str, Any]], metric: str) -> bool:
    means = [row[f"{metric}_mean"] for row in summary]
    finite = [m for m in means if not math.isnan(m)]
    spread = [row[f"{metric}_ci95"] for row in summary]
    return bool(finite) and max(finite) == min(finite) and all(
        math.isnan(c) or c == 0 for c in spread)


def plot_summary(summary: Sequence[Mapping[str, Any]], grid: Mapping[str, Sequence[Any]],
                 metrics: Sequence[str], x_axis: str, path: str | Path, *, title: str = "",
                 log_x: bool = False, log_y: Sequence[str] = ()) -> Path:
    """Mean against ``x_axis`` with 95% CI error bars, one curve per combination of the
    other (multi-valued) axes, one panel per metric stacked in a column 3.5 in wide (a
    paper column). A metric that is the same at every point is not drawn: its value is
    named under the title. A metric whose means all lie in [0, 1] (accuracy, agreement,
    rates) has its intervals clipped to [0, 1]. The title states the trials per point.
    Writes a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(grid[x_axis])
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs)
    positions = xs if numeric else list(range(len(xs)))
    evenly = False
    if numeric and not log_x and len(xs) > 2:
        # values bunched at one end (0, 0.001, 0.005, 0.01, 0.05) would print their tick
        # labels on top of each other: place them evenly and say so on the axis
        ordered = sorted(float(v) for v in xs)
        span = ordered[-1] - ordered[0]
        gap = min(b - a for a, b in zip(ordered, ordered[1:], strict=False))
        if span > 0 and gap < 0.08 * span:
            positions, evenly = list(range(len(xs))), True
    others = [a for a in grid if a != x_axis and len(grid[a]) > 1]
    fixed = [f"{_words(a)} = {_cell(grid[a][0])}" for a in grid
             if a != x_axis and len(grid[a]) == 1]
    constant = [m for m in metrics if _is_constant(summary, m)]
    drawn = [m for m in metrics if m not in constant] or list(metrics[:1])
    constant = [m for m in constant if m not in drawn]
    curves: dict[tuple, dict[Any, Mapping[str, Any]]] = {}
    for row in summary:
        curves.setdefault(tuple(row[a] for a in others), {})[json.dumps(row[x_axis])] = row
    fig, panels = plt.subplots(len(drawn), 1, figsize=(COLUMN_WIDTH_IN, 0.9 + 2.0 * len(drawn)),
                               squeeze=False, sharex=True)
    for panel, metric in zip(panels[:, 0], drawn, strict=True):
        means_all = [row[f"{metric}_mean"] for row in summary
                     if not math.isnan(row[f"{metric}_mean"])]
        unit_interval = bool(means_all) and min(means_all) >= 0 and max(means_all) <= 1
        for label_values, by_x in curves.items():
            keys = [json.dumps(v) for v in xs]
            mean = np.array([by_x[k][f"{metric}_mean"] if k in by_x else math.nan
                             for k in keys], dtype=np.float64)
            ci = np.array([by_x[k][f"{metric}_ci95"] if k in by_x else math.nan
                           for k in keys], dtype=np.float64)
            ci = np.where(np.isnan(ci), 0.0, ci)
            low, high = ci.copy(), ci.copy()
            if unit_interval:
                low = np.minimum(low, np.where(np.isnan(mean), 0.0, mean))
                high = np.minimum(high, np.where(np.isnan(mean), 0.0, 1.0 - mean))
            label = ", ".join(f"{_words(a)} = {_cell(v)}"
                              for a, v in zip(others, label_values, strict=True))
            panel.errorbar(positions, mean, yerr=np.vstack([low, high]), marker="o", ms=3,
                           capsize=2, label=label or None)
        panel.set_ylabel(_words(metric), fontsize=8)
        if unit_interval:
            panel.set_ylim(-0.02, 1.02)
        if metric in log_y:
            # symlog shows exact zeros (no saturation, no error) that log would drop
            panel.set_yscale("symlog", linthresh=1e-6)
            if all(row[f"{metric}_mean"] >= 0 for row in summary):
                panel.set_ylim(bottom=0)
        panel.grid(alpha=0.3)
        panel.tick_params(labelsize=7)
        if others:
            panel.legend(fontsize=6)
    bottom = panels[-1, 0]
    bottom.set_xlabel(_words(x_axis) + (" (points evenly spaced)" if evenly else ""),
                      fontsize=8)
    if log_x and numeric:
        bottom.set_xscale("log")
    if not numeric or evenly or len(xs) <= 8:
        bottom.set_xticks(positions, [_cell(v) for v in xs])
    if not numeric:
        bottom.tick_params(axis="x", labelrotation=30)
    trials = sorted({int(row["n"]) for row in summary})
    n_text = (f"{trials[0]}" if len(trials) == 1 else f"{trials[0]}-{trials[-1]}") \
        if trials else "0"
    lines = [title or "sweep",
             f"mean ± 95 % CI over {n_text} trials (chips) per point"]
    if fixed:
        lines.append(", ".join(fixed))
    if constant:
        lines.append("constant: " + ", ".join(
            f"{_words(m)} = {summary[0][f'{m}_mean']:.4g}" for m in constant))
    fig.suptitle("\n".join(lines), fontsize=7)
    fig.tight_layout()
    path = atomic_savefig(fig, Path(path), dpi=200)
    plt.close(fig)
    return path
