"""Unit tests of vimodes.classify on constructed draws (no model fitting).

Study truth: slopes (3, -1), weights (.5, .5), noise sd 0.1, N = 100000. With the default
settings the slope tolerance is the floor 0.05 * 4 = 0.2 (5 reference sds = 0.0039 is smaller),
sigma must be within [0.1/1.25, 0.1*1.25], weights within 0.1 of (.5, .5); a collapsed fit needs
its mean slope within 0.1 * 4 = 0.4 of the one-line slope 1 and sigma >= 0.125. Edges are INSIDE.
"""

import math

import numpy as np
import pytest

from vimodes.classify import (
    CENTRE_CLASSES,
    OUTCOME_CLASSES,
    ClassifierSettings,
    Classification,
    TrueParameters,
    assign_draws,
    classify_draws,
    classify_failed,
    one_line_slope,
    reference_slope_sd,
    slope_tolerances,
)

TRUTH = TrueParameters(slopes=(3.0, -1.0), weights=(0.5, 0.5), noise_sd=0.1, n_obs=100_000)
SETTINGS = ClassifierSettings()
TOL = 0.2  # default slope tolerance for TRUTH (floor)


def make_draws(slopes, weights=(0.5, 0.5), sigma=0.1, chains=1, draws=200, jitter=0.0, seed=0):
    """Draws at a point (optionally with Gaussian jitter), shapes (chains, draws, 2)/(chains, draws)."""
    rng = np.random.default_rng(seed)
    s = np.broadcast_to(np.asarray(slopes, float), (chains, draws, 2)).copy()
    w = np.broadcast_to(np.asarray(weights, float), (chains, draws, 2)).copy()
    sg = np.full((chains, draws), float(sigma))
    if jitter:
        s += rng.normal(0, jitter, s.shape)
    return s, w, sg


def classify(slopes, **kw):
    settings = kw.pop("settings", SETTINGS)
    return classify_draws(*make_draws(slopes, **kw), TRUTH, settings)


# ---------------------------------------------------------------- reference sd and tolerances


def test_reference_slope_sd_closed_form():
    ref = reference_slope_sd(TRUTH)
    expected = 0.1 / math.sqrt(100_000 * 0.5 / 3.0)
    np.testing.assert_allclose(ref, [expected, expected], rtol=1e-12)
    assert ref[0] == pytest.approx(0.000775, abs=1e-6)
    unequal = TrueParameters((3.0, -1.0), (0.25, 0.75), 0.1, 1200)
    np.testing.assert_allclose(reference_slope_sd(unequal), 0.1 / np.sqrt(1200 * np.array([0.25, 0.75]) / 3))


def test_tolerance_floor_and_sd_term():
    np.testing.assert_allclose(slope_tolerances(TRUTH), [TOL, TOL])
    # small n: the sd term wins (5 * 0.1 / sqrt(30 * .5 / 3) = 0.2236 > 0.2)
    small = TrueParameters((3.0, -1.0), (0.5, 0.5), 0.1, 30)
    np.testing.assert_allclose(slope_tolerances(small), 5 * 0.1 / math.sqrt(5.0))
    # explicit reference sd
    np.testing.assert_allclose(slope_tolerances(TRUTH, reference_sd=0.1), [0.5, 0.5])


def test_settings_validation():
    with pytest.raises(ValueError):
        ClassifierSettings(slope_tolerance_min_fraction=0.5)
    with pytest.raises(ValueError):
        ClassifierSettings(sigma_ratio_max=1.0)
    with pytest.raises(ValueError):
        ClassifierSettings(span_min_share=0.0)


# ---------------------------------------------------------------- single modes


def test_exact_mode_a_and_b():
    a = classify((3.0, -1.0), jitter=0.001)
    assert a.label == "mode_A" and a.share_mode_A == 1.0 and a.chain_labels == ("mode_A",)
    b = classify((-1.0, 3.0), jitter=0.001)
    assert b.label == "mode_B" and b.share_mode_B == 1.0 and b.chain_labels == ("mode_B",)
    assert a.label in OUTCOME_CLASSES and isinstance(a, Classification)


