"""Unit tests of vimodes.metrics on constructed draws and known reference values."""

import math

import numpy as np
import pytest
from scipy import optimize, stats

from vimodes.classify import TrueParameters
from vimodes.metrics import (
    convergence_diagnostics,
    equal_modes_pvalue,
    gaussian_logq,
    nearest_permutation,
    psis_khat,
    psis_khat_mcse,
    relabel,
    relabel_per_chain,
    relabelled_errors,
    wilson_interval,
)

TRUTH = TrueParameters(slopes=(3.0, -1.0), weights=(0.5, 0.5), noise_sd=0.1, n_obs=100_000)


def gaussian_draws(center, weights=(0.5, 0.5), sigma=0.1, chains=4, draws=500, sd=0.01, seed=0):
    rng = np.random.default_rng(seed)
    s = np.asarray(center, float) + rng.normal(0, sd, (chains, draws, 2))
    w = np.asarray(weights, float) + rng.normal(0, 0.002, (chains, draws, 2))
    sg = sigma + rng.normal(0, 0.001, (chains, draws))
    return s, w, sg


# ---------------------------------------------------------------- permutations


def test_nearest_permutation_and_relabel():
    assert nearest_permutation([3.1, -0.9], [3.0, -1.0]) == (0, 1)
    assert nearest_permutation([-0.9, 3.1], [3.0, -1.0]) == (1, 0)
    assert nearest_permutation([1.0, 1.0], [3.0, -1.0]) == (0, 1)  # tie: identity
    assert nearest_permutation([5.0, 1.0, 3.0], [1.0, 3.0, 5.0]) == (1, 2, 0)
    a = np.arange(12.0).reshape(2, 3, 2)
    r = relabel(a, (1, 0))
    np.testing.assert_array_equal(r[..., 0], a[..., 1])
    np.testing.assert_array_equal(relabel(np.array([5.0, 1.0, 3.0]), (1, 2, 0)), [1.0, 3.0, 5.0])
    with pytest.raises(ValueError):
        relabel(a, (0, 0))


def test_relabel_per_chain():
    s, w, _ = gaussian_draws((3.0, -1.0), weights=(0.3, 0.7), chains=3)
    s[1], w[1] = s[1][..., ::-1], w[1][..., ::-1]
    s2, w2, perms = relabel_per_chain(s, w)
    assert perms == ((0, 1), (1, 0), (0, 1))
    np.testing.assert_array_equal(s2[1], s[1][..., ::-1])
    np.testing.assert_allclose(w2.mean(axis=(0, 1)), [0.3, 0.7], atol=0.01)
    # against the truth: a chain-0 in mode B gets swapped too
    s3, _, perms3 = relabel_per_chain(s[::-1], w[::-1], reference=TRUTH.slopes)
    assert perms3 == ((0, 1), (1, 0), (0, 1))
    np.testing.assert_allclose(s3.mean(axis=(0, 1)), [3.0, -1.0], atol=0.01)


# ---------------------------------------------------------------- errors and coverage


def test_relabelled_errors_mode_b_equals_mode_a():
    sa = gaussian_draws((3.0, -1.0), seed=1)
    sb = (sa[0][..., ::-1], sa[1][..., ::-1], sa[2])
    ea, eb = relabelled_errors(*sa, TRUTH), relabelled_errors(*sb, TRUTH)
    for key in ("slope_abs_error", "weight_abs_error", "sigma_abs_error", "coverage_slopes"):
        assert ea[key] == pytest.approx(eb[key])
    assert ea["slope_abs_error"] < 0.01 and ea["weight_abs_error"] < 0.01
    assert ea["coverage_slopes"] == 1.0 and ea["coverage_weights"] == 1.0 and ea["coverage_sigma"] == 1.0
    assert eb["permutations"] == ((1, 0),) * 4


