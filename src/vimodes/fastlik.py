"""Fused log-likelihood + gradient for a K-component mixture of linear regressions.

Model, per observation ``n`` (no intercept, one shared noise scale)::

    log p(y_n) = logsumexp_k [ log w_k + Normal_logpdf(y_n; x_n * slope_k, sigma) ]

and the total log-likelihood is the sum over ``n``.  This is exactly the density of
``pm.NormalMixture("y", w=w, mu=x[:, None] * slopes[None, :], sigma=sigma, observed=y)``.

Why: NUTS needs ``logp`` and ``dlogp`` at every leapfrog step.  PyTensor evaluates the
``NormalMixture`` graph as several elementwise passes over (N, K) temporaries (and more
for the gradient).  Here one numba-jitted loop over ``n`` computes the log-likelihood
and its analytic gradient w.r.t. the weights (or log-weights), slopes and sigma in a
single pass with O(K) memory.  For K = 2 (all weights > 0) a branch-free
two-component path is used (one exp and one division per observation); for any K the
log of sum_k exp(.) (a value in [1, K]) is taken once per block of observations, as the
log of a running product, instead of once per observation. The log-likelihood alone
(no gradient, e.g. the full-data log density of many draws) has a SIMD loop for
K = 2 to 4 (``_loglike_few``).

Public API
----------
``mixture_regression_loglike(x, y, weights, slopes, sigma, *, log_weights=False)``
    Scalar PyTensor tensor with the total log-likelihood (differentiable w.r.t.
    ``weights``, ``slopes`` and ``sigma``; not w.r.t. the data ``x``, ``y``).
``add_fused_likelihood(name, x, y, weights, slopes, sigma, *, log_weights=False)``
    Adds that tensor to the current PyMC model as ``pm.Potential(name, ...)``.
``MixtureRegressionLogLike`` / ``MixtureRegressionLogLikeGrad``
    The two PyTensor Ops.  ``grad()`` of the first is built from the second, which
    outputs ``(logp, dlogp/dweights, dlogp/dslopes, dlogp/dsigma)`` from the same fused
    kernel.  A canonicalize rewrite (``local_fuse_mixture_loglike_with_grad``) replaces the
    logp-only node by output 0 of the grad node when both are in one compiled graph
    (e.g. nutpie's joint logp+dlogp function), so logp+dlogp costs ONE pass over the data.
``fused_loglike_and_grad(x, y, weights, slopes, sigma, log_weights=False)``
    The raw numba kernel (numpy in, ``(logp, gw, gslopes, gsigma)`` out).

Both Ops have a numba dispatch (``numba_funcify``), so graphs containing them compile
natively (no object mode) under ``mode="NUMBA"``, which is what
``nutpie.compile_pymc_model`` uses.  Under the C / Python backends ``perform`` calls the
same jitted kernel.

Data handling
-------------
Pass ``x`` and ``y`` as ``pm.Data`` / ``pytensor.shared`` variables so that a compiled
function (PyMC ``compile_logp``/``compile_dlogp``, or nutpie via
``compiled.with_data(x=..., y=...)``) can be re-used for new data via ``set_value`` /
``pm.set_data`` without recompiling.  ``add_fused_likelihood`` wraps plain numpy arrays in
``pm.Data(f"{name}_x")`` / ``pm.Data(f"{name}_y")`` automatically.  The length N may
change between data sets; K is fixed by the parameters.

Caveat: with ``pm.Potential`` the observed ``y`` is not an observed random variable of
the model, so prior/posterior predictive sampling and ``pm.compute_log_likelihood`` do
not know about it.  That is fine for NUTS sampling of the parameters' posterior.

Conventions match PyMC's ``Mixture``/``Normal`` logp: ``sigma <= 0`` (or NaN), or a
negative weight, gives ``logp = -inf`` with zero gradient; a weight of exactly 0 is
allowed (``log 0 = -inf``) and its gradient is still the exact derivative.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numba
import numpy as np
import pytensor.tensor as pt
from numba.extending import intrinsic
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply, Variable
from pytensor.graph.op import Op
from pytensor.graph.rewriting.basic import node_rewriter
from pytensor.tensor.rewriting.basic import register_canonicalize

__all__ = [
    "MixtureRegressionLogLike",
    "MixtureRegressionLogLikeGrad",
    "add_fused_likelihood",
    "fused_loglike_and_grad",
    "mixture_regression_loglike",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

# Bump when the kernel's semantics change; the hash of this file is also part of the
# PyTensor numba cache key, so edits to this module never reuse a stale cached kernel.
_KERNEL_VERSION = 2
_BLOCK = 512  # observations per log() of a product of values in (1, 2]
_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------
# The fused kernel
# --------------------------------------------------------------------------------------
def _jit(fn):
    """``numba.njit`` with on-disk caching when a cache location is writable."""
    try:
        return numba.njit(cache=True, nogil=True, fastmath=False)(fn)
    except RuntimeError:  # e.g. read-only install and no writable user cache dir
        return numba.njit(cache=False, nogil=True, fastmath=False)(fn)


# The SIMD loops may reorder their sums (reassoc) and fuse multiply-adds (contract) so that
# LLVM turns it into SIMD code; numpy's error model drops the ZeroDivisionError branch of
# every division, which otherwise keeps the loop scalar. The results differ from the strict
# scalar loop by rounding only (~1e-14 relative, tested) and are deterministic on one machine.
_SIMD_FLAGS = {"reassoc", "contract", "nsz", "arcp"}
_LN2_HI = 0.693145751953125  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.42860682030941723212e-6
_LOG2E = 1.4426950408889634


def _jit_simd(fn, inline="never"):
    """``_jit`` for loops LLVM should vectorise (see ``_SIMD_FLAGS``)."""
    options = dict(nogil=True, fastmath=_SIMD_FLAGS, error_model="numpy", inline=inline)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:
        return numba.njit(cache=False, **options)(fn)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 ``bits`` (a bitcast LLVM can
    vectorise, unlike ``math.ldexp``)."""
    signature = numba.types.float64(numba.types.int64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(numba.types.float64))

    return signature, codegen


