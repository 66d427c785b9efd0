"""Fit files are plain ArviZ InferenceData: az.summary, az.plot_trace and az.plot_pair work on
them without project code, with the components as a named dimension and the VI loss history as
a group of its own; the observed data are attached from the referenced data set, whose hash is
checked; the project's reader gets the arrays back unchanged."""

import hashlib
import json
import shutil
import subprocess
import sys
import warnings

import arviz as az
import matplotlib
import numpy as np
import pytest

from vimodes.idata import (ObservedDataMismatchError, attach_observed_data, read_posterior,
                           write_posterior)

matplotlib.use("Agg")


class _Result:
    def __init__(self, draws, sample_stats=None):
        self.draws, self.sample_stats = draws, sample_stats or {}


@pytest.fixture()
def fit_file(tmp_path):
    rng = np.random.default_rng(0)
    draws = {"slopes": np.array([3.0, -1.0]) + 0.01 * rng.normal(size=(2, 300, 2)),
             "weights": np.full((2, 300, 2), 0.5) + 0.001 * rng.normal(size=(2, 300, 2)),
             "sigma": 0.1 + 0.001 * rng.normal(size=(2, 300))}
    path = tmp_path / "seed-0.nc"
    write_posterior(path, _Result(draws), {"seed": 0, "method": "nuts", "fit_seconds": 1.0})
    return path, draws


def test_arviz_reads_a_fit_file_with_named_components(fit_file):
    path, draws = fit_file
    idata = az.from_netcdf(path)
    assert idata.posterior["slopes"].dims == ("chain", "draw", "component")
    assert list(idata.posterior["component"].values) == [0, 1]
    summary = az.summary(idata, kind="stats")
    assert {"slopes[0]", "slopes[1]", "weights[0]", "weights[1]", "sigma"} == set(summary.index)
    assert summary.loc["slopes[0]", "mean"] == pytest.approx(3.0, abs=0.01)
    assert summary.loc["slopes[1]", "mean"] == pytest.approx(-1.0, abs=0.01)
    axes = az.plot_trace(idata, var_names=["slopes"])
    assert axes.shape == (1, 2)  # one row (slopes, both components), density and trace
    import matplotlib.pyplot as plt

    plt.close("all")
    record = json.loads(idata.posterior.attrs["fit_record"])
    assert record == {"method": "nuts", "seed": 0}  # timings stay out of the file


def test_the_project_reader_returns_the_arrays_written(fit_file):
    path, draws = fit_file
    back = read_posterior(path)
    assert set(back) == set(draws)
    for name, values in draws.items():
        np.testing.assert_array_equal(back[name], values)


# ----------------------------------------------------------------------------------------------
# the fit file of a VI fit as vimodes.pipeline.fit_chunk writes it: loss history and data set


@pytest.fixture()
def vi_fit(tmp_path):
    """A data set at data/sim/<regime>/seeds-0-99/seed-3.nc and an ADVI fit of it at
    data/fits/<cell>/chunk-0/seed-3.nc, written as fit_chunk writes them (FitResult, a record
    holding the fitter's info, the data set's path)."""
    from vimodes.fitting import FitResult
    from vimodes.simulate import DataRegime, simulate, write_dataset

    data_path = tmp_path / "data" / "sim" / "default" / "seeds-0-99" / "seed-3.nc"
    data = simulate(DataRegime(n_obs=500), 3, 11)
    write_dataset(data, data_path, {"config_hash": "x"})
    rng = np.random.default_rng(1)
    draws = {"slopes": np.array([3.0, -1.0]) + 0.01 * rng.normal(size=(1, 400, 2)),
             "weights": 0.5 + 0.01 * rng.normal(size=(1, 400, 2)),
             "sigma": 0.1 + 0.001 * rng.normal(size=(1, 400))}
    # 250 iterations, a loss value per block of 100: the last block ends at 250
    loss_trace = np.array([812.5, 40.25, 3.125])
    result = FitResult("ok", None, draws=draws,
                       info={"iterations_done": 250, "loss_trace": loss_trace,
                             "fit_seconds": 2.0})
    record = {"seed": 3, "method": "advi", "status": "ok", "wall_seconds": 3.0,
              **result.info}
    fit_path = tmp_path / "data" / "fits" / "cell" / "chunk-0" / "seed-3.nc"
    write_posterior(fit_path, result, record, data_path=data_path)
    return fit_path, data_path, data, draws, loss_trace


