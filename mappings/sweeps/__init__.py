"""Named sweeps whose trials need the mappings layer (torch models, training).

Registered in ``chipforge.sweeps``; ``chipforge.sim.sweeps`` holds those that need only
``sim`` (the simulator never imports ``mappings``)."""
