"""Per-fit metrics (label-invariant errors, coverage, convergence, PSIS k-hat) and the statistics
used to aggregate outcomes over runs (Wilson intervals, exact binomial test of equal modes).

Conventions
-----------
* Draw arrays: slopes, weights (chains, draws, K); sigma (chains, draws).
* A permutation ``perm`` is a tuple of component indices; ``relabel(a, perm) = a[..., perm]``,
  i.e. new component k is old component ``perm[k]``. ``nearest_permutation(m, t)`` returns the
  perm that makes ``relabel(m, perm)`` closest (sum of squares) to ``t``.
* Central intervals are 94% (quantiles 0.03 and 0.97, ArviZ's default HDI probability) and
  include their end points.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from .classify import TrueParameters

__all__ = [
    "INTERVAL_PROB",
    "nearest_permutation",
    "relabel",
    "relabel_per_chain",
    "relabelled_errors",
    "convergence_diagnostics",
    "wilson_interval",
    "equal_modes_pvalue",
    "psis_khat",
    "psis_khat_mcse",
    "gaussian_logq",
]

INTERVAL_PROB = 0.94


def nearest_permutation(slope_means, true_slopes) -> tuple[int, ...]:
    """Permutation ``perm`` minimising ``sum_k (slope_means[perm[k]] - true_slopes[k])**2``.

    An optimal assignment (``scipy.optimize.linear_sum_assignment`` on the squared differences),
    so any K is cheap (no K! enumeration). Ties go to the first permutation in lexicographic
    order (the identity first), as the former exhaustive search did: the assignment's cost is
    compared with the identity's and every lexicographically earlier permutation is only
    needed when costs tie exactly, which is checked for small K. NaN means: no informative
    ordering (the identity).
    """
    m = np.asarray(slope_means, dtype=float).ravel()
    t = np.asarray(true_slopes, dtype=float).ravel()
    if m.shape != t.shape:
        raise ValueError(f"shape mismatch: {m.shape} vs {t.shape}")
    identity = tuple(range(m.size))
    if not np.all(np.isfinite(m)) or not np.all(np.isfinite(t)):
        return identity
    cost = (m[None, :] - t[:, None]) ** 2  # cost[k, i]: true k taken by model component i
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    best = tuple(int(c) for c in cols[np.argsort(rows)])
    best_cost = float(cost[np.arange(m.size), list(best)].sum())
    if m.size <= _TIE_CHECK_MAX_K:
        # keep the documented lexicographic tie-break: the first permutation with the least
        # cost (the assignment solver's choice among equal costs is unspecified)
        for perm in itertools.permutations(range(m.size)):
            if perm >= best:
                break
            if float(cost[np.arange(m.size), list(perm)].sum()) <= best_cost:
                return tuple(int(i) for i in perm)
    return best


#: up to this K the exact lexicographic tie-break of nearest_permutation is checked (K! small)
_TIE_CHECK_MAX_K = 6


def relabel(array, permutation) -> np.ndarray:
    """Reorder the LAST axis: ``out[..., k] = array[..., permutation[k]]``."""
    a = np.asarray(array)
    perm = list(permutation)
    if sorted(perm) != list(range(a.shape[-1])):
        raise ValueError(f"{permutation} is not a permutation of {a.shape[-1]} components")
    return a[..., perm]


def relabel_per_chain(slopes, weights, reference=None):
    """Relabel each chain to a common labelling.

    ``reference``: slopes to match (e.g. ``truth.slopes``); None = chain 0's posterior-mean
    slopes (so chain 0 is never changed). Each chain's posterior-mean slopes pick its nearest
    permutation of the reference, applied to its slopes and weights.
    Returns ``(slopes_relabelled, weights_relabelled, permutations)`` (one perm per chain).
    """
    s = np.asarray(slopes, dtype=float)
    w = np.asarray(weights, dtype=float)
    if s.ndim != 3 or s.shape != w.shape:
        raise ValueError(f"expected slopes/weights (chains, draws, K); got {s.shape}, {w.shape}")
    ref = s[0].mean(axis=0) if reference is None else np.asarray(reference, dtype=float)
    out_s, out_w, perms = np.empty_like(s), np.empty_like(w), []
    for c in range(s.shape[0]):
        perm = nearest_permutation(s[c].mean(axis=0), ref)
        out_s[c], out_w[c] = relabel(s[c], perm), relabel(w[c], perm)
        perms.append(perm)
    return out_s, out_w, tuple(perms)


def _draw_permutations(s, t_s) -> np.ndarray:
    """Per draw, the nearest permutation of the truth (sum of squares), (n, K).

    K = 2 (and K <= 3) compares all K! permutations at once, vectorised, first minimum =
    lexicographic tie-break; larger K solves one optimal assignment per draw instead of
    enumerating K! permutations."""
    k = s.shape[1]
    if k <= 3:
        all_perms = np.array(list(itertools.permutations(range(k))))
        cost = ((s[:, all_perms] - t_s) ** 2).sum(axis=-1)  # (n, K!)
        return all_perms[np.argmin(cost, axis=1)]  # first minimum = lexicographic tie-break
    return np.array([nearest_permutation(row, t_s) for row in s], dtype=int).reshape(-1, k)


def _central_interval(draws, prob=INTERVAL_PROB):
    lo = (1.0 - prob) / 2.0
    return np.quantile(draws, lo, axis=0), np.quantile(draws, 1.0 - lo, axis=0)


def relabelled_errors(slopes, weights, sigma, truth: TrueParameters, relabel_by: str = "chain") -> dict:
    """Label-invariant posterior-mean errors and 94% central-interval coverage.

    relabel_by:
      "chain" (default): each chain is relabelled to its nearest permutation of the truth, then
        draws are pooled (two chains in swapped modes both count as correct);
      "pooled": one permutation from the pooled posterior-mean slopes;
      "draw": each draw relabelled to its nearest permutation (pivotal relabelling; also handles
        one set of particles spread over both modes).
    Returns slope_abs_error (max over k of |mean - truth|), weight_abs_error (max over k),
    sigma_abs_error, coverage_slopes / coverage_weights (fraction of components whose central
    94% interval contains the truth), coverage_sigma (0.0 or 1.0), and the permutations used
    (``permutations``: per chain for "chain", one for "pooled", None for "draw").
    """
    s = np.asarray(slopes, dtype=float)
    w = np.asarray(weights, dtype=float)
    sg = np.asarray(sigma, dtype=float)
    if s.ndim != 3 or s.shape != w.shape or s.shape[:2] != sg.shape:
        raise ValueError(f"bad shapes {s.shape}, {w.shape}, {sg.shape}")
    t_s = np.asarray(truth.slopes, dtype=float)
    t_w = np.asarray(truth.weights, dtype=float)
    k = s.shape[-1]
    if relabel_by == "chain":
        s, w, perms = relabel_per_chain(s, w, reference=t_s)
        s, w = s.reshape(-1, k), w.reshape(-1, k)
    elif relabel_by == "pooled":
        s, w = s.reshape(-1, k), w.reshape(-1, k)
        perms = nearest_permutation(s.mean(axis=0), t_s)
        s, w = relabel(s, perms), relabel(w, perms)
    elif relabel_by == "draw":
        s, w = s.reshape(-1, k), w.reshape(-1, k)
        best = _draw_permutations(s, t_s)
        rows = np.arange(s.shape[0])[:, None]
        s, w, perms = s[rows, best], w[rows, best], None
    else:
        raise ValueError("relabel_by must be 'chain', 'pooled' or 'draw'")
    sg = sg.ravel()
    s_lo, s_hi = _central_interval(s)
    w_lo, w_hi = _central_interval(w)
    sg_lo, sg_hi = _central_interval(sg)
    return {
        "slope_abs_error": float(np.max(np.abs(s.mean(axis=0) - t_s))),
        "weight_abs_error": float(np.max(np.abs(w.mean(axis=0) - t_w))),
        "sigma_abs_error": float(abs(sg.mean() - truth.noise_sd)),
        "coverage_slopes": float(np.mean((s_lo <= t_s) & (t_s <= s_hi))),
        "coverage_weights": float(np.mean((w_lo <= t_w) & (t_w <= w_hi))),
        "coverage_sigma": float((sg_lo <= truth.noise_sd) & (truth.noise_sd <= sg_hi)),
        "permutations": perms,
    }


def _nan_extreme(values, fn) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(fn(v)) if v.size else float("nan")


def _diagnostics(dataset, n_chains) -> dict:
    import arviz as az

    def flat(ds):
        return np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars])

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, method in (("rhat_max", "rank"), ("rhat_split_max", "split")):
            out[key] = (
                _nan_extreme(flat(az.rhat(dataset, method=method)), np.max)
                if n_chains >= 2
                else float("nan")
            )
        out["ess_bulk_min"] = _nan_extreme(flat(az.ess(dataset, method="bulk")), np.min)
        out["ess_tail_min"] = _nan_extreme(flat(az.ess(dataset, method="tail")), np.min)
    return out


def convergence_diagnostics(slopes, weights, sigma) -> dict:
    """Max R-hat, min bulk ESS and min tail ESS over slopes, weights and sigma (ArviZ 0.23
    ``az.rhat`` / ``az.ess``), raw and after ``relabel_per_chain`` to chain 0.

    ``rhat_max_*`` is the rank-normalised split R-hat (ArviZ default, Vehtari et al. 2021; the
    one to compare with 1.01). It is BOUNDED: chains sitting in completely separated modes give
    only about 1.7-1.8 (ranks cannot grow with the distance). ``rhat_split_max_*`` is the classic
    split R-hat on the raw values (``method="split"``), unbounded: about 200+ for chains in the
    two modes (3, -1) / (-1, 3) with sd 0.01, so it shows how far apart the chains are.

    R-hat is NaN for a single chain (undefined; the multi-chain comparison is what detects chains
    in different modes). Entries ArviZ returns as NaN (e.g. a constant parameter, too few draws)
    are ignored in the max/min; if all are NaN the result is NaN.
    Keys: rhat_max_raw, rhat_max_relabelled, rhat_split_max_raw, rhat_split_max_relabelled,
    ess_bulk_min_raw, ess_bulk_min_relabelled, ess_tail_min_raw, ess_tail_min_relabelled,
    n_chains, n_draws, chain_permutations.
    """
    import arviz as az

    s = np.asarray(slopes, dtype=float)
    w = np.asarray(weights, dtype=float)
    sg = np.asarray(sigma, dtype=float)
    if s.ndim != 3 or s.shape != w.shape or s.shape[:2] != sg.shape:
        raise ValueError(f"bad shapes {s.shape}, {w.shape}, {sg.shape}")
    n_chains, n_draws = sg.shape
    s_rel, w_rel, perms = relabel_per_chain(s, w)
    out = {"n_chains": int(n_chains), "n_draws": int(n_draws), "chain_permutations": perms}
    for tag, (ss, ww) in (("raw", (s, w)), ("relabelled", (s_rel, w_rel))):
        ds = az.convert_to_dataset({"slopes": ss, "weights": ww, "sigma": sg})
        for key, value in _diagnostics(ds, n_chains).items():
            out[f"{key}_{tag}"] = value
    return out


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998 method 3).

    A thin wrapper of scipy's ``binomtest(k, n).proportion_ci(method="wilson")`` so that the
    tables, figures and report all share one tested implementation; the wrapper keeps the
    pipeline's conventions: trials == 0 gives (nan, nan) rather than an error, and the interval
    ends exactly at 0 (k = 0) or 1 (k = n). It is the right interval for ONE cell's rate (its
    seeds are independent); a contrast of two cells fitted on the same seeds is paired
    (``vimodes.contrasts``).
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}, {trials}")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    if trials == 0:
        return float("nan"), float("nan")
    from scipy import stats  # lazily: 1.2 s of every classify job's imports

    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level,
                                                                     method="wilson")
    return float(ci.low), float(ci.high)


def equal_modes_pvalue(n_mode_a: int, n_mode_b: int) -> float:
    """Two-sided exact binomial test of P(mode_A | single mode) = 0.5 (scipy ``binomtest``);
    NaN when no run landed on a mode."""
    n = int(n_mode_a) + int(n_mode_b)
    if n_mode_a < 0 or n_mode_b < 0:
        raise ValueError("counts must be >= 0")
    if n == 0:
        return float("nan")
    from scipy import stats  # lazily: 1.2 s of every classify job's imports

    return float(stats.binomtest(int(n_mode_a), n, 0.5, alternative="two-sided").pvalue)


def psis_khat(log_p, log_q) -> float:
    """Pareto k-hat of the importance ratios p/q for draws from q (Yao et al. 2018).

    ``log_p``: target log density (unnormalised is fine) at draws from q; ``log_q``: the
    approximation's log density at the same draws. Uses ``az.psislw(log_p - log_q)`` (ArviZ
    0.23: returns (smoothed log weights, k-hat)); reff = 1 (independent draws from q).
    k-hat < 0.5 good, 0.5-0.7 usable, > 0.7 unreliable.
    Special cases: any NaN or +inf ratio => NaN; ratios constant up to rounding
    (range <= 1e-10 * max(1, max|log p|, max|log q|)), i.e. q equal to the target up to the
    normalising constant, => -inf (bounded weights, no tail to fit). ArviZ returns +inf when
    there are too few draws for the tail fit (<= 4 tail draws).
    """
    lp = np.asarray(log_p, dtype=float).ravel()
    lq = np.asarray(log_q, dtype=float).ravel()
    if lp.shape != lq.shape:
        raise ValueError(f"shape mismatch {lp.shape} vs {lq.shape}")
    if lp.size == 0:
        return float("nan")
    return float(_psis_khat_rows(lp[None, :], lq[None, :])[0])


def _psis_khat_rows(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    """``psis_khat`` of every row of (rows, draws) arrays, in one call of ArviZ for the rows
    that need a tail fit (a bootstrap's 200 resamples: one call instead of 200)."""
    import arviz as az

    lw = lp - lq
    khat = np.full(lw.shape[0], np.nan)
    bad = np.any(np.isnan(lw) | (lw == np.inf), axis=1) | ~np.any(np.isfinite(lw), axis=1)
    scale = np.maximum.reduce([np.ones(lw.shape[0]),
                               np.max(np.abs(np.where(np.isfinite(lp), lp, 0.0)), axis=1),
                               np.max(np.abs(np.where(np.isfinite(lq), lq, 0.0)), axis=1)])
    with np.errstate(invalid="ignore"):
        flat = np.all(np.isfinite(lw), axis=1) & (np.ptp(lw, axis=1) <= 1e-10 * scale)
    khat[~bad & flat] = -np.inf
    fit = ~bad & ~flat
    if np.any(fit):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, tail = az.psislw(lw[fit], reff=1.0)
        khat[fit] = np.asarray(tail, dtype=float)
    return khat


def psis_khat_mcse(log_p, log_q, n_boot: int = 200,
                   rng: np.random.Generator | int | None = None) -> tuple[float, float]:
    """Pareto k-hat (``psis_khat``) and its Monte Carlo standard error.

    k-hat is itself an estimate from a finite set of draws (a generalized Pareto fit to the
    largest ratios): with a few thousand draws its sampling sd is about 0.1, so a k-hat of
    0.65 vs 0.75 is not evidence that one fit is better. The MCSE here is a NONPARAMETRIC
    BOOTSTRAP over draws: the sd (ddof=1) of ``psis_khat`` over ``n_boot`` resamples, with
    replacement, of the (log_p, log_q) pairs. Draws from q are independent, so resampling
    single draws is the right scheme (no blocks); the bootstrap sd is an approximation (ties
    from resampling and the slowly varying tail make it rough), good enough to say how many
    digits of k-hat mean something, and to compare k-hat with a threshold.

    Returns (khat, mcse). mcse is NaN when k-hat is not finite (NaN: bad input; -inf: no tail)
    or fewer than two resamples give a finite k-hat; non-finite resamples are left out.
    ``rng``: a Generator or an int seed (None: fresh entropy, not reproducible).
    """
    lp = np.asarray(log_p, dtype=float).ravel()
    lq = np.asarray(log_q, dtype=float).ravel()
    khat = psis_khat(lp, lq)  # also checks the shapes
    if not np.isfinite(khat):
        return khat, float("nan")
    if n_boot < 2:
        raise ValueError("n_boot must be >= 2")
    rng = np.random.default_rng(rng)
    # one resample per call of the generator, as drawn before the rows were batched
    idx = np.stack([rng.integers(0, lp.size, size=lp.size) for _ in range(n_boot)])
    boot = _psis_khat_rows(lp[idx], lq[idx])
    boot = boot[np.isfinite(boot)]
    mcse = float(np.std(boot, ddof=1)) if boot.size >= 2 else float("nan")
    return khat, mcse


def importance_diagnostics(log_p, log_q, with_khat: bool, rng=None) -> dict:
    """The full-data ELBO estimate (mean of log p - log q over all draws given) and, where
    ``with_khat``, PSIS k-hat with its bootstrap MCSE (``psis_khat_mcse``) from the same draws.

    Both fitting engines report through this one function, so their records have the same keys.
    """
    log_w = np.asarray(log_p, dtype=float) - np.asarray(log_q, dtype=float)
    out = {"elbo_full": float(np.mean(log_w)) if log_w.size and np.all(np.isfinite(log_w))
           else None,
           "psis_khat": None, "psis_khat_mcse": None,
           "khat_draws": int(log_w.size) if with_khat else 0,
           "diagnostics_error": None}
    if with_khat and log_w.size:
        khat, mcse = psis_khat_mcse(log_p, log_q, rng=rng)
        out["psis_khat"] = float(khat) if np.isfinite(khat) else None
        out["psis_khat_mcse"] = float(mcse) if np.isfinite(mcse) else None
    return out


NO_IMPORTANCE_DIAGNOSTICS = {"elbo_full": None, "psis_khat": None, "psis_khat_mcse": None,
                             "khat_draws": 0, "diagnostics_error": None}


def gaussian_logq(draws_flat, mean, cov) -> np.ndarray:
    """Log density of N(mean, cov) at ``draws_flat`` (S, d) (scipy ``multivariate_normal``).

    ``cov`` may be a (d, d) matrix or a length-d vector of variances (mean-field). A 1-D
    ``draws_flat`` is read as S draws of a 1-dimensional variable when d == 1. Returns shape (S,).
    """
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    d = mean.size
    cov = np.asarray(cov, dtype=float)
    if cov.ndim <= 1:
        cov = np.diag(np.broadcast_to(cov, (d,)))
    x = np.asarray(draws_flat, dtype=float)
    if x.ndim == 1:
        x = x[:, None] if d == 1 else x[None, :]
    if x.shape[-1] != d or cov.shape != (d, d):
        raise ValueError(f"shapes: draws {x.shape}, mean {mean.shape}, cov {cov.shape}")
    from scipy import stats  # lazily: 1.2 s of every classify job's imports

    return np.atleast_1d(stats.multivariate_normal(mean=mean, cov=cov).logpdf(x)).reshape(x.shape[0])


def relabelled_slope_sd(slopes, true_slopes) -> np.ndarray:
    """Posterior sd of each TRUE component's slope, (K,): every draw (of every chain) is
    relabelled to its nearest permutation of the truth before the sd is taken, so a chain that
    switches labels, or chains in different modes, measure the width of one mode rather than the
    distance between modes. ``slopes``: (..., K) draws; NaN when there are fewer than 2 draws."""
    s = np.asarray(slopes, dtype=float)
    t = np.asarray(true_slopes, dtype=float)
    if s.shape[-1] != t.size:
        raise ValueError(f"draws have K={s.shape[-1]} components, the truth {t.size}")
    flat = s.reshape(-1, t.size)
    if len(flat) < 2:
        return np.full(t.size, np.nan)
    perms = _draw_permutations(flat, t)
    aligned = np.take_along_axis(flat, perms, axis=1)
    return aligned.std(axis=0, ddof=1)


def reference_slope_sd_from_fits(per_fit_sd) -> np.ndarray:
    """The regime's reference posterior sd per true component: the median over the reference
    fits (one data set each) of their ``relabelled_slope_sd``; fits with a non-finite sd are
    left out. Raises when no fit gives a finite value (no reference can be derived)."""
    sds = np.asarray(per_fit_sd, dtype=float)
    if sds.ndim != 2:
        raise ValueError(f"expected (fits, K) sds, got shape {sds.shape}")
    finite = sds[np.all(np.isfinite(sds), axis=1)]
    if not len(finite):
        raise ValueError("no reference fit has a finite slope sd")
    return np.median(finite, axis=0)
