"""FORMS fragments: how a layer's weights are cut into sign-sharing groups of crossbar rows.

FORMS (Yuan et al., ISCA'21, papers.md §1.1) maps ``m`` consecutive weights of one output
channel onto ``m`` rows of one crossbar column: a *fragment*. After polarization all
non-zero weights of a fragment share one sign, so the crossbar stores magnitudes and a
digital sign bit per fragment decides whether the fragment's ADC result is added or
subtracted.

Row layout (the contract between the compression passes and the crossbar placement):

- The executor's weight matrix is ``W2 = weight.reshape(out, -1).T`` of shape (K, N), with
  ``K = C * kh * kw`` for a conv weight (O, C, kh, kw) and row index
  ``k = c * kh * kw + h * kw + w`` (PyTorch's flatten order, the order of
  :func:`chipforge.sim.executor.im2col`). Column ``n`` is output channel ``n``.
- A fragment *order* permutes the K rows once, globally (weights and their inputs move
  together, so no index hardware is needed). :func:`row_order` returns ``perm`` such that
  crossbar row ``r`` holds matrix row ``perm[r]``:

  ============ ============================== =========================================
  order        row walk (slowest ... fastest)  consecutive rows of a fragment share
  ============ ============================== =========================================
  ``W_MAJOR``  c, h, w   (identity)            channel and kernel row; w varies fastest
  ``H_MAJOR``  c, w, h                         channel and kernel column; h fastest
  ``C_MAJOR``  h, w, c                         kernel position; c (input channel) fastest
  ============ ============================== =========================================

  For ``LINEAR`` weights (out, in) every order is the identity: row ``r`` is input ``r``.
- Fragment ``f`` of column ``n`` is crossbar rows ``f*m .. min((f+1)*m, K) - 1`` of that
  column (the last fragment is shorter when ``m`` does not divide K). Fragment signs are
  stored as an int8 array of shape (out, ceil(K / m)) with values +1 / -1 in the node's
  params ``"fragment_signs"``, with attrs ``"fragment_size"`` (m) and ``"fragment_order"``
  (the :class:`FragmentOrder` value).
- Grouped and depthwise convolutions (``groups`` = G > 1) are placed as one block-diagonal
  matrix (:func:`chipforge.sim.executor.block_diagonal_weights`): group g's K_g = C/G * kh
  * kw rows at g*K_g.., zeros elsewhere, rows in the identity order (the fragment order
  does not apply). Fragment ``f`` of output ``n`` then covers rows f*m.. of that matrix,
  so signs have shape (out, ceil(G * K_g / m)); the functions below take ``groups``.
- Sign rule (FORMS Eq. 2): ``+1`` if the fragment's weights sum to >= 0, else ``-1``.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["FRAGMENT_SIZES", "FragmentOrder", "check_polarized", "expand_signs",
           "fragment_sign_rule", "fragment_view", "num_fragments", "polarize", "row_order"]

FRAGMENT_SIZES = (4, 8, 16)
"""Fragment sizes studied by FORMS (8 is its default); other positive sizes are allowed."""


class FragmentOrder(enum.Enum):
    """Which weight dimension varies fastest along a fragment (FORMS 'polarization direction')."""

    W_MAJOR = "w-major"
    H_MAJOR = "h-major"
    C_MAJOR = "c-major"


def _order(order: FragmentOrder | str) -> FragmentOrder:
    try:
        return FragmentOrder(order)
    except ValueError:
        raise ValueError(f"fragment order must be one of "
                         f"{', '.join(o.value for o in FragmentOrder)}, not {order!r}") from None


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"fragment_size must be a positive integer, not {size!r}")
    return int(size)


def row_order(weight_shape: tuple[int, ...], order: FragmentOrder | str) -> np.ndarray:
    """Permutation ``perm`` (K,) so that crossbar row ``r`` holds weight-matrix row ``perm[r]``."""
    order = _order(order)
    if len(weight_shape) == 2:
        return np.arange(weight_shape[1])
    if len(weight_shape) != 4:
        raise ValueError(f"weights must be 2-D (linear) or 4-D (conv), not shape {weight_shape}")
    _, c, kh, kw = weight_shape
    k = np.arange(c * kh * kw).reshape(c, kh, kw)       # k[c, h, w] = PyTorch flatten index
    match order:
        case FragmentOrder.W_MAJOR:
            return k.reshape(-1)
        case FragmentOrder.H_MAJOR:
            return k.transpose(0, 2, 1).reshape(-1)
        case FragmentOrder.C_MAJOR:
            return k.transpose(1, 2, 0).reshape(-1)
    raise AssertionError(order)


def num_fragments(weight_shape: tuple[int, ...], size: int, groups: int = 1) -> int:
    k = int(np.prod(weight_shape[1:])) * int(groups)
    return -(-k // _check_size(size))


def _block_rows(weight: np.ndarray, groups: int) -> np.ndarray:
    """(out, G * K_g): each output's weights in its group's rows of the block-diagonal
    matrix, zeros elsewhere."""
    out_ch = weight.shape[0]
    per, k_g = out_ch // groups, int(np.prod(weight.shape[1:]))
    dense = np.zeros((out_ch, groups * k_g), dtype=weight.dtype)
    for g in range(groups):
        dense[g * per:(g + 1) * per, g * k_g:(g + 1) * k_g] = \
            weight[g * per:(g + 1) * per].reshape(per, k_g)
    return dense


def _from_block_rows(dense: np.ndarray, weight_shape: tuple[int, ...],
                     groups: int) -> np.ndarray:
    out_ch = weight_shape[0]
    per, k_g = out_ch // groups, int(np.prod(weight_shape[1:]))
    out = np.empty((out_ch, k_g), dtype=dense.dtype)
    for g in range(groups):
        out[g * per:(g + 1) * per] = dense[g * per:(g + 1) * per, g * k_g:(g + 1) * k_g]
    return out.reshape(weight_shape)


def fragment_view(weight: np.ndarray, size: int, order: FragmentOrder | str,
                  groups: int = 1) -> np.ndarray:
    """Weights as (out, n_fragments, size), zero-padded at the end of the last fragment."""
    size = _check_size(size)
    if groups > 1:
        return fragment_view(_block_rows(np.asarray(weight), groups), size, "w-major")
    w2 = weight.reshape(weight.shape[0], -1)[:, row_order(weight.shape, order)]
    nf = num_fragments(weight.shape, size)
    pad = nf * size - w2.shape[1]
    if pad:
        w2 = np.concatenate([w2, np.zeros((w2.shape[0], pad), dtype=w2.dtype)], axis=1)
    return w2.reshape(w2.shape[0], nf, size)


def _from_view(view: np.ndarray, weight_shape: tuple[int, ...],
               order: FragmentOrder | str, groups: int = 1) -> np.ndarray:
    if groups > 1:
        k = int(np.prod(weight_shape[1:])) * groups
        dense = view.reshape(view.shape[0], -1)[:, :k]
        return _from_block_rows(dense, tuple(weight_shape), groups)
    k = int(np.prod(weight_shape[1:]))
    rows = view.reshape(view.shape[0], -1)[:, :k]
    out = np.empty_like(rows)
    out[:, row_order(weight_shape, order)] = rows
    return out.reshape(weight_shape)


def fragment_sign_rule(weight: np.ndarray, size: int, order: FragmentOrder | str,
                       groups: int = 1) -> np.ndarray:
    """FORMS Eq. 2: +1 where a fragment's weights sum to >= 0, else -1; int8 (out, nf)."""
    sums = fragment_view(np.asarray(weight, dtype=np.float64), size, order,
                         groups).sum(axis=2)
    return np.where(sums >= 0, 1, -1).astype(np.int8)


