"""Outcome taxonomy of one fit of a K-component mixture of linear regressions, from its DRAWS.

The true model has K_t = len(truth.slopes) components with slopes ``truth.slopes`` (the study:
(3, -1)), weights ``truth.weights`` ((.5, .5)) and noise sd ``truth.noise_sd`` (0.1). The fitted
model has K_m components (the last axis of the draws; K_m >= K_t). Because the priors are
exchangeable, a model with K_m = K_t has K! exact permutation modes, one per LABELLING: a
labelling ``perm`` gives model component k the true component ``perm[k]`` (slope
``truth.slopes[perm[k]]``, weight ``truth.weights[perm[k]]``); it is named by its entries joined
with "-", e.g. "0-2-1" (model 1 is true 2, model 2 is true 1); the identity "0-1-2" is the
labelling of the truth. Labellings are numbered in ``itertools.permutations`` order (identity
first). For K = 2 there are two:

* ``mode_A``: the identity labelling "0-1": component 0 has slope ``truth.slopes[0]``, component 1
  has ``truth.slopes[1]``, weights ``truth.weights``;
* ``mode_B``: the swapped labelling "1-0", slopes ``truth.slopes[::-1]``, weights
  ``truth.weights[::-1]``.

Outcome classes (``OUTCOME_CLASSES``, the one vocabulary of the pipeline, tables and plots)::

    mode_A, mode_B, mode_single, mode_too_wide, spanning, partial_collapse, collapsed,
    overfit_empty, overfit_duplicated, not_converged, failed

* single mode: for K = 2 ``mode_A`` / ``mode_B`` exactly as before the K generalisation; for
  K > 2 ``mode_single`` with the labelling in ``Classification.permutation`` (the pipeline's
  ``permutation`` column; also filled for mode_A "0-1" and mode_B "1-0");
* ``spanning``: draws in several labellings' basins (rule 3);
* ``mode_too_wide``: centred on one labelling but too much mass outside it (rule 4b);
* ``collapsed``: all slopes merged at the one-line slope (full collapse, rules 5 and 5b), or
  the other components emptied (rule 5d);
* ``partial_collapse`` (K_t >= 3): two or more components merged on the line of a group of true
  components, the others right (rule 5c);
* ``overfit_empty`` / ``overfit_duplicated`` (K_m > K_t): the truth recovered with the extra
  components empty, or with a true line shared by two components that split its weight (rule 7);
* ``not_converged``: anything else; ``failed``: no usable draws.

``single_mode`` (counted by the pipeline, ``SINGLE_MODE_CLASSES``) is ``mode_A`` + ``mode_B`` +
``mode_single``: ``mode_too_wide`` sits on a mode but puts too much of its mass outside it, so it
is not counted as landing on the mode.

Inputs are draws: ``slopes`` and ``weights`` of shape (chains, draws, K_m), ``sigma`` of shape
(chains, draws). (A (draws, K) / (draws,) input is read as one chain.) Shapes that do not match,
or K_m < K_t (an under-fitted model has no classes), are programming errors and raise
``ValueError``; everything about the VALUES of the draws becomes a label.

Separation ``sep`` = the smallest distance between two true slopes (K = 2: |slopes[0] -
slopes[1]|); every tolerance below that is a fraction of "the separation" uses it, so that the
basin boxes of different labellings stay disjoint for any K.

Rule 0 (failed)
    No chains or no draws, or any NaN/inf in slopes, weights or sigma => ``failed`` (shares,
    centre and minority share are NaN/None). ``classify_failed(message)`` builds the same label
    for a fit that raised an error.

Rule 1 (draw-level assignment, slopes only; K_m = K_t)
    Per true component j the slope tolerance is ``tol_j = max(slope_tolerance_sd * ref_sd_j,
    slope_tolerance_min_fraction * sep)``, with ``ref_sd`` from ``reference_slope_sd(truth)``
    unless passed in (e.g. the sd of a NUTS reference posterior). For a draw s and a labelling
    perm the scaled distance is ``d_perm = max_k |s_k - truth.slopes[perm[k]]| / tol_perm[k]``
    (model component k plays true component perm[k], so it gets that component's tolerance;
    K = 2: d_A with perm (0, 1), d_B with (1, 0)). The draw's labelling is found by optimal
    assignment (``scipy.optimize.linear_sum_assignment`` on the scaled costs
    ``|s_k - truth.slopes[j]| / tol_j``), and the draw is in that labelling's basin if its
    ``d_perm <= 1`` and no other labelling has a distance <= it. When the boxes are disjoint
    (``tol_i + tol_j < |slopes_i - slopes_j|`` for all pairs: the default, fraction < 0.5) a draw
    in a box has every other labelling's components out of their boxes, so the assignment finds
    it and no other labelling competes; when they overlap (a wide reference sd) the distances of
    all K! labellings are compared and the draw goes to the unique smallest (K = 2: in A if
    ``d_A <= 1`` and ``d_A < d_B``; an exact tie inside both boxes counts as neither).
    Otherwise the draw is collapsed if ``max_k s_k - min_k s_k <= collapse_gap_fraction * sep``
    (K = 2: ``|s_0 - s_1|``); otherwise it is in no basin ("none").
    The edge is INSIDE: ``<=`` everywhere, with a relative slack of ``EDGE_RTOL`` (1e-9) on every
    tolerance so that e.g. 3 + 0.2 counts as 0.2 away from 3 despite binary rounding.
    Shares per labelling and ``share_collapsed`` are fractions of ALL draws (all chains pooled);
    ``share_mode_A`` / ``share_mode_B`` are those of the two K = 2 labellings (NaN for K != 2),
    ``share_modes`` the share in any labelling's basin. The draw-level collapse code looks at the
    gap only; where the equal slopes sit is checked at the fit level (rules 1b, 5, 5b).

Rule 1b (centre, minority share), reported for every non-failed fit, independent of the label
    The centre is the per-component median of the pooled slope draws. ``centre_class`` is
    ``mode_A`` / ``mode_B`` (K = 2) or ``mode_single`` (K > 2, labelling in ``permutation``) if
    the rule-1 boxes put the centre in a basin; ``symmetric`` if the centre's slopes are within
    the collapse band of rule 1 AND their mean is within ``collapse_location_fraction * sep`` of
    the one-line slope (rule 5); ``partial`` if the centre has the structure of rule 5c;
    ``overfit`` (K_m > K_t) if it has the structure of rule 7; else ``elsewhere``.
    ``centre_mass`` is the share of draws with the centre's code (its labelling's share,
    ``share_collapsed``, or the share with the centre's rule-5c / rule-7 structure; NaN for
    ``elsewhere``). Location and width are thus separate: a fit centred on mode A with
    ``centre_mass`` 0.3 is on the mode but far too wide. ``minority_share`` = the share of the
    draws in some basin that are NOT in the most populated one (K = 2: ``min(share_A, share_B) /
    (share_A + share_B)``): 0 for a clean single mode, 0.5 for an even split of two; NaN when no
    basin has a draw (and for K_m > K_t).

Rule 2 (consistency of a basin), used by rules 3, 4 and 4b
    For the draws assigned to basin M (a labelling perm) take the median sigma and the median of
    each weight. Basin M is consistent if ``1/sigma_ratio_max <= median sigma / truth.noise_sd <=
    sigma_ratio_max`` and ``|median weight_k - expected_k| <= weight_tolerance`` for every k,
    where expected_k = truth.weights[perm[k]] (K = 2: truth.weights for A, [::-1] for B).

Rule 3 (spanning)
    Two or more labellings each hold ``>= span_min_share`` of the draws (K = 2: A and B):
    ``spanning`` if all those basins are consistent (rule 2), else ``not_converged`` (reason says
    which check of which basin failed).

Rule 4 (single mode)
    ``share_M >= 1 - span_min_share`` (then the other basins have < span_min_share): ``mode_M``
    (K = 2) or ``mode_single`` with ``permutation`` M (K > 2) if basin M is consistent (rule 2),
    else ``not_converged`` (reason names the sigma or weight check, e.g. slopes in mode A but
    weights (0.33, 0.67)).

Rule 4b (on a mode, too wide)
    The centre is in basin M, ``0 < share_M < 1 - span_min_share``, no other basin holds
    ``>= span_min_share`` with it (else rule 3 applied) and the collapsed draws hold
    ``< span_min_share``: ``mode_too_wide`` (``permutation`` M)
    if basin M is consistent (rule 2), else ``not_converged`` (reason names the check). The
    location is right but the approximation spreads more than ``span_min_share`` of its mass
    outside the mode's box, e.g. a Gaussian centred on (3, -1) with slope sds 0.3 has only ~25% of
    its draws within 0.2 of the mode. When ``share_collapsed >= span_min_share`` the fit is split
    between a mode and the symmetric point (e.g. one chain of four collapsed), which is not a
    wide single-mode approximation: rule 6.

Rule 5 (collapsed)
    ``share_collapsed >= 1 - span_min_share``, AND the median over the collapsed draws of the
    mean of the K slopes is within ``collapse_location_fraction * sep`` of the one-line slope
    ``sum_k truth.weights[k] * truth.slopes[k]`` (the least-squares slope through the origin of
    all points, E[xy] / E[x^2], whatever the distribution of x; the study: 1), AND the median
    sigma of the collapsed draws is at least ``collapse_sigma_floor``: ``sigma_ratio_max`` times
    the truth, or half-way to the one-line residual sd when that is lower (one line explains data
    from two lines only with a larger residual sd; the study: ~1.16, ratio 11.6; nearly
    overlapping lines 3 and 2.8: 0.115)
    => ``collapsed`` (mode averaging). Equal slopes anywhere else (e.g. both at -2, or both on one
    true slope) or with a small sigma are not mode averaging: ``not_converged`` with the failed
    check in the reason.

Rule 5b (collapsed, wide)
    A wide approximation centred on the symmetric point is mode averaging too: when fewer than
    ``span_min_share`` of the draws are in any basin, at least half are collapsed, the median
    slope gap (the largest over pairs i < j of ``|median(s_i - s_j)|``) is within the collapse
    tolerance, the median of the mean of the K slopes is
    within the location tolerance of rule 5 and the median sigma is at least ``sigma_ratio_max``
    times the truth (the data are explained by one line), the label is ``collapsed``. This is
    PyMC's default optimiser after 10000 minibatch steps: centre at the symmetric point, sigma
    ~1.16, slope sds ~0.5, so only ~80% of draws have a gap below 1.

Rule 5d (collapsed by pruning)
    VI can also average the modes by emptying components: at the centre some components have
    median weight at most ``weight_tolerance`` (EMPTY, their slopes unidentified and ignored) and
    at least ``1 - span_min_share`` of the draws have every other component within the rule-5
    location tolerance of the one-line slope, with median sigma at least ``sigma_ratio_max``
    times the truth => ``collapsed``: the same one line through all points as rule 5, with the
    weight on fewer components (the likelihood is the same for any split of the weight between
    equal slopes). Seen with half the default separation (slopes 3 and 1): one component at
    slope 2 with weight ~1, the other empty at its prior, sigma ~0.58.

Rule 5c (partial collapse; K_t >= 3)
    The centre's components split into a MERGED group and the rest: for a group G of 2 to K-1
    true components, with merged line ``m_G = sum_{j in G} w_j slopes_j / sum_{j in G} w_j``
    (the least-squares line of their points), the |G| model components nearest m_G are all
    within the rule-5 location tolerance of it and within the collapse gap of each other, and the
    other components are assigned (optimal assignment) to the other true components, each within
    its rule-1 tolerance. ``partial_collapse`` if at least ``1 - span_min_share`` of the draws
    have that structure (the same components), fewer than ``span_min_share`` are in any basin or
    collapsed, the merged components' median weights sum to within ``weight_tolerance`` of
    ``sum_{j in G} w_j``, the others' match their true weights, and the median sigma is at least
    ``sigma_ratio_max`` times the truth (one line through two lines' points leaves a large
    residual, as in rule 5; k3 truth, -1 and 1 merged at 0: sigma ~0.46). Otherwise rule 6.

Rule 6 (not_converged)
    Anything else: draws in no basin (far-off points, one slope at its prior, half-way between a
    mode and the symmetric point), or mixtures of basins that meet neither rule 3, 4, 4b nor 5
    (e.g. 80% in A and 20% collapsed).

Rule 7 (over-fitted model, K_m > K_t; instead of rules 1b-5c)
    Rules 0, 5 and 5b (full collapse, on all K_m slopes) apply as above. Otherwise, at the centre
    (per-component medians of slopes and weights): a component whose median weight is at most
    ``weight_tolerance`` is EMPTY (its slope is unidentified and ignored); every other component
    must be within its rule-1 tolerance of its nearest true slope, every true component must get
    at least one, the summed median weights per true component must be within
    ``weight_tolerance`` of its weight, and the median sigma must pass rule 2. Then, if at least
    ``1 - span_min_share`` of the draws have their non-empty components within tolerance of the
    same true slopes (``centre_mass``): ``overfit_duplicated`` if some true component holds two
    or more non-empty components (its weight split), else ``overfit_empty``. Anything else is
    ``not_converged`` (e.g. chains in different labellings: their pooled medians match nothing;
    ``chain_labels`` has each chain's own label). Shares of A/B and ``minority_share`` are NaN.

The rules are applied in the order 0, 3, 4, 4b, 5, 5b, 5d, 5c, 6 (K_m > K_t: 0, 5, 5b, 5d, 7,
6). Each
chain is ALSO classified on its own
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

import functools
import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "OUTCOME_CLASSES",
    "SINGLE_MODE_CLASSES",
    "CENTRE_CLASSES",
    "EDGE_RTOL",
    "TrueParameters",
    "ClassifierSettings",
    "Classification",
    "reference_slope_sd",
    "separation",
    "labellings",
    "labelling_name",
    "nearest_labelling",
    "slope_tolerances",
    "assign_draws",
    "one_line_slope",
    "classify_draws",
    "classify_failed",
]


def _linear_sum_assignment(cost):
    # scipy.optimize takes half a second to import; the figure and report jobs import this
    # module for its class names only
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)


OUTCOME_CLASSES = ("mode_A", "mode_B", "mode_single", "mode_too_wide", "spanning",
                   "partial_collapse", "collapsed", "overfit_empty", "overfit_duplicated",
                   "not_converged", "failed")
#: the classes that count as landing on one permutation mode (the pipeline's single_mode)
SINGLE_MODE_CLASSES = ("mode_A", "mode_B", "mode_single")
#: where the centre (per-component median) of a fit's slope draws sits (rule 1b)
CENTRE_CLASSES = ("mode_A", "mode_B", "mode_single", "symmetric", "partial", "overfit",
                  "elsewhere")

#: relative slack on every tolerance, so that a value exactly at the edge (up to binary
#: rounding of e.g. 3 + 0.2) counts as inside.
EDGE_RTOL = 1e-9

# draw-level codes: 0 none, 1 + p for labelling p (K = 2: 1 A, 2 B), 1 + K! collapsed
_NONE, _A, _B = 0, 1, 2

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
    #: labelling of a single mode / too-wide mode / centre in a basin, e.g. "0-2-1" (module doc)
    permutation: str | None = None
    #: share of the draws in any labelling's basin (K = 2: share_mode_A + share_mode_B)
    share_modes: float = float("nan")

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
            "permutation": self.permutation,
            "share_modes": self.share_modes,
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
    """Per-component slope tolerance ``max(slope_tolerance_sd * ref_sd_k, min_fraction * sep)``
    (read-only: every rule of a classification asks for it again, so it is computed once)."""
    key = None if reference_sd is None else tuple(np.ravel(np.asarray(reference_sd, dtype=float)))
    return _slope_tolerances(truth, settings, key)


@functools.lru_cache(maxsize=256)
def _slope_tolerances(truth: TrueParameters, settings: ClassifierSettings,
                      reference_key: tuple | None) -> np.ndarray:
    k = len(truth.slopes)
    ref = reference_slope_sd(truth) if reference_key is None else np.asarray(reference_key)
    if ref.size not in (1, k):
        raise ValueError(f"reference_sd must be a scalar or hold {k} values, not {ref.size}")
    ref = np.broadcast_to(ref.reshape(-1) if ref.size == k else ref.reshape(()), (k,))
    if not np.all(np.isfinite(ref)) or np.any(ref < 0):
        raise ValueError("reference_sd must be finite and >= 0")
    sep = separation(truth)
    tol = np.maximum(settings.slope_tolerance_sd * ref, settings.slope_tolerance_min_fraction * sep)
    if np.any(tol <= 0):
        raise ValueError("slope tolerance is 0: set slope_tolerance_min_fraction or reference_sd > 0")
    tol.setflags(write=False)
    return tol


@functools.lru_cache(maxsize=256)
def separation(truth: TrueParameters) -> float:
    """The smallest distance between two true slopes (K = 2: |slopes[0] - slopes[1]|); 0 for
    K = 1. Tolerances are fractions of it, so that the basin boxes stay disjoint for any K."""
    t = np.sort(np.asarray(truth.slopes, dtype=float))
    return float(np.min(np.diff(t))) if t.size > 1 else 0.0


def labellings(n_components: int) -> tuple[tuple[int, ...], ...]:
    """All K! labellings in ``itertools.permutations`` order (identity first; K = 2: A, B)."""
    return tuple(itertools.permutations(range(n_components)))


def labelling_name(perm) -> str:
    """"0-2-1": model component k is true component perm[k]."""
    return "-".join(str(int(j)) for j in perm)


def nearest_labelling(slopes, truth: TrueParameters, tolerances) -> tuple[tuple[int, ...], float]:
    """Optimal assignment of model components to true components for ONE slope vector (K,):
    ``linear_sum_assignment`` on the scaled costs ``|s_k - slopes_j| / tol_j``. Returns the
    labelling (perm[k] = true component of model component k) and its scaled distance
    ``max_k |s_k - slopes_perm[k]| / tol_perm[k]`` (rule 1)."""
    s = np.asarray(slopes, dtype=float)
    true = np.asarray(truth.slopes, dtype=float)
    tol = np.asarray(tolerances, dtype=float)
    cost = np.abs(s[:, None] - true[None, :]) / tol[None, :]
    rows, cols = _linear_sum_assignment(cost)
    perm = tuple(int(c) for c in cols[np.argsort(rows)])
    return perm, float(np.max(cost[np.arange(s.size), list(perm)]))


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
    if k < 2:
        raise ValueError("the taxonomy needs a truth with at least 2 components")
    if slopes.shape[2] < k:
        raise ValueError(f"draws have K={slopes.shape[2]} components, fewer than the truth's {k} "
                         "(an under-fitted model has no outcome classes)")
    return slopes, weights, sigma


def _boxes_disjoint(true: np.ndarray, tol: np.ndarray) -> bool:
    gaps = np.abs(true[:, None] - true[None, :])
    reach = tol[:, None] + tol[None, :]
    off_diagonal = ~np.eye(true.size, dtype=bool)
    return bool(np.all(gaps[off_diagonal] > reach[off_diagonal]))


@functools.lru_cache(maxsize=256)
def _assignment_geometry(truth: TrueParameters, settings: ClassifierSettings,
                         reference_key: tuple | None):
    """What rule 1 needs of the truth and the settings, computed once per classification set-up
    (a fit's trajectory has a hundred snapshots, each classified as a one-draw chain): the true
    slopes, the edge-widened slope tolerances, the labellings, whether the boxes are disjoint and
    the collapse gap. Read-only arrays."""
    true = np.asarray(truth.slopes, dtype=float)
    tol = _slope_tolerances(truth, settings, reference_key) * (1.0 + EDGE_RTOL)
    perms = np.array(labellings(true.size))  # (P, K)
    disjoint = _boxes_disjoint(true, tol * (1.0 + EDGE_RTOL))
    gap = settings.collapse_gap_fraction * separation(truth) * (1.0 + EDGE_RTOL)
    for array in (true, tol, perms):
        array.setflags(write=False)
    return true, tol, perms, disjoint, gap


def assign_draws(
    slopes,
    truth: TrueParameters,
    settings: ClassifierSettings = ClassifierSettings(),
    reference_sd=None,
) -> np.ndarray:
    """Draw-level assignment (rule 1). ``slopes`` (..., K) finite with K = the truth's K;
    returns int codes of shape ``slopes.shape[:-1]``: 0 none, 1 + p in the basin of labelling p
    (``labellings(K)[p]``; K = 2: 1 basin A, 2 basin B), 1 + K! collapsed (K = 2: 3)."""
    s = np.asarray(slopes, dtype=float)
    key = None if reference_sd is None else tuple(np.ravel(np.asarray(reference_sd, dtype=float)))
    true, tol, perms, disjoint, collapse_gap = _assignment_geometry(truth, settings, key)
    k = true.size
    if s.shape[-1] != k:
        raise ValueError(f"slopes have K={s.shape[-1]}, the truth {k}")
    flat = s.reshape(-1, k)
    cost = np.abs(flat[:, :, None] - true[None, None, :]) / tol[None, None, :]  # (n, k, j)
    # d[n, p] = max_k cost[n, k, perms[p, k]]: each labelling's scaled box distance
    dist = np.max(cost[:, np.arange(k)[None, :], perms], axis=-1)  # (n, P)
    best = np.argmin(dist, axis=1)
    d_best = dist[np.arange(len(best)), best]
    if disjoint:
        # the optimal assignment of a draw inside a box is that box's labelling (module doc);
        # disjoint boxes hold a draw in at most one, whose distance (<= 1) is then the smallest
        # of all labellings', so the smallest distance finds it without an assignment per draw
        in_basin = d_best <= 1.0
    else:
        # overlapping boxes: the unique smallest distance (K = 2: d_A < d_B), ties in no basin
        in_basin = (d_best <= 1.0) & (np.count_nonzero(dist == d_best[:, None], axis=1) == 1)
    gap = flat.max(axis=1) - flat.min(axis=1)
    collapsed = gap <= collapse_gap
    codes = np.full(flat.shape[0], _NONE, dtype=np.int16)
    codes[collapsed] = 1 + len(perms)
    codes[in_basin] = 1 + best[in_basin]
    if k == 2:
        codes = codes.astype(np.int8)  # as before the K generalisation
    return codes.reshape(s.shape[:-1])


def _median(values, axis=None):
    """``np.median`` without its set-up cost for one value along ``axis`` (the median of one
    value is that value; a trajectory snapshot is classified as a one-draw chain, and
    ``np.median``'s overhead was a third of that classification's time)."""
    values = np.asarray(values)
    if axis is None and values.size == 1:
        return np.float64(values.reshape(-1)[0])
    if axis is not None and values.shape[axis] == 1 and values.dtype == np.float64:
        return np.take(values, 0, axis=axis)
    return np.median(values, axis=axis)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.atleast_1d(values)) + ")"


def _sigma_problem(med_sigma, truth, settings) -> str:
    ratio = med_sigma / truth.noise_sd
    r = settings.sigma_ratio_max * (1.0 + EDGE_RTOL)
    if not (1.0 / r <= ratio <= r):
        return (f"median sigma {med_sigma:.4g} is {ratio:.3g}x the truth "
                f"(allowed [1/{settings.sigma_ratio_max:g}, {settings.sigma_ratio_max:g}])")
    return ""


def _basin_consistency(weights, sigma, expected_weights, truth, settings) -> tuple[bool, str]:
    """Rule 2 on the draws of one basin (weights (n, K), sigma (n,), n >= 1)."""
    med_sigma = float(_median(sigma))
    med_w = _median(weights, axis=0)
    problems = []
    sigma_problem = _sigma_problem(med_sigma, truth, settings)
    if sigma_problem:
        problems.append(sigma_problem)
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
    return settings.collapse_location_fraction * separation(truth)


def _at_one_line_slope(mean_slope, truth, settings) -> bool:
    tolerance = _location_tolerance(truth, settings)
    return abs(mean_slope - one_line_slope(truth)) <= tolerance * (1.0 + EDGE_RTOL)


def one_line_sigma(truth: TrueParameters,
                   x_second_moment: float = X_SECOND_MOMENT_UNIFORM) -> float:
    """Residual sd of the one-line fit through all points: sqrt(noise_sd^2 + E[x^2] *
    sum_k w_k (slope_k - one-line slope)^2). The study: sqrt(0.01 + 4/3) = 1.16; slopes 3 and
    2.8: sqrt(0.01 + 0.01/3) = 0.115."""
    w = np.asarray(truth.weights, dtype=float) / np.sum(truth.weights)
    spread = float(np.sum(w * (np.asarray(truth.slopes, dtype=float) - one_line_slope(truth)) ** 2))
    return float(np.sqrt(truth.noise_sd ** 2 + x_second_moment * spread))


def collapse_sigma_floor(truth: TrueParameters, settings: ClassifierSettings) -> float:
    """The least median sigma of a collapsed fit (rules 5, 5b, 5d): ``sigma_ratio_max`` times
    the truth, or half-way from the truth to the one-line residual sd (``one_line_sigma``) when
    that is lower. Well-separated lines (the study: 0.125 against a one-line sd of 1.16) use the
    ratio; nearly overlapping lines leave the one line only a slightly larger residual (slopes 3
    and 2.8: 0.115, so 1.25 x 0.1 would call every one-line fit "not converged"), and the floor
    follows it (0.108)."""
    ratio_floor = settings.sigma_ratio_max * truth.noise_sd
    half_way = truth.noise_sd + 0.5 * (one_line_sigma(truth) - truth.noise_sd)
    return min(ratio_floor, half_way)


def _one_line_check(mean_slope, median_sigma, truth, settings) -> str:
    """Location and sigma checks of rules 5/5b; "" if both pass, else what failed."""
    target = one_line_slope(truth)
    tolerance = _location_tolerance(truth, settings)
    problems = []
    if not _at_one_line_slope(mean_slope, truth, settings):
        problems.append(f"their mean {mean_slope:.4g} is {abs(mean_slope - target):.3g} from the "
                        f"one-line slope {target:.4g} (tolerance {tolerance:.3g})")
    floor = collapse_sigma_floor(truth, settings)
    if not median_sigma >= floor * (1.0 - EDGE_RTOL):
        if floor < settings.sigma_ratio_max * truth.noise_sd:
            problems.append(f"median sigma {median_sigma:.4g} is below {floor:.4g}, half-way "
                            f"from the truth {truth.noise_sd:.4g} to the one-line residual sd")
        else:
            problems.append(f"median sigma {median_sigma:.4g} is below "
                            f"{settings.sigma_ratio_max:g}x the truth {truth.noise_sd:.4g}")
    return "; ".join(problems)


class _Names:
    """Labels and texts of the labellings of one K (K = 2 keeps the A/B vocabulary)."""

    def __init__(self, k: int):
        self.k = k
        self.perms = labellings(k)
        self.collapsed = 1 + len(self.perms)

    def mode_label(self, p: int) -> str:
        return ("mode_A", "mode_B")[p] if self.k == 2 else "mode_single"

    def basin(self, p: int) -> str:
        return ("A", "B")[p] if self.k == 2 else labelling_name(self.perms[p])

    def mode_text(self, p: int) -> str:
        return self.mode_label(p) if self.k == 2 else f"mode {labelling_name(self.perms[p])}"


def _centre_gap(flat) -> float:
    """Rule 5b's median slope gap: the largest |median(s_i - s_j)| over pairs i < j."""
    k = flat.shape[1]
    return max(abs(float(_median(flat[:, i] - flat[:, j])))
               for i in range(k) for j in range(i + 1, k))


def _partial_structure(centre, truth, settings, reference_sd):
    """Rule 5c at the centre: (merged model comps, true group, other model comps, their perm) of
    the first group G (in order of size, then index) that fits, or None."""
    true = np.asarray(truth.slopes, dtype=float)
    w = np.asarray(truth.weights, dtype=float)
    k = true.size
    tol = slope_tolerances(truth, settings, reference_sd) * (1.0 + EDGE_RTOL)
    loc = _location_tolerance(truth, settings) * (1.0 + EDGE_RTOL)
    gap = settings.collapse_gap_fraction * separation(truth) * (1.0 + EDGE_RTOL)
    for size in range(2, k):
        for group in itertools.combinations(range(k), size):
            merged = float(np.dot(w[list(group)], true[list(group)]) / w[list(group)].sum())
            nearest = np.argsort(np.abs(centre - merged), kind="stable")[:size]
            on_line = centre[nearest]
            if np.any(np.abs(on_line - merged) > loc) or on_line.max() - on_line.min() > gap:
                continue
            rest_model = np.array([i for i in range(k) if i not in set(nearest.tolist())])
            rest_true = np.array([j for j in range(k) if j not in group])
            cost = np.abs(centre[rest_model][:, None] - true[rest_true][None, :]) / tol[rest_true]
            rows, cols = _linear_sum_assignment(cost)
            if np.all(cost[rows, cols] <= 1.0):
                return np.sort(nearest), group, rest_model[rows], rest_true[cols], merged
    return None


def _partial_share(flat, structure, truth, settings, reference_sd) -> np.ndarray:
    """Per draw: has the rule-5c structure of the centre (same components)."""
    merged_idx, _, rest_model, rest_true, merged = structure
    true = np.asarray(truth.slopes, dtype=float)
    tol = slope_tolerances(truth, settings, reference_sd) * (1.0 + EDGE_RTOL)
    loc = _location_tolerance(truth, settings) * (1.0 + EDGE_RTOL)
    gap = settings.collapse_gap_fraction * separation(truth) * (1.0 + EDGE_RTOL)
    on = flat[:, merged_idx]
    ok = np.all(np.abs(on - merged) <= loc, axis=1) & (on.max(axis=1) - on.min(axis=1) <= gap)
    if len(rest_model):
        ok &= np.all(np.abs(flat[:, rest_model] - true[rest_true]) / tol[rest_true] <= 1.0, axis=1)
    return ok


def _centre(flat_slopes, codes, truth, settings, reference_sd, names):
    """Rule 1b: (centre_class, centre_mass, centre, centre labelling or None, partial structure)
    of finite pooled slope draws (n, K)."""
    centre = _median(flat_slopes, axis=0)
    code = int(assign_draws(centre, truth, settings, reference_sd))
    if code == names.collapsed and not _at_one_line_slope(float(centre.mean()), truth, settings):
        # equal slopes away from the one-line slope are not where mode averaging lands
        code = _NONE
    partial = None
    if code == _NONE and names.k >= 3:
        partial = _partial_structure(centre, truth, settings, reference_sd)
    if partial is not None:
        mass = float(np.mean(_partial_share(flat_slopes, partial, truth, settings, reference_sd)))
        return "partial", mass, centre, None, partial
    mass = float(np.count_nonzero(codes == code) / codes.size) if code != _NONE else float("nan")
    if code == _NONE:
        return "elsewhere", mass, centre, None, None
    if code == names.collapsed:
        return "symmetric", mass, centre, None, None
    return names.mode_label(code - 1), mass, centre, code - 1, None


def _collapse_rules(flat, sg, codes_collapsed, share_c, all_basins_small, truth, settings, s,
                    share_txt):
    """Rules 5 and 5b; None if neither applies."""
    if share_c >= 1.0 - s:
        sel = codes_collapsed
        mean_slope = float(_median(flat[sel].mean(axis=1)))
        median_sigma = float(_median(sg[sel]))
        problems = _one_line_check(mean_slope, median_sigma, truth, settings)
        if problems:
            return ("not_converged",
                    f"slopes nearly equal but not mode averaging: {problems}; {share_txt}")
        return ("collapsed", f"slopes nearly equal (median mean {mean_slope:.4g}), median sigma "
                f"{median_sigma:.4g}; {share_txt}")
    centre_gap = _centre_gap(flat)
    gap_tolerance = settings.collapse_gap_fraction * separation(truth)
    if all_basins_small and share_c >= 0.5 and centre_gap <= gap_tolerance:
        mean_slope = float(_median(flat.mean(axis=1)))
        median_sigma = float(_median(sg))
        problems = _one_line_check(mean_slope, median_sigma, truth, settings)
        if not problems:
            return ("collapsed",
                    f"centred on the symmetric point (median slope gap {centre_gap:.3g}, median "
                    f"mean {mean_slope:.4g}, median sigma {median_sigma:.4g}) with a wide spread; "
                    f"{share_txt}")
        return ("not_converged",
                f"wide with nearly equal slopes but not mode averaging: {problems}; {share_txt}")
    return None


def _pruned_collapse(flat, w, sg, truth, settings, s, share_txt):
    """Rule 5d: collapsed by pruning; None if it does not apply."""
    med_w = _median(w, axis=0)
    empty = med_w <= settings.weight_tolerance * (1.0 + EDGE_RTOL)
    if not empty.any() or empty.all():
        return None
    target = one_line_slope(truth)
    tolerance = _location_tolerance(truth, settings) * (1.0 + EDGE_RTOL)
    on_line = float(np.mean(np.all(np.abs(flat[:, ~empty] - target) <= tolerance, axis=1)))
    median_sigma = float(_median(sg))
    if on_line < 1.0 - s or not (
            median_sigma >= collapse_sigma_floor(truth, settings) * (1.0 - EDGE_RTOL)):
        return None
    return ("collapsed",
            f"one line through all points: components {np.flatnonzero(empty).tolist()} emptied "
            f"(median weights {_fmt(med_w)}), the others at the one-line slope {target:.4g} in "
            f"{on_line:.3g} of draws, median sigma {median_sigma:.4g}; {share_txt}")


def _classify_finite(slopes, weights, sigma, truth, settings, reference_sd):
    """Rules 1-6 on finite, non-empty draws (K_m = K_t; rule 7 for K_m > K_t).

    Returns (label, shares (A, B, collapsed), reason, centre info, extra) where centre info is
    (centre_class, centre_mass, minority_share) and extra is (permutation, share_modes)."""
    k = len(truth.slopes)
    if slopes.shape[-1] > k:
        return _classify_overfit(slopes, weights, sigma, truth, settings, reference_sd)
    names = _Names(k)
    codes = assign_draws(slopes, truth, settings, reference_sd).ravel()
    w = weights.reshape(-1, weights.shape[-1])
    sg = sigma.ravel()
    flat = slopes.reshape(-1, k)
    n = codes.size
    n_perms = len(names.perms)
    shares = np.array([np.count_nonzero(codes == 1 + p) / n for p in range(n_perms)])
    share_c = float(np.count_nonzero(codes == names.collapsed) / n)
    if k == 2:
        share_a, share_b = float(shares[0]), float(shares[1])
        share_triple = (share_a, share_b, share_c)
        # the same floats (same order of operations) as before the generalisation
        in_basins = share_a + share_b
        share_none = max(0.0, 1.0 - share_a - share_b - share_c)
    else:
        share_triple = (float("nan"), float("nan"), share_c)
        in_basins = float(shares.sum())
        share_none = max(0.0, 1.0 - in_basins - share_c)
    if in_basins > 0:
        # the draws in a basin but not in the most populated one (K = 2: min(A, B) / (A + B))
        minority = float(np.sort(shares)[:-1].sum()) / in_basins
    else:
        minority = float("nan")
    centre_class, centre_mass, centre, centre_perm, partial = _centre(
        flat, codes, truth, settings, reference_sd, names)
    info = (centre_class, centre_mass, minority)
    s = settings.span_min_share
    if k == 2:
        basin_txt = f"A={share_triple[0]:.3g} B={share_triple[1]:.3g}"
    else:
        basin_txt = " ".join(f"{names.basin(p)}={shares[p]:.3g}" for p in range(n_perms)
                             if shares[p] > 0) or "in no labelling"
    share_txt = (
        f"shares {basin_txt} collapsed={share_c:.3g} none={share_none:.3g} "
        f"of {n} draws; centre {_fmt(centre)} ({centre_class})"
    )
    true_w = np.asarray(truth.weights, dtype=float)

    def consistency(p):
        sel = codes == 1 + p
        return _basin_consistency(w[sel], sg[sel], true_w[list(names.perms[p])], truth, settings)

    def result(label, reason, perm=None):
        perm_name = labelling_name(names.perms[perm]) if perm is not None else None
        return label, share_triple, reason, info, (perm_name, float(shares.sum()))

    # Rule 3: spanning
    populated = [p for p in range(n_perms) if shares[p] >= s]
    if len(populated) >= 2:
        checks = [(p, *consistency(p)) for p in populated]
        if all(ok for _, ok, _ in checks):
            what = "both basins" if k == 2 else f"{len(populated)} basins"
            return result("spanning", f"{what} hold >= {s:g} of draws; {share_txt}")
        bad = "; ".join(f"basin {names.basin(p)}: {why}" for p, ok, why in checks if not ok)
        what = "both basins" if k == 2 else "several basins"
        return result("not_converged", f"draws in {what} but inconsistent: {bad}; {share_txt}")
    # Rule 4: single mode
    for p in range(n_perms):
        if shares[p] >= 1.0 - s:
            ok, why = consistency(p)
            if ok:
                return result(names.mode_label(p), f"{share_txt}; {why}", p)
            return result("not_converged",
                          f"slopes in {names.mode_text(p)} basin but {why}; {share_txt}", p)
    # Rule 4b: centred on a mode, but too much of the mass outside its box
    if centre_perm is not None and shares[centre_perm] > 0 and share_c < s:
        p = centre_perm
        ok, why = consistency(p)
        if ok:
            return result("mode_too_wide",
                          f"centred in the {names.mode_text(p)} basin but only {shares[p]:.3g} of "
                          f"draws in it (< {1.0 - s:g}); {share_txt}; {why}", p)
        return result("not_converged",
                      f"centred in the {names.mode_text(p)} basin ({shares[p]:.3g} of draws in "
                      f"it) but {why}; {share_txt}", p)
    # Rules 5 and 5b: collapsed at the one-line slope with the one-line residual sd
    collapse = _collapse_rules(flat, sg, codes == names.collapsed, share_c,
                               bool(np.all(shares < s)), truth, settings, s, share_txt)
    if collapse is not None:
        return result(*collapse)
    # Rule 5d: collapsed by pruning (components emptied, one line through all points)
    pruned = _pruned_collapse(flat, w, sg, truth, settings, s, share_txt)
    if pruned is not None:
        return result(*pruned)
    # Rule 5c: partial collapse
    if partial is not None and np.all(shares < s) and share_c < s:
        return result(*_partial_label(partial, centre_mass, w, sg, truth, settings, s, share_txt))
    # Rule 6
    return result("not_converged", f"no rule met; {share_txt}")


def _partial_label(partial, mass, w, sg, truth, settings, s, share_txt):
    merged_idx, group, rest_model, rest_true, merged = partial
    true_w = np.asarray(truth.weights, dtype=float)
    med_w = _median(w, axis=0)
    median_sigma = float(_median(sg))
    wt = settings.weight_tolerance * (1.0 + EDGE_RTOL)
    what = (f"components {list(map(int, merged_idx))} merged at {merged:.4g} (true components "
            f"{list(group)}), the others on true {list(map(int, rest_true))}")
    problems = []
    if mass < 1.0 - s:
        problems.append(f"only {mass:.3g} of draws have that structure (< {1.0 - s:g})")
    if abs(med_w[merged_idx].sum() - true_w[list(group)].sum()) > wt or np.any(
            np.abs(med_w[rest_model] - true_w[rest_true]) > wt):
        problems.append(f"median weights {_fmt(med_w)} do not match")
    if not median_sigma >= settings.sigma_ratio_max * truth.noise_sd * (1.0 - EDGE_RTOL):
        problems.append(f"median sigma {median_sigma:.4g} is below {settings.sigma_ratio_max:g}x "
                        f"the truth {truth.noise_sd:.4g}")
    if problems:
        return "not_converged", f"{what}, but {'; '.join(problems)}; {share_txt}"
    return "partial_collapse", f"{what}; median sigma {median_sigma:.4g}; {share_txt}"


def _classify_overfit(slopes, weights, sigma, truth, settings, reference_sd):
    """Rules 5, 5b and 7 for a model with more components than the truth."""
    k_m = slopes.shape[-1]
    true = np.asarray(truth.slopes, dtype=float)
    true_w = np.asarray(truth.weights, dtype=float)
    tol = slope_tolerances(truth, settings, reference_sd) * (1.0 + EDGE_RTOL)
    flat = slopes.reshape(-1, k_m)
    w = weights.reshape(-1, k_m)
    sg = sigma.ravel()
    n = flat.shape[0]
    gap = flat.max(axis=1) - flat.min(axis=1)
    collapsed = gap <= settings.collapse_gap_fraction * separation(truth) * (1.0 + EDGE_RTOL)
    share_c = float(np.count_nonzero(collapsed) / n)
    centre = _median(flat, axis=0)
    med_w = _median(w, axis=0)
    median_sigma = float(_median(sg))
    nan = float("nan")
    s = settings.span_min_share

    # rule 7's structure at the centre
    active = np.flatnonzero(med_w > settings.weight_tolerance * (1.0 + EDGE_RTOL))
    cost = np.abs(centre[active][:, None] - true[None, :]) / tol[None, :]
    target = np.argmin(cost, axis=1) if active.size else np.array([], dtype=int)
    problems = []
    if active.size == 0 or np.any(cost[np.arange(active.size), target] > 1.0):
        problems.append("a non-empty component is on no true slope")
    counts = np.bincount(target, minlength=true.size)
    if np.any(counts == 0):
        problems.append(f"true components {np.flatnonzero(counts == 0).tolist()} have no component")
    summed = np.bincount(target, weights=med_w[active], minlength=true.size)
    if np.any(np.abs(summed - true_w) > settings.weight_tolerance * (1.0 + EDGE_RTOL)):
        problems.append(f"summed median weights {_fmt(summed)} vs {_fmt(true_w)}")
    sigma_problem = _sigma_problem(median_sigma, truth, settings)
    if sigma_problem:
        problems.append(sigma_problem)
    structure_ok = not problems[:2]  # slopes placed: the centre is on the truth's lines
    if structure_ok and active.size:
        on_lines = np.all(np.abs(flat[:, active] - true[target]) / tol[target] <= 1.0, axis=1)
        mass = float(np.mean(on_lines))
        centre_class = "overfit"
    else:
        mass = nan
        centre_class = "symmetric" if (centre.max() - centre.min() <= settings.collapse_gap_fraction
                                       * separation(truth) * (1.0 + EDGE_RTOL)
                                       and _at_one_line_slope(float(centre.mean()), truth,
                                                              settings)) else "elsewhere"
        if centre_class == "symmetric":
            mass = share_c
    info = (centre_class, mass, nan)
    share_txt = (f"K={k_m} model on K={true.size} truth; collapsed={share_c:.3g} of {n} draws; "
                 f"centre {_fmt(centre)} ({centre_class}), median weights {_fmt(med_w)}")

    def result(label, reason):
        return label, (nan, nan, share_c), reason, info, (None, nan)

    collapse = _collapse_rules(flat, sg, collapsed, share_c, centre_class != "overfit", truth,
                               settings, s, share_txt) \
        or _pruned_collapse(flat, w, sg, truth, settings, s, share_txt)
    if collapse is not None:
        return result(*collapse)
    if problems:
        return result("not_converged", f"over-fitted model off the truth: "
                      f"{'; '.join(problems)}; {share_txt}")
    if mass < 1.0 - s:
        return result("not_converged", f"centre on the truth's lines but only {mass:.3g} of draws "
                      f"there (< {1.0 - s:g}); {share_txt}")
    empty = [int(i) for i in range(k_m) if i not in set(active.tolist())]
    shared = [int(j) for j in np.flatnonzero(counts >= 2)]
    if shared:
        return result("overfit_duplicated", f"true components {shared} each shared by several "
                      f"components (weights split), empty components {empty}; {share_txt}")
    return result("overfit_empty", f"empty components {empty}, the others on the truth; "
                  f"{share_txt}")


def _one_draw_basin_labels(slopes, weights, sigma, finite, truth, settings, reference_sd):
    """The labels of one-draw chains whose draw lies in a basin, for all chains at once; None
    for the others (collapsed, in no basin, non-finite), which take the full rules.

    A trajectory is classified as a hundred one-draw chains, and the full rules per chain were
    most of a chunk's classification time. With one draw in basin p, that basin holds every
    draw, so only rule 4 can apply: mode p if rule 2 holds, else not_converged -- the same
    comparisons as ``_basin_consistency`` on the same floats (tested equal to the full rules).
    """
    k = len(truth.slopes)
    names = _Names(k)
    codes = np.full(slopes.shape[0], _NONE, dtype=np.int16)
    if finite.any():
        codes[finite] = assign_draws(slopes[finite], truth, settings, reference_sd)
    labels = [None] * slopes.shape[0]
    if not 0.0 < settings.span_min_share < 1.0:
        # at 0 rule 3 sees every empty basin as populated, at 1 rule 4 takes an empty basin
        return labels
    r = settings.sigma_ratio_max * (1.0 + EDGE_RTOL)
    ratio = sigma / truth.noise_sd
    sigma_ok = (1.0 / r <= ratio) & (ratio <= r)
    true_w = np.asarray(truth.weights, dtype=float)
    w_tolerance = settings.weight_tolerance * (1.0 + EDGE_RTOL)
    for p, perm in enumerate(names.perms):
        in_basin = np.flatnonzero(codes == 1 + p)
        if not in_basin.size:
            continue
        weights_ok = ~np.any(np.abs(weights[in_basin] - true_w[list(perm)]) > w_tolerance, axis=1)
        ok = sigma_ok[in_basin] & weights_ok
        for index, consistent in zip(in_basin, ok):
            labels[index] = names.mode_label(p) if consistent else "not_converged"
    return labels


def classify_draws(
    slopes,
    weights,
    sigma,
    truth: TrueParameters,
    settings: ClassifierSettings = ClassifierSettings(),
    reference_sd=None,
) -> Classification:
    """Classify a fit from its draws (see the module docstring for the exact rules).

    slopes, weights: (chains, draws, K_m); sigma: (chains, draws); K_m >= the truth's K.
    ``reference_sd``: scalar or (K,) slope sd replacing ``reference_slope_sd(truth)`` in the
    slope tolerance.
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
    quick = (_one_draw_basin_labels(slopes[:, 0], weights[:, 0], sigma[:, 0], finite[:, 0],
                                    truth, settings, reference_sd)
             if n_draws == 1 and slopes.shape[2] == len(truth.slopes) else [None] * n_chains)
    chain_labels = []
    for c in range(n_chains):
        if not finite[c].all():
            chain_labels.append("failed")
        elif quick[c] is not None:
            chain_labels.append(quick[c])
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
    label, (a, b, c), reason, (centre_class, centre_mass, minority), (perm, share_modes) = \
        _classify_finite(slopes, weights, sigma, truth, settings, reference_sd)
    return Classification(label, a, b, c, chain_labels, reason, centre_class, centre_mass,
                          minority, perm, share_modes)


def classify_failed(message: str) -> Classification:
    """Classification of a fit that produced no usable draws (exception, NaN ELBO, timeout)."""
    nan = float("nan")
    return Classification("failed", nan, nan, nan, (), str(message))