def test_a_vi_fit_file_holds_its_loss_history_with_iteration_coordinates(vi_fit):
    fit_path, _, _, _, loss_trace = vi_fit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the custom group reads back without a warning
        idata = az.from_netcdf(fit_path)
    assert "loss" in idata.groups()
    assert idata.loss["loss"].dims == ("iteration",)
    np.testing.assert_array_equal(idata.loss["loss"].values, loss_trace)
    np.testing.assert_array_equal(idata.loss["iteration"].values, [100, 200, 250])
    assert idata.loss.attrs["iterations_per_value"] == 100


def test_cavi_losses_are_per_sweep_and_fits_without_a_loss_have_no_group(tmp_path):
    draws = {"slopes": np.zeros((1, 10, 2)), "weights": np.full((1, 10, 2), 0.5),
             "sigma": np.ones((1, 10))}
    result = _Result(draws)
    write_posterior(tmp_path / "cavi.nc", result,
                    {"method": "cavi", "iterations_done": 3, "loss_trace": [5.0, 4.0, 3.5]})
    cavi = az.from_netcdf(tmp_path / "cavi.nc")
    np.testing.assert_array_equal(cavi.loss["iteration"].values, [1, 2, 3])
    np.testing.assert_array_equal(cavi.loss["loss"].values, [5.0, 4.0, 3.5])
    write_posterior(tmp_path / "nuts.nc", result, {"method": "nuts"})
    write_posterior(tmp_path / "svgd.nc", result, {"method": "svgd", "loss_trace": np.array([])})
    for name in ("nuts.nc", "svgd.nc"):
        assert "loss" not in az.from_netcdf(tmp_path / name).groups()


