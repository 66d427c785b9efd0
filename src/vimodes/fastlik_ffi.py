"""The fused mixture likelihood as an XLA custom call on the CPU: the numba kernel inside JAX.

The vectorised VI engine's step spends most of its time in the mixture log-likelihood and its
gradient over the minibatch of every seed. XLA's CPU code runs that expression at ~12-20 ns per
point, the numba kernel of :mod:`vimodes.fastlik` at ~6 (benchmarks/README.md). This module
lets a jitted JAX function call the kernel through XLA's typed foreign-function interface
(``jax.ffi``): a numba ``cfunc`` is the handler, reading XLA's call frame (the C structs of
``xla/ffi/api/c_api.h``, shipped with jaxlib) and looping over the batch of seeds that
``jax.vmap`` hands it. Its values are the kernel's, bit for bit.

The handler reads the structs at the offsets of the pinned jaxlib's header and checks their
``struct_size`` fields; :func:`available` registers it once per process and compares one batched
call with the kernel called directly. Where that check fails (another jaxlib, another ABI:
with a warning) or JAX's backend is not the CPU (a GPU: XLA's code is fast there),
:func:`on_cpu_kernel` leaves a graph as it is and XLA's own form of the likelihood runs (the
same values to rounding; tested).
"""

from __future__ import annotations

import ctypes
import warnings

import numba
import numpy as np
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from vimodes.fastlik import MixtureRegressionLogLike, _fused_kernel, _fused_kernel_into, _jit

TARGETS = {False: "vimodes_mixture_loglike_grad", True: "vimodes_mixture_loglike_grad_logw"}

# xla/ffi/api/c_api.h (API 0.3), x86-64 / aarch64 layout, in 8-byte words
_CALL_FRAME_SIZE = 168  # XLA_FFI_CallFrame_STRUCT_SIZE: up to and including `attrs`
_ARGS_SIZE = 40  # XLA_FFI_Args / XLA_FFI_Rets: struct_size, extension, size, types, pointers
_BUFFER_SIZE = 48  # XLA_FFI_Buffer: struct_size, extension, dtype, data, rank, dims
_METADATA_EXTENSION = 1  # XLA_FFI_Extension_Metadata
_EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
_F64 = 12  # XLA_FFI_DataType_F64
_API_VERSION_SIZE = 24  # XLA_FFI_Api_Version_STRUCT_SIZE
_METADATA_EXTENSION_SIZE = 32  # XLA_FFI_Metadata_Extension: extension base, metadata*
_METADATA_SIZE = 36  # XLA_FFI_Metadata_STRUCT_SIZE: struct_size, api_version, traits
_API_MAJOR, _API_MINOR = 0, 3
_LOW32 = 0xFFFFFFFF