def polarize(weight: np.ndarray, signs: np.ndarray, size: int,
             order: FragmentOrder | str, groups: int = 1) -> np.ndarray:
    """Euclidean projection onto 'every fragment has the sign ``signs``': zero the weights
    of the opposite sign (the nearest point of the polarized set, coordinate by coordinate)."""
    view = fragment_view(weight, size, order, groups)
    signs = np.asarray(signs)
    if signs.shape != view.shape[:2]:
        raise ValueError(f"fragment signs have shape {signs.shape}; weights of shape "
                         f"{weight.shape} with fragment size {size} need {view.shape[:2]}")
    keep = view * signs[:, :, None] >= 0
    return _from_view(np.where(keep, view, 0), weight.shape, order,
                      groups).astype(weight.dtype)


def check_polarized(weight: np.ndarray, signs: np.ndarray, size: int,
                    order: FragmentOrder | str, groups: int = 1) -> int:
    """Number of non-zero weights whose sign disagrees with their fragment's sign (0 = ok)."""
    view = fragment_view(weight, size, order, groups)
    return int((view * np.asarray(signs)[:, :, None] < 0).sum())


def expand_signs(weight_shape: tuple[int, ...], signs: np.ndarray, size: int,
                 order: FragmentOrder | str, groups: int = 1) -> np.ndarray:
    """Each weight's fragment sign (+1 / -1), as an int8 array of ``weight_shape``."""
    size = _check_size(size)
    if groups > 1:
        dense_shape = (weight_shape[0], int(np.prod(weight_shape[1:])) * groups)
        return _from_block_rows(expand_signs(dense_shape, signs, size, "w-major"),
                                tuple(weight_shape), groups)
    k = int(np.prod(weight_shape[1:]))
    signs = np.asarray(signs)
    nf = num_fragments(weight_shape, size)
    if signs.shape != (weight_shape[0], nf):
        raise ValueError(f"fragment signs have shape {signs.shape}; weights of shape "
                         f"{weight_shape} with fragment size {size} need {(weight_shape[0], nf)}")
    rows = np.repeat(signs, size, axis=1)[:, :k]
    out = np.empty_like(rows)
    out[:, row_order(weight_shape, order)] = rows
    return out.reshape(weight_shape).astype(np.int8)