def test_relabelled_errors_known_offsets_and_partial_coverage():
    # slope 0 off by 0.5 (not covered), slope 1 exact; sigma 0.2; weights (.6, .4)
    s, w, sg = gaussian_draws((3.5, -1.0), weights=(0.6, 0.4), sigma=0.2, sd=0.01)
    e = relabelled_errors(s, w, sg, TRUTH)
    assert e["slope_abs_error"] == pytest.approx(0.5, abs=0.01)
    assert e["weight_abs_error"] == pytest.approx(0.1, abs=0.005)
    assert e["sigma_abs_error"] == pytest.approx(0.1, abs=0.005)
    assert e["coverage_slopes"] == 0.5
    assert e["coverage_weights"] == 0.0
    assert e["coverage_sigma"] == 0.0


def test_relabelled_errors_modes_of_relabelling():
    # chains in swapped modes: per-chain relabelling recovers the truth, pooled does not
    s, w, sg = gaussian_draws((3.0, -1.0), chains=2, seed=2)
    s[1], w[1] = s[1][..., ::-1], w[1][..., ::-1]
    assert relabelled_errors(s, w, sg, TRUTH)["slope_abs_error"] < 0.01
    assert relabelled_errors(s, w, sg, TRUTH, relabel_by="pooled")["slope_abs_error"] == pytest.approx(2.0, abs=0.01)
    # one "chain" of particles over both modes: draw-level relabelling recovers it
    s1, w1, sg1 = s.reshape(1, -1, 2), w.reshape(1, -1, 2), sg.reshape(1, -1)
    assert relabelled_errors(s1, w1, sg1, TRUTH)["slope_abs_error"] == pytest.approx(2.0, abs=0.01)
    assert relabelled_errors(s1, w1, sg1, TRUTH, relabel_by="draw")["slope_abs_error"] < 0.01
    with pytest.raises(ValueError):
        relabelled_errors(s, w, sg, TRUTH, relabel_by="nope")


# ---------------------------------------------------------------- R-hat / ESS


def test_rhat_raw_huge_relabelled_near_one():
    s, w, sg = gaussian_draws((3.0, -1.0), chains=4, draws=1000, seed=3)
    s[1], w[1] = s[1][..., ::-1], w[1][..., ::-1]
    s[3], w[3] = s[3][..., ::-1], w[3][..., ::-1]
    d = convergence_diagnostics(s, w, sg)
    # rank-normalised R-hat saturates (~1.7-1.8) for separated chains; classic split R-hat is huge
    assert d["rhat_max_raw"] > 1.5
    assert d["rhat_split_max_raw"] > 100
    assert d["rhat_max_relabelled"] < 1.01
    assert d["rhat_split_max_relabelled"] < 1.01
    assert d["ess_bulk_min_relabelled"] > 1000 and d["ess_bulk_min_raw"] < 100
    assert d["ess_tail_min_relabelled"] > 1000
    assert d["chain_permutations"] == ((0, 1), (1, 0), (0, 1), (1, 0))
    assert d["n_chains"] == 4 and d["n_draws"] == 1000


def test_rhat_two_chains_swapped():
    s, w, sg = gaussian_draws((3.0, -1.0), chains=2, draws=1000, seed=6)
    s[1], w[1] = s[1][..., ::-1], w[1][..., ::-1]
    d = convergence_diagnostics(s, w, sg)
    assert d["rhat_max_raw"] > 1.5 and d["rhat_split_max_raw"] > 100
    assert d["rhat_max_relabelled"] < 1.01 and d["rhat_split_max_relabelled"] < 1.01


def test_rhat_single_chain_is_nan():
    s, w, sg = gaussian_draws((3.0, -1.0), chains=1, draws=400, seed=4)
    d = convergence_diagnostics(s, w, sg)
    assert math.isnan(d["rhat_max_raw"]) and math.isnan(d["rhat_max_relabelled"])
    assert math.isnan(d["rhat_split_max_raw"])
    assert d["ess_bulk_min_raw"] > 200  # iid draws
    assert d["ess_bulk_min_raw"] == d["ess_bulk_min_relabelled"]


