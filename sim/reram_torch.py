"""The crossbar simulation on torch tensors (CPU or CUDA): the array backend.

Same arithmetic as the compiled numpy kernels (:mod:`chipforge.sim.reram_kernels`), as
whole-tensor operations: bit planes, one batched GEMM per chunk for the column sums (and
one for the proportional read-noise variances), the ADC, the shift-and-add. Integer
arithmetic (ideal or faulty integer cells, saturating ADCs) gives the numpy backend's
integers exactly (tested on the CPU). Read noise is one Gaussian per ADC read from the same
counter-based indexing (the read's global index, hashed by SplitMix64) and the same
Box-Muller transform of the hash bits, in float64: equal to the numpy backend's float32
normals to 1e-6 (1e-4 at worst, near 0), so equal in distribution, and like them
independent of chunking.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gaussians_torch", "layer_matmul_torch"]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


_GAMMA = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _srl(z, s: int):
    """Logical right shift of int64 tensors (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z):
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def gaussians_torch(key: int, index):
    """Standard normals (float64) of reads ``index`` (int64 tensor) of stream ``key``: the
    numpy kernels' Box-Muller transform of the same pair bits, in float64 with torch's
    ``log``, ``cos`` and ``sin`` (equal to the kernels' float32 normals to 1e-6; 1e-4 near 0)."""
    import torch

    h = _mix(_signed(int(key)) + ((index >> 1) + 1) * _GAMMA)
    u = (_srl(h, 33).to(torch.float64) + 0.5) * 2.0**-31
    w = h & 0xFFFFFFFF
    angle = ((((w >> 6) & 0xFFFFFF).to(torch.float64) + 0.5) * 2.0**-24 - 0.5
             + (w >> 30).to(torch.float64)) * (math.pi / 2)
    radius = torch.sqrt(-2.0 * torch.log(u))
    return radius * torch.where((index & 1) == 1, torch.sin(angle), torch.cos(angle))


def layer_matmul_torch(xu: np.ndarray, layer, prep, shifts: np.ndarray, dmasks: np.ndarray,
                       cycle_w: np.ndarray, full: int, key: int, row_offset: int,
                       chunk_bytes: int | None, device: str, adc_step: float | np.ndarray = 1.0
                       ) -> tuple[np.ndarray, int]:
    """Reads of one layer for rows ``xu`` (M, K+1) on ``device``: int64 (M, N), saturations."""
    import torch

    dev = torch.device(device)
    m_total = xu.shape[0]
    n_groups, rows, cols = layer.levels.shape
    n_out, per = layer.outputs, layer.per_output
    cycles = len(shifts)
    # Float32 GEMMs are exact for integer cells below 2**24 (the placement's rule); the
    # digital side accumulates in float64.
    fdtype = torch.float32 if prep.cells.dtype == np.float32 else torch.float64
    cells = torch.as_tensor(prep.cells, dtype=fdtype, device=dev)
    nvar = None if prep.nvar is None else torch.as_tensor(prep.nvar, dtype=fdtype, device=dev)
    rowidx = torch.as_tensor(prep.rowidx.reshape(-1), device=dev)
    scoef = torch.as_tensor(prep.scoef, device=dev)                      # (G, C) float64
    ucoef = torch.as_tensor(prep.ucoef, device=dev)                      # (G, N)
    cw = torch.as_tensor(cycle_w, dtype=torch.float64, device=dev)
    sh = torch.as_tensor(shifts, device=dev).view(1, -1, 1)
    dm = torch.as_tensor(dmasks, device=dev).view(1, -1, 1)
    per_row = cycles * n_groups * (4 * rows + 40 * cols) + 8 * xu.shape[1]
    chunk = max(1, int(chunk_bytes or (256 << 20)) // per_row)
    steps = np.broadcast_to(np.asarray(adc_step, dtype=np.float64), (cycles,))
    exact = bool(np.all(steps == 1.0))
    out = np.empty((m_total, n_out), dtype=np.int64 if exact else np.float64)
    saturated = 0
    top = full + 0.5
    col = torch.arange(cols, device=dev, dtype=torch.int64)
    for start in range(0, m_total, chunk):
        stop = min(m_total, start + chunk)
        mb = stop - start
        x = torch.as_tensor(xu[start:stop], device=dev)[:, rowidx]        # (mb, G*R)
        planes = (x.unsqueeze(1) >> sh) & dm                                # (mb, T, G*R)
        a = planes.view(mb * cycles, n_groups, rows).permute(1, 0, 2).to(fdtype)
        sums = torch.bmm(a, cells).to(torch.float64)                         # (G, mb*T, C)
        ones = a.sum(dim=2, dtype=torch.float64)                             # (G, mb*T)
        if prep.noise_mode:
            if prep.noise_mode == 1:
                var = torch.bmm(a * a, nvar).to(torch.float64)
            else:
                var = ((a.to(torch.float64) ** 2).sum(dim=2) * prep.indep_var).unsqueeze(2)
            m = torch.arange(start + row_offset, stop + row_offset, device=dev)
            t = torch.arange(cycles, device=dev)
            g = torch.arange(n_groups, device=dev)
            base = ((m.view(1, -1, 1) * n_groups + g.view(-1, 1, 1)) * cycles
                    + t.view(1, 1, -1)).reshape(n_groups, mb * cycles, 1) * cols
            sums += torch.sqrt(var) * gaussians_torch(key, base + col)
            del var, base
        # each read's ADC step: its cycle's (rows are m * T + t)
        step = torch.as_tensor(np.tile(steps, mb), device=dev).view(1, -1, 1)
        if not exact:
            sums /= step
            ones = ones / step[..., 0]
        saturated += int((sums > top).sum())
        codes = torch.clamp(torch.round(sums), 0, full) * step
        per_cycle = (codes * scoef.unsqueeze(1)).sum(dim=0)                 # (mb*T, C)
        per_cycle = per_cycle.view(mb * cycles, n_out, per).sum(dim=2)
        if layer.unit_column:
            saturated += int((ones > top).sum())
            per_cycle += (torch.clamp(torch.round(ones), max=full) * step[..., 0]).T @ ucoef
        y = (per_cycle.view(mb, cycles, n_out) * cw.view(1, -1, 1)).sum(dim=1)
        y = torch.round(y).to(torch.int64) if exact else y
        out[start:stop] = y.cpu().numpy()
    return out, saturated