def test_mode_b_compares_permuted_weights():
    truth = TrueParameters((3.0, -1.0), (0.3, 0.7), 0.1, 100_000)
    ok = classify_draws(*make_draws((-1.0, 3.0), weights=(0.7, 0.3)), truth)
    assert ok.label == "mode_B"
    bad = classify_draws(*make_draws((-1.0, 3.0), weights=(0.3, 0.7)), truth)
    assert bad.label == "not_converged" and "weights" in bad.reason


@pytest.mark.parametrize("offset", [(TOL, 0.0), (-TOL, 0.0), (0.0, TOL), (0.0, -TOL), (TOL, -TOL)])
def test_slope_edge_is_inside(offset):
    slopes = (3.0 + offset[0], -1.0 + offset[1])
    assert classify(slopes, draws=1).label == "mode_A"
    swapped = (slopes[1], slopes[0])
    assert classify(swapped, draws=1).label == "mode_B"


@pytest.mark.parametrize("eps", [1e-6, 1e-3])
def test_just_outside_slope_edge(eps):
    c = classify((3.0 + TOL + eps, -1.0), draws=1)
    assert c.label == "not_converged" and c.share_mode_A == 0.0


def test_sigma_ratio_edges():
    r = SETTINGS.sigma_ratio_max
    assert classify((3.0, -1.0), sigma=0.1 * r).label == "mode_A"  # edge inside
    assert classify((3.0, -1.0), sigma=0.1 / r).label == "mode_A"
    hi = classify((3.0, -1.0), sigma=0.1 * r * (1 + 1e-6))
    assert hi.label == "not_converged" and "sigma" in hi.reason
    assert classify((3.0, -1.0), sigma=0.1 / r * (1 - 1e-6)).label == "not_converged"
    # question's capped sigma ~1 with slopes at the mode: not a mode
    assert classify((3.0, -1.0), sigma=1.0).label == "not_converged"


def test_weight_edges():
    wt = SETTINGS.weight_tolerance
    assert classify((3.0, -1.0), weights=(0.5 + wt, 0.5 - wt)).label == "mode_A"  # edge inside
    out = classify((3.0, -1.0), weights=(0.5 + wt + 1e-6, 0.5 - wt - 1e-6))
    assert out.label == "not_converged" and "weights" in out.reason


def test_weights_inconsistent_is_not_a_mode():
    c = classify((3.0, -1.0), weights=(1 / 3, 2 / 3))
    assert c.label == "not_converged"
    assert c.share_mode_A == 1.0  # slopes are in the basin, the weights are not
    assert "weights" in c.reason


def test_consistency_uses_median_of_assigned_draws():
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    sg[0, :5] = 50.0  # a few wild sigma draws do not move the median
    assert classify_draws(s, w, sg, TRUTH).label == "mode_A"


def test_almost_all_draws_in_one_basin():
    # 92% in A, 8% far away (< span_min_share): still mode_A
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    s[0, :8] = (10.0, 10.0)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "mode_A" and c.share_mode_A == pytest.approx(0.92)
    # exactly 1 - span_min_share (90%) in A: edge inside
    s[0, :10] = (10.0, 10.0)
    assert classify_draws(s, w, sg, TRUTH).label == "mode_A"
    # 89% in A: not converged
    s[0, :11] = (10.0, 10.0)
    assert classify_draws(s, w, sg, TRUTH).label == "not_converged"


# ---------------------------------------------------------------- spanning


def test_two_chains_in_different_modes_is_spanning():
    s, w, sg = make_draws((3.0, -1.0), chains=2, draws=100, jitter=0.001)
    s[1] = s[1][:, ::-1]
    w[1] = w[1][:, ::-1]
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "spanning"
    assert c.chain_labels == ("mode_A", "mode_B")
    assert c.share_mode_A == 0.5 and c.share_mode_B == 0.5


