"""Fitting: chunked fits equal solo fits, factors change what a fit does, failures are data."""

import copy
from dataclasses import asdict

import numpy as np
import pytest

from vimodes.fitters import make_fitter
from vimodes.fitting import FitSettings, fit_rng
from vimodes.simulate import DataRegime, simulate

from helpers import one_worker

N = 2000
SEED_BASE = 99
pytestmark = one_worker(__name__)  # one CompiledFitters for all the module's tests


@pytest.fixture(scope="module")
def datasets():
    return {s: simulate(DataRegime(n_obs=N), seed=s, seed_base=SEED_BASE) for s in (0, 1, 2)}


def settings(**overrides):
    base = dict(model="marginal", method="advi", draws=100, optimizer_name="adam",
                learning_rate=0.01, iterations=300, init_kind="jitter", batch_size=128,
                khat_draws=20)
    return FitSettings(**{**base, **overrides})


# Settings a VI fitter reads when it fits, not when it compiles: fitters whose settings differ
# only in these share one compilation here (test_a_compiled_fitter_serves_settings_that_differ_in_fit_time_fields
# checks that such a fitter fits exactly as a fresh one). Whether the full-data log density is
# compiled at all depends on the diagnostic draw counts being positive, so that stays in the key.
FIT_TIME_FIELDS = ("iterations", "init_kind", "init_scale", "draws", "convergence_tolerance",
                   "checkpoints", "khat_draws", "khat_seeds", "elbo_draws")


def compile_key(s: FitSettings) -> tuple:
    fields = {f: v for f, v in asdict(s).items() if f not in FIT_TIME_FIELDS}
    return (*sorted(fields.items()), max(s.khat_draws, s.elbo_draws) > 0)


class CompiledFitters:
    """make_fitter(settings, N) for the module's tests, compiled once per compile_key (a PyMC
    fitter takes 5-10 s to compile, its fits a fraction of a second). Sharing a fitter between
    tests is sound because a fit depends only on (settings, data, seed), never on what the
    fitter ran before (test_chunked_fit_equals_a_fit_done_alone)."""

    def __init__(self):
        self.fitters = {}

    def __call__(self, s: FitSettings):
        key = compile_key(s)
        if key not in self.fitters:
            self.fresh(s)
        fitter = copy.copy(self.fitters[key])
        fitter.settings = s
        return fitter

    def fresh(self, s: FitSettings):
        """A newly compiled fitter (which later calls then share)."""
        fitter = make_fitter(s, N)
        self.fitters[compile_key(s)] = fitter
        return fitter


@pytest.fixture(scope="module")
def compiled():
    return CompiledFitters()


SVGD = dict(method="svgd", svgd_particles=5, iterations=100, batch_size=0, learning_rate=0.05)


@pytest.mark.parametrize("method", ["advi", "fullrank_advi", "svgd"])
def test_chunked_fit_equals_a_fit_done_alone(datasets, compiled, method):
    """Seed 2 fitted first by a freshly compiled fitter, and again after seeds 0 and 1: a fit
    does not depend on the seeds its chunk fitted before it."""
    s = settings(**SVGD) if method == "svgd" else settings(method=method)
    fitter = compiled.fresh(s)
    alone = fitter.fit(datasets[2], SEED_BASE, 2)
    in_chunk = [fitter.fit(datasets[seed], SEED_BASE, seed) for seed in (0, 1, 2)]
    assert in_chunk[2].status == alone.status == "ok"
    for name in ("slopes", "weights", "sigma"):
        np.testing.assert_array_equal(in_chunk[2].draws[name], alone.draws[name])
    np.testing.assert_array_equal(in_chunk[2].info["loss_trace"], alone.info["loss_trace"])
    # and the seeds really differ
    assert not np.array_equal(in_chunk[0].draws["slopes"], in_chunk[1].draws["slopes"])


