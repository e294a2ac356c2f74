"""Functional and cycle-level simulation (imported as ``chipforge.sim``).

``chipforge.sim.ref`` holds one bit-exact integer reference per hardware block; everything
else (device models, executors, cycle models, sweeps) wraps those references.
"""
