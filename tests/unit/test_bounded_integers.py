"""``draw_indices`` is numpy's ``Generator.integers`` for int32 bit for bit, stream state too."""

import numpy as np
import pytest

from vimodes import bounded_integers
from vimodes.bounded_integers import draw_indices


def _pair(seed):
    return np.random.default_rng([seed, 1]), np.random.default_rng([seed, 1])


@pytest.mark.parametrize("high", [2, 3, 7, 128, 2**16, 99_999, 100_000, 2**20 + 1,
                                  2**32 // 3 + 1, 2**31 - 1])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 128), (10, 100, 128)])
@pytest.mark.parametrize("spare_half", [False, True])
def test_draws_and_the_stream_after_them_are_numpys(high, shape, spare_half):
    for seed in range(4):
        numpy_rng, ours = _pair(seed)
        if spare_half:  # an odd number of 32-bit values drawn: the stream keeps the other half
            numpy_rng.integers(0, 5, size=3, dtype=np.int32)
            ours.integers(0, 5, size=3, dtype=np.int32)
        for _ in range(3):
            expected = numpy_rng.integers(0, high, size=shape, dtype=np.int32)
            drawn = draw_indices(ours, high, np.empty(shape, dtype=np.int32))
            np.testing.assert_array_equal(drawn, expected)
        assert ours.bit_generator.state == numpy_rng.bit_generator.state
        # what comes next, 32- and 64-bit, is the same
        np.testing.assert_array_equal(ours.integers(0, 1000, size=7, dtype=np.int32),
                                      numpy_rng.integers(0, 1000, size=7, dtype=np.int32))
        np.testing.assert_array_equal(ours.standard_normal(5), numpy_rng.standard_normal(5))


def test_more_rejections_than_spares_fall_back_to_numpy(monkeypatch):
    # at this bound a third of the 32-bit values are rejected: with no spares they run out
    high = 2**32 // 3 + 1
    assert (2**32 - high) % high / 2**32 > 0.33
    monkeypatch.setattr(bounded_integers, "_spare_halves", lambda count, high: 0)
    raw = np.random.default_rng(0).bit_generator.random_raw(8)
    assert bounded_integers._lemire_fill(raw, -1, high, np.empty(16, np.int32)) == -1
    numpy_rng, ours = _pair(3)
    expected = numpy_rng.integers(0, high, size=(50, 7), dtype=np.int32)
    np.testing.assert_array_equal(draw_indices(ours, high, np.empty((50, 7), np.int32)),
                                  expected)
    assert ours.bit_generator.state == numpy_rng.bit_generator.state


@pytest.mark.parametrize("high", [1, 100])
def test_other_streams_and_layouts_go_through_numpy(high):
    numpy_rng = np.random.Generator(np.random.MT19937(5))
    ours = np.random.Generator(np.random.MT19937(5))
    out = np.empty((4, 6), dtype=np.int32)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(draw_indices(ours, high, out),
                                  numpy_rng.integers(0, high, size=(4, 3), dtype=np.int32))
    np.testing.assert_array_equal(ours.random(5), numpy_rng.random(5))