# ---------------------------------------------------------------- Wilson / binomial


def wilson_by_root_finding(k, n, level=0.95):
    """Independent reference: the Wilson interval is {p : |k/n - p| <= z sqrt(p(1-p)/n)}."""
    z = stats.norm.ppf(0.5 + level / 2)
    phat = k / n
    f = lambda p: (phat - p) ** 2 - z * z * p * (1 - p) / n  # noqa: E731
    # f < 0 strictly between the two roots; at k = 0 or k = n one root is 0 or 1 itself
    inner = min(max(phat, 1e-12), 1 - 1e-12)
    lo = 0.0 if k == 0 else optimize.brentq(f, 1e-15, inner, xtol=1e-14)
    hi = 1.0 if k == n else optimize.brentq(f, inner, 1 - 1e-15, xtol=1e-14)
    return lo, hi


@pytest.mark.parametrize(
    "k, n, published",
    [
        (0, 10, (0.0, 0.2775)),  # Newcombe (1998) Table I / standard Wilson tables
        (5, 10, (0.2366, 0.7634)),
        (10, 10, (0.7225, 1.0)),
        (81, 263, (0.2553, 0.3662)),  # Newcombe (1998), Stat Med 17:857, example 81/263
    ],
)
def test_wilson_known_values(k, n, published):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(published[0], abs=5e-5)
    assert hi == pytest.approx(published[1], abs=5e-5)
    ref = wilson_by_root_finding(k, n)
    assert lo == pytest.approx(ref[0], abs=1e-9) and hi == pytest.approx(ref[1], abs=1e-9)


def test_wilson_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    lo90, hi90 = wilson_interval(30, 100, level=0.90)
    lo95, hi95 = wilson_interval(30, 100)
    assert lo95 < lo90 < 0.3 < hi90 < hi95
    ref = wilson_by_root_finding(30, 100, 0.90)
    assert (lo90, hi90) == pytest.approx(ref, abs=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_equal_modes_pvalue():
    assert math.isnan(equal_modes_pvalue(0, 0))
    assert equal_modes_pvalue(5, 5) == pytest.approx(1.0)
    # exact: P(X <= 0 or X >= 10 | n=10, p=.5) = 2 / 1024
    assert equal_modes_pvalue(10, 0) == pytest.approx(2 / 1024)
    # 2 of 10: 2 * (1 + 10 + 45) / 1024
    assert equal_modes_pvalue(2, 8) == pytest.approx(2 * 56 / 1024)
    assert equal_modes_pvalue(8, 2) == pytest.approx(equal_modes_pvalue(2, 8))


# ---------------------------------------------------------------- k-hat


def test_gaussian_logq_matches_closed_form():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3))
    mean = np.array([0.5, -1.0, 2.0])
    var = np.array([0.5, 2.0, 1.5])
    expected = stats.norm.logpdf(x, mean, np.sqrt(var)).sum(axis=1)
    np.testing.assert_allclose(gaussian_logq(x, mean, np.diag(var)), expected, rtol=1e-12)
    np.testing.assert_allclose(gaussian_logq(x, mean, var), expected, rtol=1e-12)  # mean-field
    assert gaussian_logq(x[:1], mean, var).shape == (1,)
    np.testing.assert_allclose(gaussian_logq(x[:, 0], 0.5, 0.5), stats.norm.logpdf(x[:, 0], 0.5, math.sqrt(0.5)))


