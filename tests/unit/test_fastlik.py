"""Tests for vimodes.fastlik: the fused mixture-of-regressions log-likelihood Op.

Run with PYTENSOR_FLAGS=base_compiledir=/tmp/<something> to avoid compile-lock contention.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pm = pytest.importorskip("pymc")
import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from vimodes.fastlik import (  # noqa: E402
    MixtureRegressionLogLike,
    MixtureRegressionLogLikeGrad,
    fused_loglike_and_grad,
    mixture_loglike_many,
    mixture_regression_loglike,
)

from helpers import one_worker  # noqa: E402

pytestmark = one_worker(__name__)

RTOL = 1e-10
N_POINTS = 20


def simulate(n, slopes=(3.0, -1.0), sigma=0.1, weights=None, seed=0):
    rng = np.random.default_rng(seed)
    slopes = np.asarray(slopes, dtype=float)
    k = len(slopes)
    weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights)
    x = rng.normal(size=n)
    z = rng.choice(k, size=n, p=weights)
    y = x * slopes[z] + sigma * rng.normal(size=n)
    return x, y


def numpy_loglike(x, y, weights, slopes, sigma):
    z = (y[:, None] - x[:, None] * slopes[None, :]) / sigma
    comp = -0.5 * z**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    with np.errstate(divide="ignore"):
        lw = np.log(weights)
    return float(logsumexp(lw[None, :] + comp, axis=1).sum())


def numpy_grad(x, y, weights, slopes, sigma):
    """Analytic gradient through the responsibilities, in numpy (the strict reference)."""
    z = (y[:, None] - x[:, None] * slopes[None, :]) / sigma
    a = np.log(weights)[None, :] - 0.5 * z**2
    r = np.exp(a - logsumexp(a, axis=1, keepdims=True))
    g_w = r.sum(axis=0) / weights
    g_b = (r * z * x[:, None]).sum(axis=0) / sigma
    g_s = ((r * z**2).sum(axis=1) - 1.0).sum() / sigma
    return g_w, g_b, g_s


def build_model(x, y, fused, k=2):
    from vimodes.fastlik import comparison_model

    return comparison_model(x, y, fused, n_components=k)


def random_points(n_points, seed=123):
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n_points):
        points.append(
            {
                "w_simplex__": rng.normal(0.0, 1.0, size=1),
                "slopes": rng.normal(0.0, 3.0, size=2),
                "sigma_log__": np.array(rng.normal(np.log(0.3), 1.0)),
            }
        )
    return points


def fused_nodes(fn):
    topo = fn.maker.fgraph.toposort()
    n_ll = sum(isinstance(node.op, MixtureRegressionLogLike) for node in topo)
    n_grad = sum(isinstance(node.op, MixtureRegressionLogLikeGrad) for node in topo)
    return n_ll, n_grad


def assert_grad_close(g_fused, g_ref):
    g_fused = np.asarray(g_fused)
    g_ref = np.asarray(g_ref)
    assert g_fused.shape == g_ref.shape
    # strictly element-wise relative (observed: ~1e-14)
    np.testing.assert_allclose(g_fused, g_ref, rtol=RTOL, atol=0.0)


@pytest.fixture(scope="module")
def data():
    return simulate(1000, slopes=(3.0, -1.0), sigma=0.1, seed=0)


@pytest.fixture(scope="module")
def ref_model(data):
    return build_model(*data, fused=False)


@pytest.fixture(scope="module")
def fused_model(data):
    return build_model(*data, fused=True)


@pytest.fixture(scope="module")
def ref_values(ref_model):
    f_logp = ref_model.compile_logp()
    f_dlogp = ref_model.compile_dlogp()
    points = random_points(N_POINTS)
    return points, [(f_logp(p), f_dlogp(p)) for p in points]


# ---------------------------------------------------------------------------------------
# Agreement with pm.NormalMixture
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [None, "NUMBA"], ids=["default", "numba"])
def test_logp_and_dlogp_match_normal_mixture(fused_model, ref_model, ref_values, mode):
    assert [v.name for v in fused_model.value_vars] == [v.name for v in ref_model.value_vars]
    kw = {} if mode is None else {"mode": mode}
    with warnings.catch_warnings():
        # the numba dispatch must not fall back to object mode
        warnings.filterwarnings("error", message=".*object mode.*")
        f_logp = fused_model.compile_logp(**kw)
        f_dlogp = fused_model.compile_dlogp(**kw)
    points, ref = ref_values
    for p, (lp_ref, g_ref) in zip(points, ref):
        lp = f_logp(p)
        assert np.isfinite(lp_ref)
        assert abs(lp - lp_ref) <= RTOL * abs(lp_ref), (lp, lp_ref)
        assert_grad_close(f_dlogp(p), g_ref)


@pytest.mark.parametrize("mode", [None, "NUMBA"], ids=["default", "numba"])
def test_joint_logp_dlogp_uses_one_fused_pass(fused_model, ref_values, mode):
    """logp and its gradient in one function: a single kernel node (the rewrite fired)."""
    logp = fused_model.logp()
    grads = pytensor.grad(logp, fused_model.value_vars)
    kw = {} if mode is None else {"mode": mode}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        fn = pytensor.function(fused_model.value_vars, [logp, *grads], **kw)
    assert fused_nodes(fn) == (0, 1)
    points, ref = ref_values
    for p, (lp_ref, g_ref) in zip(points[:5], ref[:5]):
        out = fn(*[p[v.name] for v in fused_model.value_vars])
        assert abs(out[0] - lp_ref) <= RTOL * abs(lp_ref)
        assert_grad_close(np.concatenate([np.ravel(g) for g in out[1:]]), g_ref)


# ---------------------------------------------------------------------------------------
# Kernel: general K, log-weights, zero weights, edge cases
# ---------------------------------------------------------------------------------------
def _fd_grad(f, v, h=1e-6):
    v = np.array(v, dtype=float)
    g = np.zeros_like(v)
    for i in range(v.size):
        e = np.zeros_like(v)
        e.flat[i] = h * max(1.0, abs(v.flat[i]))
        g.flat[i] = (f(v + e) - f(v - e)) / (2 * e.flat[i])
    return g


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("log_weights", [False, True])
def test_kernel_against_numpy_and_finite_differences(k, log_weights):
    rng = np.random.default_rng(k)
    x, y = simulate(400, slopes=rng.normal(0, 2, size=k), sigma=0.5, seed=k)
    w = rng.dirichlet(np.ones(k))
    b = rng.normal(0, 2, size=k)
    s = 0.7
    wa = np.log(w) if log_weights else w
    lp, gw, gb, gs = fused_loglike_and_grad(x, y, wa, b, s, log_weights=log_weights)
    assert lp == pytest.approx(numpy_loglike(x, y, w, b, s), rel=1e-12)

    def lp_of_w(v):
        return numpy_loglike(x, y, np.exp(v) if log_weights else v, b, s)

    np.testing.assert_allclose(gw, _fd_grad(lp_of_w, wa), rtol=1e-6)
    np.testing.assert_allclose(gb, _fd_grad(lambda v: numpy_loglike(x, y, w, v, s), b), rtol=1e-6)
    assert gs == pytest.approx(
        _fd_grad(lambda v: numpy_loglike(x, y, w, b, v[0]), [s])[0], rel=1e-6
    )


def test_kernel_zero_weight_and_invalid_parameters():
    x, y = simulate(300, slopes=(3.0, -1.0), sigma=0.3, seed=5)
    b = np.array([3.0, -1.0])
    # weight exactly 0: logp is the single-component likelihood; gradient is still exact
    lp, gw, gb, gs = fused_loglike_and_grad(x, y, np.array([1.0, 0.0]), b, 0.3)
    assert lp == pytest.approx(numpy_loglike(x, y, np.array([1.0, 0.0]), b, 0.3), rel=1e-12)
    comp = -0.5 * ((y[:, None] - x[:, None] * b) / 0.3) ** 2 - np.log(0.3) - 0.5 * np.log(2 * np.pi)
    expected_gw = np.exp(comp - comp[:, [0]]).sum(axis=0)  # d/dw_k = sum_n N_nk / p_n
    np.testing.assert_allclose(gw, expected_gw, rtol=1e-10)
    assert np.all(np.isfinite(gb)) and np.isfinite(gs)
    # invalid sigma / negative weight -> -inf with zero gradient (PyMC's convention)
    for w, s in [([0.5, 0.5], 0.0), ([0.5, 0.5], -1.0), ([1.5, -0.5], 0.3)]:
        lp, gw, gb, gs = fused_loglike_and_grad(x, y, np.array(w), b, s)
        assert lp == -np.inf
        assert not np.any(gw) and not np.any(gb) and gs == 0.0
    # the K=2 branch-free path and the general path agree (log-weights with a -inf entry
    # forces the general path)
    lw = np.log([0.3, 0.7])
    fast = fused_loglike_and_grad(x, y, lw, b, 0.3, log_weights=True)
    ref = numpy_loglike(x, y, np.exp(lw), b, 0.3)
    assert fast[0] == pytest.approx(ref, rel=1e-13)
    with pytest.raises(ValueError):
        fused_loglike_and_grad(x, y[:-1], np.array([0.5, 0.5]), b, 0.3)


@pytest.mark.parametrize("mode", [None, "NUMBA"], ids=["default", "numba"])
def test_op_log_weights_general_k(mode):
    x, y = simulate(500, slopes=(2.0, 0.0, -2.0), sigma=0.3, seed=3)
    xs = pytensor.shared(x, name="xs")
    ys = pytensor.shared(y, name="ys")
    lw = pt.dvector("lw")
    b = pt.dvector("b")
    s = pt.dscalar("s")
    ll = mixture_regression_loglike(xs, ys, lw, b, s, log_weights=True)
    fn = pytensor.function([lw, b, s], [ll, *pytensor.grad(ll, [lw, b, s])], mode=mode)
    assert fused_nodes(fn) == (0, 1)
    w = np.array([0.2, 0.5, 0.3])
    bv = np.array([1.9, 0.1, -2.1])
    out = fn(np.log(w), bv, 0.35)
    lp, gw, gb, gs = fused_loglike_and_grad(x, y, np.log(w), bv, 0.35, log_weights=True)
    assert out[0] == pytest.approx(numpy_loglike(x, y, w, bv, 0.35), rel=1e-12)
    np.testing.assert_allclose(out[1], gw, rtol=1e-14)
    np.testing.assert_allclose(out[2], gb, rtol=1e-14)
    assert out[3] == pytest.approx(gs, rel=1e-14)


def test_input_validation():
    with pytest.raises(ValueError, match="sigma"):
        mixture_regression_loglike(pt.dvector(), pt.dvector(), pt.dvector(), pt.dvector(), pt.dvector())
    with pytest.raises(ValueError, match="x"):
        mixture_regression_loglike(pt.dmatrix(), pt.dvector(), pt.dvector(), pt.dvector(), pt.dscalar())
    # integer / float32 data are cast to float64
    out = mixture_regression_loglike(
        np.arange(3), np.arange(3, dtype="float32"), [0.5, 0.5], [1.0, 2.0], 1.0
    )
    assert out.dtype == "float64"
    assert out.eval() == pytest.approx(
        numpy_loglike(np.arange(3.0), np.arange(3.0), np.array([0.5, 0.5]), np.array([1.0, 2.0]), 1.0),
        rel=1e-12,
    )


# ---------------------------------------------------------------------------------------
# Data swapping without recompiling
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [None, "NUMBA"], ids=["default", "numba"])
def test_set_value_swaps_data_without_recompiling(mode):
    x1, y1 = simulate(1000, slopes=(3.0, -1.0), sigma=0.1, seed=0)
    x2, y2 = simulate(700, slopes=(2.0, -2.0), sigma=0.2, seed=1)  # other length, too
    model = build_model(x1, y1, fused=True)
    kw = {} if mode is None else {"mode": mode}
    f_logp = model.compile_logp(**kw)
    f_dlogp = model.compile_dlogp(**kw)
    point = {"w_simplex__": np.array([0.2]), "slopes": np.array([2.5, -1.5]), "sigma_log__": np.array(np.log(0.2))}
    # constrained weights at this unconstrained point (back-transformed value variable)
    w_value = next(v for v in model.unobserved_value_vars if v.name == "w")
    w = model.compile_fn(w_value, inputs=model.value_vars, on_unused_input="ignore")(point)
    assert w.shape == (2,) and w.sum() == pytest.approx(1.0)
    lp1 = f_logp(point)
    g1 = f_dlogp(point)

    def lik(x, y):
        return numpy_loglike(x, y, w, point["slopes"], 0.2)

    prior_part = lp1 - lik(x1, y1)  # priors + Jacobians, independent of the data
    pm.set_data({"x": x2, "y": y2}, model=model)  # set_value on the shared variables
    lp2 = f_logp(point)
    g2 = f_dlogp(point)
    assert lp2 != lp1 and not np.allclose(g1, g2)
    assert lp2 == pytest.approx(prior_part + lik(x2, y2), rel=1e-10)
    # and back: the same compiled functions give the original values
    model["x"].set_value(x1)
    model["y"].set_value(y1)
    assert f_logp(point) == pytest.approx(lp1, rel=1e-14)
    np.testing.assert_allclose(f_dlogp(point), g1, rtol=1e-14)

    # cross-check the swapped values against a fresh NormalMixture model on the new data
    ref = build_model(x2, y2, fused=False)
    assert lp2 == pytest.approx(ref.compile_logp()(point), rel=1e-10)
    assert_grad_close(g2, ref.compile_dlogp()(point))


# ---------------------------------------------------------------------------------------
# nutpie
# ---------------------------------------------------------------------------------------
def test_nutpie_samples_fused_model():
    nutpie = pytest.importorskip("nutpie")
    x, y = simulate(500, slopes=(3.0, -1.0), sigma=0.1, seed=11)
    model = build_model(x, y, fused=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        compiled = nutpie.compile_pymc_model(model)
    # nutpie's joint logp+dlogp function contains exactly one fused kernel node
    assert fused_nodes(compiled.logp_func) == (0, 1)

    def posterior_summary(cm, seed):
        idata = nutpie.sample(cm, chains=1, tune=200, draws=200, seed=seed, progress_bar=False)
        post = idata.posterior
        assert post.sizes["draw"] == 200
        slopes = post["slopes"].mean(("chain", "draw")).values
        order = np.argsort(slopes)
        return slopes[order], post["w"].mean(("chain", "draw")).values[order], float(post["sigma"].mean())

    slopes, w, sigma = posterior_summary(compiled, seed=1)
    np.testing.assert_allclose(slopes, [-1.0, 3.0], atol=0.05)  # ordering-independent
    np.testing.assert_allclose(w, [0.5, 0.5], atol=0.1)
    assert sigma == pytest.approx(0.1, abs=0.02)

    # swap the data in the compiled model (no recompilation)
    x2, y2 = simulate(500, slopes=(2.0, -2.0), sigma=0.2, weights=(0.3, 0.7), seed=12)
    slopes2, w2, sigma2 = posterior_summary(compiled.with_data(x=x2, y=y2), seed=2)
    np.testing.assert_allclose(slopes2, [-2.0, 2.0], atol=0.1)
    np.testing.assert_allclose(w2, [0.7, 0.3], atol=0.1)  # slope -2 has weight 0.7
    assert sigma2 == pytest.approx(0.2, abs=0.04)


def test_vectorisable_exp_matches_libm_to_a_few_ulp():
    from vimodes.fastlik import _exp_neg

    u = np.concatenate(
        [
            np.linspace(0.0, 50.0, 20001),
            np.random.default_rng(1).exponential(5.0, 5000),
            [np.log(2.0) * k + off for k in range(0, 1000, 37) for off in (-1e-9, 0.0, 1e-9)],
            [0.5 * np.log(2.0), 699.9],
        ]
    )
    got = np.array([_exp_neg(v) for v in u])
    ref = np.exp(-u)
    assert np.max(np.abs(got - ref) / ref) < 4 * np.finfo(float).eps
    assert _exp_neg(800.0) == pytest.approx(np.exp(-700.0), rel=1e-15)  # clamped, still > 0


def test_two_component_loop_agrees_with_logsumexp_at_large_n():
    # the SIMD loop reorders its sums: at N = 1e5 its error must stay at rounding level
    x, y = simulate(100_000, sigma=0.1, seed=11)
    for w, b, s in [
        ((0.5, 0.5), (3.0, -1.0), 0.1),
        ((0.3, 0.7), (0.0, 0.0), 1.0),
        ((0.5, 0.5), (1.0, 1.0001), 0.2),
        ((0.9, 0.1), (-4.0, 6.0), 0.05),
    ]:
        w, b = np.array(w), np.array(b)
        lp, gw, gb, gs = fused_loglike_and_grad(x, y, w, b, s)
        assert lp == pytest.approx(numpy_loglike(x, y, w, b, s), rel=1e-12)
        ref_gw, ref_gb, ref_gs = numpy_grad(x, y, w, b, s)
        np.testing.assert_allclose(gw, ref_gw, rtol=1e-10)
        np.testing.assert_allclose(gb, ref_gb, rtol=1e-10, atol=1e-9 * np.abs(ref_gb).max())
        assert gs == pytest.approx(ref_gs, rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_loglike_of_many_draws_agrees_with_logsumexp_at_large_n(k):
    # K = 2 to 4 by the SIMD loop (online log-sum-exp, one log per block), K = 5 and a zero
    # weight by the general kernel: rounding-level agreement at N = 1e5, draws near the data
    # (components far apart) and far from it (overlapping)
    rng = np.random.default_rng(k)
    x, y = simulate(100_000, slopes=np.linspace(-2.0, 3.0, k), sigma=0.1, seed=k)
    weights = rng.dirichlet(np.ones(k), size=4)
    weights[3, -1] = 0.0
    weights[3] /= weights[3].sum()
    slopes = np.vstack([np.linspace(-2.0, 3.0, k), rng.normal(0, 2, (3, k))])
    sigma = np.array([0.1, 0.5, 2.0, 0.3])
    got = mixture_loglike_many(x, y, weights, slopes, sigma)
    for value, w, b, s in zip(got, weights, slopes, sigma):
        assert value == pytest.approx(numpy_loglike(x, y, w, b, s), rel=1e-12)
