"""The collapse-mechanism measurements (vimodes.mechanism) on small data: the full-data ELBO and
its Monte Carlo error, the label-swap symmetry, the saddle, and the table's columns."""

import re

import numpy as np
import pytest

from vimodes import mechanism as mech
from vimodes.fitting import FitSettings
from vimodes.simulate import DataRegime, simulate
from vimodes.vectorised import VectorisedVIFitter, _jax

from helpers import one_worker

pytestmark = one_worker(__name__)

N = 2048  # a multiple of the batch: 16 disjoint batches partition the data exactly
SEED_BASE = 20180913


@pytest.fixture(scope="module")
def data():
    return simulate(DataRegime(n_obs=N), 0, SEED_BASE)


@pytest.fixture(scope="module")
def fitter():
    return VectorisedVIFitter(FitSettings(model="marginal", method="advi", batch_size=128), N)


def collapsed_like(fitter, gap=0.1):
    """A collapsed-looking Gaussian (both slopes near 1, sigma ~1.15, small sds), slightly
    asymmetric (slopes apart by `gap`, unequal weights and sds)."""
    mu = np.zeros(fitter.ddim)
    i, j = mech.slope_indices(fitter)
    mu[[i, j]] = 1.0 + gap / 2, 1.0 - gap / 2
    mu[mech._flat_slice(fitter, "weights")] = 0.2
    mu[mech._flat_slice(fitter, "sigma")] = np.log(1.15)
    sd = np.full(fitter.ddim, 0.02)
    sd[i] = 0.03
    return mu, np.log(np.expm1(sd))


def key(seed):
    return _jax().random.key(seed)


def test_elbo_mcse_shrinks_with_draws(fitter, data):
    params = collapsed_like(fitter)
    few, few_se = mech.full_elbo(fitter, params, data, 100, key(1))
    many, many_se = mech.full_elbo(fitter, params, data, 1600, key(2))
    assert 2.5 < few_se / many_se < 6  # ~sqrt(16)
    assert abs(few - many) < 5 * np.hypot(few_se, many_se)


def test_full_elbo_matches_the_engines_loss(fitter, data):
    """full_elbo is the mean of -loss * normaliser over its own draws: exactly with the full
    batch, and, for the minibatch loss, averaged over 16 disjoint batches covering the data."""
    jax = _jax()
    jnp = jax.numpy
    params = collapsed_like(fitter)
    n_draws, k = 64, key(3)
    elbo, _ = mech.full_elbo(fitter, params, data, n_draws, k)
    eps = jax.random.normal(k, (n_draws, fitter.ddim))  # full_elbo's draws
    jparams = tuple(jnp.asarray(p) for p in params)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)

    full = VectorisedVIFitter(FitSettings(model="marginal", method="advi", batch_size=None), N)
    assert full.scaling.data_scale == full.scaling.normaliser == 1.0
    full_loss = jax.vmap(full.loss, in_axes=(None, 0, None, None))(jparams, eps, x, y)
    np.testing.assert_allclose(elbo, -np.mean(full_loss) * full.scaling.normaliser, rtol=1e-10)

    blocks = np.arange(N).reshape(-1, fitter.batch_size)
    batch_loss = np.mean([jax.vmap(fitter.loss, in_axes=(None, 0, None, None))(
        jparams, eps, x[b], y[b]) for b in blocks], axis=0)
    np.testing.assert_allclose(elbo, -np.mean(batch_loss) * fitter.scaling.normaliser, rtol=1e-10)
    # and the expected loss of the geometry is the same objective in the engine's units
    expected = jax.vmap(lambda e: mech.expected_loss(fitter, jparams, e, x, y))(eps)
    np.testing.assert_allclose(elbo, -np.mean(expected) * fitter.scaling.normaliser, rtol=1e-10)


def test_swap_is_a_symmetry_of_the_log_density(fitter, data):
    swap = mech.swap_matrix(fitter)
    z = np.array([0.4, 2.5, -0.8, np.log(0.3)])
    a = fitter.logp_terms(z, data.x, data.y)
    b = fitter.logp_terms(swap @ z, data.x, data.y)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    ordered = VectorisedVIFitter(FitSettings(model="ordered", method="advi"), 100)
    with pytest.raises(ValueError, match="no label-swap symmetry"):
        mech.swap_matrix(ordered)