def test_spanning_share_edge():
    # 10 particles in B, 90 in A: both shares >= 0.1 => spanning (edge inside)
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    s[0, :10] = (-1.0, 3.0)
    assert classify_draws(s, w, sg, TRUTH).label == "spanning"
    # 9 in B: 91% in A => mode_A
    s[0, 9] = (3.0, -1.0)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "mode_A" and c.share_mode_B == pytest.approx(0.09)


def test_spanning_requires_consistent_basins():
    s, w, sg = make_draws((3.0, -1.0), chains=2, draws=50)
    s[1] = s[1][:, ::-1]
    sg[1] = 1.0  # chain in mode B with a far too large sigma
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "not_converged" and "basin B" in c.reason
    assert c.chain_labels == ("mode_A", "not_converged")


# ---------------------------------------------------------------- collapsed / not converged


def test_collapsed_at_symmetric_point():
    c = classify((1.0, 1.0), sigma=1.16, jitter=0.01)
    assert c.label == "collapsed" and c.share_collapsed == 1.0
    assert c.chain_labels == ("collapsed",)


def test_wide_approximation_centred_on_the_symmetric_point_is_collapsed():
    # what PyMC's default optimiser leaves after 10000 minibatch steps (measured in the study):
    # centre (1, 1), slope sd ~0.53, sigma ~1.16: only ~80% of draws have a gap below 1
    rng = np.random.default_rng(7)
    s = rng.normal(1.0, 0.53, size=(1, 1000, 2))
    w = np.full_like(s, 0.5)
    sg = np.full((1, 1000), 1.16)
    c = classify_draws(s, w, sg, TRUTH)
    assert 0.5 <= c.share_collapsed < 0.9
    assert c.label == "collapsed" and "symmetric point" in c.reason
    # the same spread with sigma near the truth is not mode averaging
    assert classify_draws(s, w, np.full((1, 1000), 0.12), TRUTH).label == "not_converged"
    # nor is a spread so wide that most draws are outside the collapse band
    wide = rng.normal(1.0, 3.0, size=(1, 1000, 2))
    assert classify_draws(wide, w, sg, TRUTH).label == "not_converged"


def test_collapse_gap_edge():
    gap = SETTINGS.collapse_gap_fraction * 4.0  # 1.0
    assert classify((1.0 + gap / 2, 1.0 - gap / 2), sigma=1.16, draws=1).label == "collapsed"
    assert classify((1.0 + gap / 2 + 1e-6, 1.0 - gap / 2), sigma=1.16, draws=1).label == "not_converged"


def test_far_off_point_is_not_converged():
    c = classify((0.0, 7.0), sigma=0.5)
    assert c.label == "not_converged" and c.share_mode_A == c.share_mode_B == c.share_collapsed == 0.0
    # half way between mode A and the symmetric point
    assert classify((2.0, 0.0), sigma=0.5).label == "not_converged"


def test_mixture_of_mode_and_collapse_is_not_converged():
    s, w, sg = make_draws((3.0, -1.0), chains=4, draws=50)
    s[3] = (1.0, 1.0)
    sg[3] = 1.16
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "not_converged"
    assert c.chain_labels == ("mode_A", "mode_A", "mode_A", "collapsed")
    assert c.share_mode_A == 0.75 and c.share_collapsed == 0.25


def test_question_style_unidentified_slope_not_collapsed():
    # one slope ~1, the other spread over its prior N(0, 2): mostly in no basin
    rng = np.random.default_rng(3)
    s = np.stack([rng.normal(0.96, 0.01, 500), rng.normal(0, 2.0, 500)], axis=-1)[None]
    w = np.broadcast_to([2 / 3, 1 / 3], s.shape)
    sg = np.full(s.shape[:2], 0.995)
    assert classify_draws(s, w, sg, TRUTH).label == "not_converged"


