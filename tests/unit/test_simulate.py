import numpy as np
import pytest

from vimodes.simulate import CorruptDataError, DataRegime, read_dataset, simulate, write_dataset


def test_shapes_and_true_parameters_recorded():
    data = simulate(DataRegime(n_obs=5000), seed=3, seed_base=11)
    assert data.x.shape == data.y.shape == data.component.shape == (5000,)
    assert data.x.min() >= -1 and data.x.max() <= 1
    assert set(np.unique(data.component)) == {0, 1}


def test_seeded_determinism_and_seed_independence():
    a = simulate(DataRegime(n_obs=1000), seed=1, seed_base=7)
    b = simulate(DataRegime(n_obs=1000), seed=1, seed_base=7)
    c = simulate(DataRegime(n_obs=1000), seed=2, seed_base=7)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.y, c.y)


def test_least_squares_on_each_half_recovers_the_truth():
    regime = DataRegime(n_obs=100_000)
    data = simulate(regime, seed=0, seed_base=1)
    for k, slope in enumerate(regime.slopes):
        x, y = data.x[data.component == k], data.y[data.component == k]
        fitted = (x @ y) / (x @ x)
        residual_sd = np.std(y - fitted * x)
        assert abs(fitted - slope) < 0.005
        assert abs(residual_sd - regime.noise_sd) < 0.002
    assert abs(np.mean(data.component == 0) - 0.5) < 0.01


def test_file_roundtrip_and_truncation_detected(tmp_path):
    data = simulate(DataRegime(n_obs=500), seed=4, seed_base=1)
    path = tmp_path / "seed-4.nc"
    write_dataset(data, path, {"config_hash": "abc"})
    back = read_dataset(path)
    np.testing.assert_array_equal(back.y, data.y)
    assert back.regime == data.regime and back.seed == 4
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptDataError, match="seed-4.nc"):
        read_dataset(path)


def test_the_file_holds_what_xarray_would_write(tmp_path):
    """write_dataset writes with netCDF4 itself (no xarray import in a simulate job): read with
    xarray, its file equals the xarray form of the data set written by xarray, to the last
    attribute (provenance included) and value."""
    import xarray as xr

    from vimodes.records import NETCDF_ENGINE
    from vimodes.simulate import file_attributes

    data = simulate(DataRegime(n_obs=300, slopes=(3.0, -1.0, 1.0), weights=(0.4, 0.3, 0.3)),
                    seed=2, seed_base=5)
    provenance = {"config_hash": "abc", "seed_base": 5, "version_pymc": "5.28.5"}
    write_dataset(data, tmp_path / "ours.nc", provenance)
    columns = {"x": data.x, "y": data.y, "component": data.component.astype("int8")}
    written_by_xarray = xr.Dataset({name: ("obs", values) for name, values in columns.items()},
                                   attrs=file_attributes(data, provenance))
    written_by_xarray.to_netcdf(tmp_path / "xarray.nc", engine=NETCDF_ENGINE)
    with (xr.open_dataset(tmp_path / "ours.nc", engine=NETCDF_ENGINE) as ours,
          xr.open_dataset(tmp_path / "xarray.nc", engine=NETCDF_ENGINE) as theirs):
        xr.testing.assert_identical(ours.load(), theirs.load())
        assert ours["component"].dtype == "int8" and ours["x"].dtype == "float64"


K3 = DataRegime(n_obs=100_000, slopes=(3.0, -1.0, 1.0), weights=(0.4, 0.3, 0.3))


def test_k3_weights_and_slopes_respected_and_seeded():
    data = simulate(K3, seed=0, seed_base=1)
    assert K3.components == 3 and set(np.unique(data.component)) == {0, 1, 2}
    shares = np.bincount(data.component, minlength=3) / K3.n_obs
    # 5 binomial sds: sqrt(0.4 * 0.6 / 1e5) = 0.0015
    np.testing.assert_allclose(shares, K3.weights, atol=5 * np.sqrt(0.4 * 0.6 / K3.n_obs))
    for k, slope in enumerate(K3.slopes):
        x, y = data.x[data.component == k], data.y[data.component == k]
        assert abs((x @ y) / (x @ x) - slope) < 0.005
    again = simulate(K3, seed=0, seed_base=1)
    np.testing.assert_array_equal(again.y, data.y)
    assert not np.allclose(simulate(K3, seed=1, seed_base=1).y, data.y)


