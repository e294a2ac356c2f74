"""cocotb side of ``bench_rtl_backend.py``: stream the benchmark's beats through the
shift-and-add RTL with the project's driver and monitor, and time the cycle loop.

Inputs (environment): ``BENCH_BEATS`` (.npy of (n, words) uint32 payload words),
``BENCH_RESULTS`` (number of dot products), ``BENCH_OUT`` (JSON written here).
"""

import json
import os
import time

import cocotb
import numpy as np


@cocotb.test()
async def shift_add_stream_throughput(dut):
    from chipforge.verify.cocotb_stream import StreamDriver, StreamMonitor, reset_dut, start

    beats = np.load(os.environ["BENCH_BEATS"])
    words = [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in beats]
    n_results = int(os.environ["BENCH_RESULTS"])
    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream")
    monitor = StreamMonitor(dut, "o_stream", signed=True)
    start_time = time.perf_counter()
    start(driver.send(words))
    results = await monitor.collect(n_results, timeout_cycles=2 * len(words) + 100)
    seconds = time.perf_counter() - start_time
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump({"results": [int(r) for r in results], "seconds": seconds,
                   "cycles": monitor.received_cycles[-1]}, f)