def test_wide_reference_sd_widens_tolerance():
    s = (3.3, -1.0)
    assert classify(s, draws=1).label == "not_converged"
    assert classify_draws(*make_draws(s, draws=1), TRUTH, reference_sd=0.1).label == "mode_A"


def test_overlapping_boxes_pick_nearer_mode():
    # a reference sd so wide that the two boxes overlap (tol 2.5 > half the separation)
    settings = ClassifierSettings(slope_tolerance_sd=1.0)
    pts = np.array([[2.5, -0.5], [1.2, 0.8], [1.0, 1.0], [-0.5, 2.5]])
    codes = assign_draws(pts, TRUTH, settings, reference_sd=2.5)
    # (1.2, 0.8) is inside both boxes but nearer A (and basins take precedence over collapse);
    # (1, 1) is an exact tie => neither basin => collapsed (gap 0)
    assert codes.tolist() == [1, 1, 3, 2]


# ---------------------------------------------------------------- failures and shapes


def test_single_draw():
    c = classify((3.0, -1.0), draws=1)
    assert c.label == "mode_A" and c.chain_labels == ("mode_A",)


def test_nan_draws_fail():
    s, w, sg = make_draws((3.0, -1.0), chains=2, draws=10)
    s[1, 3, 0] = np.nan
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "failed" and "non-finite" in c.reason
    assert c.chain_labels == ("mode_A", "failed")
    assert math.isnan(c.share_mode_A)


@pytest.mark.parametrize("which", ["weights", "sigma"])
def test_inf_in_weights_or_sigma_fails(which):
    s, w, sg = make_draws((3.0, -1.0), draws=10)
    if which == "weights":
        w[0, 0, 1] = np.inf
    else:
        sg[0, 0] = -np.inf
    assert classify_draws(s, w, sg, TRUTH).label == "failed"


def test_empty_arrays_fail():
    c = classify_draws(np.empty((2, 0, 2)), np.empty((2, 0, 2)), np.empty((2, 0)), TRUTH)
    assert c.label == "failed" and c.chain_labels == ("failed", "failed") and "no draws" in c.reason
    c0 = classify_draws(np.empty((0, 5, 2)), np.empty((0, 5, 2)), np.empty((0, 5)), TRUTH)
    assert c0.label == "failed" and c0.chain_labels == ()


def test_classify_failed():
    c = classify_failed("FloatingPointError: NaN occurred in optimization")
    assert c.label == "failed" and "NaN occurred" in c.reason and c.chain_labels == ()
    assert math.isnan(c.share_mode_B)


def test_two_dimensional_input_is_one_chain():
    s, w, sg = make_draws((-1.0, 3.0), draws=5)
    c = classify_draws(s[0], w[0], sg[0], TRUTH)
    assert c.label == "mode_B" and c.chain_labels == ("mode_B",)


def test_shape_errors_raise():
    s, w, sg = make_draws((3.0, -1.0), draws=5)
    with pytest.raises(ValueError):
        classify_draws(s, w[:, :4], sg, TRUTH)
    # fewer model components than the truth (under-fitting) has no classes; more (K = 3 draws on
    # this K = 2 truth) is an over-fitted model since the K generalisation (test_classify_k.py)
    with pytest.raises(ValueError):
        classify_draws(np.zeros((1, 5, 1)), np.zeros((1, 5, 1)), sg, TRUTH)


# ---------------------------------------------------------------- sigma ratio default


def test_default_sigma_ratio_catches_the_normaliser_error():
    assert SETTINGS.sigma_ratio_max == 1.25
    # a likelihood with log sigma where log sigma^2 belongs: optimum ~1.41-1.44x the truth
    for ratio in (1.41, 1.44):
        c = classify((3.0, -1.0), sigma=0.1 * ratio)
        assert c.label == "not_converged" and "sigma" in c.reason
    # a VI fit at a true mode has sigma within a few % of the truth
    for ratio in (0.95, 1.05):
        assert classify((3.0, -1.0), sigma=0.1 * ratio).label == "mode_A"