def test_k3_file_roundtrip_and_length_check(tmp_path):
    assert DataRegime().components == 2
    data = simulate(DataRegime(n_obs=300, slopes=(3.0, -1.0, 1.0), weights=(0.4, 0.3, 0.3)),
                    seed=2, seed_base=1)
    write_dataset(data, tmp_path / "k3.nc", {"config_hash": "abc"})
    back = read_dataset(tmp_path / "k3.nc")
    assert back.regime == data.regime and back.regime.components == 3
    with pytest.raises(ValueError):
        DataRegime(slopes=(3.0, -1.0, 1.0), weights=(0.5, 0.5))


def test_data_seed_formula_is_default_rng_of_seed_base_seed_0():
    """README: data set s is drawn from default_rng([seed_base, s, 0]) -- recomputed here
    independently (x, then the components, then the noise)."""
    regime = DataRegime(n_obs=300)
    data = simulate(regime, seed=5, seed_base=11)
    rng = np.random.default_rng([11, 5, 0])
    x = rng.uniform(regime.x_low, regime.x_high, size=300)
    component = rng.choice(len(regime.weights), size=300, p=np.asarray(regime.weights))
    y = np.asarray(regime.slopes)[component] * x + regime.noise_sd * rng.standard_normal(300)
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.component, component)
    np.testing.assert_array_equal(data.y, y)
    # the seed base matters as much as the seed
    assert not np.allclose(simulate(regime, seed=5, seed_base=12).y, y)


def test_a_block_holds_its_fixed_seeds_whatever_the_study_fits(tmp_path):
    """A simulate block draws seeds b x size .. (b + 1) x size - 1, each the data set
    simulate() gives that seed, in the folder named by that range; a study fitting only seeds
    0-2 (or 0-6) has the same block 0, so adding seeds never redraws a data set."""
    from vimodes.config import build_study
    from vimodes.simulate import (block_folder, block_seeds, data_block, dataset_path,
                                  simulate_block, study_blocks)

    def study(seeds):
        return build_study({
            "study_name": "t", "seed_base": 11, "data_block_size": 4,
            "data_regimes": {"default": {"n_obs": 50}},
            "grids": [{"name": "g", "models": ["marginal"], "methods": ["cavi"],
                       "iterations": [5], "seeds": seeds}]})

    few, more = study(3), study(7)
    assert [data_block(s, 4) for s in range(9)] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert list(block_seeds(1, 4)) == [4, 5, 6, 7]
    assert block_folder("default", 1, 4) == "data/sim/default/seeds-4-7"
    assert dataset_path("default", 5, 4) == "data/sim/default/seeds-4-7/seed-5.nc"
    assert dataset_path("default", 5, 5) == "data/sim/default/seeds-5-9/seed-5.nc"
    assert study_blocks(more) == study_blocks(few) + [("default", 1)]
    for name, one in (("few", few), ("more", more)):
        folder = tmp_path / name / "seeds-0-3"
        simulate_block(one, "default", folder)
        assert sorted(p.name for p in folder.iterdir()) == [f"seed-{s}.nc" for s in range(4)]
    regime = DataRegime(n_obs=50)
    for seed in range(4):
        expected = simulate(regime, seed, 11)
        for name in ("few", "more"):
            back = read_dataset(tmp_path / name / "seeds-0-3" / f"seed-{seed}.nc")
            assert back.seed == seed
            np.testing.assert_array_equal(back.y, expected.y)


def test_a_job_reads_its_data_sets_from_its_input_blocks():
    from vimodes.simulate import files_in_blocks, folder_seeds

    assert folder_seeds("data/sim/k3/seeds-100-199") == range(100, 200)
    for bad in ("data/sim/k3/block-1", "data/sim/k3/seeds-9-3", "seeds-1-2/x"):
        with pytest.raises(ValueError, match="not a block"):
            folder_seeds(bad)
    blocks = ["data/sim/a/seeds-0-4", "data/sim/a/seeds-5-9"]
    assert files_in_blocks(blocks, [7, 2]) == ["data/sim/a/seeds-5-9/seed-7.nc",
                                               "data/sim/a/seeds-0-4/seed-2.nc"]
    with pytest.raises(ValueError, match="no input block holds data set 10"):
        files_in_blocks(blocks, [3, 10])
