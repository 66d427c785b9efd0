"""numpy's ``Generator.integers(0, high, dtype=np.int32)``, bit for bit, in ~2/3 of its time.

The vectorised engine draws 1.28 million minibatch indices per fit (10000 steps of 128), and
numpy spends ~3-5 ns on each: a call through the bit generator's function pointer per 32-bit
value (4.3-6.3 against 3.4-3.9 ms per fit here, benchmarks/README.md). Here numpy's PCG64 makes
the raw 64-bit values (``random_raw``, ~1 ns each, two indices apiece) and a numba loop maps
them to indices with numpy's own algorithm (Lemire's multiply-and-reject, arXiv:1805.10941,
numpy's ``buffered_bounded_lemire_uint32``): the low 32 bits of a raw value first, then the
high, a spare half kept in the stream's ``has_uint32``/``uinteger`` as numpy keeps it. The raw
values drawn but not used are given back by stepping the stream back (``PCG64.advance`` modulo
2**128), so the stream ends where ``integers`` would have left it and every later draw is
unchanged (tested against numpy for many streams, sizes and bounds)."""

from __future__ import annotations

import sys

import numpy as np

from vimodes.fastlik import _jit as njit_cached

_LOW_32 = 0xFFFFFFFF


@njit_cached
def _lemire_fill(raw, buffered, high, out):
    """Fill ``out`` (flat int32) with numpy's bounded draws in [0, high) from ``buffered`` (the
    stream's spare 32-bit value, or -1 for none) and then the halves of ``raw``, low half first;
    the number of halves of ``raw`` used, or -1 if they ran out (more rejections than spares)."""
    bound = np.uint64(high)
    low_mask = np.uint64(_LOW_32)
    threshold = np.uint64((_LOW_32 - (high - 1)) % high)
    n_halves = 2 * raw.size
    used = 0
    for i in range(out.size):
        while True:
            if buffered >= 0:
                value = np.uint64(buffered)
                buffered = -1
            elif used < n_halves:
                value = (raw[used >> 1] >> np.uint64(32 * (used & 1))) & low_mask
                used += 1
            else:
                return -1
            scaled = value * bound
            if (scaled & low_mask) >= threshold:  # accept, as numpy does
                break
        out[i] = np.int32(scaled >> np.uint64(32))
    return used


def _spare_halves(count: int, high: int) -> int:
    """32-bit values drawn beyond ``count`` for the rejected ones: a value is rejected with
    probability ((2**32 - high) mod high) / 2**32; spares for 10 sd more than expected."""
    expected = count * ((2**32 - high) % high) / 2.0**32
    return int(expected + 10 * np.sqrt(expected)) + 64


def draw_indices(rng: np.random.Generator, high: int, out: np.ndarray) -> np.ndarray:
    """Fill the C-contiguous int32 array ``out`` with what ``rng.integers(0, high,
    size=out.shape, dtype=np.int32)`` would return, and leave ``rng`` where that call would.
    Streams other than PCG64 (and the corner cases numpy treats apart) go through numpy."""
    bits = rng.bit_generator
    if out.size == 0:
        return out
    if (high < 2 or high > 2**31 - 1 or not isinstance(bits, np.random.PCG64)
            or out.dtype != np.int32 or not out.flags.c_contiguous or sys.byteorder != "little"):
        out[...] = rng.integers(0, high, size=out.shape, dtype=np.int32)
        return out
    state = bits.state
    buffered = state["uinteger"] if state["has_uint32"] else -1
    n_raw = (out.size - (buffered >= 0) + _spare_halves(out.size, high) + 1) // 2
    raw = bits.random_raw(n_raw)
    used = _lemire_fill(raw, buffered, high, out.reshape(-1))
    if used < 0:  # astronomically rare with these spares: numpy draws them instead
        bits.state = state
        out[...] = rng.integers(0, high, size=out.shape, dtype=np.int32)
        return out
    raw_used = (used + 1) // 2
    spare = state["uinteger"]  # numpy's last high half, kept even once it has been used
    if raw_used:
        spare = int(raw[raw_used - 1] >> np.uint64(32))
    bits.advance(-(n_raw - raw_used))  # which resets the spare half, set below
    state = bits.state
    state.update(has_uint32=used & 1, uinteger=spare)
    bits.state = state
    return out
