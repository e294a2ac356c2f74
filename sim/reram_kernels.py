"""Compiled (numba) kernels of the ADC-level crossbar simulation: the CPU fast path.

:func:`chipforge.sim.reram.crossbar_layer_matmul` does the same arithmetic with whole-array
numpy or torch operations (the array backend); these kernels fuse it so that a read costs
what the method needs and nothing more:

- :func:`reads_fused` (short analog row groups, e.g. FORMS fragments of 4..16 rows): for
  each sample, row group and input cycle it gathers the group's input bits, skips the read
  when they are all zero (FORMS' zero-skipping: no conversion happens, its value is 0), and
  otherwise forms the column sums, the read-noise variance, the noisy ADC code and the
  shift-and-add in registers. No plane, sum or noise array is ever stored.
- :func:`bit_planes` + BLAS + :func:`reads_post` (whole 128-row crossbars, ISAAC): the column
  sums and the proportional read-noise variances come from one batched float32 GEMM
  ``a @ [cells | variances]``; one fused pass then adds noise, converts and accumulates.

Read noise is one Gaussian per ADC read, drawn from a *counter-based* stream: the read's
global index (sample row since the chip was programmed, row group, cycle, column) is hashed
(SplitMix64's finalizer, which passes BigCrush on counters) and turned into a Gaussian by
the Marsaglia-Tsang ziggurat (128 layers). A read's noise is thus a pure function of the
seed and of which read it is, so results do not depend on batch chunking, the memory
budget or the number of threads. Every row of the output is accumulated in a fixed order
by one thread (``prange`` over sample rows), so the arithmetic is also thread-count
independent.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["bit_planes", "gaussians", "reads_fused", "reads_post", "stream_key"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11, _S32 = (np.uint64(s) for s in (30, 27, 31, 11, 32))
_LOW7 = np.uint64(127)


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia & Tsang (2000) RNOR tables for 128 layers and 32-bit signed integers."""
    m1 = 2147483648.0
    dn = tn = 3.442619855899
    vn = 9.91256303526217e-3
    kn, wn, fn = np.zeros(128), np.zeros(128), np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0], kn[1] = (dn / q) * m1, 0.0
    wn[0], wn[127] = q / m1, dn / m1
    fn[0], fn[127] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = (dn / tn) * m1
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_KN, _WN, _FN = _ziggurat_tables()
_R = 3.442620


