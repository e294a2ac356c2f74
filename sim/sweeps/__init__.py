"""Named sweeps built on :mod:`chipforge.sim.sweep` (listed for the CLI in ``chipforge.sweeps``)."""