def _exp_neg(u):
    """exp(-u) for u >= 0 to ~1 ulp, in operations LLVM can vectorise.

    ``math.exp`` is a libm call that keeps a loop scalar (numba vectorises it only with
    Intel's SVML). Cody-Waite reduction u = k ln 2 - r, a degree-13 Taylor polynomial of
    exp(r) on |r| <= ln(2)/2 (truncation < 2e-16), and 2**-k built from its exponent bits
    (k <= 1010 after clamping u at 700, where exp(-u) is ~1e-304, so 2**-k is normal).
    """
    u = min(u, 700.0)
    k = math.floor(u * _LOG2E + 0.5)
    r = (k * _LN2_HI - u) + k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _float_from_bits((1023 - np.int64(k)) << 52)


_exp_neg_inline = _jit_simd(_exp_neg, inline="always")
_exp_neg = _jit_simd(_exp_neg)


@_jit_simd
def _loop_k2(x, y, lw0, lw1, b0, b1, inv_s):
    """K = 2, finite log-weights: branch-free two-component logsumexp.

    Returns (sum_n lse_n without the -log(sigma*sqrt(2 pi)) constant,
             sum_n r_n0, sum_n r_n1, sum_n r_n0 z_n0 x_n, sum_n r_n1 z_n1 x_n,
             sum_n (r_n0 z_n0^2 + r_n1 z_n1^2 - 1)).
    The log of (1 + exp(-|d|)) in (1, 2] is taken once per block of products.
    """
    n_obs = x.shape[0]
    acc_ll = 0.0
    acc_s = 0.0
    r0_sum = 0.0
    r1_sum = 0.0
    gb0 = 0.0
    gb1 = 0.0
    for start in range(0, n_obs, _BLOCK):
        prod = 1.0
        for i in range(start, min(start + _BLOCK, n_obs)):
            xi = x[i]
            yi = y[i]
            z0 = (yi - xi * b0) * inv_s
            z1 = (yi - xi * b1) * inv_s
            a0 = lw0 - 0.5 * z0 * z0
            a1 = lw1 - 0.5 * z1 * z1
            d = a1 - a0
            pos = d > 0.0
            m = a1 if pos else a0
            t = _exp_neg_inline(abs(d))
            s = 1.0 + t
            inv = 1.0 / s
            p = t * inv
            r1 = inv if pos else p
            r0 = p if pos else inv
            acc_ll += m
            prod *= s
            rz0 = r0 * z0
            rz1 = r1 * z1
            r0_sum += r0
            r1_sum += r1
            gb0 += rz0 * xi
            gb1 += rz1 * xi
            acc_s += rz0 * z0 + rz1 * z1 - 1.0
        acc_ll += math.log(prod)
    return acc_ll, r0_sum, r1_sum, gb0, gb1, acc_s