def test_a_compiled_fitter_serves_settings_that_differ_in_fit_time_fields(datasets, compiled):
    """What lets the tests share compilations (CompiledFitters): a fitter compiled for other
    values of every FIT_TIME_FIELDS entry fits exactly as a freshly compiled one."""
    s = settings(iterations=200, init_kind="prior", init_scale=1.5, draws=40,
                 convergence_tolerance=1e-3, checkpoints=(100,), khat_draws=10, elbo_draws=5)
    assert compile_key(s) == compile_key(settings()) and s != settings()
    compiled(settings())  # the shared compilation is one made for other values (or earlier)
    shared, fresh = (f.fit(datasets[1], SEED_BASE, 1) for f in (compiled(s), make_fitter(s, N)))
    assert shared.status == fresh.status == "ok"
    for name in ("slopes", "weights", "sigma"):
        np.testing.assert_array_equal(shared.draws[name], fresh.draws[name])
        np.testing.assert_array_equal(shared.checkpoint_draws[name], fresh.checkpoint_draws[name])
    assert list(shared.info["checkpoint_iterations"]) == [100, 200]
    for key in ("loss_trace", "flat_start", "psis_khat", "elbo_full", "iterations_done",
                "checkpoint_means"):
        np.testing.assert_array_equal(shared.info[key], fresh.info[key])


@pytest.mark.parametrize("method", ["advi", "svgd"])
def test_full_batch_fused_likelihood_follows_the_normal_mixture_path(datasets, compiled, method):
    """The fused Op is a speed path only: a full-batch fit takes the same steps with it."""
    common = {**SVGD, "method": method}
    fits = {lik: compiled(settings(likelihood=lik, **common)) for lik in ("pymc", "fused")}
    assert type(fits["fused"].model["y_obs"].owner.op).__name__ != type(
        fits["pymc"].model["y_obs"].owner.op).__name__
    results = {lik: f.fit(datasets[0], SEED_BASE, 0) for lik, f in fits.items()}
    assert results["pymc"].status == results["fused"].status == "ok"
    np.testing.assert_allclose(results["fused"].info["mean_trace"],
                               results["pymc"].info["mean_trace"], rtol=1e-6, atol=1e-8)
    for name in ("slopes", "weights", "sigma"):
        np.testing.assert_allclose(results["fused"].draws[name], results["pymc"].draws[name],
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["advi", "fullrank_advi"])
def test_jittered_start_differs_between_seeds_and_breaks_symmetry(datasets, compiled, method):
    fitter = compiled(settings(iterations=1, init_scale=0.7, method=method))
    starts = []
    for seed in (0, 1):
        result = fitter.fit(datasets[seed], SEED_BASE, seed)
        starts.append(result.info["flat_start"])
    assert not np.allclose(starts[0], starts[1])
    names = fitter.flat_names()
    slope_index = [i for i, n in enumerate(names) if n.startswith("slopes")]
    for start in starts:
        assert start[slope_index[0]] != start[slope_index[1]]
    # the start is the approximation's mean (for full rank not its Cholesky factor)
    assert len(starts[0]) == len(names) == fitter.group.ddim
    mean_after_one_step = fitter.group.shared_params["mu"].get_value()
    assert np.abs(mean_after_one_step - starts[1]).max() < 0.05


def test_default_start_is_the_symmetric_initial_point(datasets, compiled):
    fitter = compiled(settings(init_kind="default", iterations=1))
    start = fitter.fit(datasets[0], SEED_BASE, 0).info["flat_start"]
    slope_index = [i for i, n in enumerate(fitter.flat_names()) if n.startswith("slopes")]
    assert np.all(start[slope_index] == 0.0)


