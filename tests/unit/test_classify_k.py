"""The classifier generic over K (vimodes.classify): K = 3 classes on constructed draws, the
over-fitted model, and the K = 2 equivalence with the classifier as it was before the K
generalisation (frozen in tests/unit/_classify_k2_reference.py).

K = 3 truth: slopes (3, -1, 1), weights (.4, .3, .3), noise sd 0.1, N = 100000. The separation
(smallest distance between two true slopes) is 2, so the slope tolerance is the floor 0.1, the
collapse gap 0.5 and the location tolerance 0.2; the one-line slope is 1.2.
"""

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vimodes.classify import (
    CENTRE_CLASSES,
    EDGE_RTOL,
    OUTCOME_CLASSES,
    SINGLE_MODE_CLASSES,
    ClassifierSettings,
    TrueParameters,
    assign_draws,
    classify_draws,
    labelling_name,
    labellings,
    nearest_labelling,
    separation,
    slope_tolerances,
)

K2 = TrueParameters(slopes=(3.0, -1.0), weights=(0.5, 0.5), noise_sd=0.1, n_obs=100_000)
K3 = TrueParameters(slopes=(3.0, -1.0, 1.0), weights=(0.4, 0.3, 0.3), noise_sd=0.1, n_obs=100_000)


def _reference():
    path = Path(__file__).with_name("_classify_k2_reference.py")
    spec = importlib.util.spec_from_file_location("classify_k2_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


REFERENCE = _reference()


def draws_at(slopes, weights, sigma, chains=1, draws=200, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    k = len(slopes)
    s = np.broadcast_to(np.asarray(slopes, float), (chains, draws, k)).copy()
    w = np.broadcast_to(np.asarray(weights, float), (chains, draws, k)).copy()
    if jitter:
        s += rng.normal(0, jitter, s.shape)
    return s, w, np.full((chains, draws), float(sigma))


def permuted(perm, truth=K3):
    """Slopes and weights of the permutation mode where model component k is true perm[k]."""
    return ([truth.slopes[j] for j in perm], [truth.weights[j] for j in perm])


# ---------------------------------------------------------------- vocabulary and helpers


def test_vocabulary_is_one_place():
    assert set(SINGLE_MODE_CLASSES) <= set(OUTCOME_CLASSES)
    for label in ("mode_single", "partial_collapse", "collapsed", "overfit_empty",
                  "overfit_duplicated", "not_converged", "failed", "spanning"):
        assert label in OUTCOME_CLASSES
    assert {"mode_single", "partial", "overfit"} <= set(CENTRE_CLASSES)


def test_labellings_and_separation():
    assert labellings(2) == ((0, 1), (1, 0))
    assert len(labellings(3)) == 6 and labellings(3)[0] == (0, 1, 2)
    assert labelling_name((0, 2, 1)) == "0-2-1"
    assert separation(K2) == 4.0 and separation(K3) == 2.0
    np.testing.assert_allclose(slope_tolerances(K3), [0.1, 0.1, 0.1])


def test_nearest_labelling_is_the_optimal_assignment():
    tol = slope_tolerances(K3)
    perm, d = nearest_labelling([1.02, 3.0, -1.05], K3, tol)
    assert perm == (2, 0, 1) and d == pytest.approx(0.5)
    # a point in no box still gets its nearest labelling, with a distance > 1
    perm, d = nearest_labelling([0.0, 2.0, 5.0], K3, tol)
    assert d > 1 and sorted(perm) == [0, 1, 2]


def test_draw_codes_for_every_labelling():
    pts = np.array([permuted(p)[0] for p in labellings(3)])
    assert assign_draws(pts, K3).tolist() == [1, 2, 3, 4, 5, 6]
    assert assign_draws(np.array([[1.2, 1.3, 1.1], [0.0, 5.0, 9.0]]), K3).tolist() == [7, 0]


# ---------------------------------------------------------------- K = 3: every class


def test_k3_single_mode_under_a_non_identity_permutation():
    slopes, weights = permuted((1, 2, 0))
    c = classify_draws(*draws_at(slopes, weights, 0.1, jitter=0.005), K3)
    assert c.label == "mode_single" and c.permutation == "1-2-0"
    assert c.label in SINGLE_MODE_CLASSES
    assert c.centre_class == "mode_single" and c.centre_mass == 1.0
    assert c.share_modes == 1.0 and c.minority_share == 0.0
    assert math.isnan(c.share_mode_A)  # A/B are K = 2 names
    # the same slopes with weights 0.2 off: a mode's slopes, not its weights
    bad = classify_draws(*draws_at(slopes, (0.6, 0.2, 0.2), 0.1), K3)
    assert bad.label == "not_converged" and "weights" in bad.reason and "1-2-0" in bad.reason


def test_k3_spanning_two_labellings():
    s, w, sg = draws_at(K3.slopes, K3.weights, 0.1, chains=2, draws=100, jitter=0.005)
    _, weights = permuted((0, 2, 1))
    s[1], w[1] = s[1][:, [0, 2, 1]], np.asarray(weights)
    c = classify_draws(s, w, sg, K3)
    assert c.label == "spanning" and "2 basins" in c.reason
    assert c.chain_labels == ("mode_single", "mode_single")
    assert c.minority_share == pytest.approx(0.5) and c.share_modes == 1.0


def test_k3_partial_collapse():
    # true components 1 and 2 (slopes -1, 1; weights .3, .3) merged on their line, slope 0
    c = classify_draws(*draws_at((3.0, 0.0, 0.0), (0.4, 0.3, 0.3), 0.46, jitter=0.01), K3)
    assert c.label == "partial_collapse" and "merged" in c.reason
    assert c.centre_class == "partial" and c.centre_mass == 1.0
    # the merged pair in other model slots, the right one last
    c2 = classify_draws(*draws_at((0.0, 0.0, 3.0), (0.3, 0.3, 0.4), 0.46, jitter=0.01), K3)
    assert c2.label == "partial_collapse"
    # the same slopes with sigma at the truth cannot be a merge of two lines
    small = classify_draws(*draws_at((3.0, 0.0, 0.0), (0.4, 0.3, 0.3), 0.1), K3)
    assert small.label == "not_converged" and "sigma" in small.reason


def test_k3_full_collapse():
    c = classify_draws(*draws_at((1.2, 1.2, 1.2), K3.weights, 0.96, jitter=0.01), K3)
    assert c.label == "collapsed" and c.centre_class == "symmetric"
    # equal slopes away from the one-line slope 1.2
    off = classify_draws(*draws_at((-1.0, -1.0, -1.0), K3.weights, 0.96, jitter=0.01), K3)
    assert off.label == "not_converged" and "one-line slope" in off.reason


def test_k3_too_wide_not_converged_and_failed():
    rng = np.random.default_rng(2)
    s = np.asarray(K3.slopes) + rng.normal(0, 0.15, size=(1, 2000, 3))
    w = np.broadcast_to(K3.weights, s.shape)
    wide = classify_draws(s, w, np.full((1, 2000), 0.1), K3)
    assert wide.label == "mode_too_wide" and wide.permutation == "0-1-2"
    far = classify_draws(*draws_at((0.0, 7.0, -5.0), K3.weights, 0.5), K3)
    assert far.label == "not_converged" and far.centre_class == "elsewhere"
    s, w, sg = draws_at(K3.slopes, K3.weights, 0.1, chains=2, draws=10)
    s[1, 0, 2] = np.nan
    failed = classify_draws(s, w, sg, K3)
    assert failed.label == "failed" and failed.chain_labels == ("mode_single", "failed")


# ---------------------------------------------------------------- over-fitted models


@pytest.mark.parametrize("slopes, weights, label", [
    ((3.0, -1.0, 0.4), (0.5, 0.5 - 1e-4, 1e-4), "overfit_empty"),
    ((-1.0, 7.0, 3.0), (0.49, 0.02, 0.49), "overfit_empty"),  # empty one at a wild slope
    ((3.0, -1.0, -1.0), (0.5, 0.25, 0.25), "overfit_duplicated"),
    ((3.0, 3.0, -1.0), (0.3, 0.2, 0.5), "overfit_duplicated"),
])
def test_overfit_k3_on_k2_data(slopes, weights, label):
    c = classify_draws(*draws_at(slopes, weights, 0.1, jitter=0.005), K2)
    assert c.label == label and c.centre_class == "overfit" and c.centre_mass == 1.0
    assert math.isnan(c.share_mode_A) and math.isnan(c.minority_share)


def test_overfit_failures_of_the_structure():
    # a non-empty component on no true slope
    off = classify_draws(*draws_at((3.0, -1.0, 1.0), (0.4, 0.4, 0.2), 0.1), K2)
    assert off.label == "not_converged" and "no true slope" in off.reason
    # the truth's lines but the weights split wrongly
    bad_w = classify_draws(*draws_at((3.0, -1.0, -1.0), (0.7, 0.15, 0.15), 0.1), K2)
    assert bad_w.label == "not_converged" and "weights" in bad_w.reason
    # all three at the one-line slope with the one-line residual: full collapse
    collapsed = classify_draws(*draws_at((1.0, 1.0, 1.0), (0.3, 0.3, 0.4), 1.16, jitter=0.01), K2)
    assert collapsed.label == "collapsed"
    # chains in two different labellings: the pooled centre matches nothing
    s, w, sg = draws_at((3.0, -1.0, 0.5), (0.5, 0.5 - 1e-4, 1e-4), 0.1, chains=2, draws=50)
    s[1], w[1] = s[1][:, [1, 0, 2]], w[1][:, [1, 0, 2]]
    split = classify_draws(s, w, sg, K2)
    assert split.label == "not_converged"
    assert split.chain_labels == ("overfit_empty", "overfit_empty")


def test_under_fitted_draws_raise():
    with pytest.raises(ValueError, match="under-fitted"):
        classify_draws(*draws_at((3.0, -1.0), (0.5, 0.5), 0.1), K3)


# ---------------------------------------------------------------- K = 2 equivalence


def _k2_cases():
    """Constructed K = 2 draws: the cases of tests/unit/test_classify.py and random mixtures of
    modes, collapse, far points and widths, with assorted sigma and weights."""
    cases = []
    points = [(3.0, -1.0), (-1.0, 3.0), (1.0, 1.0), (0.0, 7.0), (2.0, 0.0), (3.2, -1.0),
              (3.2000001, -1.0), (1.5, 0.5), (-2.0, -2.0), (3.0, 3.0), (1.4, 1.4), (0.6, 0.6)]
    for pt, sigma, weights in itertools.product(points, (0.1, 0.125, 0.2, 1.16),
                                                ((0.5, 0.5), (0.3, 0.7), (1 / 3, 2 / 3))):
        cases.append((draws_at(pt, weights, sigma, draws=20), K2, None))
    rng = np.random.default_rng(0)
    centres = np.array([[3.0, -1.0], [-1.0, 3.0], [1.0, 1.0], [0.0, 7.0]])
    for i in range(300):
        chains, draws = int(rng.integers(1, 5)), int(rng.integers(1, 60))
        which = rng.integers(0, 4, size=(chains, 1)) if rng.random() < 0.5 else \
            rng.integers(0, 4, size=(chains, draws))
        s = centres[which] + rng.normal(0, rng.choice([0.001, 0.001, 0.05, 0.3, 0.6]),
                                        (chains, draws, 2))
        s = np.broadcast_to(s, (chains, draws, 2)).copy()
        w0 = rng.choice([0.5, 0.5, 0.5, 0.3, 0.45])
        w = np.broadcast_to([w0, 1 - w0], s.shape).copy()
        if rng.random() < 0.5:
            w = w[..., ::-1].copy()
        sg = np.full((chains, draws), rng.choice([0.1, 0.1, 0.11, 0.3, 1.16]))
        truth = K2 if rng.random() < 0.8 else TrueParameters((3.0, -1.0), (0.3, 0.7), 0.1, 300)
        ref = None if rng.random() < 0.85 else float(rng.choice([0.1, 2.5]))
        cases.append(((s, w, sg), truth, ref))
    return cases


def test_k2_results_are_unchanged_through_the_generic_path():
    """Every field of every K = 2 case equals the pre-generalisation classifier's."""
    for i, ((s, w, sg), truth, ref) in enumerate(_k2_cases()):
        settings = ClassifierSettings(slope_tolerance_sd=1.0) if ref == 2.5 else \
            ClassifierSettings()
        new = classify_draws(s, w, sg, truth, settings, reference_sd=ref)
        old = REFERENCE.classify_draws(s, w, sg, REFERENCE.TrueParameters(
            truth.slopes, truth.weights, truth.noise_sd, truth.n_obs),
            REFERENCE.ClassifierSettings(**vars(settings)), reference_sd=ref)
        for field in ("label", "chain_labels", "reason", "centre_class"):
            assert getattr(new, field) == getattr(old, field), (i, field)
        for field in ("share_mode_A", "share_mode_B", "share_collapsed", "centre_mass",
                      "minority_share"):
            a, b = getattr(new, field), getattr(old, field)
            assert (math.isnan(a) and math.isnan(b)) or a == b, (i, field, a, b)
        if new.label in ("mode_A", "mode_B"):
            assert new.permutation == {"mode_A": "0-1", "mode_B": "1-0"}[new.label]
        codes = assign_draws(s, truth, settings, ref)
        np.testing.assert_array_equal(codes, REFERENCE.assign_draws(
            s, REFERENCE.TrueParameters(truth.slopes, truth.weights, truth.noise_sd,
                                        truth.n_obs), REFERENCE.ClassifierSettings(
                **vars(settings)), ref))


def test_k2_overlapping_boxes_unchanged():
    settings = ClassifierSettings(slope_tolerance_sd=1.0)
    pts = np.array([[2.5, -0.5], [1.2, 0.8], [1.0, 1.0], [-0.5, 2.5], [1.9, -0.2]])
    new = assign_draws(pts, K2, settings, reference_sd=2.5)
    old = REFERENCE.assign_draws(pts, REFERENCE.TrueParameters((3.0, -1.0), (0.5, 0.5), 0.1,
                                                               100_000),
                                 REFERENCE.ClassifierSettings(slope_tolerance_sd=1.0), 2.5)
    assert new.tolist() == old.tolist() == [1, 1, 3, 2, 1]


# ---------------------------------------------------------------- the pipeline's tables


def test_classify_chunk_and_cell_summary_for_k3_and_an_overfitted_model(tmp_path):
    from types import SimpleNamespace

    from vimodes.idata import write_posterior
    from vimodes.pipeline import HEADLINE_CLASSES, classify_chunk, fit_record_path, \
        summarise_cells
    from vimodes.records import write_json

    assert HEADLINE_CLASSES == OUTCOME_CLASSES
    cases = [  # (truth, slopes, weights, sigma): mode_single, overfit_duplicated
        (K3, permuted((2, 0, 1))[0], permuted((2, 0, 1))[1], 0.1),
        (K2, (3.0, -1.0, -1.0), (0.5, 0.25, 0.25), 0.1),
    ]
    for seed, (truth, slopes, weights, sigma) in enumerate(cases):
        s, w, sg = draws_at(slopes, weights, sigma, draws=100, jitter=0.005, seed=seed)
        record = {"seed": seed, "cell_id": "c", "method": "advi", "model": "marginal",
                  "status": "ok", "error": None, "true_slopes": list(truth.slopes),
                  "true_weights": list(truth.weights), "true_noise_sd": 0.1,
                  "n_obs": 100_000, "components": 3 if truth is K2 else None}
        write_posterior(fit_record_path(tmp_path, seed, "nc"),
                        SimpleNamespace(draws={"slopes": s, "weights": w, "sigma": sg},
                                        sample_stats={}), record)
        write_json(record, fit_record_path(tmp_path, seed, "json"))
    study = SimpleNamespace(config={"classifier": {}})
    frame = classify_chunk(study, tmp_path, [0, 1], tmp_path / "out.parquet").set_index("seed")
    assert frame.loc[0, "outcome"] == "mode_single" and frame.loc[0, "permutation"] == "2-0-1"
    assert frame.loc[0, "model_components"] == 3 and frame.loc[0, "slope_abs_error"] < 0.01
    assert frame.loc[1, "outcome"] == "overfit_duplicated"
    fits = frame.reset_index().assign(grid="g", optimizer="o", iterations=1, init="i",
                                      batch_size=128, chains=None, data_regime="d",
                                      fit_seconds=1.0)
    cells = summarise_cells(fits)
    assert cells.loc[0, "n_single_mode"] == 1 and cells.loc[0, "n_mode_single"] == 1
    assert cells.loc[0, "n_overfit_duplicated"] == 1
    assert sum(cells.loc[0, f"n_{c}"] for c in HEADLINE_CLASSES) == cells.loc[0, "n_fits"]


@pytest.mark.parametrize("true_slopes, reference_sd", [
    ((3.0, -1.0), None), ((3.0, -1.0), (0.05, 0.3)), ((3.0, -1.0, 1.0), None),
    ((3.0, -1.0, 1.0), (0.1, 0.2, 0.05))])
def test_draw_codes_equal_the_optimal_assignment_per_draw(true_slopes, reference_sd):
    """With disjoint basin boxes a draw's basin is found from its smallest box distance; that
    must be the labelling an optimal assignment per draw gives (the definition of rule 1)."""
    from scipy.optimize import linear_sum_assignment

    k = len(true_slopes)
    truth = TrueParameters(slopes=true_slopes, weights=(1.0 / k,) * k, noise_sd=0.1,
                           n_obs=100000)
    settings = ClassifierSettings(slope_tolerance_sd=2.0)
    rng = np.random.default_rng(11)
    true = np.array(true_slopes)
    # draws near every labelling's point (inside, at and beyond the box edges) and at random
    centres = np.array([true[list(p)] for p in labellings(k)] * 200)
    draws = np.concatenate([centres + rng.normal(0, 0.3, centres.shape),
                            rng.uniform(-4, 5, (400, k))])
    tol = slope_tolerances(truth, settings, reference_sd) * (1.0 + EDGE_RTOL)
    perms = [tuple(p) for p in labellings(k)]
    expected = []
    for s in draws:
        cost = np.abs(s[:, None] - true[None, :]) / tol[None, :]
        rows, cols = linear_sum_assignment(cost)
        perm = tuple(int(c) for c in cols[np.argsort(rows)])
        inside = np.max(cost[np.arange(k), list(perm)]) <= 1.0
        expected.append(1 + perms.index(perm) if inside else None)
    codes = assign_draws(draws, truth, settings, reference_sd)
    in_basin = [c for c, e in zip(codes, expected) if e is not None]
    assert 0 < len(in_basin) < len(draws)
    for code, want in zip(codes, expected):
        if want is not None:
            assert code == want
        else:
            assert code == 0 or code == 1 + len(perms)  # no basin, or collapsed


def test_slope_tolerances_are_computed_once_and_checked():
    truth = TrueParameters(slopes=(3.0, -1.0), weights=(0.5, 0.5), noise_sd=0.1, n_obs=1000)
    settings = ClassifierSettings(slope_tolerance_sd=100.0)
    scalar = slope_tolerances(truth, settings, 0.01)
    assert scalar is slope_tolerances(truth, settings, np.array(0.01))
    np.testing.assert_array_equal(scalar, slope_tolerances(truth, settings, [0.01, 0.01]))
    np.testing.assert_allclose(slope_tolerances(truth, settings, [0.01, 0.03]), [1.0, 3.0])
    assert not scalar.flags.writeable  # a shared array: no caller may change it
    for bad in ([0.1, 0.2, 0.3], [np.nan, 0.1], -0.1):
        with pytest.raises(ValueError, match="reference_sd"):
            slope_tolerances(truth, settings, bad)
