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
def _gauss_slow(h, hz, iz, kn, wn, fn):
    # The ziggurat's rare paths (about 2 % of draws): more bits from the same counter.
    state = h
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
        hz = np.int32(np.uint32(_mix(state) >> _S32))
        iz = np.int64(hz & 127)
        if abs(hz) < kn[iz]:
            return hz * wn[iz]


@nb.njit(inline="always", cache=True)
def _hash(key, index):
    """The 64 random bits shared by reads ``2j`` and ``2j + 1`` (``j = index >> 1``)."""
    return _mix(key + ((index >> np.uint64(1)) + np.uint64(1)) * _GAMMA)


@nb.njit(inline="always", cache=True)
def _gauss_from(h, index, kn, wn, fn):
    """The standard normal of read ``index`` from its pair's bits ``h``: the high 32 bits
    for even reads, the low ones for odd reads (Marsaglia-Tsang's RNOR on each word)."""
    shift = (np.uint64(1) - (index & np.uint64(1))) * _S32
    hz = np.int32(np.uint32((h >> shift) & np.uint64(0xFFFFFFFF)))
    iz = np.int64(hz & 127)
    if abs(np.float64(hz)) < kn[iz]:
        return hz * wn[iz]
    return _gauss_slow(h ^ (_M1 * (index & np.uint64(1))), hz, iz, kn, wn, fn)


@nb.njit(inline="always", cache=True)
def _gauss(key, index, kn, wn, fn):
    """The standard normal number of read ``index`` of stream ``key``."""
    return _gauss_from(_hash(key, index), index, kn, wn, fn)


@nb.njit(parallel=True, cache=True)
def _gaussians(key, start, out, kn, wn, fn):
    for i in nb.prange(out.shape[0]):
        out[i] = _gauss(key, np.uint64(start + i), kn, wn, fn)


def gaussians(key: int, start: int, count: int) -> np.ndarray:
    """Standard normals number ``start .. start+count-1`` of stream ``key`` (float64)."""
    out = np.empty(count, dtype=np.float64)
    _gaussians(np.uint64(key), np.int64(start), out, _KN, _WN, _FN)
    return out


@nb.njit(inline="always", cache=True)
def _add_noise(s, sd, z, key, base, kn, wn, fn):
    # One Gaussian per read: s[c] += sd[c] * z(base + c); one hash serves a pair of reads.
    h = np.uint64(0)
    for c in range(s.shape[0]):
        index = base + np.uint64(c)
        if c == 0 or (index & np.uint64(1)) == 0:
            h = _hash(key, index)
        z[c] = _gauss_from(h, index, kn, wn, fn)
    for c in range(s.shape[0]):
        s[c] += sd[c] * z[c]


@nb.njit(inline="always", cache=True)
def _convert_accumulate(s, w, scoef_g, acc, full, top, step):
    # The ADC (steps of ``step`` level units, round, saturate) and the shift-and-add
    # weight, branch-free (vectorizes). step == 1: codes are the integer column sums.
    nsat = 0
    inv = 1.0 / step
    ws = w * step
    for c in range(s.shape[0]):
        x = s[c] * inv
        nsat += x > top
        acc[c] += ws * scoef_g[c] * min(max(np.rint(x), 0.0), full)
    return nsat


@nb.njit(inline="always", cache=True)
def _unit_code(ones, full, step):
    # The unit column through the same ADC: (code in level units, saturated?).
    x = ones / step
    if x > full + 0.5:
        return full * step, 1
    return np.rint(x) * step, 0


@nb.njit(inline="always", cache=True)
def _finish_row(acc, per, unit_acc, out_row):
    for n in range(out_row.shape[0]):
        v = unit_acc[n]
        for p in range(per):
            v += acc[n * per + p]
        out_row[n] += v


