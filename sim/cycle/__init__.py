"""Cycle-level models (imported as ``chipforge.sim.cycle``)."""
