# ruff: noqa  -- a frozen, verbatim copy of src/vimodes/classify.py before the K generalisation
# (commit 4078374): the reference of the K = 2 equivalence test in test_classify_k.py. Never edit.
"""Outcome taxonomy of one fit of the 2-component mixture of linear regressions, from its DRAWS.

The true model has slopes ``truth.slopes`` (the study: (3, -1)), weights ``truth.weights``
((.5, .5)) and noise sd ``truth.noise_sd`` (0.1). Because the priors are exchangeable the
posterior has two exact permutation modes:

* ``mode_A``: component 0 has slope ``truth.slopes[0]``, component 1 has ``truth.slopes[1]``
  (the labelling of the truth), weights ``truth.weights``;
* ``mode_B``: the swapped labelling, slopes ``truth.slopes[::-1]``, weights
  ``truth.weights[::-1]``.

Outcome classes (``OUTCOME_CLASSES``)::

    mode_A, mode_B, mode_too_wide, spanning, collapsed, not_converged, failed

``single_mode`` (counted by the pipeline) is ``mode_A`` + ``mode_B`` only: ``mode_too_wide`` sits
on a mode but puts too much of its mass outside it, so it is not counted as landing on the mode.

Inputs are draws: ``slopes`` and ``weights`` of shape (chains, draws, K) with K == 2, ``sigma``
of shape (chains, draws). (A (draws, K) / (draws,) input is read as one chain.) Shapes that do
not match, or K != 2, are programming errors and raise ``ValueError``; everything about the
VALUES of the draws becomes a label.

Rule 0 (failed)
    No chains or no draws, or any NaN/inf in slopes, weights or sigma => ``failed`` (shares,
    centre and minority share are NaN/None). ``classify_failed(message)`` builds the same label
    for a fit that raised an error.

Rule 1 (draw-level assignment, slopes only)
    Separation ``sep = |truth.slopes[0] - truth.slopes[1]|``. Per component k the slope tolerance
    is ``tol_k = max(slope_tolerance_sd * ref_sd_k, slope_tolerance_min_fraction * sep)``, with
    ``ref_sd`` from ``reference_slope_sd(truth)`` unless passed in (e.g. the sd of a NUTS
    reference posterior). For a draw s = (s_0, s_1) define the scaled distances::

        d_A = max_k |s_k - truth.slopes[k]|   / tol_k
        d_B = max_k |s_k - truth.slopes[1-k]| / tol_{1-k}

    (in mode B, component k plays true component 1-k, so it gets that component's tolerance).
    A draw is in basin A if ``d_A <= 1`` and ``d_A < d_B``; in basin B if ``d_B <= 1`` and
    ``d_B < d_A`` (the strict comparison only matters when the tolerances are so wide that the
    two boxes overlap; with the defaults they are disjoint and a draw with ``d_A <= 1`` always has
    ``d_B > 1``; an exact tie inside both boxes counts as neither). Otherwise it is collapsed if
    ``|s_0 - s_1| <= collapse_gap_fraction * sep``; otherwise it is in no basin ("none").
    The edge is INSIDE: ``<=`` everywhere, with a relative slack of ``EDGE_RTOL`` (1e-9) on every
    tolerance so that e.g. 3 + 0.2 counts as 0.2 away from 3 despite binary rounding.
    Shares ``share_mode_A``, ``share_mode_B``, ``share_collapsed`` are fractions of ALL draws
    (all chains pooled); share_none = 1 - the three. The draw-level collapse code looks at the gap
    only; where the equal slopes sit is checked at the fit level (rules 1b, 5, 5b).

Rule 1b (centre, minority share), reported for every non-failed fit, independent of the label
    The centre is the per-component median of the pooled slope draws. ``centre_class`` is
    ``mode_A`` / ``mode_B`` if the rule-1 boxes put the centre in that basin; ``symmetric`` if
    the centre's slope gap is within the collapse band of rule 1 AND the mean of its two slopes
    is within ``collapse_location_fraction * sep`` of the one-line slope (rule 5); else
    ``elsewhere``. ``centre_mass`` is the share of draws with the centre's rule-1 code
    (``share_mode_A``, ``share_mode_B`` or ``share_collapsed``; NaN for ``elsewhere``, which is
    no basin). Location and width are thus separate: a fit centred on mode A with
    ``centre_mass`` 0.3 is on the mode but far too wide. ``minority_share`` =
    ``min(share_A, share_B) / (share_A + share_B)``: how the draws that are in a basin split
    between the two modes (0 for a clean single mode, 0.5 for an even split; NaN when neither
    basin has a draw).

Rule 2 (consistency of a basin), used by rules 3, 4 and 4b
    For the draws assigned to basin M (M = A or B) take the median sigma and the median of each
    weight. Basin M is consistent if ``1/sigma_ratio_max <= median sigma / truth.noise_sd <=
    sigma_ratio_max`` and ``|median weight_k - expected_k| <= weight_tolerance`` for every k,
    where expected = truth.weights for A and truth.weights[::-1] for B.

Rule 3 (spanning)
    ``share_mode_A >= span_min_share`` and ``share_mode_B >= span_min_share``: ``spanning`` if
    both basins are consistent (rule 2), else ``not_converged`` (reason says which check failed).

Rule 4 (single mode)
    ``share_M >= 1 - span_min_share`` (then the other basin has < span_min_share): ``mode_M`` if
    basin M is consistent (rule 2), else ``not_converged`` (reason names the sigma or weight
    check, e.g. slopes in mode A but weights (0.33, 0.67)).

Rule 4b (on a mode, too wide)
    ``centre_class`` is ``mode_M``, ``0 < share_M < 1 - span_min_share``, the other basin holds
    ``< span_min_share`` (else rule 3 applied) and so do the collapsed draws: ``mode_too_wide``
    if basin M is consistent (rule 2), else ``not_converged`` (reason names the check). The
    location is right but the approximation spreads more than ``span_min_share`` of its mass
    outside the mode's box, e.g. a Gaussian centred on (3, -1) with slope sds 0.3 has only ~25% of
    its draws within 0.2 of the mode. When ``share_collapsed >= span_min_share`` the fit is split
    between a mode and the symmetric point (e.g. one chain of four collapsed), which is not a
    wide single-mode approximation: rule 6.

Rule 5 (collapsed)
    ``share_collapsed >= 1 - span_min_share``, AND the median over the collapsed draws of the
    mean of the two slopes is within ``collapse_location_fraction * sep`` of the one-line slope
    ``sum_k truth.weights[k] * truth.slopes[k]`` (the least-squares slope through the origin of
    all points, E[xy] / E[x^2], whatever the distribution of x; the study: 1), AND the median
    sigma of the collapsed draws is at least ``sigma_ratio_max`` times the truth (one line
    explains data from two lines only with a large residual sd; the study: ~1.16, ratio 11.6)
    => ``collapsed`` (mode averaging). Equal slopes anywhere else (e.g. both at -2, or both on one
    true slope) or with a small sigma are not mode averaging: ``not_converged`` with the failed
    check in the reason.

Rule 5b (collapsed, wide)
    A wide approximation centred on the symmetric point is mode averaging too: when fewer than
    ``span_min_share`` of the draws are in either basin, at least half are collapsed, the median
    slope gap is within the collapse tolerance, the median of the mean of the two slopes is
    within the location tolerance of rule 5 and the median sigma is at least ``sigma_ratio_max``
    times the truth (the data are explained by one line), the label is ``collapsed``. This is
    PyMC's default optimiser after 10000 minibatch steps: centre at the symmetric point, sigma
    ~1.16, slope sds ~0.5, so only ~80% of draws have a gap below 1.

Rule 6 (not_converged)
    Anything else: draws in no basin (far-off points, one slope at its prior, half-way between a
    mode and the symmetric point), or mixtures of basins that meet neither rule 3, 4, 4b nor 5
    (e.g. 80% in A and 20% collapsed).

The rules are applied in the order 0, 3, 4, 4b, 5, 5b, 6. Each chain is ALSO classified on its own
with the same rules (``chain_labels``, in chain order); the fit label is from the pooled draws, so
two chains in different modes give ``spanning`` with chain_labels ("mode_A", "mode_B"). For a
failed fit, chains without non-finite draws still get their own label.

Caveat: the question's broken model, whose likelihood treats every minibatch as drawn entirely from
ONE of the two lines (a mixture over whole batches instead of per observation), puts one slope
near the one-line slope 1 and leaves the other at its wide prior; such draws are mostly in no
basin and come out as ``not_converged`` rather than ``collapsed`` (collapse is defined by nearly
equal slopes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "OUTCOME_CLASSES",
    "CENTRE_CLASSES",
    "EDGE_RTOL",
    "TrueParameters",
    "ClassifierSettings",
    "Classification",
    "reference_slope_sd",
    "slope_tolerances",
    "assign_draws",
    "one_line_slope",
    "classify_draws",
    "classify_failed",
]

OUTCOME_CLASSES = ("mode_A", "mode_B", "mode_too_wide", "spanning", "collapsed", "not_converged",
                   "failed")
#: where the centre (per-component median) of a fit's slope draws sits (rule 1b)
CENTRE_CLASSES = ("mode_A", "mode_B", "symmetric", "elsewhere")

#: relative slack on every tolerance, so that a value exactly at the edge (up to binary
#: rounding of e.g. 3 + 0.2) counts as inside.
EDGE_RTOL = 1e-9

# draw-level codes
_NONE, _A, _B, _COLLAPSED = 0, 1, 2, 3

#: E[x^2] for x ~ U(-1, 1)
X_SECOND_MOMENT_UNIFORM = 1.0 / 3.0


@dataclass(frozen=True)
class TrueParameters:
    """Data-generating parameters; the labelling of ``slopes``/``weights`` defines mode_A."""

    slopes: tuple[float, ...]
    weights: tuple[float, ...]
    noise_sd: float
    n_obs: int

    def __post_init__(self) -> None:
        if len(self.slopes) != len(self.weights):
            raise ValueError("slopes and weights must have the same length")
        if not self.noise_sd > 0:
            raise ValueError("noise_sd must be > 0")
        if self.n_obs < 1:
            raise ValueError("n_obs must be >= 1")
        if any(not w > 0 for w in self.weights):
            raise ValueError("weights must be > 0")


@dataclass(frozen=True)
class ClassifierSettings:
    """Tolerances of the classifier. Defaults and why (numbers for the study's truth:
    slopes (3, -1), separation 4, weights (.5, .5), noise sd 0.1, N = 100000, x ~ U(-1, 1)):

    slope_tolerance_sd = 5.0
        A draw from an exact posterior differs from the truth by (posterior draw - posterior
        centre) + (posterior centre - truth), each with sd ~ ref_sd, so by sd ~ sqrt(2) ref_sd;
        5 ref_sd is 3.5 sd of that difference (two-sided miss rate ~ 4e-4 per coordinate). At
        N = 100000 ref_sd = 0.00077, so this term (0.0039) is below the floor and inactive; it
        matters for small n_obs or when a wider ``reference_sd`` is passed in.
    slope_tolerance_min_fraction = 0.05
        Floor of 0.05 * separation = 0.2 in slope. Stochastic-gradient VI does not reach the
        exact optimum, and the reference sd is a lower bound (complete-data information), so a
        floor is needed; 0.2 is 10% of the distance (2 per slope) from a mode to the symmetric
        collapsed point (1, 1), so a draw inside can never be confused with collapse or with the
        other mode (basin boxes disjoint as long as the fraction is < 0.5).
    sigma_ratio_max = 1.25
        At a true mode the posterior sd of sigma is 0.1/sqrt(2N) (0.2% relative) and a minibatch
        VI fit there has sigma within a few % of 0.1, so 25% is many times the noise of a fit
        that is on the mode. A likelihood with the question's normaliser error (log sigma where
        log sigma^2 belongs) has its optimum at sigma = sqrt(2) times the residual sd, ratio
        ~1.41-1.44: the old 1.5 let such a fit pass as a mode, 1.25 does not (1.2 would too,
        1.25 leaves more room for minibatch noise). The collapsed state has ratio 11.6 and the
        question's capped sigma (~1) ratio 10. The bound is tighter than the slope floor: a fit
        with both slopes 0.2 off fits the data with residual sd sqrt(0.1^2 + 0.2^2 E[x^2]) =
        0.153 (ratio 1.53), so a consistent basin also has rms slope errors below ~0.13 (at
        ratio 1.25, sqrt((1.25^2 - 1) 0.1^2 / E[x^2])); draws inside the box but with residuals
        that large are not "on the mode". Rules 5 and 5b use the same ratio as the least
        sigma of a one-line fit.
    weight_tolerance = 0.1
        About 60 posterior sds of a weight (sqrt(.25/N) = 0.0016); excludes the degenerate
        (1/3, 2/3) split of the question's model (off by 0.167) and a dropped component.
    span_min_share = 0.1
        A mode must hold >= 90% of the draws to be "the" mode, and "spanning" needs >= 10% in
        each: with 4 chains one chain (25%) in the other mode is spanning; with SVGD or
        importance-resampled draws a 10% minority is a real second mode, not tail noise.
    collapse_gap_fraction = 0.25
        Slopes within 0.25 * separation = 1.0 of each other: the symmetric state has gap 0 and a
        mode gap 4, so this is the quarter of the way from the symmetric point towards a mode; its
        posterior width there (~0.009 per slope at N = 100000) is far smaller.
    collapse_location_fraction = 0.1
        Collapsed (rules 1b, 5, 5b) also needs the mean of the two slopes within 0.1 *
        separation = 0.4 of the one-line slope sum_k w_k slope_k (= 1): the least-squares line
        through all points, the only place where equal slopes explain the data best. Its
        posterior sd is residual sd / sqrt(N E[x^2]) = 1.16 / 183 = 0.006; minibatch gradients at
        the collapsed state are ~12x noisier than at a mode (residual sd 1.16 vs 0.1), so the
        tolerance is twice the mode floor. Equal slopes at a true slope (distance min_k w_k * sep
        = 2) or far off (both at -2: distance 3) are outside; this needs min_k w_k * sep >
        0.1 * sep, i.e. both weights > 0.1.
    """

    slope_tolerance_sd: float = 5.0
    slope_tolerance_min_fraction: float = 0.05
    sigma_ratio_max: float = 1.25
    weight_tolerance: float = 0.1
    span_min_share: float = 0.1
    collapse_gap_fraction: float = 0.25
    collapse_location_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not self.slope_tolerance_sd >= 0:
            raise ValueError("slope_tolerance_sd must be >= 0")
        if not 0 <= self.slope_tolerance_min_fraction < 0.5:
            raise ValueError("slope_tolerance_min_fraction must be in [0, 0.5)")
        if not self.sigma_ratio_max > 1:
            raise ValueError("sigma_ratio_max must be > 1")
        if not self.weight_tolerance > 0:
            raise ValueError("weight_tolerance must be > 0")
        if not 0 < self.span_min_share <= 0.5:
            raise ValueError("span_min_share must be in (0, 0.5]")
        if not 0 <= self.collapse_gap_fraction < 1:
            raise ValueError("collapse_gap_fraction must be in [0, 1)")
        if not self.collapse_location_fraction > 0:
            raise ValueError("collapse_location_fraction must be > 0")


@dataclass(frozen=True)
class Classification:
    """Result of ``classify_draws``. Shares are fractions of all (pooled) draws; NaN if failed.
    ``centre_class`` (one of ``CENTRE_CLASSES``; None if failed), ``centre_mass`` and
    ``minority_share``: rule 1b of the module docstring."""

    label: str
    share_mode_A: float
    share_mode_B: float
    share_collapsed: float
    chain_labels: tuple[str, ...]
    reason: str
    centre_class: str | None = None
    centre_mass: float = float("nan")
    minority_share: float = float("nan")

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "share_mode_A": self.share_mode_A,
            "share_mode_B": self.share_mode_B,
            "share_collapsed": self.share_collapsed,
            "chain_labels": list(self.chain_labels),
            "reason": self.reason,
            "centre_class": self.centre_class,
            "centre_mass": self.centre_mass,
            "minority_share": self.minority_share,
        }


def reference_slope_sd(
    truth: TrueParameters, x_second_moment: float = X_SECOND_MOMENT_UNIFORM
) -> np.ndarray:
    """Asymptotic posterior sd of each slope at a permutation mode.

    ``noise_sd / sqrt(n_obs * weight_k * E[x^2])``, with E[x^2] = 1/3 for x ~ U(-1, 1).
    It is the inverse Fisher information of a regression through the origin fitted to the
    ``n_obs * weight_k`` points of component k, i.e. as if every point's component were known
    (complete-data information). The observed-data information is smaller (the two lines cross at
    x = 0, where points are ambiguous), so the true posterior sd is somewhat LARGER than this:
    treat it as a lower bound. Study values: 0.1 / sqrt(1e5 * .5 / 3) = 0.000775.
    """
    w = np.asarray(truth.weights, dtype=float)
    return truth.noise_sd / np.sqrt(truth.n_obs * w * x_second_moment)


def slope_tolerances(
    truth: TrueParameters,
    settings: ClassifierSettings = ClassifierSettings(),
    reference_sd=None,
) -> np.ndarray:
    """Per-component slope tolerance ``max(slope_tolerance_sd * ref_sd_k, min_fraction * sep)``."""
    k = len(truth.slopes)
    ref = reference_slope_sd(truth) if reference_sd is None else reference_sd
    ref = np.broadcast_to(np.asarray(ref, dtype=float), (k,))
    if not np.all(np.isfinite(ref)) or np.any(ref < 0):
        raise ValueError("reference_sd must be finite and >= 0")
    sep = abs(truth.slopes[0] - truth.slopes[1])
    tol = np.maximum(settings.slope_tolerance_sd * ref, settings.slope_tolerance_min_fraction * sep)
    if np.any(tol <= 0):
        raise ValueError("slope tolerance is 0: set slope_tolerance_min_fraction or reference_sd > 0")
    return tol


def one_line_slope(truth: TrueParameters) -> float:
    """Slope of the least-squares line through the origin and ALL points, E[xy] / E[x^2] =
    ``sum_k weights_k * slopes_k`` (x independent of the component): where mode averaging puts
    both slopes. The study: 0.5 * 3 + 0.5 * (-1) = 1."""
    return float(np.dot(truth.weights, truth.slopes) / np.sum(truth.weights))


def _as_arrays(slopes, weights, sigma, truth):
    slopes = np.asarray(slopes, dtype=float)
    weights = np.asarray(weights, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    if slopes.ndim == 2 and weights.ndim == 2 and sigma.ndim == 1:  # (draws, K): one chain
        slopes, weights, sigma = slopes[None], weights[None], sigma[None]
    if slopes.ndim != 3 or weights.ndim != 3 or sigma.ndim != 2:
        raise ValueError(
            "expected slopes/weights of shape (chains, draws, K) and sigma (chains, draws); got "
            f"{slopes.shape}, {weights.shape}, {sigma.shape}"
        )
    if slopes.shape != weights.shape or slopes.shape[:2] != sigma.shape:
        raise ValueError(f"shape mismatch: {slopes.shape}, {weights.shape}, {sigma.shape}")
    k = len(truth.slopes)
    if k != 2:
        raise ValueError("the mode_A/mode_B taxonomy is defined for K == 2 components")
    if slopes.shape[2] != k:
        raise ValueError(f"draws have K={slopes.shape[2]} components, truth has {k}")
    return slopes, weights, sigma


def assign_draws(
    slopes,
    truth: TrueParameters,
    settings: ClassifierSettings = ClassifierSettings(),
    reference_sd=None,
) -> np.ndarray:
    """Draw-level assignment (rule 1). ``slopes`` (..., 2) finite; returns int codes of shape
    ``slopes.shape[:-1]``: 0 none, 1 basin A, 2 basin B, 3 collapsed."""
    s = np.asarray(slopes, dtype=float)
    true = np.asarray(truth.slopes, dtype=float)
    tol = slope_tolerances(truth, settings, reference_sd) * (1.0 + EDGE_RTOL)
    d_a = np.max(np.abs(s - true) / tol, axis=-1)
    d_b = np.max(np.abs(s - true[::-1]) / tol[::-1], axis=-1)
    sep = abs(true[0] - true[1])
    gap = np.abs(s[..., 0] - s[..., 1])
    in_a = (d_a <= 1.0) & (d_a < d_b)
    in_b = (d_b <= 1.0) & (d_b < d_a)
    collapsed = gap <= settings.collapse_gap_fraction * sep * (1.0 + EDGE_RTOL)
    codes = np.full(s.shape[:-1], _NONE, dtype=np.int8)
    codes[collapsed] = _COLLAPSED
    codes[in_a] = _A
    codes[in_b] = _B
    return codes


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.atleast_1d(values)) + ")"


def _basin_consistency(weights, sigma, expected_weights, truth, settings) -> tuple[bool, str]:
    """Rule 2 on the draws of one basin (weights (n, K), sigma (n,), n >= 1)."""
    med_sigma = float(np.median(sigma))
    med_w = np.median(weights, axis=0)
    ratio = med_sigma / truth.noise_sd
    r = settings.sigma_ratio_max * (1.0 + EDGE_RTOL)
    problems = []
    if not (1.0 / r <= ratio <= r):
        problems.append(
            f"median sigma {med_sigma:.4g} is {ratio:.3g}x the truth "
            f"(allowed [1/{settings.sigma_ratio_max:g}, {settings.sigma_ratio_max:g}])"
        )
    w_err = np.abs(med_w - expected_weights)
    if np.any(w_err > settings.weight_tolerance * (1.0 + EDGE_RTOL)):
        problems.append(
            f"median weights {_fmt(med_w)} vs expected {_fmt(expected_weights)} "
            f"(tolerance {settings.weight_tolerance:g})"
        )
    if problems:
        return False, "; ".join(problems)
    return True, f"median sigma {med_sigma:.4g}, median weights {_fmt(med_w)}"


def _location_tolerance(truth, settings) -> float:
    return settings.collapse_location_fraction * abs(truth.slopes[0] - truth.slopes[1])


def _at_one_line_slope(mean_slope, truth, settings) -> bool:
    tolerance = _location_tolerance(truth, settings)
    return abs(mean_slope - one_line_slope(truth)) <= tolerance * (1.0 + EDGE_RTOL)


def _one_line_check(mean_slope, median_sigma, truth, settings) -> str:
    """Location and sigma checks of rules 5/5b; "" if both pass, else what failed."""
    target = one_line_slope(truth)
    tolerance = _location_tolerance(truth, settings)
    problems = []
    if not _at_one_line_slope(mean_slope, truth, settings):
        problems.append(f"their mean {mean_slope:.4g} is {abs(mean_slope - target):.3g} from the "
                        f"one-line slope {target:.4g} (tolerance {tolerance:.3g})")
    if not median_sigma >= settings.sigma_ratio_max * truth.noise_sd * (1.0 - EDGE_RTOL):
        problems.append(f"median sigma {median_sigma:.4g} is below {settings.sigma_ratio_max:g}x "
                        f"the truth {truth.noise_sd:.4g}")
    return "; ".join(problems)


_CENTRE_NAMES = {_A: "mode_A", _B: "mode_B", _COLLAPSED: "symmetric", _NONE: "elsewhere"}


def _centre(flat_slopes, codes, truth, settings, reference_sd) -> tuple[str, float, np.ndarray]:
    """Rule 1b: (centre_class, centre_mass, centre) of finite pooled slope draws (n, 2)."""
    centre = np.median(flat_slopes, axis=0)
    code = int(assign_draws(centre, truth, settings, reference_sd))
    if code == _COLLAPSED and not _at_one_line_slope(float(centre.mean()), truth, settings):
        # equal slopes away from the one-line slope are not where mode averaging lands
        code = _NONE
    mass = float(np.count_nonzero(codes == code) / codes.size) if code != _NONE else float("nan")
    return _CENTRE_NAMES[code], mass, centre


def _classify_finite(slopes, weights, sigma, truth, settings, reference_sd):
    """Rules 1-6 on finite, non-empty draws; returns (label, shares, reason, centre info)."""
    codes = assign_draws(slopes, truth, settings, reference_sd).ravel()
    w = weights.reshape(-1, weights.shape[-1])
    sg = sigma.ravel()
    flat = slopes.reshape(-1, 2)
    n = codes.size
    share_a = float(np.count_nonzero(codes == _A) / n)
    share_b = float(np.count_nonzero(codes == _B) / n)
    share_c = float(np.count_nonzero(codes == _COLLAPSED) / n)
    share_none = max(0.0, 1.0 - share_a - share_b - share_c)
    shares = (share_a, share_b, share_c)
    in_basins = share_a + share_b
    minority = min(share_a, share_b) / in_basins if in_basins > 0 else float("nan")
    centre_class, centre_mass, centre = _centre(flat, codes, truth, settings, reference_sd)
    info = (centre_class, centre_mass, minority)
    s = settings.span_min_share
    share_txt = (
        f"shares A={share_a:.3g} B={share_b:.3g} collapsed={share_c:.3g} none={share_none:.3g} "
        f"of {n} draws; centre {_fmt(centre)} ({centre_class})"
    )
    true_w = np.asarray(truth.weights, dtype=float)
    expected = {_A: true_w, _B: true_w[::-1]}

    def consistency(code):
        sel = codes == code
        return _basin_consistency(w[sel], sg[sel], expected[code], truth, settings)

    # Rule 3: spanning
    if share_a >= s and share_b >= s:
        ok_a, why_a = consistency(_A)
        ok_b, why_b = consistency(_B)
        if ok_a and ok_b:
            return "spanning", shares, f"both basins hold >= {s:g} of draws; {share_txt}", info
        bad = "; ".join(
            f"basin {name}: {why}" for name, ok, why in (("A", ok_a, why_a), ("B", ok_b, why_b)) if not ok
        )
        return ("not_converged", shares,
                f"draws in both basins but inconsistent: {bad}; {share_txt}", info)
    # Rule 4: single mode
    for code, share, name in ((_A, share_a, "mode_A"), (_B, share_b, "mode_B")):
        if share >= 1.0 - s:
            ok, why = consistency(code)
            if ok:
                return name, shares, f"{share_txt}; {why}", info
            return "not_converged", shares, f"slopes in {name} basin but {why}; {share_txt}", info
    # Rule 4b: centred on a mode, but too much of the mass outside its box
    for code, share, name in ((_A, share_a, "mode_A"), (_B, share_b, "mode_B")):
        if centre_class == name and share > 0 and share_c < s:
            ok, why = consistency(code)
            if ok:
                return ("mode_too_wide", shares,
                        f"centred in the {name} basin but only {share:.3g} of draws in it "
                        f"(< {1.0 - s:g}); {share_txt}; {why}", info)
            return ("not_converged", shares,
                    f"centred in the {name} basin ({share:.3g} of draws in it) but {why}; "
                    f"{share_txt}", info)
    # Rule 5: collapsed, at the one-line slope and with the one-line residual sd
    if share_c >= 1.0 - s:
        sel = codes == _COLLAPSED
        mean_slope = float(np.median(flat[sel].mean(axis=1)))
        median_sigma = float(np.median(sg[sel]))
        problems = _one_line_check(mean_slope, median_sigma, truth, settings)
        if problems:
            return ("not_converged", shares,
                    f"slopes nearly equal but not mode averaging: {problems}; {share_txt}", info)
        return (
            "collapsed",
            shares,
            f"slopes nearly equal (median mean {mean_slope:.4g}), median sigma "
            f"{median_sigma:.4g}; {share_txt}",
            info,
        )
    # Rule 5b: collapsed but wide -- a wide approximation centred on the symmetric point
    centre_gap = abs(float(np.median(flat[:, 0] - flat[:, 1])))
    gap_tolerance = settings.collapse_gap_fraction * abs(truth.slopes[0] - truth.slopes[1])
    if share_a < s and share_b < s and share_c >= 0.5 and centre_gap <= gap_tolerance:
        mean_slope = float(np.median(flat.mean(axis=1)))
        median_sigma = float(np.median(sg))
        problems = _one_line_check(mean_slope, median_sigma, truth, settings)
        if not problems:
            return (
                "collapsed",
                shares,
                f"centred on the symmetric point (median slope gap {centre_gap:.3g}, median mean "
                f"{mean_slope:.4g}, median sigma {median_sigma:.4g}) with a wide spread; "
                f"{share_txt}",
                info,
            )
        return ("not_converged", shares,
                f"wide with nearly equal slopes but not mode averaging: {problems}; {share_txt}",
                info)
    # Rule 6
    return "not_converged", shares, f"no rule met; {share_txt}", info


def classify_draws(
    slopes,
    weights,
    sigma,
    truth: TrueParameters,
    settings: ClassifierSettings = ClassifierSettings(),
    reference_sd=None,
) -> Classification:
    """Classify a fit from its draws (see the module docstring for the exact rules).

    slopes, weights: (chains, draws, 2); sigma: (chains, draws). ``reference_sd``: scalar or
    (2,) slope sd replacing ``reference_slope_sd(truth)`` in the slope tolerance.
    """
    slopes, weights, sigma = _as_arrays(slopes, weights, sigma, truth)
    n_chains, n_draws = sigma.shape
    nan = float("nan")
    if n_chains == 0 or n_draws == 0:
        return Classification(
            "failed", nan, nan, nan, ("failed",) * n_chains,
            f"no draws (chains={n_chains}, draws={n_draws})",
        )
    finite = (
        np.all(np.isfinite(slopes), axis=-1)
        & np.all(np.isfinite(weights), axis=-1)
        & np.isfinite(sigma)
    )  # (chains, draws)
    chain_labels = []
    for c in range(n_chains):
        if not finite[c].all():
            chain_labels.append("failed")
        else:
            chain_labels.append(
                _classify_finite(slopes[c], weights[c], sigma[c], truth, settings, reference_sd)[0]
            )
    chain_labels = tuple(chain_labels)
    if not finite.all():
        bad = int(np.count_nonzero(~finite))
        return Classification(
            "failed", nan, nan, nan, chain_labels,
            f"non-finite (NaN/inf) values in {bad} of {finite.size} draws",
        )
    label, (a, b, c), reason, (centre_class, centre_mass, minority) = _classify_finite(
        slopes, weights, sigma, truth, settings, reference_sd)
    return Classification(label, a, b, c, chain_labels, reason, centre_class, centre_mass,
                          minority)


def classify_failed(message: str) -> Classification:
    """Classification of a fit that produced no usable draws (exception, NaN ELBO, timeout)."""
    nan = float("nan")
    return Classification("failed", nan, nan, nan, (), str(message))
