"""Stage times: where a simulation's wall-clock and CPU seconds go.

::

    from chipforge.stages import StageTimer
    timer = StageTimer()
    with timer("import"):
        graph = load_model(...)
    timer.rows()      # [{"stage": "import", "wall_s": 0.41, "cpu_s": 0.39}]
    print(timer.format())

The callers of the family interface (:func:`chipforge.simulate.simulate_graph`,
:func:`chipforge.simulate.simulate`, :func:`chipforge.mainjob.run_main_job`, ``chipforge
cycles``) time each step they call (``load_model``, ``load_data``, ``prepare``, ``map``,
``run``, ``cost``); a family may add the breakdown of its own ``run`` (hardware run, ideal
run, float run, per-layer errors) in :attr:`~chipforge.families.base.RunOutput.stages`.

Wall seconds are ``time.perf_counter``; CPU seconds are ``time.process_time`` (user plus
system time of every thread of this process, so a stage that keeps two cores busy shows
about twice its wall time). Both are measured, never estimated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["STAGE_LABELS", "StageTimer", "format_stages"]

STAGE_LABELS: dict[str, str] = {
    "import": "model import (load_model)",
    "data": "data (load_data)",
    "quantize": "quantize (prepare)",
    "map": "map (placement)",
    "run": "run (hardware, ideal and float runs)",
    "cost": "cycle / cost model",
    "report": "report files",
    "program": "program chips (variation, faults)",
    "hardware": "hardware run (simulated devices)",
    "ideal": "ideal run (exact arithmetic)",
    "float": "float model run",
    "layer_errors": "per-layer errors",
}
"""What each stage the callers time covers (the text report's labels)."""


class StageTimer:
    """Measures named stages (wall and CPU seconds); the same name twice adds up."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str, *, within: str | None = None) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - wall, time.process_time() - cpu,
                     within=within)

    def add(self, stage: str, wall_s: float, cpu_s: float, *,
            within: str | None = None, count: int | None = None) -> None:
        """Record (or add to) a stage measured elsewhere; ``within`` names the stage that
        contains it (a family's part of ``run``), so totals do not count it twice;
        ``count``: how many times it ran (a campaign's chips programmed), shown beside it."""
        row = self._rows.setdefault(stage, {"stage": stage, "wall_s": 0.0, "cpu_s": 0.0})
        row["wall_s"] += float(wall_s)
        row["cpu_s"] += float(cpu_s)
        if within is not None:
            row["within"] = within
        if count is not None:
            row["count"] = row.get("count", 0) + int(count)

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Add rows of another timer (``rows()``), keeping their ``within``."""
        for r in rows:
            self.add(r["stage"], r["wall_s"], r["cpu_s"], within=r.get("within"),
                     count=r.get("count"))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per stage in the order first seen: ``stage``, ``wall_s``, ``cpu_s``
        (and ``within`` for a part of another stage, ``count`` where one was given)."""
        return [dict(r) for r in self._rows.values()]


def format_stages(rows: list[dict[str, Any]]) -> str:
    """The text report's table of stage times (parts of a stage indented under it)."""
    if not rows:
        return ""
    top = [r for r in rows if not r.get("within")]
    lines = ["stage times (measured; CPU counts every thread):",
             f"    {'stage':<40} {'wall s':>9} {'CPU s':>9}"]

    def line(r: dict[str, Any], indent: str) -> str:
        label = STAGE_LABELS.get(r["stage"], r["stage"])
        if r.get("count") is not None:
            label += f" x{r['count']}"
        return f"    {(indent + label):<40} {r['wall_s']:>9.3f} {r['cpu_s']:>9.3f}"

    for r in top:
        lines.append(line(r, ""))
        lines += [line(p, "  ") for p in rows if p.get("within") == r["stage"]]
    orphans = [r for r in rows if r.get("within") and r["within"] not in
               {t["stage"] for t in top}]
    lines += [line(p, "") for p in orphans]
    lines.append(f"    {'total':<40} {sum(r['wall_s'] for r in top):>9.3f} "
                 f"{sum(r['cpu_s'] for r in top):>9.3f}")
    return "\n".join(lines)
