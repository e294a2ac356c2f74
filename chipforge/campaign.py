"""Campaigns: N programmed chips x a test set, sharded into (chip, sample chunk) tasks.

``chipforge simulate --chips N --workers W`` (or ``--dask``, ``--scheduler ADDR``,
``--chunk-size C``; :func:`chipforge.simulate` with the same keywords) runs here:

- the driver loads, quantizes and maps the model once, then cuts the campaign into
  *reference shards* (the ideal and float runs of one sample chunk: they do not depend on
  the chip) and *hardware shards* (chip ``c`` on one sample chunk), and runs them on a
  process pool (one single-process pool per worker), a Dask ``LocalCluster`` or an
  existing Dask scheduler, set up as the sweeps' executors are (the model, its mapping and
  the data go to each worker once; local workers exit with the driver, SIGKILL included);
  a worker is one core: its kernels (numba, BLAS, torch) run on one thread;
- the driver keeps one queue (a *lane*, :class:`_Lane`) per worker thread and gives it one
  chip's shards in a row (:class:`_Scheduler`); the worker programs the chip (draws its
  variation and stuck-at faults, :meth:`chipforge.families.reram.ReramFamily.program`) on
  the lane's first shard of it and keeps it for the next: one programmed chip per lane, so
  each chip is programmed once, except a chip split between two lanes at the end of the
  campaign (an idle lane takes the back half of another's queue when that pays);
- the read noise of sample ``i`` is keyed by ``i`` (:meth:`chipforge.sim.reram.
  CrossbarMatmul.window`), and each chip's seed comes from :func:`chipforge.chips.
  chip_seeds`, so the per-chip results are identical whatever the chunk size, the number of
  workers or the order the shards finish in, and identical to ``--chips N`` in one process;
- with ``out``, every finished shard is appended (fsync'd, with a checksum) to
  ``OUT/campaign.jsonl`` under the manifest ``OUT/campaign.json``: a campaign rerun with
  the same arguments skips the shards already there (a half-written last line is dropped),
  and one with different arguments is refused in one line. The report is computed from
  that file, so an interrupted-and-resumed campaign reports exactly what an uninterrupted
  one does.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.files import array_sha256

__all__ = ["MANIFEST_FILE", "RESULTS_FILE", "CampaignError", "default_chunk_size",
           "run_campaign"]

RESULTS_FILE = "campaign.jsonl"
MANIFEST_FILE = "campaign.json"
LOCK_FILE = ".campaign.lock"
FORMAT_VERSION = 1
DEFAULT_CHUNK = 64
"""Samples per shard unless ``chunk_size`` says otherwise (a ResNet-18 shard: about a
minute on one core; a LeNet shard: milliseconds, so Dask's per-task overhead shows)."""


class CampaignError(ValueError):
    """A campaign that cannot run or resume (one line; the CLI exits with status 2)."""


def default_chunk_size(samples: int) -> int:
    """The chunk size of a campaign over ``samples`` samples: :data:`DEFAULT_CHUNK` (it
    depends on nothing else, so a rerun resumes with the same shards)."""
    return max(1, min(DEFAULT_CHUNK, samples))


# --- worker side ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _LaneTag:
    """Sent with every shard: which lane (driver-side queue of one worker thread) it belongs
    to, and how many compute threads its kernels may use (None: leave them as they are)."""

    run: str
    """This campaign run's token (a long-lived Dask worker drops an earlier run's chips)."""
    index: int
    threads: int | None


_CHIPS: dict[int, tuple[str, tuple, Any]] = {}   # lane -> (run, chip key, programmed chip)
_CHIPS_LOCK = threading.Lock()
_THREADS = threading.local()   # the thread limit already applied in this worker thread


def _limit_threads(threads: int | None) -> None:
    """Run this worker thread's kernels on ``threads`` threads: numba's (the crossbar
    kernels; its setting is per calling thread), BLAS/OpenMP's and torch's. A worker is
    one core, as in Dask's own process workers (their nanny sets OMP_NUM_THREADS=1):
    otherwise each worker's numba would start a thread per core and W workers would run
    W x cores threads on the cores."""
    if threads is None or getattr(_THREADS, "threads", None) == threads:
        return
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    else:
        threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    _THREADS.threads = threads


def _chip_for(shared: dict[str, Any], seed: int, timer, lane: _LaneTag) -> tuple[Any, bool]:
    """The programmed chip of ``seed`` for ``lane`` (kept from the lane's previous shard,
    else programmed now, replacing the one the lane held: one chip in memory per lane, and
    the driver gives a lane one chip's shards in a row)."""
    key = (shared["model_sha"], shared["config_key"], int(seed))
    with _CHIPS_LOCK:
        for other in [k for k, held in _CHIPS.items() if held[0] != lane.run]:
            del _CHIPS[other]   # an earlier campaign's chips (a long-lived Dask worker)
        held = _CHIPS.get(lane.index)
        if held is not None and held[1] == key:
            return held[2], False
        _CHIPS.pop(lane.index, None)   # free the previous chip before drawing the next one
    spec, options = shared["spec"], shared["run_options"]
    with timer("program"):
        chip = spec.family.program(shared["graph"], shared["mapped"], spec.config, seed=seed,
                                   device_kind=options.get("device_kind", "cpu"),
                                   adc_range=options.get("adc_range", "max"),
                                   adc_calibration=options.get("adc_calibration"))
    with _CHIPS_LOCK:
        _CHIPS[lane.index] = (lane.run, key, chip)
    return chip, True


def _resolve(shared_ref: Any) -> dict[str, Any]:
    from chipforge.sim import sweep

    if isinstance(shared_ref, sweep._InstalledShared):
        return dict(sweep._WORKER_SHARED[shared_ref.token])
    return shared_ref


def _release(run: str) -> None:
    """Free the chips a campaign run left in this process (its lanes keep their last one)."""
    with _CHIPS_LOCK:
        for lane in [k for k, held in _CHIPS.items() if held[0] == run]:
            del _CHIPS[lane]


def _release_quietly(client, run: str) -> None:
    try:
        client.run(_release, run)
    except Exception:  # the cluster may be gone already; nothing to free then
        pass


def _run_shard(shard: tuple, shared_ref: Any, lane: _LaneTag) -> dict[str, Any]:
    """Worker side: one shard, ``("ref", start, stop)`` or ``("hw", chip, seed, start,
    stop)``, of ``lane``; returns its record (predictions, timings, where it ran)."""
    from chipforge.sim.executor import run_graph
    from chipforge.stages import StageTimer

    _limit_threads(lane.threads)
    shared = _resolve(shared_ref)
    graph, x = shared["graph"], shared["x"]
    timer = StageTimer()
    wall, cpu = time.perf_counter(), time.process_time()
    if shard[0] == "ref":
        _, start, stop = shard
        batch = shared["batch"]
        with timer("ideal"):
            ideal = run_graph(graph, x[start:stop], batch_size=batch).argmax(axis=1)
        with timer("float"):
            floats = run_graph(graph, x[start:stop], quantized=False,
                               batch_size=batch).argmax(axis=1).tolist()
        record = {"kind": "ref", "start": start, "stop": stop, "ideal": ideal.tolist(),
                  "float": floats}
    else:
        _, chip_index, seed, start, stop = shard
        spec, options = shared["spec"], shared["run_options"]
        chip, programmed_now = _chip_for(shared, seed, timer, lane)
        part = x[start:stop]
        # The ideal run is a reference shard's job: pass a placeholder so run() skips it.
        out = spec.family.run(graph, shared["mapped"], spec.config, part, seed=seed,
                              programmed=chip, sample_offset=start,
                              ideal_logits=np.zeros((len(part), 1)), float_logits=False,
                              max_memory=options.get("max_memory"),
                              device_kind=options.get("device_kind", "cpu"),
                              adc_range=options.get("adc_range", "max"),
                              adc_calibration=options.get("adc_calibration"))
        timer.extend(out.stages)
        record = {"kind": "hw", "chip": chip_index, "seed": seed, "start": start,
                  "stop": stop, "pred": out.logits.argmax(axis=1).tolist(),
                  "programmed": programmed_now,
                  "adc_reads": int(round(out.metrics.get("adc_reads_per_sample", 0)
                                         * len(part))),
                  "saturated": int(out.metrics.get("adc_saturations", 0)),
                  "device": out.metrics.get("device", "")}
    record["wall_s"] = time.perf_counter() - wall
    record["cpu_s"] = time.process_time() - cpu
    record["stages"] = timer.rows()
    record["worker"] = f"{os.uname().nodename}:{os.getpid()}"
    record["lane"] = lane.index
    return record


# --- the results file ----------------------------------------------------------------------

_CHECKED = ("kind", "chip", "seed", "start", "stop", "pred", "ideal", "float")


def _checksum(campaign_id: str, record: dict[str, Any]) -> str:
    body = json.dumps([campaign_id] + [record.get(k) for k in _CHECKED], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _shard_key(record: dict[str, Any]) -> tuple:
    if record["kind"] == "ref":
        return ("ref", record["start"], record["stop"])
    return ("hw", record["chip"], record["seed"], record["start"], record["stop"])


def _read_records(path: Path, campaign_id: str, *, repair: bool
                  ) -> tuple[dict[tuple, dict[str, Any]], bool]:
    """The shards recorded in ``path`` by key; a half-written last line (a campaign killed
    while appending) is cut off when ``repair``; any other bad line is an error."""
    data = path.read_bytes()
    dropped = False
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if repair:
            with open(path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())
        data, dropped = data[:cut], True
    records: dict[tuple, dict[str, Any]] = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and record.get("check") == _checksum(campaign_id,
                                                                               record)
        except (json.JSONDecodeError, TypeError):
            ok = False
        if not ok:
            raise CampaignError(f"{path} line {number} is not a shard of this campaign (edited "
                                "or damaged): move the file away or choose another --out")
        records[_shard_key(record)] = record
    return records, dropped


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One campaign per folder at a time (the OS drops the lock if the driver dies)."""
    from chipforge.files import exclusive_lock

    with exclusive_lock(out / LOCK_FILE,
                        lambda: CampaignError(f"another campaign is running in {out}")):
        yield


def _digest(*arrays: np.ndarray) -> str:
    return array_sha256(*arrays)[:16]


def _manifest(model_sha: str, spec, x, y, seed: int, chunk: int,
              run_options: dict[str, Any]) -> dict[str, Any]:
    calibration = run_options.get("adc_calibration")
    manifest = {"format": FORMAT_VERSION, "model_sha256": model_sha,
            "accelerator": spec.name, "config": spec.config.to_dict(),
            "data_sha256": _digest(x, y), "samples": len(x), "seed": seed,
            "chunk_size": chunk,
            "device_kind": run_options.get("device_kind", "cpu"),
            "adc_range": run_options.get("adc_range", "max"),
            "adc_calibration": None if calibration is None
            else [calibration[0], _digest(np.asarray(calibration[1]))]}
    # as it reads back from the file (tuples as lists, enums as text), so a resume compares
    return json.loads(json.dumps(manifest, default=str))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _differences(found: Any, expected: dict[str, Any]) -> list[str]:
    """What differs between the campaign in a folder and the one asked for (empty: the
    same campaign)."""
    if not isinstance(found, dict):
        return ["the manifest is not a campaign's"]
    names = {"model_sha256": "model", "data_sha256": "data", "chunk_size": "--chunk-size"}
    out = []
    for key, value in expected.items():
        if found.get(key) == value:
            continue
        if key == "config" and isinstance(found.get(key), dict):
            was, now = _flat(found[key]), _flat(value)
            out += [f"{k}: file has {was.get(k)!r}, requested {now.get(k)!r}"
                    for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        elif key in ("model_sha256", "data_sha256"):
            out.append(f"{names[key]} differs")
        else:
            out.append(f"{names.get(key, key)}: file has {found.get(key)!r}, "
                       f"requested {value!r}")
    return out


# --- the driver ----------------------------------------------------------------------------

@dataclasses.dataclass
class _Progress:
    told: Callable[[int], None] | None
    bar: Any


def run_campaign(spec, graph, mapped, x: np.ndarray, y: np.ndarray, seeds: list[int], *,
                 out: str | Path | None = None, workers: int | None = None,
                 dask: bool = False, scheduler: str | None = None,
                 chunk_size: int | None = None, executor: cf.Executor | None = None,
                 run_options: dict[str, Any] | None = None,
                 progress: bool | Callable[[int], None] | None = None,
                 timer=None, echo: Callable[[str], None] | None = None):
    """Run ``len(seeds)`` chips of ``spec`` on ``x`` sharded (see the module doc) and
    return a :class:`chipforge.simulate.Simulation` whose result holds the per-chip rows,
    their spread and ``campaign`` (shards, workers, wall time, chip-images per second,
    programmings). ``mapped``: the family's mapping of ``graph`` (the driver maps once).
    ``executor``: any ``concurrent.futures`` executor instead of the pool / Dask ones."""
    from chipforge.compress import graph_sha256
    from chipforge.sim import sweep
    from chipforge.sim.memory import parse_size, plan_memory
    from chipforge.stages import StageTimer

    family = spec.family
    if not callable(getattr(family, "program", None)):
        raise CampaignError(f"accelerator {spec.name} (family {family.name}) does not shard "
                            "a campaign (no separate programming step): run --chips N "
                            "without --workers, --dask, --scheduler or --chunk-size")
    run_options = dict(run_options or {})
    if run_options.get("layer_errors"):
        raise CampaignError("--layer-errors measures one chip on a few samples: run it "
                            "without --workers, --dask, --scheduler or --chunk-size")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise CampaignError(f"workers must be an integer >= 1, not {workers!r}")
    if scheduler is not None and (dask or workers is not None):
        raise CampaignError("--scheduler uses the workers of that Dask cluster: drop "
                            + ("--dask" if dask else "--workers"))
    if chunk_size is not None and (isinstance(chunk_size, bool)
                                   or not isinstance(chunk_size, int) or chunk_size < 1):
        raise CampaignError(f"chunk size must be an integer >= 1, not {chunk_size!r}")
    chunk = min(chunk_size, len(x)) if chunk_size is not None else default_chunk_size(len(x))
    n_workers = 1 if executor is not None else (workers or sweep._cores())
    if run_options.get("max_memory") is None and scheduler is None and executor is None:
        # the default budget (half the available memory) is shared by the local workers
        from chipforge.guard import available_memory
        from chipforge.sim.memory import DEFAULT_FRACTION

        run_options["max_memory"] = int(available_memory() * DEFAULT_FRACTION / n_workers)
    budget = run_options.get("max_memory")
    try:   # one shard with one programmed chip must fit a worker's budget: say so now
        plan = plan_memory(graph, mapped.detail, spec.config.device, chunk,
                           None if budget is None else parse_size(budget))
    except ValueError as e:
        raise CampaignError(f"per worker: {e}") from None
    if scheduler is not None:
        try:
            sweep._check_scheduler(scheduler)
        except sweep.SweepError as e:
            raise CampaignError(str(e)) from None

    timer = StageTimer() if timer is None else timer
    say = echo or (lambda _: None)
    model_sha = graph_sha256(graph)
    manifest = _manifest(model_sha, spec, x, y, seeds[0], chunk, run_options)
    campaign_id = hashlib.sha256(json.dumps(manifest, sort_keys=True,
                                            default=str).encode()).hexdigest()[:16]
    starts = list(range(0, len(x), chunk))
    shards = [("ref", a, min(a + chunk, len(x))) for a in starts]
    shards += [("hw", c, s, a, min(a + chunk, len(x)))
               for c, s in enumerate(seeds) for a in starts]
    done: dict[tuple, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        writer = None
        if out is not None:
            from chipforge.files import AppendFile, atomic_write, make_folder

            out = make_folder(out)
            stack.enter_context(_exclusive(out))
            manifest_path, results_path = out / MANIFEST_FILE, out / RESULTS_FILE
            if manifest_path.exists():
                try:
                    found = json.loads(manifest_path.read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    found = None
                differences = _differences(found, manifest)
                if differences:
                    raise CampaignError(f"cannot resume: {out} holds a different campaign ("
                                        + "; ".join(differences) + "); repeat the original "
                                        "arguments or choose another --out")
            elif results_path.exists():
                raise CampaignError(f"{results_path} has no {MANIFEST_FILE} beside it: move "
                                    "it away or choose another --out")
            if results_path.exists():
                done, dropped = _read_records(results_path, campaign_id, repair=True)
                if dropped:
                    say(f"{results_path}: discarded a half-written last line (the campaign "
                        "was killed while writing it); that shard runs again")
            atomic_write(manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")
            writer = stack.enter_context(AppendFile(results_path))
        todo = [s for s in shards if s not in done]
        wanted = set(shards)
        reused = [r for k, r in done.items() if k in wanted]
        if reused:
            say(f"resuming: {len(reused)} of {len(shards)} shards already in "
                f"{out / RESULTS_FILE}")
        total_images = len(seeds) * len(x)
        images_done = sum(r["stop"] - r["start"] for r in reused if r["kind"] == "hw")
        bar = _progress_bar(progress, total_images, images_done)
        where, wall, startup = "none (every shard was done)", 0.0, 0.0
        lanes: list[_Lane] = []
        with timer("run"):
            try:
                if todo:
                    shared = {"graph": graph, "mapped": mapped, "x": x, "spec": spec,
                              "run_options": run_options, "model_sha": model_sha,
                              "config_key": json.dumps(manifest["config"], sort_keys=True,
                                                       default=str)
                              + f"|{manifest['device_kind']}|{manifest['adc_range']}"
                              f"|{manifest['adc_calibration']}",
                              "batch": plan.batch}
                    start = time.perf_counter()
                    try:
                        lanes, shared_ref, where = stack.enter_context(_lanes(
                            executor=executor, workers=workers, scheduler=scheduler,
                            dask=dask, shared=shared))
                    except sweep.SweepError as e:
                        raise CampaignError(str(e)) from None
                    startup = time.perf_counter() - start
                    say(f"campaign: {len(seeds)} chips x {len(x)} samples; {len(todo)} of "
                        f"{len(shards)} shards (<= {chunk} samples each) to run on {where}")
                    left = {c: sum(1 for s in todo if s[0] == "hw" and s[1] == c)
                            for c in range(len(seeds))}
                    bar.chips(sum(1 for n in left.values() if n == 0), len(seeds))
                    for record in _drive(lanes, shared_ref, todo, campaign_id, out):
                        if writer is not None:
                            writer.append(json.dumps(record, separators=(",", ":")) + "\n")
                        done[_shard_key(record)] = record
                        if record["kind"] == "hw":
                            left[record["chip"]] -= 1
                            bar.chips(sum(1 for n in left.values() if n == 0), len(seeds))
                            bar.update(record["stop"] - record["start"])
                    wall = time.perf_counter() - start
            finally:
                bar.close()
    if out is not None:   # the report comes from the file: resumed == uninterrupted
        done, _ = _read_records(out / RESULTS_FILE, campaign_id, repair=False)
    return _assemble(spec, graph, mapped, y, seeds, chunk, shards, done, timer,
                     computed=todo, where=where, wall=wall, startup=startup,
                     workers=n_workers if executor is None else None, lanes=lanes,
                     run_options=run_options)


def _progress_bar(progress, total: int, initial: int):
    """The chip-images done out of chips x samples, the rate and the ETA (tqdm), and the
    chips finished; ``progress`` callable: told each shard's chip-images instead."""
    from tqdm import tqdm

    told = progress if callable(progress) else None
    disable = True if told is not None else (None if progress is None else not progress)
    bar = tqdm(total=total, initial=initial, disable=disable, file=sys.stderr,
               unit="chip-img", desc="campaign (chips x images)", dynamic_ncols=True,
               smoothing=0.1)

    class _Bar:
        def update(self, n: int) -> None:
            if told is not None:
                told(n)
            else:
                bar.update(n)

        def chips(self, finished: int, chips: int) -> None:
            bar.set_postfix_str(f"{finished}/{chips} chips done", refresh=False)

        def close(self) -> None:
            bar.close()

    return _Bar()


LANE_THREADS = 1
"""Compute threads of one worker thread's kernels on the workers chipforge starts (a local
pool or LocalCluster) and on a ``--scheduler``'s workers: one core each, as Dask's own
process workers get (see :func:`_limit_threads`). Workers of an executor the caller passed
in are left as the caller set them up."""


@dataclasses.dataclass(eq=False)
class _Lane:
    """The driver's queue for one worker thread: the shards it will run next, one at a time,
    all of one chip (so the worker programs that chip once and keeps it)."""

    tag: _LaneTag
    submit: Callable[..., cf.Future]
    work: collections.deque = dataclasses.field(default_factory=collections.deque)
    busy: bool = False


class _Scheduler:
    """Which shard each lane runs next: a lane takes the next group (one reference shard, or
    all the remaining shards of one chip in sample order) when it has none; with no group
    left it takes the back half of the longest queue of another lane (the tail of a
    campaign with fewer chips left than lanes), for a hardware queue only when that half
    is expected to take longer than programming the chip again (measured means of the
    shards finished so far)."""

    def __init__(self, lanes: list[_Lane], todo: list[tuple]) -> None:
        self.lanes = lanes
        self.groups: collections.deque = collections.deque(
            collections.deque([s]) for s in todo if s[0] == "ref")
        chips: dict[int, collections.deque] = {}
        for s in todo:
            if s[0] == "hw":
                chips.setdefault(s[1], collections.deque()).append(s)
        self.groups.extend(chips.values())
        self.program_s: list[float] = []
        self.shard_s: list[float] = []

    def finished(self, record: dict[str, Any]) -> None:
        """Learn a hardware shard's programming and run times (for the stealing rule)."""
        if record["kind"] != "hw":
            return
        program = sum(r["wall_s"] for r in record["stages"] if r["stage"] == "program")
        if record.get("programmed"):
            self.program_s.append(program)
        self.shard_s.append(record["wall_s"] - program)

    def next_for(self, lane: _Lane) -> tuple | None:
        if not lane.work:
            if self.groups:
                lane.work = self.groups.popleft()
            else:
                self._steal_for(lane)
        return lane.work.popleft() if lane.work else None

    def _steal_for(self, thief: _Lane) -> None:
        victim = max((v for v in self.lanes if v is not thief and len(v.work) >= 2),
                     key=lambda v: len(v.work), default=None)
        if victim is None:
            return
        # the victim keeps its running shard and the front half of its queue
        half = (len(victim.work) + 1) // 2
        if victim.work[0][0] == "hw" and self.program_s and self.shard_s:
            program = sum(self.program_s) / len(self.program_s)
            shard = sum(self.shard_s) / len(self.shard_s)
            if half * shard <= program:
                return
        taken = [victim.work.pop() for _ in range(half)]
        thief.work = collections.deque(reversed(taken))


@contextlib.contextmanager
def _lanes(*, executor, workers, scheduler, dask, shared
           ) -> Iterator[tuple[list[_Lane], Any, str]]:
    """The lanes of a campaign (one per worker thread), the reference to the shared inputs
    the workers hold, and where they run. A local campaign gets one single-process pool per
    lane (forkserver; each worker gets the shared inputs once, dies with the driver); a Dask
    cluster gets one lane per worker thread, its shards sent to that worker (restricted
    loosely: if the worker is lost they run elsewhere); any other executor gets one lane
    per worker, without affinity (its shards run wherever the executor puts them)."""
    import multiprocessing
    import uuid

    from chipforge.sim import sweep

    run = uuid.uuid4().hex
    with contextlib.ExitStack() as stack:
        stack.callback(_release, run)   # chips held in this process (a thread executor)
        if executor is None and scheduler is None and not dask:
            n = workers or sweep._cores()
            token = uuid.uuid4().hex
            context = multiprocessing.get_context("forkserver")
            pools = []
            for _ in range(n):
                pool = cf.ProcessPoolExecutor(
                    max_workers=1, mp_context=context, initializer=sweep._init_pool_worker,
                    initargs=(token, dict(shared), os.getpid()))
                # on an error or Ctrl-C: drop the queued shards, wait for the running ones
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)
                pools.append(pool)
            for future in [pool.submit(sweep._started) for pool in pools]:
                future.result()   # started now, so the start-up is timed on its own
            lanes = [_Lane(_LaneTag(run, i, LANE_THREADS), pool.submit)
                     for i, pool in enumerate(pools)]
            yield lanes, sweep._InstalledShared(token), f"process pool ({n} workers)"
            return
        backend = stack.enter_context(sweep.executor_backend(
            executor=executor, workers=workers, scheduler=scheduler, dask_local=dask,
            shared=shared))
        if sweep._is_dask_executor(backend.executor):
            client = backend.executor._client
            stack.callback(_release_quietly, client, run)
            threads = LANE_THREADS if executor is None else None
            lanes = []
            for address, nthreads in sorted(client.nthreads().items()):
                pinned = client.get_executor(pure=False, workers=[address],
                                             allow_other_workers=True)
                lanes += [_Lane(_LaneTag(run, len(lanes), threads), pinned.submit)
                          for _ in range(max(1, nthreads))]
        else:
            lanes = [_Lane(_LaneTag(run, i, None), backend.executor.submit)
                     for i in range(max(1, backend.workers))]
        yield lanes, backend.shared_ref, backend.description


def _drive(lanes: list[_Lane], shared_ref: Any, todo: list[tuple], campaign_id: str,
           out) -> Iterator[dict[str, Any]]:
    """Run the shards on the lanes (one in flight per lane, chosen by :class:`_Scheduler`),
    yield each finished shard's record; on a failed shard, stop submitting, yield the
    records that finished and raise."""
    scheduler = _Scheduler(lanes, todo)
    in_flight: dict[cf.Future, tuple[_Lane, tuple]] = {}

    def top_up() -> None:
        for lane in lanes:
            if lane.busy:
                continue
            shard = scheduler.next_for(lane)
            if shard is not None:
                in_flight[lane.submit(_run_shard, shard, shared_ref, lane.tag)] = (lane,
                                                                                    shard)
                lane.busy = True

    try:
        top_up()
        while in_flight:
            finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
            failure = None
            records = []
            for future in finished:
                lane, shard = in_flight.pop(future)
                lane.busy = False
                try:
                    record = future.result()
                except Exception as e:
                    what = (f"samples {shard[1]}..{shard[2] - 1} (ideal and float runs)"
                            if shard[0] == "ref" else
                            f"chip {shard[1]} on samples {shard[3]}..{shard[4] - 1}")
                    failure = failure or CampaignError(
                        f"campaign shard {what} failed: {type(e).__name__}: {e}"
                        + (f"; the finished shards are kept in {Path(out) / RESULTS_FILE}: "
                           "rerun the same command to resume" if out is not None else ""))
                    continue
                record["check"] = _checksum(campaign_id, record)
                scheduler.finished(record)
                records.append(record)
            if failure is None:
                top_up()
            yield from records
            if failure is not None:
                raise failure
    finally:
        for future in in_flight:
            future.cancel()


def _lane_sums(records: list[dict[str, Any]], field: str) -> dict[Any, float]:
    sums: dict[Any, float] = collections.defaultdict(float)
    for r in records:
        sums[r.get("lane")] += r[field]
    return dict(sums)


def _assemble(spec, graph, mapped, y, seeds, chunk, shards, done, timer, *, computed,
              where, wall, startup, workers, lanes, run_options):
    from chipforge.chips import spread
    from chipforge.simulate import Simulation, SimulationResult, _chip_row

    y = np.asarray(y)
    n = len(y)
    missing = [s for s in shards if s not in done]
    if missing:
        raise CampaignError(f"the campaign lacks {len(missing)} shards after running")

    def joined(kind: str, field: str, chip: int | None = None) -> np.ndarray | None:
        parts = []
        for a in range(0, n, chunk):
            key = ("ref", a, min(a + chunk, n)) if kind == "ref" else \
                ("hw", chip, seeds[chip], a, min(a + chunk, n))
            values = done[key][field]
            if values is None:
                return None
            parts.append(np.asarray(values, dtype=np.int64))
        return np.concatenate(parts)

    ideal, floats = joined("ref", "ideal"), joined("ref", "float")
    for stage in ("ideal", "float", "program", "hardware"):
        rows = [r for s in shards for r in done[s].get("stages", []) if r["stage"] == stage]
        if rows:   # summed over the workers' shards (CPU: the workers' own)
            timer.add(stage, sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows),
                      within="run", count=len(rows) if stage == "program" else None)
    rows, first_chip = [], None
    for c, seed in enumerate(seeds):
        pred = joined("hw", "pred", c)
        result = SimulationResult(
            model=graph.name, accelerator=spec.name, samples=n,
            accuracy_float=None if floats is None else float((floats == y).mean()),
            accuracy_ideal=float((ideal == y).mean()),
            accuracy_hardware=float((pred == y).mean()),
            agreement=float((pred == ideal).mean()), seed=seed,
            config=spec.config.to_dict(), family=spec.family.name,
            ideal_label="quantized model, exact integer arithmetic")
        rows.append(_chip_row(c, seed, result))
        first_chip = first_chip or result
    result = first_chip
    chip0 = [done[s] for s in shards if s[0] == "hw" and s[1] == 0]
    metrics = {k: v for k, v in mapped.totals.items() if not k.startswith("_")}
    metrics.update({"adc_reads_per_sample": sum(r["adc_reads"] for r in chip0) / n,
                    "adc_saturations": sum(r["saturated"] for r in chip0),
                    "device": chip0[0]["device"] if chip0 else "",
                    "adc_range": run_options.get("adc_range", "max")})
    result.metrics, result.layers = metrics, [dict(r) for r in mapped.layers]
    result.chips = rows
    if len(rows) > 1:
        result.accuracy_hardware_spread = spread([r["accuracy_hardware"] for r in rows])
        result.accuracy_hardware = result.accuracy_hardware_spread["mean"]
        result.agreement = sum(r["agreement"] for r in rows) / len(rows)
    ran = [done[s] for s in computed]
    hw_ran = [r for r in ran if r["kind"] == "hw"]
    images = sum(r["stop"] - r["start"] for r in hw_ran)
    programs = [r for s in shards if s[0] == "hw" for r in [done[s]] if r.get("programmed")]
    program_s = [sum(p["wall_s"] for p in r["stages"] if p["stage"] == "program")
                 for r in programs]
    result.campaign = {
        "chips": len(seeds), "samples": n, "chunk_size": chunk, "shards": len(shards),
        "shards_computed": len(ran), "shards_reused": len(shards) - len(ran),
        "backend": where, "workers": workers, "startup_s": startup, "wall_s": wall,
        "chip_images_computed": images,
        "chip_images_per_s": images / wall if wall > 0 and images else None,
        "shard_wall_s_mean": (sum(r["wall_s"] for r in hw_ran) / len(hw_ran)
                              if hw_ran else None),
        "lanes": len(lanes),
        # the CPU seconds of the busiest lane's shards: with one thread per lane, about
        # its busy wall time on an idle core (start-up plus this: the wall time on an idle
        # machine with a core per lane, whatever the load when it ran)
        "busiest_lane_cpu_s": max(_lane_sums(ran, "cpu_s").values(), default=None),
        "shards_cpu_s": sum(r["cpu_s"] for r in ran),
        "threads_per_lane": lanes[0].tag.threads if lanes else None,
        "programmings": len(programs),
        "program_s_per_chip": sum(program_s) / len(program_s) if program_s else None,
        "worker_processes": len({r["worker"] for r in ran}),
    }
    result.stages = timer.rows()
    return Simulation(result, mapped, None)
