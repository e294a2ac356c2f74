"""Frontends that turn models from other tools into chipforge's model IR
(:class:`chipforge.sim.graph.Graph`).

- :mod:`chipforge.importers.onnx`  ONNX files (float or QDQ-quantized), via the ``onnx`` package
- :mod:`chipforge.importers.torch` PyTorch modules, via ``torch.onnx.export`` then the ONNX
  importer

They live in the umbrella package, not in ``chipforge.sim``, because they need optional
packages (``onnx``, ``torch``) that the simulator itself does not: ``chipforge.sim`` stays
numpy-only. This ``__init__`` imports neither.
"""