@pytest.mark.parametrize("method", ["advi", "fullrank_advi"])
def test_gradient_along_u_vanishes_at_the_symmetric_point(data, method):
    fitter = VectorisedVIFitter(FitSettings(model="marginal", method=method), N)
    asym = collapsed_like(VectorisedVIFitter(FitSettings(model="marginal", method="advi"), N))
    if fitter.fullrank:  # the same Gaussian, with a correlation, in full-rank parameters
        mean, cov = np.asarray(asym[0]), np.diag(np.logaddexp(0, asym[1]) ** 2)
        cov[1, 2] = cov[2, 1] = 0.5 * np.sqrt(cov[1, 1] * cov[2, 2])
        asym = mech.params_from_moments(fitter, mean, cov)
    sym = mech.symmetric_params(fitter, asym)
    _, cov = fitter.moments(sym)
    swap = mech.swap_matrix(fitter)
    np.testing.assert_allclose(swap @ np.asarray(sym[0]), sym[0], atol=1e-14)
    np.testing.assert_allclose(swap @ cov @ swap.T, cov, atol=1e-14)
    u = mech.slope_direction(fitter)
    eps = mech.common_draws(fitter, asym, 40, key(4))
    at_sym = mech.directional_derivatives(fitter, sym, u, eps, data)
    at_asym = mech.directional_derivatives(fitter, asym, u, eps, data)
    # zero to rounding (the loss is ~1e3 per draw), while off the symmetric point it is not
    assert abs(at_sym.gradient) < 1e-9
    assert abs(at_asym.gradient) > 1e3 * abs(at_sym.gradient) + 1e-3


def test_symmetric_point_is_a_saddle_on_separated_data(fitter, data):
    sym = mech.symmetric_params(fitter, collapsed_like(fitter))
    eps = mech.common_draws(fitter, sym, 100, key(5))
    d = mech.directional_derivatives(fitter, sym, mech.slope_direction(fitter), eps, data)
    assert d.curvature < -3 * d.curvature_mcse
    assert d.curvature < -1.0  # clearly unstable, in the engine's loss units


def test_escape_steps():
    assert mech.escape_steps(1e-3, -2.0, 1.0, 1.0) == 0.0  # already at the mode's distance
    assert mech.escape_steps(1e-3, -1.0, 1.0, 0.5) == pytest.approx(np.log(2) / np.log1p(1e-3))
    assert mech.escape_steps(1e-3, 0.5, 1.0, 0.5) == np.inf  # a minimum along u: no escape
    assert mech.noise_offset(1e-3, 2.0, 1.0) == np.inf
    assert mech.noise_offset(1e-3, 2.0, -1.0) == pytest.approx(1e-3 * 2.0 / np.sqrt(2e-3))


def test_table_has_the_documented_columns(data, repo):
    settings = mech.MechanismSettings(iterations=200, n_draws=20, n_geometry_draws=4,
                                      n_batches=20)
    table = mech.mechanism_rows(data, SEED_BASE, settings)
    assert tuple(table.columns) == mech.TABLE_COLUMNS
    assert table["name"].is_unique and (table["seed"] == 0).all()
    assert np.isfinite(table.set_index("name").loc[
        ["elbo_collapsed", "elbo_single_mode", "curvature_u_symmetric"], "value"]).all()
    text = (repo / "workflow" / "report" / "columns.md").read_text()
    section = text.split("## `data/tables/mechanism.{csv,parquet}`")[1].split("\n## ")[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert set(mech.TABLE_COLUMNS) <= documented
    for name in table["name"]:  # every quantity is named in the dictionary
        generic = re.sub(r"_(0|1)$", "_k", re.sub(r"_(adagrad_window|adam)(_|$)", r"_<opt>\2",
                                                   name))
        assert f"`{generic}`" in section, name
    # the report's section states the table's numbers, none typed
    from vimodes.report import mechanism_section, num

    text = " ".join(mechanism_section(table).paragraphs)
    values = table.set_index("name")["value"]
    for name in ("elbo_collapsed", "curvature_u_symmetric", "rate_adagrad_window", "rate_adam"):
        assert num(values[name]) in text, name
    assert mechanism_section(table.iloc[:0]).paragraphs


def test_the_escape_estimates_are_set_against_the_measured_checkpoints():
    """The mechanism section quotes the budget cells' checkpoint counts of meanfield ADVI with
    the default optimiser, per start, at the first and last checkpoint; other cells are not
    counted, and without checkpoints nothing is added."""
    import pandas as pd

    from vimodes.report import measured_escape

    rows = []
    for init, on_mode_at_end in (("default", 3), ("jitter", 4)):
        for seed in range(4):
            for iteration in (10000, 200000):
                single = iteration == 200000 and seed < on_mode_at_end
                rows.append({"level": "checkpoint", "cell_id": f"b-{init}", "model": "marginal",
                             "method": "advi", "optimizer": "default", "init": init,
                             "seed": seed, "checkpoint_iteration": iteration,
                             "outcome": "mode_A" if single else "collapsed"})
    rows += [{**rows[0], "cell_id": "other", "optimizer": "adam_1e-2"}]
    text = measured_escape(pd.DataFrame(rows))
    assert "from the default start 0/4 at 10000 and 3/4 at 200000" in text
    assert "from the jitter start 0/4 at 10000 and 4/4 at 200000" in text
    assert "/1 at" not in text  # the adam cell's checkpoint is not counted
    assert measured_escape(pd.DataFrame(rows).assign(level="fit")) == ""