@_jit
def _log_block(n_comp):
    """How many per-observation sums, each in [1, K], one log may take as their product:
    K**block stays far below the float64 range."""
    log2k = 1
    while (1 << log2k) < n_comp:
        log2k += 1
    return max(1, 960 // log2k)


@_jit
def _k2_loglike_grad(x, y, w0, w1, b0, b1, sigma, log_weights):
    """K = 2 with finite log-weights (all weights > 0) and ``sigma > 0``: ``(logp, d/dw0,
    d/dw1, d/db0, d/db1, d/dsigma)`` as scalars, so that a caller looping over many seeds
    (the XLA custom call of ``vimodes.fastlik_ffi``) allocates nothing."""
    lw0, lw1 = (w0, w1) if log_weights else (math.log(w0), math.log(w1))
    inv_s = 1.0 / sigma
    acc_ll, r0, r1, gb0, gb1, acc_s = _loop_k2(x, y, lw0, lw1, b0, b1, inv_s)
    logp = acc_ll - x.shape[0] * (math.log(sigma) + _LOG_SQRT_2PI)
    if log_weights:
        gw0, gw1 = r0, r1
    else:
        gw0, gw1 = r0 * (1.0 / w0), r1 * (1.0 / w1)
    return logp, gw0, gw1, gb0 * inv_s, gb1 * inv_s, acc_s * inv_s


@_jit
def _k2_scalar_path(w, slopes, sigma, log_weights):
    """Whether ``_k2_loglike_grad`` serves: K = 2, finite log-weights (weights > 0), sigma > 0;
    anything else goes through the general loop of ``_fused_kernel``."""
    return (slopes.shape[0] == 2 and w.shape[0] == 2 and sigma > 0.0 and abs(w[0]) < np.inf
            and abs(w[1]) < np.inf and (log_weights or (w[0] > 0.0 and w[1] > 0.0)))


@_jit
def _fused_kernel_into(x, y, w, slopes, sigma, log_weights, g_w, g_b):
    """``_fused_kernel`` writing the weights' and slopes' gradients into ``g_w`` and ``g_b``;
    returns ``(logp, d/dsigma)``. K = 2 on valid inputs takes the scalar path."""
    if _k2_scalar_path(w, slopes, sigma, log_weights):
        logp, g_w[0], g_w[1], g_b[0], g_b[1], g_s = _k2_loglike_grad(
            x, y, w[0], w[1], slopes[0], slopes[1], sigma, log_weights)
        return logp, g_s
    logp, gw, gb, g_s = _fused_kernel(x, y, w, slopes, sigma, log_weights)
    g_w[:] = gw
    g_b[:] = gb
    return logp, g_s


@_jit
def _fused_kernel(x, y, w, slopes, sigma, log_weights):
    """One pass over n: total log-likelihood and its gradient.

    Returns (logp, d/dw (K,), d/dslopes (K,), d/dsigma).  If ``log_weights`` is true
    ``w`` holds log-weights and the first gradient is w.r.t. them.
    """
    n_obs = x.shape[0]
    k_comp = slopes.shape[0]
    if y.shape[0] != n_obs:
        raise ValueError("x and y must have the same length")
    if w.shape[0] != k_comp:
        raise ValueError("weights and slopes must have the same length K")

    g_w = np.zeros(k_comp)
    g_b = np.zeros(k_comp)
    if k_comp == 0 or not (sigma > 0.0):
        return -np.inf, g_w, g_b, 0.0
    if _k2_scalar_path(w, slopes, sigma, log_weights):
        logp, g_w[0], g_w[1], g_b[0], g_b[1], g_s = _k2_loglike_grad(
            x, y, w[0], w[1], slopes[0], slopes[1], sigma, log_weights)
        return logp, g_w, g_b, g_s

    lw = np.empty(k_comp)
    inv_w = np.empty(k_comp)
    any_zero_w = False
    for k in range(k_comp):
        if log_weights:
            lw[k] = w[k]
        else:
            wk = w[k]
            if wk < 0.0 or not (wk == wk):
                return -np.inf, g_w, g_b, 0.0
            if wk == 0.0:
                any_zero_w = True
                inv_w[k] = 0.0
                lw[k] = -np.inf
            else:
                inv_w[k] = 1.0 / wk
                lw[k] = math.log(wk)

    inv_s = 1.0 / sigma
    r_sum = np.zeros(k_comp)  # sum_n responsibilities
    g_zero = np.zeros(k_comp)  # sum_n N_nk / p_n, used for weights that are exactly 0
    acc_ll = 0.0  # sum_n logsumexp_k(log w_k - z_nk^2 / 2)
    acc_s = 0.0  # sum_n (sum_k r_nk z_nk^2 - 1)

    # general K: sum_k exp(lp_k - max) lies in [1, K]; multiply a block of them and
    # take one log per block
    block = _log_block(k_comp)
    z = np.empty(k_comp)
    e = np.empty(k_comp)
    prod = 1.0
    n_in_block = 0
    for i in range(n_obs):
        xi = x[i]
        yi = y[i]
        m = -np.inf
        for k in range(k_comp):
            zk = (yi - xi * slopes[k]) * inv_s
            z[k] = zk
            lp = lw[k] - 0.5 * zk * zk
            e[k] = lp
            if lp > m or not (lp == lp):
                m = lp
        if not (m > -np.inf):
            # every component has zero density (or NaN)
            acc_ll += m
            continue
        s = 0.0
        for k in range(k_comp):
            ek = math.exp(e[k] - m)
            e[k] = ek
            s += ek
        acc_ll += m
        prod *= s
        n_in_block += 1
        if n_in_block == block:
            acc_ll += math.log(prod)
            prod = 1.0
            n_in_block = 0
        inv_sum = 1.0 / s
        t = 0.0
        for k in range(k_comp):
            r = e[k] * inv_sum
            zk = z[k]
            rz = r * zk
            r_sum[k] += r
            g_b[k] += rz * xi
            t += rz * zk
        acc_s += t - 1.0
        if any_zero_w and not log_weights:
            lse = m + math.log(s)
            for k in range(k_comp):
                if w[k] == 0.0:
                    g_zero[k] += math.exp(-0.5 * z[k] * z[k] - lse)
    acc_ll += math.log(prod)

    logp = acc_ll - n_obs * (math.log(sigma) + _LOG_SQRT_2PI)
    for k in range(k_comp):
        g_b[k] *= inv_s
        if log_weights:
            g_w[k] = r_sum[k]
        elif w[k] == 0.0:
            g_w[k] = g_zero[k]
        else:
            g_w[k] = r_sum[k] * inv_w[k]
    g_s = acc_s * inv_s
    return logp, g_w, g_b, g_s


def fused_loglike_and_grad(x, y, weights, slopes, sigma, log_weights=False):
    """Numpy entry point to the fused kernel: ``(logp, d/dweights, d/dslopes, d/dsigma)``."""
    return _fused_kernel(
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
        np.ascontiguousarray(weights, dtype=np.float64),
        np.ascontiguousarray(slopes, dtype=np.float64),
        float(sigma),
        bool(log_weights),
    )


@_jit_simd
def _loglike_few(x, y, lw, b, inv_s):
    """The log-likelihood alone (no gradient) for K >= 2 finite log-weights ``lw`` and slopes
    ``b``, without the normalising constant: for the full-data log density of many draws
    (importance diagnostics). ``lw`` and ``b`` are tuples so that K is part of the compiled
    type: LLVM unrolls the loop over components and vectorises the loop over points. The
    log-sum-exp is kept online (a running maximum m and s = sum_k exp(a_k - m) in [1, K]),
    one exp per component after the first; a block's product of s takes one log. The first
    two components start it without a multiplication (10% faster at K = 2, measured)."""
    n_obs = x.shape[0]
    n_comp = len(lw)
    block = _log_block(n_comp)
    acc = 0.0
    for start in range(0, n_obs, block):
        prod = 1.0
        for i in range(start, min(start + block, n_obs)):
            xi = x[i]
            yi = y[i]
            z = (yi - xi * b[0]) * inv_s
            a0 = lw[0] - 0.5 * z * z
            z = (yi - xi * b[1]) * inv_s
            a1 = lw[1] - 0.5 * z * z
            d = a1 - a0
            m = a1 if d > 0.0 else a0
            s = 1.0 + _exp_neg_inline(abs(d))
            for k in range(2, n_comp):
                z = (yi - xi * b[k]) * inv_s
                a = lw[k] - 0.5 * z * z
                d = a - m
                e = _exp_neg_inline(abs(d))
                s = s * e + 1.0 if d > 0.0 else s + e
                m = a if d > 0.0 else m
            acc += m
            prod *= s
        acc += math.log(prod)
    return acc


@_jit
def _loglike(x, y, w, slopes, sigma, log_weights):
    """The total log-likelihood alone: K = 2 to 4 with finite log-weights and a finite
    positive sigma by the SIMD loop, anything else (and every edge case) by ``_fused_kernel``."""
    n_comp = slopes.shape[0]
    if 2 <= n_comp <= 4 and w.shape[0] == n_comp and x.shape[0] == y.shape[0] \
            and 0.0 < sigma < np.inf:
        lw = np.empty(n_comp)
        finite = True
        for k in range(n_comp):
            if log_weights:
                lw[k] = w[k]
            elif w[k] > 0.0:
                lw[k] = math.log(w[k])
            else:
                lw[k] = np.inf
            finite = finite and abs(lw[k]) < np.inf
        if finite:
            inv_s = 1.0 / sigma
            b = slopes
            if n_comp == 2:
                acc = _loglike_few(x, y, (lw[0], lw[1]), (b[0], b[1]), inv_s)
            elif n_comp == 3:
                acc = _loglike_few(x, y, (lw[0], lw[1], lw[2]), (b[0], b[1], b[2]), inv_s)
            else:
                acc = _loglike_few(x, y, (lw[0], lw[1], lw[2], lw[3]),
                                   (b[0], b[1], b[2], b[3]), inv_s)
            return acc - x.shape[0] * (math.log(sigma) + _LOG_SQRT_2PI)
    return _fused_kernel(x, y, w, slopes, sigma, log_weights)[0]


@_jit
def _loglike_many(x, y, weights, slopes, sigma):
    out = np.empty(weights.shape[0])
    for j in range(weights.shape[0]):
        out[j] = _loglike(x, y, weights[j], slopes[j], sigma[j], False)
    return out


def mixture_loglike_many(x, y, weights, slopes, sigma) -> np.ndarray:
    """The total log-likelihood of the data under each of many parameter draws: ``weights``
    and ``slopes`` (draws, K), ``sigma`` (draws,). Same density and conventions as the fused
    Op (K = 2 to 4 with positive weights by the SIMD loop, anything else by the general
    kernel)."""
    weights = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float64)
    slopes = np.ascontiguousarray(np.atleast_2d(slopes), dtype=np.float64)
    sigma = np.ascontiguousarray(np.atleast_1d(sigma), dtype=np.float64)
    if not weights.shape == slopes.shape or sigma.shape != weights.shape[:1]:
        raise ValueError(f"weights {weights.shape}, slopes {slopes.shape} and sigma "
                         f"{sigma.shape} must be (draws, K), (draws, K) and (draws,)")
    return _loglike_many(np.ascontiguousarray(x, dtype=np.float64),
                         np.ascontiguousarray(y, dtype=np.float64), weights, slopes, sigma)