def test_arviz_summarises_and_plots_a_vi_fit_file_without_project_code(vi_fit):
    fit_path, _, _, draws, _ = vi_fit
    # a fresh interpreter that imports ArviZ and matplotlib only, never vimodes
    script = f"""
import sys, warnings
import matplotlib
matplotlib.use("Agg")
import arviz as az
import numpy as np
warnings.simplefilter("error", UserWarning)
idata = az.from_netcdf({str(fit_path)!r})
summary = az.summary(idata, kind="stats")
print(sorted(summary.index))
print(summary.loc["slopes[0]", "mean"], summary.loc["slopes[1]", "mean"])
axes = az.plot_trace(idata, var_names=["slopes", "sigma"])
print("trace", axes.shape)
axes = az.plot_pair(idata, var_names=["slopes"])
print("pair", np.shape(axes))
axes = az.plot_pair(idata, var_names=["slopes", "sigma"], kind="kde")
print("pair", np.shape(axes))
print("loss", idata.loss["loss"].values.tolist(), idata.loss["iteration"].values.tolist())
print("vimodes imported:", "vimodes" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(sorted(["slopes[0]", "slopes[1]", "weights[0]", "weights[1]",
                                   "sigma"]))
    means = [float(v) for v in lines[1].split()]
    np.testing.assert_allclose(means, draws["slopes"].mean(axis=(0, 1)), atol=1e-3)
    assert lines[2:5] == ["trace (2, 2)", "pair ()", "pair (2, 2)"]
    assert lines[5] == "loss [812.5, 40.25, 3.125] [100, 200, 250]"
    assert lines[6] == "vimodes imported: False"


def test_observed_data_are_attached_from_the_referenced_data_set(vi_fit):
    fit_path, data_path, data, _, _ = vi_fit
    posterior = az.from_netcdf(fit_path).posterior
    # relative to the fit file's folder: valid wherever the project is moved as a whole
    assert posterior.attrs["observed_data_file"] == "../../../sim/default/seeds-0-99/seed-3.nc"
    assert (posterior.attrs["observed_data_sha256"]
            == hashlib.sha256(data_path.read_bytes()).hexdigest())
    idata = attach_observed_data(fit_path)
    assert "observed_data" in idata.groups() and "loss" in idata.groups()
    for name in ("x", "y"):
        assert idata.observed_data[name].dims == ("obs_id",)
    np.testing.assert_array_equal(idata.observed_data["x"].values, data.x)
    np.testing.assert_array_equal(idata.observed_data["y"].values, data.y)
    np.testing.assert_array_equal(idata.observed_data["obs_id"].values, np.arange(500))
    # the project moved elsewhere: the relative reference still resolves
    moved = fit_path.parents[4] / "moved"
    shutil.copytree(fit_path.parents[3], moved / "data")
    again = attach_observed_data(moved / "data" / "fits" / "cell" / "chunk-0" / "seed-3.nc")
    np.testing.assert_array_equal(again.observed_data["y"].values, data.y)


def test_a_data_set_with_another_hash_is_refused_naming_the_file(vi_fit, tmp_path):
    from vimodes.simulate import DataRegime, simulate, write_dataset

    fit_path, data_path, _, _, _ = vi_fit
    other = tmp_path / "other.nc"
    write_dataset(simulate(DataRegime(n_obs=500), 4, 11), other, {"config_hash": "x"})
    with pytest.raises(ObservedDataMismatchError, match=r"other\.nc.*sha256"):
        attach_observed_data(fit_path, data_path=other)
    # the referenced file itself regenerated with other data
    shutil.copyfile(other, data_path)
    with pytest.raises(ObservedDataMismatchError, match=r"seed-3\.nc"):
        attach_observed_data(fit_path)
    data_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"seed-3\.nc"):
        attach_observed_data(fit_path)


def test_a_fit_file_with_loss_and_data_reference_is_byte_reproducible(vi_fit, tmp_path):
    from vimodes.fitting import FitResult

    fit_path, data_path, _, draws, loss_trace = vi_fit
    record = {"seed": 3, "method": "advi", "status": "ok", "iterations_done": 250,
              "loss_trace": loss_trace, "fit_seconds": 99.0, "wall_seconds": 1.0}
    again = fit_path.with_name("seed-3.again.nc")
    write_posterior(again, FitResult("ok", None, draws=draws), record, data_path=data_path)
    assert (hashlib.sha256(again.read_bytes()).hexdigest()
            == hashlib.sha256(fit_path.read_bytes()).hexdigest())


def test_a_fit_file_without_its_loss_group_fails_the_check(vi_fit, tmp_path):
    from vimodes.idata import CorruptFitError, check_posterior_file

    fit_path, _, _, _, _ = vi_fit
    check_posterior_file(fit_path, expected_groups=("posterior", "loss"))
    idata = az.from_netcdf(fit_path)
    stripped = tmp_path / "stripped.nc"
    az.InferenceData(posterior=idata.posterior).to_netcdf(str(stripped))
    with pytest.raises(CorruptFitError, match="loss"):
        check_posterior_file(stripped, expected_groups=("posterior", "loss"))


def test_a_truncated_fit_file_fails_the_check(vi_fit, tmp_path):
    from vimodes.idata import CorruptFitError, check_posterior_file

    fit_path, _, _, _, _ = vi_fit
    data = fit_path.read_bytes()
    for keep in (len(data) // 3, len(data) - 200):
        cut = tmp_path / f"cut-{keep}.nc"
        cut.write_bytes(data[:keep])
        with pytest.raises(CorruptFitError, match="unreadable or truncated"):
            check_posterior_file(cut, expected_groups=("posterior", "loss"))


def test_fit_chunk_writes_the_loss_history_and_the_data_reference(tmp_path):
    """The pipeline's own writer (CAVI: fast, full data) passes each seed's data set."""
    from vimodes.config import build_study
    from vimodes.pipeline import fit_chunk
    from vimodes.simulate import dataset_path, simulate_dataset
    from vimodes.records import read_json
    from vimodes.simulate import read_dataset

    study = build_study({
        "study_name": "t", "seed_base": 11, "chunk_size": 2, "draws": 50,
        "data_regimes": {"default": {"n_obs": 300}},
        "grids": [{"name": "g", "models": ["marginal"], "methods": ["cavi"],
                   "iterations": [50], "seeds": 2}]})
    paths = []
    for regime, seed in study.datasets():
        paths.append(str(tmp_path / dataset_path(regime, seed, study.config["data_block_size"])))
        simulate_dataset(study, regime, seed, paths[-1])
    cell = study.cells[0].cell_id
    fit_dir = tmp_path / "data" / "fits" / cell / "chunk-0"
    records = fit_chunk(study, cell, 0, paths, fit_dir)
    assert [r["status"] for r in records] == ["ok", "ok"]
    for seed, path in enumerate(paths):
        idata = attach_observed_data(fit_dir / f"seed-{seed}.nc")
        assert (idata.posterior.attrs["observed_data_file"]
                == f"../../../sim/default/seeds-0-99/seed-{seed}.nc")
        np.testing.assert_array_equal(idata.observed_data["y"].values, read_dataset(path).y)
        record = read_json(fit_dir / f"seed-{seed}.json")
        np.testing.assert_array_equal(idata.loss["loss"].values, record["loss_trace"])
        np.testing.assert_array_equal(idata.loss["iteration"].values,
                                      np.arange(1, record["iterations_done"] + 1))


def test_the_fit_file_is_the_one_arviz_writes_for_the_same_groups(tmp_path):
    """write_posterior writes with netCDF4 directly; ArviZ reads back exactly what ArviZ's own
    to_netcdf writes for the same arrays (values, dtypes, dims, coordinates, attributes), for
    draws, NUTS statistics (booleans included) and a VI loss history."""
    import xarray as xr

    rng = np.random.default_rng(3)
    draws = {"sigma": rng.random((4, 50)), "slopes": rng.normal(size=(4, 50, 2)),
             "weights": rng.random((4, 50, 2))}
    stats = {"diverging": rng.random((4, 50)) < 0.2, "tree_depth": rng.integers(1, 6, (4, 50)),
             "step_size": rng.random((4, 50))}
    record = {"seed": 5, "method": "advi", "loss_trace": rng.normal(size=7),
              "iterations_done": 650}
    ours = tmp_path / "ours.nc"
    write_posterior(ours, _Result(draws, stats), record)

    def group(arrays):
        dims = {"sigma": ("chain", "draw")}
        variables = {name: (dims.get(name, ("chain", "draw", "component") if name in draws
                                     else ("chain", "draw")), arrays[name]) for name in arrays}
        dataset = xr.Dataset(variables)
        return dataset.assign_coords({d: np.arange(n) for d, n in dataset.sizes.items()})

    posterior = group(draws)
    posterior.attrs["fit_record"] = json.dumps(
        {"iterations_done": 650, "loss_trace": record["loss_trace"].tolist(), "method": "advi",
         "seed": 5}, sort_keys=True)
    loss = xr.Dataset({"loss": ("iteration", record["loss_trace"])},
                      coords={"iteration": np.minimum(np.arange(1, 8) * 100, 650)})
    theirs = tmp_path / "theirs.nc"
    reference = az.InferenceData(posterior=posterior, sample_stats=group(stats), loss=loss)
    reference.posterior.attrs = dict(posterior.attrs)
    reference.sample_stats.attrs = {}
    reference.loss.attrs = dict(az.from_netcdf(ours).loss.attrs)
    reference.to_netcdf(str(theirs))
    a, b = az.from_netcdf(ours), az.from_netcdf(theirs)
    assert a.groups() == b.groups() == ["posterior", "sample_stats", "loss"]
    for name in a.groups():
        assert a[name].identical(b[name]), name
    assert a.sample_stats["diverging"].dtype == bool
    assert a.loss.attrs["iterations_per_value"] == 100


def test_a_record_is_written_as_json_one_key_per_line_with_non_finite_values_as_null(tmp_path):
    from vimodes.records import write_json

    record = {"seed": np.int64(3), "trace": np.array([1.5, np.nan, np.inf]),
              "flags": np.array([True, False]), "cov": np.eye(2), "nested": {"b": 1, "a": [2.0]},
              "status": "ok"}
    path = tmp_path / "seed-3.json"
    write_json(record, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == len(record) + 2
    assert [line.split(":")[0] for line in lines[1:-1]] == [f'"{k}"' for k in sorted(record)]
    assert json.loads(path.read_text()) == {
        "seed": 3, "trace": [1.5, None, None], "flags": [True, False],
        "cov": [[1.0, 0.0], [0.0, 1.0]], "nested": {"a": [2.0], "b": 1}, "status": "ok"}
    write_json({}, tmp_path / "empty.json")
    assert json.loads((tmp_path / "empty.json").read_text()) == {}


def test_a_record_encoded_once_gives_both_files_the_bytes_json_dumps_gives(tmp_path):
    """The netCDF copy of the record (timings dropped) is ``json.dumps(..., sort_keys=True)``
    of the record byte for byte, from the values encoded once for the JSON file too."""
    from vimodes.records import EncodedRecord, _jsonable, is_volatile, write_json

    record = {"seed": np.int64(3), "trace": np.array([1.5, np.nan]), "fit_seconds": 2.5,
              "nested": {"b": 1, "a": [2.0, "é"]}, "status": "ok", "wall_seconds": 1.0,
              "approx_cov": np.eye(2)}
    encoded = EncodedRecord(record)
    kept = {key: value for key, value in record.items() if not is_volatile(key)}
    assert encoded.document(drop=is_volatile) == json.dumps(_jsonable(kept), sort_keys=True)
    assert encoded.document() == json.dumps(_jsonable(record), sort_keys=True)
    write_json(encoded, tmp_path / "encoded.json")
    write_json(record, tmp_path / "record.json")
    assert (tmp_path / "encoded.json").read_bytes() == (tmp_path / "record.json").read_bytes()
    assert json.loads((tmp_path / "encoded.json").read_text())["fit_seconds"] == 2.5