@intrinsic
def _pointer(typingctx, address):
    """An integer address as a ``void*`` (for ``carray``)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@numba.njit(inline="always")
def _words(address, count):
    return carray(_pointer(address), (count,), np.int64)


@numba.njit(inline="always")
def _buffer(address):
    """(data address, dims, rank) of an ``XLA_FFI_Buffer``; data 0 if it is not float64."""
    fields = _words(address, 6)
    if fields[0] < _BUFFER_SIZE or (fields[2] & _LOW32) != _F64:
        return 0, _words(address, 0), 0
    rank = fields[4]
    return fields[3], _words(fields[5], rank), rank


@numba.njit(inline="always")
def _answer_metadata(extension):
    """Fill the metadata XLA asks for when the handler is registered: the FFI API version of
    the header this module follows, no traits. Structs smaller than that header's are left
    alone: XLA then refuses the registration, and :func:`available` says so."""
    base = _words(extension, 4)  # struct_size, type, next, metadata*
    if base[0] < _METADATA_EXTENSION_SIZE or _words(base[3], 1)[0] < _METADATA_SIZE:
        return
    metadata = _words(base[3], 5)
    metadata[1] = _API_VERSION_SIZE
    metadata[2] = 0
    metadata[3] = _API_MAJOR | (_API_MINOR << 32)
    metadata[4] = (metadata[4] >> 32) << 32  # traits (uint32) = 0, padding kept


@_jit
def _handle(call_frame, log_weights):
    """x, y (..., M), weights, slopes (..., K), sigma (...) -> logp, d/dweights, d/dslopes,
    d/dsigma over the leading (batch) axes. Returns NULL (no error) in every case: a frame it
    cannot read leaves the outputs unwritten, which :func:`available`'s check sees."""
    frame = carray(call_frame, (22,), np.int64)
    if frame[1] != 0 and (_words(frame[1], 2)[1] & _LOW32) == _METADATA_EXTENSION:
        _answer_metadata(frame[1])
        return 0
    if frame[0] < _CALL_FRAME_SIZE or (frame[4] & _LOW32) != _EXECUTE:
        return 0
    # args: struct_size, extension, size, types, pointers (words 5-9); rets: words 10-14
    if frame[5] < _ARGS_SIZE or frame[10] < _ARGS_SIZE or frame[7] != 5 or frame[12] != 4:
        return 0
    args, rets = _words(frame[9], 5), _words(frame[14], 4)
    x_at, x_dims, x_rank = _buffer(args[0])
    w_at, w_dims, w_rank = _buffer(args[2])
    if x_rank < 1 or w_rank < 1 or x_at == 0 or w_at == 0:
        return 0
    n_points, n_comp = x_dims[x_rank - 1], w_dims[w_rank - 1]
    n_batch = 1
    for axis in range(x_rank - 1):
        n_batch *= x_dims[axis]
    # every buffer float64 and of the size its role asks (y, slopes, sigma, the outputs)
    at = np.empty(7, np.int64)
    wanted = (n_batch * n_points, n_batch * n_comp, n_batch, n_batch, n_batch * n_comp,
              n_batch * n_comp, n_batch)
    for i in range(7):
        address = args[(1, 3, 4)[i]] if i < 3 else rets[i - 3]
        at[i], dims, rank = _buffer(address)
        size = 1
        for axis in range(rank):
            size *= dims[axis]
        if at[i] == 0 or size != wanted[i]:
            return 0
    y_at, b_at, s_at, value_at, gw_at, gb_at, gs_at = at
    x = carray(_pointer(x_at), (n_batch, n_points), np.float64)
    y = carray(_pointer(y_at), (n_batch, n_points), np.float64)
    w = carray(_pointer(w_at), (n_batch, n_comp), np.float64)
    slopes = carray(_pointer(b_at), (n_batch, n_comp), np.float64)
    sigma = carray(_pointer(s_at), (n_batch,), np.float64)
    value = carray(_pointer(value_at), (n_batch,), np.float64)
    g_w = carray(_pointer(gw_at), (n_batch, n_comp), np.float64)
    g_b = carray(_pointer(gb_at), (n_batch, n_comp), np.float64)
    g_s = carray(_pointer(gs_at), (n_batch,), np.float64)
    for i in range(n_batch):
        value[i], g_s[i] = _fused_kernel_into(x[i], y[i], w[i], slopes[i], sigma[i],
                                              log_weights, g_w[i], g_b[i])
    return 0


def _cfunc(fn):
    """A C callback of XLA's handler type, ``XLA_FFI_Error* (XLA_FFI_CallFrame*)`` (NULL as
    int64), cached on disk where a cache location is writable (as ``fastlik._jit``)."""
    signature = types.int64(types.voidptr)
    try:
        return numba.cfunc(signature, nopython=True, cache=True)(fn)
    except RuntimeError:
        return numba.cfunc(signature, nopython=True, cache=False)(fn)


@_cfunc
def _handler_weights(call_frame):
    return _handle(call_frame, False)


@_cfunc
def _handler_log_weights(call_frame):
    return _handle(call_frame, True)


_HANDLERS = {False: _handler_weights, True: _handler_log_weights}

_STATE: dict[str, object] = {}


def _register() -> None:
    import jax

    from vimodes.fastlik import register_jax_dispatch

    register_jax_dispatch()  # float64 throughout, as the handler reads only float64 buffers

    capsule_new = ctypes.pythonapi.PyCapsule_New
    capsule_new.restype = ctypes.py_object
    capsule_new.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    for flag, name in TARGETS.items():
        capsule = capsule_new(_HANDLERS[flag].address, b"xla._CUSTOM_CALL_TARGET", None)
        jax.ffi.register_ffi_target(name, capsule, platform="cpu", api_version=1)


