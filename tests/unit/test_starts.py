"""Start points of the VI fits: every init kind of every model, as both engines use them."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytest

from vimodes.fitting import FitSettings, fit_rng, vi_start
from vimodes.models import build_model


def _model_parts(name):
    model = build_model(name, pytensor.shared(np.zeros(10)), pytensor.shared(np.zeros(10)))
    with model:
        group = pm.ADVI(random_seed=0).approx.groups[0]
    return model, group.ordering, np.asarray(group.shared_params["mu"].get_value())


def _slopes(model, ordering, flat):
    rv = model["slopes"]
    _, slc, _, _ = ordering[model.rvs_to_values[rv].name]
    transform = model.rvs_to_transforms.get(rv)
    value = flat[slc]
    return transform.backward(value, *rv.owner.inputs).eval() if transform else value


@pytest.mark.parametrize("model_name", ["marginal", "ordered", "as_asked"])
@pytest.mark.parametrize("kind,scale", [("jitter", 1.0), ("prior", 2.0)])
def test_random_starts_differ_across_seeds(model_name, kind, scale):
    model, ordering, default = _model_parts(model_name)
    settings = FitSettings(model=model_name, method="advi", init_kind=kind, init_scale=scale)
    starts = [vi_start(settings, model, ordering, default, fit_rng(1, seed)) for seed in range(4)]
    slopes = [_slopes(model, ordering, start) for start in starts]
    for i in range(4):
        for j in range(i):
            assert not np.allclose(slopes[i], slopes[j])  # the slopes themselves move
    if model_name == "ordered":
        assert all(s[0] < s[1] for s in slopes)


@pytest.mark.parametrize("model_name", ["marginal", "ordered"])
def test_default_start_is_symmetric_and_neutral(model_name):
    model, ordering, default = _model_parts(model_name)
    settings = FitSettings(model=model_name, method="advi", init_kind="default")
    start = vi_start(settings, model, ordering, default, fit_rng(1, 0))
    np.testing.assert_array_equal(start, default)
    slopes = _slopes(model, ordering, start)
    # centred on the prior mean, at neither true slope (3, -1)
    assert slopes.mean() == pytest.approx(0.0)
    assert not np.any(np.isclose(slopes, 3.0) | np.isclose(slopes, -1.0))