# --------------------------------------------------------------------------------------
# PyTensor Ops
# --------------------------------------------------------------------------------------
def _as_float64(v, ndim, what):
    v = pt.as_tensor_variable(v)
    if v.ndim != ndim:
        raise ValueError(f"{what} must have ndim={ndim}, got ndim={v.ndim} ({v.type})")
    if v.dtype != "float64":
        v = pt.cast(v, "float64")
    return v


def _make_inputs(x, y, w, slopes, sigma):
    return [
        _as_float64(x, 1, "x"),
        _as_float64(y, 1, "y"),
        _as_float64(w, 1, "weights"),
        _as_float64(slopes, 1, "slopes"),
        _as_float64(sigma, 0, "sigma"),
    ]


class MixtureRegressionLogLike(Op):
    """Total log-likelihood of a mixture of linear regressions (scalar output).

    Inputs: ``x (N,)``, ``y (N,)``, ``weights (K,)`` (log-weights if
    ``log_weights=True``), ``slopes (K,)``, ``sigma ()``; all cast to float64.
    """

    __props__ = ("log_weights",)

    def __init__(self, log_weights: bool = False):
        self.log_weights = bool(log_weights)
        super().__init__()

    def make_node(self, x, y, w, slopes, sigma):
        inputs = _make_inputs(x, y, w, slopes, sigma)
        return Apply(self, inputs, [pt.dscalar()])

    def perform(self, node, inputs, output_storage):
        x, y, w, b, s = inputs
        output_storage[0][0] = np.asarray(_loglike(x, y, w, b, float(s), self.log_weights),
                                          dtype=np.float64)

    def infer_shape(self, fgraph, node, input_shapes):
        return [()]

    def grad(self, inputs, output_grads):
        (g_out,) = output_grads
        _, g_w, g_b, g_s = MixtureRegressionLogLikeGrad(self.log_weights)(*inputs)
        x, y = inputs[:2]
        return [
            grad_not_implemented(self, 0, x, "gradient w.r.t. the data x is not implemented"),
            grad_not_implemented(self, 1, y, "gradient w.r.t. the data y is not implemented"),
            g_out * g_w,
            g_out * g_b,
            g_out * g_s,
        ]