def test_prior_start_is_overdispersed(datasets, compiled):
    fitter = compiled(settings(init_kind="prior", init_scale=2.0, iterations=1))
    starts = np.array([fitter.fit(datasets[0], SEED_BASE, s).info["flat_start"] for s in range(8)])
    jitter = compiled(settings(init_kind="jitter", init_scale=1.0))
    jittered = np.array([jitter.fit(datasets[0], SEED_BASE, s).info["flat_start"] for s in range(8)])
    slope_index = [i for i, n in enumerate(fitter.flat_names()) if n.startswith("slopes")]
    assert starts[:, slope_index].std() > 2 * jittered[:, slope_index].std()


def test_optimizer_setting_is_the_one_used(datasets, compiled):
    adam = compiled(settings(optimizer_name="adam"))
    default = compiled(settings(optimizer_name="adagrad_window", learning_rate=0.001))
    # adam keeps first and second moment accumulators plus a step counter; adagrad_window
    # keeps a window of squared gradients: the optimiser's state shows which one runs
    adam_shapes = sorted(np.shape(v) for v in adam.state.values())
    window_shapes = sorted(np.shape(v) for v in default.state.values())
    assert adam_shapes != window_shapes
    assert any(len(shape) == 2 and shape[-1] == 10 for shape in window_shapes)  # n_win = 10
    a = adam.fit(datasets[0], SEED_BASE, 0)
    b = default.fit(datasets[0], SEED_BASE, 0)
    assert not np.allclose(a.draws["slopes"].mean(), b.draws["slopes"].mean())


def test_pymc_sampling_errors_are_numerical_errors():
    """NUMERICAL_ERRORS names PyMC's SamplingError through its base class (so that the module
    imports no PyMC): a SamplingError of a fit is a `failed` record, not a failed job."""
    import pymc as pm

    from vimodes.fit_result import NUMERICAL_ERRORS

    assert issubclass(pm.exceptions.SamplingError, NUMERICAL_ERRORS)


def test_nan_loss_is_a_failed_result_not_a_crash(datasets, compiled):
    fitter = make_fitter(settings(learning_rate=float("nan")), N)
    result = fitter.fit(datasets[0], SEED_BASE, 0)
    assert result.status == "failed"
    assert "NaN" in result.error
    assert result.draws == {}
    # another seed is unaffected
    assert compiled(settings()).fit(datasets[1], SEED_BASE, 1).status == "ok"


def test_convergence_callback_can_stop_early(datasets, compiled):
    fitter = compiled(settings(convergence_tolerance=10.0, iterations=2000))
    result = fitter.fit(datasets[0], SEED_BASE, 0)
    assert result.status == "ok" and result.info["stopped_early"]
    assert result.info["iterations_done"] < 2000


def test_cavi_fits_from_the_seeded_start(datasets):
    fitter = make_fitter(settings(method="cavi", iterations=200), N)
    a = fitter.fit(datasets[0], SEED_BASE, 0)
    b = fitter.fit(datasets[0], SEED_BASE, 0)
    assert a.status == "ok"
    np.testing.assert_array_equal(a.draws["slopes"], b.draws["slopes"])
    assert sorted(np.round(a.draws["slopes"].mean(axis=(0, 1)), 1)) == [-1.0, 3.0]


def test_fit_streams_are_seeded_from_the_config():
    a = fit_rng(1, 2).normal(size=3)
    assert np.array_equal(a, fit_rng(1, 2).normal(size=3))
    assert not np.array_equal(a, fit_rng(1, 3).normal(size=3))


def test_singular_covariance_leaves_the_fit_ok_without_importance_diagnostics(datasets, compiled,
                                                                              monkeypatch):
    """Full-rank ADVI can end with a numerically singular covariance (seen at 50000
    iterations): its draws stand, k-hat and the ELBO are recorded as missing with the reason."""
    import vimodes.metrics

    def singular(*args, **kwargs):
        raise np.linalg.LinAlgError("the input matrix must be symmetric positive definite")

    monkeypatch.setattr(vimodes.metrics, "gaussian_logq", singular)
    result = compiled(settings(method="fullrank_advi")).fit(datasets[0], SEED_BASE, 0)
    assert result.status == "ok"
    assert result.info["psis_khat"] is None and result.info["elbo_full"] is None
    assert "LinAlgError" in result.info["diagnostics_error"]