def stream_key(*words: int) -> int:
    """A 64-bit stream key from integers (seed, layer, purpose): SeedSequence's mixing."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0])


@nb.njit(inline="always", cache=True)
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@nb.njit(inline="always", cache=True)
def _uniform(state):
    # A double in (0, 1) from the next value of a SplitMix64 sequence at ``state``.
    return (np.float64(_mix(state) >> _S11) + 0.5) * (1.0 / 9007199254740992.0)


@nb.njit(cache=True)
def _gauss_slow(h, kn, wn, fn):
    # The ziggurat's rare paths (about 1 % of draws): more bits from the same counter.
    state = h
    hz = np.int32(np.uint32(h >> _S32))
    iz = np.int64(h & _LOW7)
    while True:
        x = hz * wn[iz]
        if iz == 0:
            while True:
                state += _GAMMA
                xx = -math.log(_uniform(state)) / _R
                state += _GAMMA
                yy = -math.log(_uniform(state))
                if yy + yy >= xx * xx:
                    break
            return _R + xx if hz > 0 else -_R - xx
        state += _GAMMA
        if fn[iz] + _uniform(state) * (fn[iz - 1] - fn[iz]) < math.exp(-0.5 * x * x):
            return x
        state += _GAMMA
        h2 = _mix(state)
        hz = np.int32(np.uint32(h2 >> _S32))
        iz = np.int64(h2 & _LOW7)
        if abs(hz) < kn[iz]:
            return hz * wn[iz]


@nb.njit(inline="always", cache=True)
def _gauss(key, index, kn, wn, fn):
    """The standard normal number of read ``index`` of stream ``key``."""
    h = _mix(key + (index + np.uint64(1)) * _GAMMA)
    hz = np.int32(np.uint32(h >> _S32))
    iz = np.int64(h & _LOW7)
    if abs(hz) < kn[iz]:
        return hz * wn[iz]
    return _gauss_slow(h, kn, wn, fn)


@nb.njit(parallel=True, cache=True)
def _gaussians(key, start, out, kn, wn, fn):
    for i in nb.prange(out.shape[0]):
        out[i] = _gauss(key, np.uint64(start + i), kn, wn, fn)


def gaussians(key: int, start: int, count: int) -> np.ndarray:
    """Standard normals number ``start .. start+count-1`` of stream ``key`` (float64)."""
    out = np.empty(count, dtype=np.float64)
    _gaussians(np.uint64(key), np.int64(start), out, _KN, _WN, _FN)
    return out


@nb.njit(parallel=True, cache=True)
def _reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, indep_var, scoef, col_out,
                 ucoef, full, has_unit, noise_mode, key, row0, out, sat, kn, wn, fn):
    m_total = xu.shape[0]
    g_total, c_total, r_total = cells.shape          # cells transposed: (G, C, R)
    t_total = shifts.shape[0]
    n_total = out.shape[1]
    top = full + 0.5
    for m in nb.prange(m_total):
        a = np.empty(r_total, dtype=np.float64)
        active = np.empty(r_total, dtype=np.int64)
        nsat = 0
        for g in range(g_total):
            for t in range(t_total):
                n_act = 0
                ones = 0.0
                squares = 0.0
                for r in range(r_total):
                    v = (xu[m, rowidx[g, r]] >> shifts[t]) & dmasks[t]
                    if v != 0:
                        a[n_act] = v
                        active[n_act] = r
                        n_act += 1
                        ones += v
                        squares += v * v
                if n_act == 0:
                    continue              # zero-skipped: no read, value 0, no noise
                w = cw[t]
                base = ((np.uint64(row0 + m) * np.uint64(g_total) + np.uint64(g))
                        * np.uint64(t_total) + np.uint64(t)) * np.uint64(c_total)
                sd_indep = math.sqrt(squares * indep_var)
                for c in range(c_total):
                    s = 0.0
                    var = 0.0
                    for j in range(n_act):
                        r = active[j]
                        s += a[j] * cells[g, c, r]
                        if noise_mode == 1:
                            var += a[j] * a[j] * nvar[g, c, r]
                    if noise_mode == 1:
                        s += math.sqrt(var) * _gauss(key, base + np.uint64(c), kn, wn, fn)
                    elif noise_mode == 2:
                        s += sd_indep * _gauss(key, base + np.uint64(c), kn, wn, fn)
                    if s > top:
                        nsat += 1
                        code = full
                    else:
                        code = min(max(np.rint(s), 0.0), full)
                    out[m, col_out[c]] += w * scoef[g, c] * code
                if has_unit:
                    u = ones
                    if u > full:
                        nsat += 1
                        u = full
                    for n in range(n_total):
                        out[m, n] += w * ucoef[g, n] * u
        sat[m] = nsat


def reads_fused(xu, rowidx, shifts, dmasks, cw, cells_t, nvar_t, indep_var, scoef, col_out,
                ucoef, full, has_unit, noise_mode, key, row0, out, sat) -> None:
    """All reads of a layer for rows ``xu`` (M, K+1) of unsigned input bit patterns (the
    last column zero), accumulated into ``out`` (M, N) float64; saturations into ``sat``."""
    _reads_fused(xu, rowidx, shifts, dmasks, cw, cells_t, nvar_t, float(indep_var), scoef,
                 col_out, ucoef, float(full), bool(has_unit), int(noise_mode), np.uint64(key),
                 np.int64(row0), out, sat, _KN, _WN, _FN)


@nb.njit(parallel=True, cache=True)
def _bit_planes(xu, rowidx, shifts, dmasks, a, ones, squares):
    m_total = xu.shape[0]
    g_total, r_total = rowidx.shape
    t_total = shifts.shape[0]
    for m in nb.prange(m_total):
        for g in range(g_total):
            for t in range(t_total):
                row = m * t_total + t
                o = 0.0
                q = 0.0
                for r in range(r_total):
                    v = (xu[m, rowidx[g, r]] >> shifts[t]) & dmasks[t]
                    a[g, row, r] = v
                    o += v
                    q += v * v
                ones[g, row] = o
                squares[g, row] = q


def bit_planes(xu, rowidx, shifts, dmasks, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DAC inputs ``a`` (G, M*T, R) in sample-major row order (row ``m*T + t``), and per
    read the input sum (the unit column) and the sum of squares (independent noise)."""
    g_total, r_total = rowidx.shape
    rows = xu.shape[0] * shifts.shape[0]
    a = np.empty((g_total, rows, r_total), dtype=dtype)
    ones = np.empty((g_total, rows), dtype=np.float64)
    squares = np.empty((g_total, rows), dtype=np.float64)
    _bit_planes(xu, rowidx, shifts, dmasks, a, ones, squares)
    return a, ones, squares


@nb.njit(parallel=True, cache=True)
def _reads_post(sums, c_total, ones, squares, cw, indep_var, scoef, col_out, ucoef, full,
                has_unit, noise_mode, key, row0, out, sat, kn, wn, fn):
    g_total = sums.shape[0]
    t_total = cw.shape[0]
    m_total = out.shape[0]
    n_total = out.shape[1]
    top = full + 0.5
    for m in nb.prange(m_total):
        nsat = 0
        for g in range(g_total):
            for t in range(t_total):
                row = m * t_total + t
                o = ones[g, row]
                if o == 0.0:
                    continue              # all inputs zero: the sums are exactly zero
                w = cw[t]
                base = ((np.uint64(row0 + m) * np.uint64(g_total) + np.uint64(g))
                        * np.uint64(t_total) + np.uint64(t)) * np.uint64(c_total)
                sd_indep = math.sqrt(squares[g, row] * indep_var)
                for c in range(c_total):
                    s = np.float64(sums[g, row, c])
                    if noise_mode == 1:
                        var = np.float64(sums[g, row, c_total + c])
                        if var > 0.0:
                            s += math.sqrt(var) * _gauss(key, base + np.uint64(c), kn, wn, fn)
                    elif noise_mode == 2:
                        s += sd_indep * _gauss(key, base + np.uint64(c), kn, wn, fn)
                    if s > top:
                        nsat += 1
                        code = full
                    else:
                        code = min(max(np.rint(s), 0.0), full)
                    out[m, col_out[c]] += w * scoef[g, c] * code
                if has_unit:
                    u = o
                    if u > full:
                        nsat += 1
                        u = full
                    for n in range(n_total):
                        out[m, n] += w * ucoef[g, n] * u
        sat[m] = nsat


def reads_post(sums, c_total, ones, squares, cw, indep_var, scoef, col_out, ucoef, full,
               has_unit, noise_mode, key, row0, out, sat) -> None:
    """Noise, ADC and shift-and-add of GEMM results ``sums`` (G, M*T, C or 2C)."""
    _reads_post(sums, int(c_total), ones, squares, cw, float(indep_var), scoef, col_out, ucoef,
                float(full), bool(has_unit), int(noise_mode), np.uint64(key), np.int64(row0),
                out, sat, _KN, _WN, _FN)
