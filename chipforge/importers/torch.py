"""Import a PyTorch module into chipforge's model IR: ``chipforge.from_torch(module, x)``.

The route is ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``: it needs
no extra package, and it folds eval-mode BatchNorm into the preceding convolution) into
memory, then :func:`chipforge.importers.onnx.load_onnx`. So exactly the ONNX operators in
:data:`~chipforge.importers.onnx.SUPPORTED_OPS` are supported, with the same errors. We did
not use ``torch.fx``: it would need a second table of supported modules and functions,
and ONNX export already normalizes the many ways PyTorch code can write one layer
(``nn.Flatten``, ``x.view(x.size(0), -1)``, ``torch.flatten``).

After import, the IR's float output is compared with the module's own output on the
example input, so a silent mismatch cannot pass (``check=False`` skips it).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from chipforge.importers.onnx import OnnxImportError, load_onnx
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph

__all__ = ["from_torch", "torch_to_onnx"]

OPSET = 20
"""ONNX opset of the export: 20 writes GELU as one Gelu node (older opsets spell it out in
five nodes, which quantization tools then split with Q/DQ pairs), 17+ has
LayerNormalization."""


def torch_to_onnx(module, example_input, *, opset: int = OPSET) -> bytes:
    """Serialized ONNX of ``module`` in eval mode, batch axis dynamic."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, not {type(module).__name__}")
    x = torch.as_tensor(example_input)
    if x.ndim < 2:
        raise ValueError(f"example_input must be a batch (N, ...), has shape {tuple(x.shape)}")
    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation notes
            torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              do_constant_folding=True)
    except Exception as e:
        raise OnnxImportError(f"torch.onnx.export of {type(module).__name__} failed: "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
    finally:
        module.train(was_training)
    return buffer.getvalue()


def from_torch(module, example_input, *, name: str | None = None, check: bool = True,
               rtol: float = 1e-4, atol: float = 1e-5) -> Graph:
    """The :class:`Graph` of a PyTorch module (evaluated in eval mode).

    ``example_input``: a batch (N, ...) with the shape the module takes (tensor or array).
    With ``check`` the IR's float output must equal the module's within ``rtol``/``atol``
    (float32 PyTorch vs float64 numpy), else ``ValueError``.
    """
    import torch

    graph = load_onnx(torch_to_onnx(module, example_input),
                      name=name or type(module).__name__)
    graph.meta["source"] = "torch"
    if check:
        x = torch.as_tensor(example_input)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                want = module(x).detach().cpu().double().numpy()
        finally:
            module.train(was_training)
        got = run_graph(graph, x.detach().cpu().double().numpy(), quantized=False)
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
            diff = (np.abs(got - want).max() if got.shape == want.shape
                    else f"shape {got.shape} vs {want.shape}")
            raise ValueError(f"from_torch({type(module).__name__}): the imported graph "
                             f"differs from the module on the example input (max |diff| "
                             f"{diff}); please report this with the model")
    return graph