def _simulated_study(tmp_path, raw: dict):
    """The study of config ``raw`` and its data sets, written under ``tmp_path``."""
    from vimodes.config import build_study
    from vimodes.simulate import simulate_dataset

    study = build_study(raw)
    paths = []
    for regime, seed in study.datasets():
        paths.append(str(tmp_path / f"seed-{seed}.nc"))
        simulate_dataset(study, regime, seed, paths[-1])
    return study, paths


def test_a_numerical_error_anywhere_in_a_fit_is_a_failed_record(tmp_path, monkeypatch):
    """fit_chunk records the error of the one seed and goes on with the next."""
    import vimodes.fitting
    from vimodes.pipeline import fit_chunk

    study, paths = _simulated_study(tmp_path, {
        "study_name": "t", "seed_base": SEED_BASE, "chunk_size": 2, "draws": 50,
        "data_regimes": {"default": {"n_obs": 300}}, "vi": {"khat_draws": 10},
        "optimizers": {"adam": {"name": "adam", "learning_rate": 0.05}},
        "grids": [{"name": "g", "models": ["marginal"], "methods": ["advi"],
                   "optimizers": ["adam"], "iterations": [100], "seeds": 2}]})
    original = vimodes.fitting.VIFitter.fit

    def fails_on_seed_0(self, data, seed_base, seed):
        if seed == 0:
            raise np.linalg.LinAlgError("not positive definite")
        return original(self, data, seed_base, seed)

    monkeypatch.setattr(vimodes.fitting.VIFitter, "fit", fails_on_seed_0)
    records = fit_chunk(study, study.cells[0].cell_id, 0, paths, tmp_path / "fits")
    assert [(r["seed"], r["status"]) for r in records] == [(0, "failed"), (1, "ok")]
    assert records[0]["error"] == "LinAlgError: not positive definite"
    assert (tmp_path / "fits" / "seed-0.json").exists()


@pytest.mark.parametrize("error", [MemoryError("cannot allocate"),
                                   OSError(28, "No space left on device"),
                                   KeyboardInterrupt()], ids=["memory", "disk", "interrupt"])
def test_an_infrastructure_error_fails_the_job_instead_of_becoming_a_record(tmp_path, monkeypatch,
                                                                             error):
    """REL 1: only numerical errors become `failed` records; memory, I/O and interrupts
    propagate out of fit_chunk (the job fails and Snakemake's `retries: 1` reruns it), and the
    seed that hit one leaves no record that would pass for a result."""
    import vimodes.cavi
    from vimodes.pipeline import fit_chunk

    study, paths = _simulated_study(tmp_path, {
        "study_name": "t", "seed_base": SEED_BASE, "chunk_size": 2, "draws": 20,
        "data_regimes": {"default": {"n_obs": 200}},
        "optimizers": {"adam": {"name": "adam"}}, "inits": {"j": {"kind": "jitter"}},
        "grids": [{"name": "g", "models": ["marginal"], "methods": ["cavi"],
                   "optimizers": ["adam"], "inits": ["j"], "iterations": [20], "seeds": 2}]})
    original = vimodes.cavi.CaviFitter.fit

    def breaks_on_seed_1(self, data, seed_base, seed):
        if seed == 1:
            raise error
        return original(self, data, seed_base, seed)

    monkeypatch.setattr(vimodes.cavi.CaviFitter, "fit", breaks_on_seed_1)
    with pytest.raises(type(error)):
        fit_chunk(study, study.cells[0].cell_id, 0, paths, tmp_path / "fits")
    assert (tmp_path / "fits" / "seed-0.json").exists()  # the seed before it was fitted
    assert not list((tmp_path / "fits").glob("seed-1.*"))