@pytest.mark.parametrize("slopes, label", [((3.0, -1.0), "mode_A"), ((-1.0, 3.0), "mode_B")])
@pytest.mark.parametrize("direction", [1, -1])
def test_sigma_ratio_edges_at_the_default(slopes, label, direction):
    weights = (0.5, 0.5)
    inside = 0.1 * 1.25 ** direction
    assert classify(slopes, weights=weights, sigma=inside).label == label
    outside = inside * (1 + direction * 1e-6)
    c = classify(slopes, weights=weights, sigma=outside)
    assert c.label == "not_converged" and "sigma" in c.reason


# ---------------------------------------------------------------- centre, mass, minority share


def test_centre_and_minority_of_a_clean_mode():
    c = classify((3.0, -1.0), jitter=0.001)
    assert c.centre_class == "mode_A" and c.centre_mass == 1.0 and c.minority_share == 0.0
    b = classify((-1.0, 3.0), jitter=0.001)
    assert b.centre_class == "mode_B" and b.centre_mass == 1.0
    # the K = 2 centre classes (K > 2 adds mode_single, partial and overfit)
    assert {"mode_A", "mode_B", "symmetric", "elsewhere"} <= set(CENTRE_CLASSES)
    assert c.to_dict()["centre_class"] == "mode_A" and c.to_dict()["minority_share"] == 0.0


def test_on_mode_but_too_wide():
    # centred on mode A with slope sds 0.3: only ~25% of draws within 0.2 of the mode
    rng = np.random.default_rng(11)
    s = np.array([3.0, -1.0]) + rng.normal(0, 0.3, size=(1, 2000, 2))
    w = np.full_like(s, 0.5)
    sg = np.full((1, 2000), 0.1)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "mode_too_wide" and "mode_A basin" in c.reason
    assert c.centre_class == "mode_A"
    assert c.centre_mass == c.share_mode_A == pytest.approx(0.25, abs=0.04)
    assert c.minority_share == 0.0 and c.share_mode_B == 0.0
    # the same in mode B
    b = classify_draws(s[..., ::-1].copy(), w, sg, TRUTH)
    assert b.label == "mode_too_wide" and b.centre_class == "mode_B"
    # centred on the mode and wide, but sigma inconsistent: not converged, naming the check
    bad = classify_draws(s, w, np.full((1, 2000), 0.2), TRUTH)
    assert bad.label == "not_converged" and "sigma" in bad.reason
    assert bad.centre_class == "mode_A"


def test_too_wide_share_edge():
    # 90% in A is a mode (rule 4, edge inside); 89% in A with the rest in no basin: too wide
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    s[0, :10] = (3.5, -1.0)
    assert classify_draws(s, w, sg, TRUTH).label == "mode_A"
    s[0, 10] = (3.5, -1.0)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "mode_too_wide" and c.share_mode_A == pytest.approx(0.89)
    assert c.centre_class == "mode_A" and c.centre_mass == pytest.approx(0.89)


def test_mode_plus_collapsed_chain_is_split_not_wide():
    # >= span_min_share collapsed next to a mode: two places, not one wide approximation
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    s[0, :10] = (1.0, 1.0)
    s[0, 10:12] = (3.5, -1.0)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.centre_class == "mode_A" and c.label == "not_converged"


@pytest.mark.parametrize("minority, label", [(15, "spanning"), (5, "mode_A")])
def test_minority_share(minority, label):
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    s[0, :minority] = (-1.0, 3.0)
    w[0, :minority] = (0.5, 0.5)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == label
    assert c.minority_share == pytest.approx(minority / 100)
    assert c.centre_class == "mode_A" and c.centre_mass == pytest.approx(1 - minority / 100)


