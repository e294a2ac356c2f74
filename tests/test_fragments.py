import numpy as np
import pytest

from chipforge.sim.fragments import (
    FragmentOrder,
    check_polarized,
    expand_signs,
    fragment_sign_rule,
    fragment_view,
    num_fragments,
    polarize,
    row_order,
)


def test_row_orders_of_a_conv_weight_are_the_documented_walks():
    shape = (5, 2, 2, 3)            # O, C, kh, kw; PyTorch flatten index k = c*6 + h*3 + w
    k = lambda c, h, w: c * 6 + h * 3 + w  # noqa: E731
    assert list(row_order(shape, "w-major")) == list(range(12))
    assert list(row_order(shape, FragmentOrder.H_MAJOR)) == [
        k(c, h, w) for c in range(2) for w in range(3) for h in range(2)]
    assert list(row_order(shape, "c-major")) == [
        k(c, h, w) for h in range(2) for w in range(3) for c in range(2)]
    for order in FragmentOrder:       # every order is a permutation; linear: identity
        assert sorted(row_order(shape, order)) == list(range(12))
        assert list(row_order((4, 7), order)) == list(range(7))


def test_fragment_view_groups_consecutive_crossbar_rows_and_pads_the_last():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2, 3, 3))                 # K = 18 -> 3 fragments of 8
    view = fragment_view(w, 8, "c-major")
    assert view.shape == (3, num_fragments(w.shape, 8), 8) == (3, 3, 8)
    rows = w.reshape(3, -1)[:, row_order(w.shape, "c-major")]
    np.testing.assert_array_equal(view.reshape(3, -1)[:, :18], rows)
    assert not view[:, 2, 2:].any()


def test_sign_rule_projection_and_expanded_signs_agree():
    rng = np.random.default_rng(1)
    for shape, order in [((4, 3, 3, 3), "w-major"), ((4, 3, 3, 3), "h-major"),
                         ((4, 3, 3, 3), "c-major"), ((6, 20), "w-major")]:
        w = rng.normal(size=shape)
        signs = fragment_sign_rule(w, 4, order)
        sums = fragment_view(w, 4, order).sum(axis=2)
        np.testing.assert_array_equal(signs, np.where(sums >= 0, 1, -1))
        p = polarize(w, signs, 4, order)
        assert check_polarized(p, signs, 4, order) == 0
        assert check_polarized(w, signs, 4, order) > 0
        per_weight = expand_signs(shape, signs, 4, order)
        # the Euclidean projection: keep entries of the fragment's sign, zero the others
        np.testing.assert_array_equal(p, np.where(w * per_weight >= 0, w, 0.0))
        np.testing.assert_array_equal(polarize(p, signs, 4, order), p)   # idempotent
    assert fragment_sign_rule(np.zeros((1, 4)), 4, "w-major")[0, 0] == 1   # sum 0 -> '+'


def test_bad_fragment_inputs_are_rejected():
    with pytest.raises(ValueError, match="fragment order must be one of"):
        row_order((2, 2, 3, 3), "z-major")
    with pytest.raises(ValueError, match="fragment_size must be a positive integer"):
        fragment_view(np.zeros((2, 8)), 0, "w-major")
    with pytest.raises(ValueError, match="need"):
        polarize(np.zeros((2, 8)), np.ones((2, 3)), 4, "w-major")