@nb.njit(parallel=True, cache=True)
def _reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, indep_var, scoef, per, ucoef,
                 full, has_unit, noise_mode, key, row0, step, out, sat, kn, wn, fn):
    m_total = xu.shape[0]
    g_total, r_total, c_total = cells.shape          # (G, R, C), C contiguous
    t_total = shifts.shape[0]
    n_total = out.shape[1]
    top = full + 0.5
    for m in nb.prange(m_total):
        av = np.empty(r_total, dtype=np.float64)
        active = np.empty(r_total, dtype=np.int64)
        s = np.empty(c_total, dtype=np.float64)
        sd = np.empty(c_total, dtype=np.float64)
        z = np.empty(c_total, dtype=np.float64)
        acc = np.zeros(c_total, dtype=np.float64)
        unit_acc = np.zeros(n_total, dtype=np.float64)
        nsat = 0
        for g in range(g_total):
            for t in range(t_total):
                n_act = 0
                ones = 0.0
                squares = 0.0
                for r in range(r_total):
                    v = (xu[m, rowidx[g, r]] >> shifts[t]) & dmasks[t]
                    if v != 0:
                        av[n_act] = v
                        active[n_act] = r
                        n_act += 1
                        ones += v
                        squares += v * v
                if n_act == 0:
                    continue              # zero-skipped: no read, value 0, no noise
                w = cw[t]
                a0 = av[0]
                r0 = active[0]
                for c in range(c_total):
                    s[c] = a0 * cells[g, r0, c]
                for j in range(1, n_act):
                    aj = av[j]
                    rj = active[j]
                    for c in range(c_total):
                        s[c] += aj * cells[g, rj, c]
                if noise_mode != 0:
                    base = ((np.uint64(row0 + m) * np.uint64(g_total) + np.uint64(g))
                            * np.uint64(t_total) + np.uint64(t)) * np.uint64(c_total)
                    if noise_mode == 1:
                        for c in range(c_total):
                            sd[c] = a0 * a0 * nvar[g, r0, c]
                        for j in range(1, n_act):
                            a2 = av[j] * av[j]
                            rj = active[j]
                            for c in range(c_total):
                                sd[c] += a2 * nvar[g, rj, c]
                        for c in range(c_total):
                            sd[c] = math.sqrt(sd[c])
                    else:
                        sd[:] = math.sqrt(squares * indep_var)
                    _add_noise(s, sd, z, key, base, kn, wn, fn)
                nsat += _convert_accumulate(s, w, scoef[g], acc, full, top, step)
                if has_unit:
                    u, us = _unit_code(ones, full, step)
                    nsat += us
                    for n in range(n_total):
                        unit_acc[n] += w * ucoef[g, n] * u
        _finish_row(acc, per, unit_acc, out[m])
        sat[m] = nsat


def reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, indep_var, scoef, per, ucoef,
                full, has_unit, noise_mode, key, row0, out, sat, step=1.0) -> None:
    """All reads of a layer for rows ``xu`` (M, K+1) of unsigned input bit patterns (the
    last column zero), accumulated into ``out`` (M, N) float64; saturations into ``sat``."""
    _reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, float(indep_var), scoef,
                 int(per), ucoef, float(full), bool(has_unit), int(noise_mode), np.uint64(key),
                 np.int64(row0), float(step), out, sat, _KN, _WN, _FN)


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
def _reads_post(sums, c_total, ones, squares, cw, indep_var, scoef, per, ucoef, full,
                has_unit, noise_mode, key, row0, step, out, sat, kn, wn, fn):
    g_total = sums.shape[0]
    t_total = cw.shape[0]
    m_total = out.shape[0]
    n_total = out.shape[1]
    top = full + 0.5
    for m in nb.prange(m_total):
        s = np.empty(c_total, dtype=np.float64)
        sd = np.empty(c_total, dtype=np.float64)
        z = np.empty(c_total, dtype=np.float64)
        acc = np.zeros(c_total, dtype=np.float64)
        unit_acc = np.zeros(n_total, dtype=np.float64)
        nsat = 0
        for g in range(g_total):
            for t in range(t_total):
                row = m * t_total + t
                o = ones[g, row]
                if o == 0.0:
                    continue              # all inputs zero: the sums are exactly zero
                w = cw[t]
                for c in range(c_total):
                    s[c] = sums[g, row, c]
                if noise_mode != 0:
                    base = ((np.uint64(row0 + m) * np.uint64(g_total) + np.uint64(g))
                            * np.uint64(t_total) + np.uint64(t)) * np.uint64(c_total)
                    if noise_mode == 1:
                        for c in range(c_total):
                            sd[c] = math.sqrt(max(np.float64(sums[g, row, c_total + c]), 0.0))
                    else:
                        sd[:] = math.sqrt(squares[g, row] * indep_var)
                    _add_noise(s, sd, z, key, base, kn, wn, fn)
                nsat += _convert_accumulate(s, w, scoef[g], acc, full, top, step)
                if has_unit:
                    u, us = _unit_code(o, full, step)
                    nsat += us
                    for n in range(n_total):
                        unit_acc[n] += w * ucoef[g, n] * u
        _finish_row(acc, per, unit_acc, out[m])
        sat[m] = nsat


def reads_post(sums, c_total, ones, squares, cw, indep_var, scoef, per, ucoef, full,
               has_unit, noise_mode, key, row0, out, sat, step=1.0) -> None:
    """Noise, ADC and shift-and-add of GEMM results ``sums`` (G, M*T, C or 2C)."""
    _reads_post(sums, int(c_total), ones, squares, cw, float(indep_var), scoef, int(per), ucoef,
                float(full), bool(has_unit), int(noise_mode), np.uint64(key), np.int64(row0),
                float(step), out, sat, _KN, _WN, _FN)