def test_minority_share_counts_only_draws_in_a_basin():
    s, w, sg = make_draws((3.0, -1.0), draws=100)
    s[0, :20] = (-1.0, 3.0)
    s[0, 20:40] = (0.0, 7.0)  # in no basin
    c = classify_draws(s, w, sg, TRUTH)
    assert c.minority_share == pytest.approx(20 / 80)
    far = classify((0.0, 7.0))
    assert math.isnan(far.minority_share) and far.centre_class == "elsewhere"
    assert math.isnan(far.centre_mass)


def test_failed_fit_has_no_centre():
    s, w, sg = make_draws((3.0, -1.0), draws=10)
    s[0, 0, 0] = np.nan
    c = classify_draws(s, w, sg, TRUTH)
    assert c.centre_class is None and math.isnan(c.centre_mass) and math.isnan(c.minority_share)
    f = classify_failed("boom")
    assert f.centre_class is None and math.isnan(f.minority_share)


# ---------------------------------------------------------------- collapsed: location and sigma


def test_one_line_slope():
    assert one_line_slope(TRUTH) == pytest.approx(1.0)
    assert one_line_slope(TrueParameters((3.0, -1.0), (0.25, 0.75), 0.1, 100)) == pytest.approx(0.0)


def test_collapsed_at_the_one_line_slope_with_big_sigma():
    c = classify((1.0, 1.0), sigma=1.16, jitter=0.01)
    assert c.label == "collapsed"
    assert c.centre_class == "symmetric" and c.centre_mass == 1.0
    assert math.isnan(c.minority_share)


@pytest.mark.parametrize("level", [-2.0, 3.0, -1.0, 1.5])
def test_equal_slopes_at_a_wrong_location_are_not_collapsed(level):
    c = classify((level, level), sigma=1.16, jitter=0.01)
    assert c.share_collapsed == 1.0  # the draw-level band looks at the gap only
    assert c.label == "not_converged"
    assert "one-line slope" in c.reason and "not mode averaging" in c.reason
    assert c.centre_class == "elsewhere"


def test_collapse_location_edge():
    tol = SETTINGS.collapse_location_fraction * 4.0  # 0.4
    assert classify((1.0 + tol, 1.0 + tol), sigma=1.16, draws=1).label == "collapsed"
    assert classify((1.0 - tol, 1.0 - tol), sigma=1.16, draws=1).label == "collapsed"
    assert classify((1.0 + tol + 1e-6,) * 2, sigma=1.16, draws=1).label == "not_converged"
    assert classify((1.0 - tol - 1e-6,) * 2, sigma=1.16, draws=1).label == "not_converged"


def test_collapsed_needs_a_large_sigma():
    r = SETTINGS.sigma_ratio_max
    assert classify((1.0, 1.0), sigma=0.1 * r).label == "collapsed"  # edge inside
    small = classify((1.0, 1.0), sigma=0.1 * r * (1 - 1e-6))
    assert small.label == "not_converged" and "sigma" in small.reason
    assert classify((1.0, 1.0), sigma=0.1).label == "not_converged"


def test_wide_collapse_at_a_wrong_location_is_not_collapsed():
    rng = np.random.default_rng(7)
    s = rng.normal(-2.0, 0.53, size=(1, 1000, 2))
    w = np.full_like(s, 0.5)
    sg = np.full((1, 1000), 1.16)
    c = classify_draws(s, w, sg, TRUTH)
    assert c.label == "not_converged" and "one-line slope" in c.reason


def test_settings_validation_of_the_location_tolerance():
    with pytest.raises(ValueError):
        ClassifierSettings(collapse_location_fraction=0.0)


# ---------------------------------------------------------------- the pipeline's per-fit table


