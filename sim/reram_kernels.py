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
(SplitMix64's finalizer, which passes BigCrush on counters; one 64-bit hash per pair of
consecutive reads) and the pair's 64 bits become two independent standard normals by the
Box-Muller transform, in float32 with branch-free polynomial ``log``, ``sin`` and ``cos``
(Cephes' single-precision minimax polynomials, about one ulp) so that whole rows of
columns are drawn with SIMD instructions. A read's noise is thus a pure function of the
seed and of which read it is, so results do not depend on batch chunking, the memory
budget or the number of threads. Every row of the output is accumulated in a fixed order
by one thread (``prange`` over sample rows), so the arithmetic is also thread-count
independent. (The radius uses 31 bits: the Gaussian is exact in distribution out to
6.6 standard deviations, beyond which lies a probability of 4e-11.)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["bit_planes", "gaussians", "reads_fused", "reads_post", "stream_key"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S33 = (np.uint64(s) for s in (30, 27, 31, 33))
_ONE64 = np.uint64(1)
_LOW32 = np.uint64(0xFFFFFFFF)
# Kernels that draw noise are compiled with FMA contraction only (no reassociation, no
# approximate functions): the same code, hence the same numbers, on every row and thread.
_FASTMATH = {"contract"}
_I = np.int32
_U = np.uint32
_F = np.float32

# float32 constants (numba keeps a global's own type, so float32 arithmetic stays float32)
_HALF, _ONE, _MINUS_TWO = _F(0.5), _F(1.0), _F(-2.0)
_TWO_M31, _TWO_M24 = _F(2.0**-31), _F(2.0**-24)
_SQRT_HALF, _HALF_PI = _F(0.70710678118654752), _F(math.pi / 2)
# Cephes logf: log(1 + x) = x - x**2/2 + x**3 P(x) for sqrt(1/2) <= 1 + x < sqrt(2)
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8 = (_F(v) for v in (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))
_LN2_LO, _LN2_HI = _F(-2.12194440e-4), _F(0.693359375)
# Cephes sinf / cosf on |x| <= pi/4
_SIN1, _SIN2, _SIN3 = _F(-1.9515295891e-4), _F(8.3321608736e-3), _F(-1.6666654611e-1)
_COS1, _COS2, _COS3 = _F(2.443315711809948e-5), _F(-1.388731625493765e-3), \
    _F(4.166664568298827e-2)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if bits.bitwidth != 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_of_float(typingctx, x):
    """The int32 bit pattern of float32 ``x``."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


def stream_key(*words: int) -> int:
    """A 64-bit stream key from integers (seed, layer, purpose): SeedSequence's mixing."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0])


@nb.njit(inline="always", cache=True)
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@nb.njit(inline="always", cache=True)
def _pair_bits(key, pair):
    """The 64 random bits of reads ``2 * pair`` and ``2 * pair + 1`` of stream ``key``."""
    return _mix(key + (pair + _ONE64) * _GAMMA)


@nb.njit(inline="always", cache=True)
def _box_muller(high, w):
    """Two independent standard normals (float32) from 63 random bits: radius
    ``sqrt(-2 log u)`` from ``high`` (31 bits, int32), angle from ``w`` (uint32: 2 bits of
    quadrant, 24 bits within it). Branch-free, so loops over columns vectorize."""
    u = (_F(high) + _HALF) * _TWO_M31                          # in (0, 1]
    bits = _bits_of_float(u)
    e = _I(_I(bits >> _I(23)) - _I(126))                        # u = m * 2**e, m in [1/2, 1)
    m = _float_from_bits(_I(_I(bits & _I(0x7FFFFF)) | _I(0x3F000000)))
    low = m < _SQRT_HALF
    x = (m + m if low else m) - _ONE
    ef = _F(_I(e - _I(low)))
    xx = x * x
    x4 = xx * xx                                                # Estrin's scheme
    poly = (_P0 * (x4 * x4) + x4 * ((_P1 * x + _P2) * xx + (_P3 * x + _P4))
            + ((_P5 * x + _P6) * xx + (_P7 * x + _P8)))
    log_u = x + (x * xx * poly + ef * _LN2_LO - _HALF * xx) + ef * _LN2_HI
    r = _F(math.sqrt(_MINUS_TWO * log_u))
    quadrant = _I(w >> _U(30))
    a = ((_F(_I(_U(w >> _U(6)) & _U(0xFFFFFF))) + _HALF) * _TWO_M24 - _HALF) * _HALF_PI
    a2 = a * a
    sin_a = a + a * a2 * ((_SIN1 * a2 + _SIN2) * a2 + _SIN3)
    cos_a = _ONE - _HALF * a2 + a2 * a2 * ((_COS1 * a2 + _COS2) * a2 + _COS3)
    # rotate (cos a, sin a) by quadrant * pi/2
    odd = (quadrant & 1) != 0
    c = sin_a if odd else cos_a
    s = cos_a if odd else sin_a
    if ((quadrant ^ (quadrant >> 1)) & 1) != 0:
        c = -c
    if (quadrant >> 1) != 0:
        s = -s
    return r * c, r * s


@nb.njit(inline="always", cache=True)
def _normals(key, base, z, high, low):
    """``z[c]`` = the standard normal of read ``base + c`` of stream ``key``, for all of
    ``z``. Read ``2j + i`` is normal ``i`` of pair ``j``'s Box-Muller transform; the hashes
    (64-bit lanes) and the transforms (32-bit lanes) run in separate loops so that each
    vectorizes at its own width. ``high`` (int32) and ``low`` (uint32): scratch, at least
    ``len(z) // 2 + 1`` long."""
    count = z.shape[0]
    first = base >> _ONE64
    c0 = np.int64(base & _ONE64)                 # 1: the first read is its pair's second
    pairs = (count + c0 + 1) >> 1
    for p in range(pairs):
        h = _pair_bits(key, first + np.uint64(p))
        high[p] = _I(h >> _S33)
        low[p] = _U(h & _LOW32)
    inner = (count - c0) >> 1                    # pairs wholly inside z
    for p in range(inner):
        z0, z1 = _box_muller(high[c0 + p], low[c0 + p])
        z[c0 + 2 * p] = z0
        z[c0 + 2 * p + 1] = z1
    if c0:
        z[0] = _box_muller(high[0], low[0])[1]
    last = c0 + 2 * inner
    if last < count:
        z[last] = _box_muller(high[pairs - 1], low[pairs - 1])[0]


@nb.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _gaussians(key, start, out, block):
    n_blocks = -(-out.shape[0] // block)
    for b in nb.prange(n_blocks):
        lo = b * block
        hi = min(out.shape[0], lo + block)
        high = np.empty(block // 2 + 1, dtype=np.int32)
        low = np.empty(block // 2 + 1, dtype=np.uint32)
        _normals(key, np.uint64(start + lo), out[lo:hi], high, low)


def gaussians(key: int, start: int, count: int, block: int = 4096) -> np.ndarray:
    """Standard normals number ``start .. start+count-1`` of stream ``key`` (float32),
    computed in blocks of ``block`` reads (the kernels' code; any block gives the same
    numbers)."""
    out = np.empty(count, dtype=np.float32)
    _gaussians(np.uint64(key), np.int64(start), out, int(block))
    return out


@nb.njit(inline="always", cache=True)
def _add_noise(s, sd, z, key, base, high, low):
    # One Gaussian per read: s[c] += sd[c] * z(base + c).
    _normals(key, base, z, high, low)
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


@nb.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, indep_var, scoef, per, ucoef,
                 full, has_unit, noise_mode, key, row0, step, out, sat):
    m_total = xu.shape[0]
    g_total, r_total, c_total = cells.shape          # (G, R, C), C contiguous
    t_total = shifts.shape[0]
    n_total = out.shape[1]
    top = full + 0.5
    for m in nb.prange(m_total):
        av = np.empty(r_total, dtype=cells.dtype)
        active = np.empty(r_total, dtype=np.int64)
        s = np.empty(c_total, dtype=cells.dtype)
        sd = np.empty(c_total, dtype=cells.dtype)
        z = np.empty(c_total, dtype=np.float32)
        high = np.empty(c_total // 2 + 1, dtype=np.int32)
        low = np.empty(c_total // 2 + 1, dtype=np.uint32)
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
                    _add_noise(s, sd, z, key, base, high, low)
                nsat += _convert_accumulate(s, w, scoef[g], acc, full, top, step[t])
                if has_unit:
                    u, us = _unit_code(ones, full, step[t])
                    nsat += us
                    for n in range(n_total):
                        unit_acc[n] += w * ucoef[g, n] * u
        _finish_row(acc, per, unit_acc, out[m])
        sat[m] = nsat


def _cycle_steps(step, cw) -> np.ndarray:
    """The ADC step of each input cycle (a scalar: the same for all), float64 (T,)."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(step, dtype=np.float64),
                                                (len(cw),)))


def reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, indep_var, scoef, per, ucoef,
                full, has_unit, noise_mode, key, row0, out, sat, step=1.0) -> None:
    """All reads of a layer for rows ``xu`` (M, K+1) of unsigned input bit patterns (the
    last column zero), accumulated into ``out`` (M, N) float64; saturations into ``sat``."""
    _reads_fused(xu, rowidx, shifts, dmasks, cw, cells, nvar, float(indep_var), scoef,
                 int(per), ucoef, float(full), bool(has_unit), int(noise_mode), np.uint64(key),
                 np.int64(row0), _cycle_steps(step, cw), out, sat)


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


@nb.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _reads_post(sums, c_total, ones, squares, cw, indep_var, scoef, per, ucoef, full,
                has_unit, noise_mode, key, row0, step, out, sat):
    g_total = sums.shape[0]
    t_total = cw.shape[0]
    m_total = out.shape[0]
    n_total = out.shape[1]
    top = full + 0.5
    zero = sums.dtype.type(0)
    for m in nb.prange(m_total):
        s = np.empty(c_total, dtype=sums.dtype)
        sd = np.empty(c_total, dtype=sums.dtype)
        z = np.empty(c_total, dtype=np.float32)
        high = np.empty(c_total // 2 + 1, dtype=np.int32)
        low = np.empty(c_total // 2 + 1, dtype=np.uint32)
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
                            sd[c] = math.sqrt(max(sums[g, row, c_total + c], zero))
                    else:
                        sd[:] = math.sqrt(squares[g, row] * indep_var)
                    _add_noise(s, sd, z, key, base, high, low)
                nsat += _convert_accumulate(s, w, scoef[g], acc, full, top, step[t])
                if has_unit:
                    u, us = _unit_code(o, full, step[t])
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
                _cycle_steps(step, cw), out, sat)
