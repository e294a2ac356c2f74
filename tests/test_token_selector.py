"""The fixed-point token selector reference (chipforge.sim.ref.token_selector) against the
8-bit engine's selector on real digits images, its formats, and bad input."""

import numpy as np
import pytest

from chipforge.config import VIT_DIGITS_KEEP60_SELECTOR0, TokenSelectorConfig
from chipforge.sim.ref.token_selector import (
    SelectorWeights,
    head_weights,
    output_beats,
    select_tokens,
)


@pytest.fixture(scope="module")
def keep60_cases():
    from chipforge.verify.selector_case import selector_cases
    from chipforge.zoo.data import digits

    data = digits(8)
    return selector_cases("vit-digits-keep60", data.x_test[:40], data.x_train[:256])


def _assert_reference_equals_engine(case) -> int:
    """Per image and token of ``case``, the reference (block references, token by token)
    keeps exactly the tokens the vectorized engine keeps, with the same scores and package
    token; returns how many images have a package."""
    packages = 0
    for i in range(len(case.h)):
        out = select_tokens(case.h[i], case.x[i], case.force[i], case.weights, case.cfg)
        scored = ~case.force[i]
        assert np.array_equal(out.scores[scored], case.engine_scores[i][scored])
        assert np.array_equal(out.mask, case.engine_mask[i]), (case.selector, i)
        if case.engine_package[i] is None:
            assert out.package is None
        else:
            packages += 1
            assert np.array_equal(out.package, case.engine_package[i]), (case.selector, i)
    kept = np.mean([m[~f].mean() for m, f in zip(case.engine_mask, case.force, strict=True)])
    assert 0.3 < kept < 0.95, f"selector {case.selector} keeps {kept:.0%}: a trivial case"
    return packages


def test_reference_equals_the_engine_on_real_images(keep60_cases):
    """The reference keeps what the 8-bit engine keeps, on 40 real images, both selectors."""
    assert len(keep60_cases) == 2
    assert sum(_assert_reference_equals_engine(case) for case in keep60_cases) >= 60


def test_centered_reference_equals_the_engine(keep60_cases):
    """vit-digits-keep60 with its selectors switched to centered (the same weights, the
    formats calibrated for it), on 20 real images: the reference (centering on the image's
    live tokens, then the block references) keeps exactly what the 8-bit engine keeps; and
    centering changes the decisions (the case is not the uncentered one)."""
    from chipforge.verify.selector_case import selector_cases
    from chipforge.zoo.data import digits

    data = digits(8)
    centered = selector_cases("vit-digits-keep60", data.x_test[:20], data.x_train[:256],
                              center=True)
    assert [c.cfg.center for c in centered] == [True, True]
    for case in centered:
        _assert_reference_equals_engine(case)
    changed = sum(not np.array_equal(a, b) for a, b in zip(
        centered[0].engine_mask, keep60_cases[0].engine_mask[:20], strict=True))
    assert changed >= 5, f"centering changed the first selector's mask on {changed} images"


def test_package_is_the_score_weighted_mean_of_the_pruned_tokens(keep60_cases):
    case = keep60_cases[0]
    for i in range(5):
        out = select_tokens(case.h[i], case.x[i], case.force[i], case.weights, case.cfg)
        pruned = ~out.mask
        s = out.scores[pruned].astype(float)
        mean = (s[:, None] * case.x[i][pruned]).sum(0) / s.sum()
        assert np.abs(out.package - mean).max() <= 0.5
        beats = output_beats(out)
        assert len(beats) == out.mask.sum() + 1 and beats[-1]["package"] == 1
        assert beats[-1]["mask"] == sum(1 << t for t in np.flatnonzero(out.mask))


def test_preset_is_vit_digits_keep60_first_selector(keep60_cases):
    """rtl/token-selector is generated from this preset: it must be the model's selector."""
    assert keep60_cases[0].cfg == VIT_DIGITS_KEEP60_SELECTOR0


def test_head_weights_are_the_softmax_in_q07():
    cfg = TokenSelectorConfig()
    for logits in ([0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [3.0, -4.0, 0.0]):
        codes = np.round(np.array(logits) * 32).astype(int)
        a = head_weights(codes, cfg)
        e = np.exp(np.array(logits) - max(logits))
        assert np.abs(a - e / e.sum() * 128).max() <= 2.5
        assert a.sum() <= 128


def test_bad_input_is_one_clear_error():
    cfg = TokenSelectorConfig()
    w = SelectorWeights(np.zeros((8, 16), int), np.zeros(8, int), np.zeros((1, 8), int),
                        np.zeros(1, int), np.zeros(3, int))
    h = np.zeros((40, 48), int)
    with pytest.raises(ValueError, match="1..max_tokens=32"):
        select_tokens(h, h, np.zeros(40, bool), w, cfg)
    with pytest.raises(ValueError, match="16-bit codes"):
        select_tokens(h[:2], h[:2] + 40000, np.zeros(2, bool), w, cfg)
    with pytest.raises(ValueError, match="dim must be a multiple of heads"):
        TokenSelectorConfig(dim=47)


def test_rtl_selector_command_errors(tmp_path, capsys):
    from chipforge.cli import main

    assert main(["rtl", "selector", "--out", str(tmp_path)]) == 2
    assert "needs a MODEL" in capsys.readouterr().err
    assert main(["rtl", "selector", "lenet-digits", "--out", str(tmp_path)]) == 2
    assert "has no token selector" in capsys.readouterr().err
    assert main(["rtl", "selector", "vit-digits-keep60", "--selector", "selector.7",
                 "--out", str(tmp_path)]) == 2
    assert "--selector must be one of selector.0, selector.1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_live_mean_is_the_rounded_mean_of_the_live_tokens():
    """The centered selector's integer mean: within half a code (plus the reciprocal's
    error) of the exact mean of the live tokens only, inside the codes' range, for every
    token count the selector takes."""
    from chipforge.sim.ref.token_selector import live_mean

    rng = np.random.default_rng(0)
    for count in range(1, 33):
        h = rng.integers(-128, 128, size=(50, 32, 6))
        h[0], h[1] = -128, 127                              # the extremes
        live = np.zeros((50, 32), bool)
        live[:, :count] = True
        h[:, count:] = 10**6                                # dead tokens must not count
        m = live_mean(h, live)
        exact = h[:, :count].mean(1)
        assert np.abs(m - exact).max() <= 0.5 + 128 * count * 2 ** -17
        assert m.min() >= -128 and m.max() <= 127
        assert np.array_equal(m[0], np.full(6, -128)) and np.array_equal(m[1], np.full(6, 127))