def test_classify_chunk_writes_centre_and_minority_columns(tmp_path):
    from types import SimpleNamespace

    from vimodes.idata import write_posterior
    from vimodes.pipeline import classify_chunk, fit_record_path
    from vimodes.records import write_json

    rng = np.random.default_rng(5)
    wide = np.array([3.0, -1.0]) + rng.normal(0, 0.3, size=(1, 400, 2))
    split = np.tile([3.0, -1.0], (1, 400, 1))
    split[0, :60] = (-1.0, 3.0)  # 85/15: spanning
    for seed, slopes in enumerate((wide, split)):
        record = {"seed": seed, "cell_id": "c", "method": "advi", "model": "marginal",
                  "status": "ok", "error": None, "true_slopes": [3.0, -1.0],
                  "true_weights": [0.5, 0.5], "true_noise_sd": 0.1, "n_obs": 100_000}
        draws = {"slopes": slopes, "weights": np.full(slopes.shape, 0.5),
                 "sigma": np.full(slopes.shape[:2], 0.1)}
        write_posterior(fit_record_path(tmp_path, seed, "nc"),
                        SimpleNamespace(draws=draws, sample_stats={}), record)
        write_json(record, fit_record_path(tmp_path, seed, "json"))
    study = SimpleNamespace(config={"classifier": {}})
    frame = classify_chunk(study, tmp_path, [0, 1], tmp_path / "out.parquet").set_index("seed")
    assert frame.loc[0, "outcome"] == "mode_too_wide" and frame.loc[0, "centre_class"] == "mode_A"
    assert frame.loc[0, "centre_mass"] == frame.loc[0, "share_mode_A"] < 0.5
    assert frame.loc[1, "outcome"] == "spanning"
    assert frame.loc[1, "minority_share"] == pytest.approx(0.15)
    assert frame.loc[1, "centre_mass"] == pytest.approx(0.85)


# ---------------------------------------------------------------- rule 5d: collapse by pruning

HALF = TrueParameters(slopes=(3.0, 1.0), weights=(0.5, 0.5), noise_sd=0.1, n_obs=100_000)


def _pruned(live_slope, sigma, n=1000, k=2, seed=0):
    """Component 0 carries the weight at ``live_slope``; the others are empty at their prior."""
    rng = np.random.default_rng(seed)
    slopes = rng.normal(0.0, 1.0, size=(1, n, k))
    slopes[..., 0] = live_slope + 0.01 * rng.normal(size=(1, n))
    weights = np.full((1, n, k), 1e-4)
    weights[..., 0] = 1.0 - 1e-4 * (k - 1)
    return slopes, weights, np.full((1, n), sigma)


def test_pruning_to_one_line_is_collapse():
    # half separation: one line at the one-line slope 2 with the one-line residual sd
    # sqrt(0.1^2 + 1^2 / 3) = 0.585, the other component empty (seen in the regime map)
    c = classify_draws(*_pruned(2.0, 0.585), HALF, SETTINGS)
    assert c.label == "collapsed"
    assert c.reason.startswith("one line through all points: components [1] emptied")


def test_pruning_elsewhere_or_with_a_small_sigma_is_not_collapse():
    # the live component on a true slope (it explains half the data): not the one-line fit
    assert classify_draws(*_pruned(3.0, 0.585), HALF, SETTINGS).label == "not_converged"
    # at the one-line slope but with the true noise sd: not how one line explains two
    assert classify_draws(*_pruned(2.0, 0.1), HALF, SETTINGS).label == "not_converged"
    # nothing emptied: rules 5 / 5b decide as before (here: slopes far apart, not collapsed)
    slopes, weights, sigma = _pruned(2.0, 0.585)
    weights[:] = 0.5
    assert classify_draws(slopes, weights, sigma, HALF, SETTINGS).label != "collapsed"


def test_an_overfitted_model_pruned_to_one_line_is_collapse():
    c = classify_draws(*_pruned(2.0, 0.585, k=3), HALF, SETTINGS)
    assert c.label == "collapsed" and "components [1, 2] emptied" in c.reason