def _target_logp(x):
    """Known target: N(0, I) evaluated independently of gaussian_logq, unnormalised."""
    return -0.5 * np.sum(x * x, axis=-1) + 123.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_khat_exact_approximation_is_small(seed):
    d, n = 5, 4000
    x = np.random.default_rng(seed).normal(size=(n, d))
    # q equal to the target (up to its normalising constant): constant ratios
    assert psis_khat(_target_logp(x), gaussian_logq(x, np.zeros(d), np.eye(d))) < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_khat_estimated_gaussian_approximation_is_small(seed):
    # q = N(mean, cov) estimated from 20000 target draws: equal to the target up to estimation error
    d, n = 5, 4000
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(20000, d))
    mean, cov = ref.mean(axis=0), np.cov(ref, rowvar=False)
    x = rng.multivariate_normal(mean, cov, size=n)
    k = psis_khat(_target_logp(x), gaussian_logq(x, mean, cov))
    assert np.isfinite(k) and k < 0.5


def _isotropic_khat(seed: int, scale: float, d: int = 5, n: int = 4000) -> float:
    """k-hat of an isotropic Gaussian approximation of sd `scale` to the standard normal."""
    x = np.random.default_rng(seed).normal(0, scale, size=(n, d))
    return psis_khat(_target_logp(x), gaussian_logq(x, np.zeros(d), scale * scale * np.eye(d)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_khat_slightly_wide_approximation_is_small(seed):
    k = _isotropic_khat(seed, 1.1)
    assert np.isfinite(k) and k < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_khat_too_narrow_approximation_is_large(seed):
    assert _isotropic_khat(seed, 0.3) > 0.7


def test_khat_special_cases():
    assert math.isnan(psis_khat([0.0, np.nan, 1.0], [0.0, 0.0, 0.0]))
    assert math.isnan(psis_khat([], []))
    assert psis_khat(np.full(100, 5.0), np.zeros(100)) == -math.inf
    with pytest.raises(ValueError):
        psis_khat([1.0, 2.0], [1.0])


def _gaussian_pair_khat(sq, sp, n, seed):
    """k-hat and bootstrap MCSE for proposal N(0, sq^2), target N(0, sp^2), sq < sp: the
    weights exp(x^2/2 (1/sq^2 - 1/sp^2)) have a Pareto tail with index 1/k, k = 1 - sq^2/sp^2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, sq, n)
    return psis_khat_mcse(stats.norm.logpdf(x, 0, sp), stats.norm.logpdf(x, 0, sq), rng=rng)


@pytest.mark.parametrize("sq, sp", [(1.0, 2.0), (1.0, 1.25)])  # k = 0.75, 0.36
def test_psis_khat_mcse_covers_the_theoretical_tail_shape(sq, sp):
    khat, mcse = _gaussian_pair_khat(sq, sp, 4000, seed=0)
    assert 0.03 < mcse < 0.25
    assert abs(khat - (1 - sq**2 / sp**2)) < 3 * mcse


def test_psis_khat_mcse_shrinks_with_more_draws():
    small = [_gaussian_pair_khat(1.0, 2.0, 1000, seed)[1] for seed in (0, 1)]
    large = [_gaussian_pair_khat(1.0, 2.0, 8000, seed)[1] for seed in (0, 1)]
    assert np.mean(large) < 0.8 * np.mean(small)


def test_psis_khat_mcse_special_cases():
    khat, mcse = psis_khat_mcse(np.full(100, 5.0), np.zeros(100), rng=0)
    assert khat == -math.inf and math.isnan(mcse)
    khat, mcse = psis_khat_mcse([0.0, np.nan, 1.0], [0.0, 0.0, 0.0], rng=0)
    assert math.isnan(khat) and math.isnan(mcse)
    x = np.random.default_rng(3).normal(size=500)
    # the bootstrap is reproducible given the seed, and the estimate is psis_khat's
    assert psis_khat_mcse(-x**2 / 8, -x**2 / 2, n_boot=20, rng=7) == \
        psis_khat_mcse(-x**2 / 8, -x**2 / 2, n_boot=20, rng=7)
    assert psis_khat_mcse(-x**2 / 8, -x**2 / 2, n_boot=20, rng=7)[0] == psis_khat(-x**2 / 8,
                                                                                    -x**2 / 2)


def test_psis_khat_mcse_is_the_sd_of_the_khats_of_its_resamples():
    # the bootstrap fits every resample in one batched call: each row must get the k-hat its
    # own call would give, special cases included
    from vimodes.metrics import _psis_khat_rows

    x = np.random.default_rng(4).normal(size=400)
    lp, lq = -x**2 / 8, -x**2 / 2
    rows_p = np.stack([lp, np.full(400, 5.0), np.where(x > 2.5, -np.inf, lp),
                       np.where(x > 2.5, np.nan, lp), -x**2 / 2 + 0.3 * x])
    rows_q = np.stack([lq, np.zeros(400), lq, lq, lq])
    expected = [psis_khat(p, q) for p, q in zip(rows_p, rows_q)]
    assert expected[1] == -math.inf and math.isnan(expected[3]) and np.isfinite(expected[2])
    np.testing.assert_array_equal(_psis_khat_rows(rows_p, rows_q), expected)
    rng = np.random.default_rng(7)
    boot = [psis_khat(lp[i], lq[i]) for i in (rng.integers(0, 400, 400) for _ in range(30))]
    assert psis_khat_mcse(lp, lq, n_boot=30, rng=7)[1] == pytest.approx(np.std(boot, ddof=1),
                                                                        rel=1e-12)


# ---------------------------------------------------------------- K components


def _exhaustive_nearest(m, t):
    import itertools

    costs = [(float(np.sum((np.asarray(m)[list(p)] - np.asarray(t)) ** 2)), p)
             for p in itertools.permutations(range(len(m)))]
    best = min(c for c, _ in costs)
    return next(p for c, p in costs if c == best)  # first minimum: lexicographic


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_nearest_permutation_equals_the_exhaustive_search(k):
    rng = np.random.default_rng(k)
    t = rng.normal(0, 3, k)
    for _ in range(50):
        m = t[rng.permutation(k)] + rng.normal(0, rng.choice([0.1, 3.0]), k)
        assert nearest_permutation(m, t) == _exhaustive_nearest(m, t)
    # exact ties keep the lexicographic first, identity first
    assert nearest_permutation(np.zeros(k), t) == tuple(range(k))


def test_relabelled_errors_k3_in_a_permuted_mode():
    truth = TrueParameters((3.0, -1.0, 1.0), (0.4, 0.3, 0.3), 0.1, 100_000)
    rng = np.random.default_rng(1)
    perm = [2, 0, 1]  # model component k is true component perm[k]
    s = np.asarray(truth.slopes)[perm] + rng.normal(0, 0.01, (2, 300, 3))
    w = np.broadcast_to(np.asarray(truth.weights)[perm], s.shape).copy()
    sg = 0.1 + rng.normal(0, 0.001, (2, 300))
    for relabel_by in ("chain", "pooled", "draw"):
        out = relabelled_errors(s, w, sg, truth, relabel_by=relabel_by)
        assert out["slope_abs_error"] < 0.005 and out["weight_abs_error"] < 1e-12
        assert out["coverage_slopes"] == 1.0
    # new component k is old component inverse(perm)[k]
    assert relabelled_errors(s, w, sg, truth, relabel_by="pooled")["permutations"] == (1, 2, 0)


def test_draw_relabelling_for_large_k_uses_the_assignment():
    truth = TrueParameters(tuple(float(v) for v in range(5)), (0.2,) * 5, 0.1, 1000)
    rng = np.random.default_rng(4)
    s = np.stack([rng.permutation(5) + rng.normal(0, 0.01, 5) for _ in range(40)])[None]
    out = relabelled_errors(s, np.full_like(s, 0.2), np.full(s.shape[:2], 0.1), truth,
                            relabel_by="draw")
    assert out["slope_abs_error"] < 0.01
