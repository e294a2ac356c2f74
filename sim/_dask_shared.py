"""Shared sweep inputs on Dask workers (imported only when a sweep runs on Dask).

A worker plugin carries the inputs: the scheduler hands it to every worker once, on
registration and to workers that join later, and its ``setup`` installs the inputs where
:func:`chipforge.sim.sweep._run_trials` looks them up by token. (``client.scatter`` with
``broadcast=True`` is the other idiom, but a task can race the replication and fetch a
second copy.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distributed import WorkerPlugin

from chipforge.sim import sweep as _sweep


class SharedInputsPlugin(WorkerPlugin):
    """Installs one sweep's shared inputs in each worker process, once."""

    def __init__(self, token: str, shared: Mapping[str, Any]) -> None:
        self.token, self.shared = token, dict(shared)
        self.name = f"chipforge-sweep-{token}"

    def setup(self, worker) -> None:
        _sweep._install_shared(self.token, self.shared)

    def teardown(self, worker) -> None:
        _sweep._WORKER_SHARED.pop(self.token, None)


def install(client, token: str, shared: Mapping[str, Any]) -> str:
    """Register the plugin on the client's cluster; returns its name."""
    plugin = SharedInputsPlugin(token, shared)
    client.register_plugin(plugin, name=plugin.name)
    return plugin.name


def uninstall(client, name: str) -> None:
    client.unregister_worker_plugin(name)