def test_collapse_sigma_floor_follows_the_one_line_residual_of_close_lines():
    from vimodes.classify import collapse_sigma_floor, one_line_sigma

    close = TrueParameters(slopes=(3.0, 2.8), weights=(0.5, 0.5), noise_sd=0.1, n_obs=100_000)
    assert one_line_sigma(TRUTH) == pytest.approx(math.sqrt(0.01 + 4 / 3))
    assert one_line_sigma(close) == pytest.approx(math.sqrt(0.01 + 0.01 / 3))
    assert collapse_sigma_floor(TRUTH, SETTINGS) == pytest.approx(0.125)  # the ratio, as before
    assert collapse_sigma_floor(close, SETTINGS) == pytest.approx(0.1 + 0.5 * (0.11547 - 0.1),
                                                                  rel=1e-4)
    # one line at 2.9 (the one-line slope) with its residual sd 0.115 and the other component
    # emptied: mode averaging, although sigma is only 1.15x the truth
    c = classify_draws(*_pruned(2.9, 0.115), close, SETTINGS)
    assert c.label == "collapsed"
    assert classify_draws(*_pruned(2.9, 0.1), close, SETTINGS).label == "not_converged"


@pytest.mark.parametrize("truth", [
    TRUTH,
    TrueParameters(slopes=(3.0, -1.0, 1.0), weights=(0.4, 0.3, 0.3), noise_sd=0.1, n_obs=100_000),
])
@pytest.mark.parametrize("reference_sd", [None, 0.3])
def test_one_draw_chains_take_the_labels_of_the_full_rules(truth, reference_sd):
    """A trajectory is classified as one-draw chains, with a vectorised shortcut for draws in a
    basin (_one_draw_basin_labels): every chain's label must be the full rules' label, for
    snapshots on each mode, at the tolerance edges, collapsed, elsewhere and non-finite."""
    from vimodes.classify import _classify_finite, labellings

    rng = np.random.default_rng(7)
    k = len(truth.slopes)
    true = np.asarray(truth.slopes)
    true_w = np.asarray(truth.weights)
    tol = slope_tolerances(truth, SETTINGS, reference_sd)
    rows = []
    for perm in labellings(k):
        for _ in range(60):
            slope_step = rng.choice([0.0, 0.5, 0.999, 1.0, 1.001, 1.5], size=k)
            s = true[list(perm)] + rng.choice([-1, 1], size=k) * slope_step * tol[list(perm)]
            w = true_w[list(perm)] + rng.choice([0.0, 0.05, 0.1, 0.1001, 0.3], size=k) * \
                rng.choice([-1, 1], size=k)
            sigma = truth.noise_sd * rng.choice([1.0, 1.25, 1.2501, 0.8, 1 / 1.25, 0.79, 3.0])
            rows.append((s, w, sigma))
    for _ in range(60):  # collapsed near the one-line slope, or anywhere
        s = np.full(k, one_line_slope(truth)) + rng.normal(0, 0.05, k) if rng.random() < 0.5 \
            else rng.uniform(-4, 4, k)
        rows.append((s, rng.dirichlet(np.ones(k)), rng.uniform(0.05, 2.0)))
    rows.append((np.full(k, np.nan), true_w, 0.1))
    slopes = np.array([r[0] for r in rows])[:, None, :]
    weights = np.array([r[1] for r in rows])[:, None, :]
    sigma = np.array([r[2] for r in rows])[:, None]
    labels = classify_draws(slopes, weights, sigma, truth, SETTINGS, reference_sd).chain_labels
    expected = [
        "failed" if not np.all(np.isfinite(slopes[c]))
        else _classify_finite(slopes[c], weights[c], sigma[c], truth, SETTINGS, reference_sd)[0]
        for c in range(len(rows))
    ]
    assert list(labels) == expected
    # the sample reaches both branches of the shortcut and the full rules' other outcomes
    assert {"not_converged", "failed"} <= set(labels)
    assert any(label.startswith("mode_") for label in labels)