def test_fit_seed_formula_is_default_rng_of_seed_base_seed_1(datasets, compiled):
    """README: every fit of seed s draws from default_rng([seed_base, s, 1]): the jittered
    start of ADVI (after one draw that reseeds PyMC's generators) and of CAVI, recomputed."""
    advi = compiled(settings(iterations=1, init_scale=0.7))
    rng = np.random.default_rng([SEED_BASE, 2, 1])
    rng.integers(2**31)  # the draw that reseeds the model's random generators
    expected = advi.default_start + rng.normal(0.0, 0.7, size=advi.default_start.shape)
    np.testing.assert_array_equal(advi.fit(datasets[2], SEED_BASE, 2).info["flat_start"],
                                  expected)
    cavi = make_fitter(settings(method="cavi", iterations=5, init_scale=0.7), N)
    np.testing.assert_array_equal(cavi.fit(datasets[2], SEED_BASE, 2).info["flat_start"],
                                  np.random.default_rng([SEED_BASE, 2, 1]).normal(0, 0.7, 2))
    np.testing.assert_array_equal(fit_rng(SEED_BASE, 2).normal(size=4),
                                  np.random.default_rng([SEED_BASE, 2, 1]).normal(size=4))


def test_cells_share_common_random_numbers_per_seed(datasets, compiled):
    """Two cells that differ in their optimiser start every seed from the same point (and read
    the same data set, tests/workflow/test_workflow.py::test_cells_read_the_same_data_set_per_seed):
    common random numbers across cells."""
    adam = compiled(settings())
    window = compiled(settings(optimizer_name="adagrad_window", learning_rate=0.001))
    for seed in (0, 1):
        a = adam.fit(datasets[seed], SEED_BASE, seed).info["flat_start"]
        b = window.fit(datasets[seed], SEED_BASE, seed).info["flat_start"]
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, adam.fit(datasets[0], SEED_BASE, 0).info["flat_start"])


def test_cavi_fit_does_not_depend_on_the_seeds_fitted_before(datasets):
    """As for ADVI: fitting seeds [0, 2] in one CAVI fitter gives seed 2 exactly the result of
    a fitter that fits seed 2 alone."""
    in_chunk, alone = _seed_2_in_a_chunk_and_alone(settings(method="cavi", iterations=50),
                                                   datasets)
    np.testing.assert_array_equal(in_chunk.info["loss_trace"], alone.info["loss_trace"])


def _seed_2_in_a_chunk_and_alone(s, datasets):
    """Seed 2 fitted after seed 0 in one fitter and by a fresh fitter; asserts equal draws (and
    that seed 0's differ) and returns both results."""
    chunk = make_fitter(s, N)
    in_chunk = [chunk.fit(datasets[seed], SEED_BASE, seed) for seed in (0, 2)]
    alone = make_fitter(s, N).fit(datasets[2], SEED_BASE, 2)
    assert in_chunk[1].status == alone.status == "ok"
    for name in ("slopes", "weights", "sigma"):
        np.testing.assert_array_equal(in_chunk[1].draws[name], alone.draws[name])
    assert not np.array_equal(in_chunk[0].draws["slopes"], in_chunk[1].draws["slopes"])
    return in_chunk[1], alone


@pytest.mark.slow  # three nutpie compilations: about a minute
def test_nutpie_nuts_fit_does_not_depend_on_the_seeds_fitted_before(datasets):
    """The default NUTS path (nutpie, fused likelihood), as for ADVI and CAVI: seed 2 fitted
    after seed 0 in one fitter equals seed 2 fitted alone, draw for draw."""
    s = settings(method="nuts", draws=50, tune=100, chains=1, sampler="nutpie",
                 likelihood="fused", optimizer_name=None, learning_rate=None, iterations=None,
                 batch_size=None)
    _seed_2_in_a_chunk_and_alone(s, datasets)