def _call(x, y, w, slopes, sigma, log_weights: bool):
    import jax

    k = w.shape[-1]
    shapes = (jax.ShapeDtypeStruct((), np.float64), jax.ShapeDtypeStruct((k,), np.float64),
              jax.ShapeDtypeStruct((k,), np.float64), jax.ShapeDtypeStruct((), np.float64))
    # vmap hands the handler the whole batch of seeds in one call (leading axes)
    call = jax.ffi.ffi_call(TARGETS[log_weights], shapes, vmap_method="broadcast_all")
    return call(x, y, w, slopes, sigma)


def _self_check() -> str | None:
    """Why the custom call cannot be used here (None: it can): one batched call against the
    kernel called directly, bit for bit, for K = 2 and 3 and both weight forms."""
    import jax

    rng = np.random.default_rng(0)
    for n_comp in (2, 3):
        x = rng.uniform(-1, 1, (3, 50))
        y = 2.0 * x + rng.normal(0, 0.3, x.shape)
        w = rng.dirichlet(np.ones(n_comp), 3)
        slopes = rng.normal(0, 2, (3, n_comp))
        sigma = rng.uniform(0.2, 1.0, 3)
        for log_weights in (False, True):
            weights = np.log(w) if log_weights else w
            got = jax.jit(jax.vmap(lambda *a, lw=log_weights: _call(*a, lw)))(
                x, y, weights, slopes, sigma)
            for i in range(3):
                want = _fused_kernel(x[i], y[i], weights[i], slopes[i], sigma[i], log_weights)
                if not all(np.array_equal(np.asarray(g[i]), w_) for g, w_ in zip(got, want)):
                    return "the custom call's values differ from the kernel's"
    return None


def available() -> bool:
    """Register the custom call (once per process) and check it; False where it cannot serve:
    on another backend than the CPU (expected, silent) or where the check fails (a warning)."""
    import jax

    if jax.default_backend() != "cpu":
        return False
    if "ok" not in _STATE:
        try:
            _register()
            problem = _self_check()
        except Exception as err:  # noqa: BLE001 - any failure means: use XLA's own form
            problem = f"{type(err).__name__}: {err}"
        if problem is not None:
            warnings.warn(f"the numba likelihood kernel is not used inside XLA ({problem}); "
                          f"XLA's own form of the likelihood runs instead", stacklevel=2)
        _STATE["ok"], _STATE["problem"] = problem is None, problem
    return bool(_STATE["ok"])


def _loglike_on_kernel(log_weights: bool):
    """The likelihood as a JAX function whose value and gradient come from one custom call."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def loglike(x, y, w, slopes, sigma):
        return _call(x, y, w, slopes, sigma, log_weights)[0]

    def forward(x, y, w, slopes, sigma):
        value, g_w, g_b, g_s = _call(x, y, w, slopes, sigma, log_weights)
        return value, (g_w, g_b, g_s, x, y)

    def backward(residuals, cotangent):
        g_w, g_b, g_s, x, y = residuals  # the data get no gradient
        return (jnp.zeros_like(x), jnp.zeros_like(y), cotangent * g_w, cotangent * g_b,
                cotangent * g_s)

    loglike.defvjp(forward, backward)
    return loglike


class MixtureRegressionLogLikeOnCPUKernel(MixtureRegressionLogLike):
    """``MixtureRegressionLogLike`` whose JAX form is the numba kernel behind XLA's FFI (same
    values and gradient; elsewhere the parent's implementations serve)."""


def _register_jax_dispatch() -> None:
    from pytensor.link.jax.dispatch import jax_funcify

    if "dispatch" not in _STATE:
        jax_funcify.register(MixtureRegressionLogLikeOnCPUKernel)(
            lambda op, node=None, **kwargs: _loglike_on_kernel(op.log_weights))
        _STATE["dispatch"] = True


def on_cpu_kernel(outputs: list):
    """``outputs`` (PyTensor graphs) with every fused mixture likelihood computed by the numba
    kernel under JAX, where :func:`available`; else ``outputs`` itself (the same list)."""
    from pytensor.graph.replace import graph_replace
    from pytensor.graph.traversal import ancestors

    if not available():
        return outputs
    _register_jax_dispatch()
    replacements = {}
    for variable in ancestors(outputs):
        node = variable.owner
        if node is not None and type(node.op) is MixtureRegressionLogLike:
            swapped = MixtureRegressionLogLikeOnCPUKernel(node.op.log_weights)(*node.inputs)
            replacements[variable] = swapped
    if not replacements:
        return outputs
    return graph_replace(outputs, replacements, strict=False)