class MixtureRegressionLogLikeGrad(Op):
    """Companion Op: ``(logp, d/dweights (K,), d/dslopes (K,), d/dsigma ())`` in one pass."""

    __props__ = ("log_weights",)

    def __init__(self, log_weights: bool = False):
        self.log_weights = bool(log_weights)
        super().__init__()

    def make_node(self, x, y, w, slopes, sigma):
        inputs = _make_inputs(x, y, w, slopes, sigma)
        outputs = [pt.dscalar(), pt.dvector(), pt.dvector(), pt.dscalar()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        x, y, w, b, s = inputs
        logp, g_w, g_b, g_s = _fused_kernel(x, y, w, b, float(s), self.log_weights)
        output_storage[0][0] = np.asarray(logp, dtype=np.float64)
        output_storage[1][0] = g_w
        output_storage[2][0] = g_b
        output_storage[3][0] = np.asarray(g_s, dtype=np.float64)

    def infer_shape(self, fgraph, node, input_shapes):
        k_shape = input_shapes[3]
        return [(), k_shape, k_shape, ()]

    def L_op(self, inputs, outputs, output_grads):
        # logp output: its gradient is outputs 1..3.  Second derivatives are not implemented.
        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            return [
                grad_not_implemented(self, i, inp, "second derivatives are not implemented")
                for i, inp in enumerate(inputs)
            ]
        g_out = output_grads[0]
        x, y = inputs[:2]
        return [
            grad_not_implemented(self, 0, x, "gradient w.r.t. the data x is not implemented"),
            grad_not_implemented(self, 1, y, "gradient w.r.t. the data y is not implemented"),
            g_out * outputs[1],
            g_out * outputs[2],
            g_out * outputs[3],
        ]

    def connection_pattern(self, node):
        return [[True] * 4 for _ in node.inputs]


@register_canonicalize
@node_rewriter([MixtureRegressionLogLike])
def local_fuse_mixture_loglike_with_grad(fgraph, node):
    """Reuse output 0 of a MixtureRegressionLogLikeGrad node with identical inputs.

    With this, a graph computing both logp and its gradient evaluates the fused kernel
    once instead of twice.
    """
    clients = getattr(fgraph, "clients", None)
    if clients is None:
        return None
    for client, _ in clients.get(node.inputs[3], []):
        op = getattr(client, "op", None)
        if (
            isinstance(op, MixtureRegressionLogLikeGrad)
            and op.log_weights == node.op.log_weights
            and list(client.inputs) == list(node.inputs)
        ):
            return [client.outputs[0]]
    return None


# --------------------------------------------------------------------------------------
# Numba backend dispatch (mode="NUMBA", nutpie)
# --------------------------------------------------------------------------------------
def _register_numba_dispatch():
    from pytensor.link.numba.dispatch import basic as nb_basic

    def _cache_key(op):
        return hashlib.sha256(
            f"{type(op).__module__}.{type(op).__qualname__}|{op._props_dict()}|"
            f"v{_KERNEL_VERSION}|{_SOURCE_HASH}".encode()
        ).hexdigest()

    register = getattr(nb_basic, "register_funcify_and_cache_key", None)

    def funcify_loglike(op, node=None, **kwargs):
        log_weights = op.log_weights

        @nb_basic.numba_njit
        def mixture_regression_loglike_numba(x, y, w, slopes, sigma):
            return np.asarray(_loglike(x, y, w, slopes, sigma.item(), log_weights))

        return mixture_regression_loglike_numba, _cache_key(op)

    def funcify_loglike_grad(op, node=None, **kwargs):
        log_weights = op.log_weights

        @nb_basic.numba_njit
        def mixture_regression_loglike_grad_numba(x, y, w, slopes, sigma):
            logp, g_w, g_b, g_s = _fused_kernel(x, y, w, slopes, sigma.item(), log_weights)
            return np.asarray(logp), g_w, g_b, np.asarray(g_s)

        return mixture_regression_loglike_grad_numba, _cache_key(op)

    if register is not None:  # pytensor >= 2.36 style: funcify + cache key
        register(MixtureRegressionLogLike)(funcify_loglike)
        register(MixtureRegressionLogLikeGrad)(funcify_loglike_grad)
    else:  # older pytensor: plain singledispatch, no cache key
        nb_basic.numba_funcify.register(MixtureRegressionLogLike)(
            lambda op, node=None, **kw: funcify_loglike(op, node, **kw)[0]
        )
        nb_basic.numba_funcify.register(MixtureRegressionLogLikeGrad)(
            lambda op, node=None, **kw: funcify_loglike_grad(op, node, **kw)[0]
        )


_register_numba_dispatch()


# --------------------------------------------------------------------------------------
# JAX backend dispatch (numpyro NUTS; optional, jax is imported only when asked for)
# --------------------------------------------------------------------------------------
_JAX_REGISTERED = False


def register_jax_dispatch() -> None:
    """Give both Ops a JAX implementation, so graphs holding them compile under ``mode="JAX"``.

    Under XLA no hand-written loop is needed: the (N, K) expression below is fused by the
    compiler, and its gradient comes from ``jax.grad``. Conventions match the numba kernel on
    valid inputs; invalid ones (``sigma <= 0``, a negative weight) give ``-inf`` with a zero
    gradient. Called by :mod:`vimodes.jax_nuts`; importing this module never imports jax.
    """
    global _JAX_REGISTERED
    if _JAX_REGISTERED:
        return
    import jax
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify

    jax.config.update("jax_enable_x64", True)

    def raw_loglike(w, slopes, sigma, x, y, log_weights):
        # one length-N vector per component and an elementwise log-sum-exp: XLA vectorises
        # these, while a logsumexp over a trailing axis of length K did not (2.7x slower for
        # the full data at N = 1e5, benchmarks/README.md); K is static, so the loop unrolls
        log_w = w if log_weights else jnp.log(w)
        inv_sigma = 1.0 / sigma
        terms = [log_w[k] - 0.5 * jnp.square((y - slopes[k] * x) * inv_sigma)
                 for k in range(slopes.shape[0])]
        top = terms[0]
        for term in terms[1:]:
            top = jnp.maximum(top, term)
        # where every component is -inf (a zero weight everywhere) the point is -inf, not NaN
        # (a shift only: its gradient cancels, so it is kept out of the derivative)
        safe_top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
        per_point = safe_top + jnp.log(sum(jnp.exp(term - safe_top) for term in terms))
        return jnp.sum(per_point) - x.shape[0] * (jnp.log(sigma) + _LOG_SQRT_2PI)

    def valid(w, sigma, log_weights):
        return (sigma > 0) & (True if log_weights else jnp.all(w >= 0))

    def make_loglike(log_weights):
        def mixture_regression_loglike_jax(x, y, w, slopes, sigma):
            value = raw_loglike(w, slopes, sigma, x, y, log_weights)
            return jnp.where(valid(w, sigma, log_weights), value, -jnp.inf)
        return mixture_regression_loglike_jax

    def make_loglike_grad(log_weights):
        value_and_grad = jax.value_and_grad(raw_loglike, argnums=(0, 1, 2))

        def mixture_regression_loglike_grad_jax(x, y, w, slopes, sigma):
            value, (g_w, g_b, g_s) = value_and_grad(w, slopes, sigma, x, y, log_weights)
            ok = valid(w, sigma, log_weights)
            # masking after the gradient, not inside it, keeps NaNs of invalid points out
            return (jnp.where(ok, value, -jnp.inf), jnp.where(ok, g_w, 0.0),
                    jnp.where(ok, g_b, 0.0), jnp.where(ok, g_s, 0.0))
        return mixture_regression_loglike_grad_jax

    jax_funcify.register(MixtureRegressionLogLike)(
        lambda op, node=None, **kwargs: make_loglike(op.log_weights))
    jax_funcify.register(MixtureRegressionLogLikeGrad)(
        lambda op, node=None, **kwargs: make_loglike_grad(op.log_weights))
    _JAX_REGISTERED = True


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def mixture_regression_loglike(x, y, weights, slopes, sigma, *, log_weights=False) -> Variable:
    """Scalar tensor: sum_n logsumexp_k[log w_k + Normal_logpdf(y_n; x_n*slope_k, sigma)].

    ``weights`` are mixture weights (on the simplex), or log-weights if
    ``log_weights=True`` (not renormalised: pass normalised log-weights).
    """
    return MixtureRegressionLogLike(log_weights)(x, y, weights, slopes, sigma)


def add_fused_likelihood(name, x, y, weights, slopes, sigma, *, log_weights=False, model=None):
    """Add the fused mixture-regression likelihood to a PyMC model as ``pm.Potential``.

    ``x`` and ``y`` should be ``pm.Data`` / shared variables so the data can be swapped
    without recompiling; plain arrays are wrapped in ``pm.Data(f"{name}_x")`` and
    ``pm.Data(f"{name}_y")``.  The observed ``y`` is then not an observed RV of the model
    (no posterior predictive / log_likelihood group for it); NUTS sampling of the
    parameters is unaffected.  Returns the Potential variable.
    """
    import pymc as pm

    model = pm.modelcontext(model)
    with model:
        if not isinstance(x, Variable):
            x = pm.Data(f"{name}_x", np.asarray(x, dtype=np.float64))
        if not isinstance(y, Variable):
            y = pm.Data(f"{name}_y", np.asarray(y, dtype=np.float64))
        return pm.Potential(
            name, mixture_regression_loglike(x, y, weights, slopes, sigma, log_weights=log_weights)
        )


def comparison_model(x, y, fused: bool, n_components: int = 2):
    """A small model with either the fused likelihood or ``pm.NormalMixture`` and otherwise
    identical priors: what the equality tests and the likelihood benchmark compare."""
    import pymc as pm

    with pm.Model() as model:
        x_data = pm.Data("x", x)
        y_data = pm.Data("y", y)
        weights = pm.Dirichlet("w", a=np.ones(n_components))
        slopes = pm.Normal("slopes", 0.0, 5.0, shape=n_components)
        sigma = pm.HalfNormal("sigma", 1.0)
        if fused:
            add_fused_likelihood("lik", x_data, y_data, weights, slopes, sigma)
        else:
            pm.NormalMixture("obs", w=weights, mu=x_data[:, None] * slopes[None, :],
                             sigma=sigma, observed=y_data)
    return model
