import copy
import json

import pytest

from helpers import QUICK, SMOKE, TINY
from vimodes.config import ConfigError, build_study, load_study, load_yaml


@pytest.fixture
def smoke(repo):
    return load_yaml(repo / SMOKE)


@pytest.mark.parametrize("name", ["config/config.yaml", "config/full.yaml", SMOKE,
                                  QUICK, TINY, "benchmarks/studies/default_2026-11-26.yaml"])
def test_shipped_configs_are_valid(repo, name):
    study = load_study(repo / name)
    assert study.cells
    assert len({c.cell_id for c in study.cells}) == len(study.cells)


def test_grid_is_the_cartesian_product_of_its_axes(smoke):
    raw = {"study_name": "t", "grids": [{"name": "g", "models": ["marginal", "ordered"],
                                         "methods": ["advi", "fullrank_advi"],
                                         "inits": ["default"], "iterations": [100, 200],
                                         "seeds": 4}]}
    study = build_study(raw)
    assert len(study.cells) == 2 * 2 * 2
    assert all(c.seeds == (0, 1, 2, 3) for c in study.cells)


def test_axes_that_do_not_apply_collapse(smoke):
    raw = {"study_name": "t", "optimizers": {"a": {"name": "adam"}, "b": {"name": "sgd"}},
           "grids": [{"name": "g", "models": ["marginal"], "methods": ["nuts", "advi"],
                      "optimizers": ["a", "b"], "seeds": [5, 7]}]}
    study = build_study(raw)
    ids = sorted(c.cell_id for c in study.cells)
    assert ids == ["marginal__advi__a__it10000__init-default__b128",
                   "marginal__advi__b__it10000__init-default__b128", "marginal__nuts__c1"]


def test_chunks_cover_every_seed_once(smoke):
    smoke["chunk_size"] = 2
    smoke["grids"][0]["seeds"] = {"start": 10, "count": 5}
    study = build_study(smoke)
    cell = study.cells[0]
    chunks = study.chunks(cell)
    assert chunks == [(10, 11), (12, 13), (14,)]


def test_nuts_cells_use_their_own_chunk_size(smoke):
    smoke["chunk_size"], smoke["nuts_chunk_size"] = 4, 2
    smoke["grids"] = [{"name": "g", "models": ["marginal"], "methods": ["advi", "nuts"],
                       "seeds": 5}]
    study = build_study(smoke)
    sizes = {c.method: [len(k) for k in study.chunks(c)] for c in study.cells}
    assert sizes == {"advi": [4, 1], "nuts": [2, 2, 1]}


def test_defaults_are_filled(smoke):
    study = build_study(smoke)
    assert study.config["vi"]["convergence_tolerance"] == 1e-4
    assert study.config["data_regimes"]["default"]["slopes"] == [3.0, -1.0]


def _problems(raw):
    with pytest.raises(ConfigError) as info:
        build_study(raw)
    return info.value.problems, str(info.value)


def test_every_error_class_is_reported_at_once(smoke):
    bad = copy.deepcopy(smoke)
    bad["chunk_sise"] = 3  # unknown key
    bad["draws"] = "many"  # wrong type
    bad["data_regimes"]["default"]["noise_sd"] = -1  # out of range
    bad["grids"][0]["methods"] = ["advi", "nutz"]  # unknown method
    problems, message = _problems(bad)
    assert len(problems) >= 4
    assert "unknown key 'chunk_sise'; did you mean 'chunk_size'?" in message
    assert "config.draws: expected type" in message
    assert "config.data_regimes.default.noise_sd" in message
    assert "config.grids[0].methods[1]" in message and "'nutz'" in message
    assert "did you mean 'nuts'" in message
    assert "Traceback" not in message


def test_unknown_model_is_named_with_a_suggestion(smoke):
    bad = copy.deepcopy(smoke)
    bad["grids"][0]["models"] = ["marginel"]
    problems, message = _problems(bad)
    assert "config.grids[0].models: unknown model 'marginel'" in message
    assert "did you mean 'marginal'" in message


def test_duplicate_cell_is_rejected(smoke):
    bad = copy.deepcopy(smoke)
    twin = copy.deepcopy(bad["grids"][0])
    twin["name"] = "twin"
    bad["grids"].append(twin)
    _, message = _problems(bad)
    assert "duplicate cell" in message and "already declared by grid 'question'" in message


def test_empty_seed_list_is_rejected(smoke):
    bad = copy.deepcopy(smoke)
    bad["grids"][0]["seeds"] = []
    _, message = _problems(bad)
    assert "config.grids[0].seeds" in message


def test_weights_must_sum_to_one(smoke):
    bad = copy.deepcopy(smoke)
    bad["data_regimes"]["default"]["weights"] = [0.5, 0.6]
    _, message = _problems(bad)
    assert "weights summing to 1" in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")


def test_classifier_defaults_are_the_documented_ones(smoke):
    """The schema's defaults must be those justified in vimodes.classify.ClassifierSettings."""
    from vimodes.classify import ClassifierSettings

    smoke.pop("classifier", None)
    assert ClassifierSettings(**build_study(smoke).config["classifier"]) == ClassifierSettings()


# ---------------------------------------------------------------- K components

K3_REGIME = {"n_obs": 100000, "slopes": [3.0, -1.0, 1.0], "weights": [0.4, 0.3, 0.3],
             "noise_sd": 0.1}


def _k_study(components, models=("marginal",), regimes=("default", "k3"), k3=K3_REGIME):
    return {"study_name": "t", "data_regimes": {"default": {}, "k3": k3},
            "grids": [{"name": "g", "models": list(models), "methods": ["advi"],
                       "data_regimes": list(regimes), "components": components, "seeds": 2}]}


def test_components_axis_and_cell_ids():
    from vimodes.fitting import FitSettings

    study = build_study(_k_study([None, 3]))
    ids = sorted(c.cell_id for c in study.cells)
    # null = as the data; 3 on the k3 data is the same cell as null (one id); 3 on the K = 2
    # default data is an over-fitted model, named by __k3
    assert ids == ["marginal__advi__default__it10000__init-default__b128",
                   "marginal__advi__default__it10000__init-default__b128__data-k3",
                   "marginal__advi__default__it10000__init-default__b128__k3"]
    settings = {c.cell_id: FitSettings.from_cell(c, study.config).n_components
                for c in study.cells}
    assert sorted(settings.values()) == [2, 3, 3]
    # the default (no components key) keeps the pre-K cell ids
    plain = build_study({"study_name": "t", "grids": [{"name": "g", "models": ["marginal"],
                                                       "methods": ["advi"], "seeds": 2}]})
    assert plain.cells[0].cell_id == "marginal__advi__default__it10000__init-default__b128"
    assert plain.cells[0].components is None


@pytest.mark.parametrize("raw, key, words", [
    (_k_study([None], models=("as_asked",)), "config.grids[0].components", "2-component"),
    (_k_study([3], models=("as_asked",), regimes=("default",)), "config.grids[0].components",
     "K = 3"),
    (_k_study([2], regimes=("k3",)), "config.grids[0].components", "fewer than"),
    (_k_study([None], k3={**K3_REGIME, "weights": [0.5, 0.5]}), "config.data_regimes.k3.weights",
     "one weight per slope"),
    (_k_study([None], k3={**K3_REGIME, "slopes": [3.0, -1.0, 3.0]}),
     "config.data_regimes.k3.slopes", "all slopes distinct"),
    (_k_study([0]), "config.grids[0].components", ""),
])
def test_component_validation_names_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        build_study(raw)
    message = str(err.value)
    assert key in message and words in message


def test_schema_method_enum_is_the_method_registry(monkeypatch):
    """A method is added in one place, the registry: the schema's enum is made from it when the
    schema is read, so a method registered at run time is accepted and a name that is not
    registered is refused with its key path."""
    from vimodes import methods
    from vimodes.config import load_schema

    grid = load_schema()["$defs"]["grid"]["properties"]
    assert tuple(grid["methods"]["items"]["enum"]) == methods.METHOD_NAMES
    raw = {"study_name": "t", "optimizers": {"a": {"name": "adam"}},
           "inits": {"j": {"kind": "jitter"}},
           "grids": [{"name": "g", "models": ["marginal"], "methods": ["plugin_method"],
                      "optimizers": ["a"], "inits": ["j"], "seeds": 2}]}
    with pytest.raises(ConfigError, match=r"config\.grids\[0\]\.methods\[0\]"):
        build_study(raw)
    monkeypatch.setattr(methods, "METHOD_NAMES", methods.METHOD_NAMES)  # restored afterwards
    methods.register_method(methods.MethodSpec(
        "plugin_method", "a plugin", "#000000", ("init",), {"jitter": "at the truth"},
        "plugin_module:PluginFitter", init_kinds=("jitter",)))
    try:
        assert methods.METHOD_NAMES[-1] == "plugin_method"
        assert [c.cell_id for c in build_study(raw).cells] == ["marginal__plugin_method__init-j"]
        with pytest.raises(ValueError, match="already registered"):
            methods.register_method(methods.METHOD_SPECS["plugin_method"])
    finally:
        del methods.METHOD_SPECS["plugin_method"]


def test_cell_ids_follow_each_methods_axes():
    """The registry's axes decide the cell id: every method once, each with the parts it uses
    (unchanged from the ids the study has always written)."""
    raw = {"study_name": "t", "optimizers": {"a": {"name": "adam"}},
           "inits": {"j": {"kind": "jitter"}},
           "grids": [{"name": "g", "models": ["marginal"],
                      "methods": ["advi", "svgd", "pathfinder", "pathfinder_psis", "cavi", "nuts"],
                      "optimizers": ["a"], "inits": ["j"], "iterations": [500],
                      "batch_sizes": [0], "seeds": 2}]}
    ids = sorted(c.cell_id for c in build_study(raw).cells)
    assert ids == ["marginal__advi__a__it500__init-j__fullbatch", "marginal__cavi__it500__init-j",
                   "marginal__nuts__c1", "marginal__pathfinder__init-j",
                   "marginal__pathfinder_psis__init-j",
                   "marginal__svgd__a__it500__init-j__fullbatch"]


def test_an_init_kind_a_method_lacks_is_refused_by_name():
    raw = {"study_name": "t", "inits": {"p": {"kind": "prior"}},
           "grids": [{"name": "g", "models": ["marginal"], "methods": ["pathfinder_psis"],
                      "inits": ["p"], "seeds": 2}]}
    with pytest.raises(ConfigError, match=r"config.grids\[0\].inits: Pathfinder \+ PSIS supports "
                                          r"only the init kinds \['default', 'jitter'\], found "
                                          r"\['p'\]"):
        build_study(raw)


def test_every_schema_key_has_a_description():
    """The schema documents every key it accepts (the README's promise): walk every property,
    also inside $defs and array items."""
    from vimodes.config import load_schema

    schema = load_schema()
    missing = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub and "$ref" not in sub:
                missing.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            walk(node.get(key), f"{path}[]")
        for name, sub in node.get("$defs", {}).items():
            walk(sub, f"$defs.{name}")

    walk(schema, "config")
    assert not missing, f"schema keys without a description: {missing}"


# ------------------------------------------------------------------ rerun trigger of a fit

def test_fit_rule_params_come_from_the_fit_settings(repo):
    """One source for what a fit depends on: the rule's params are the cell's FitSettings (the
    fitters' own input), so a setting added to FitSettings is a rerun trigger by construction."""
    import dataclasses

    from vimodes.config import FAMILY_ONLY_SETTINGS, FitSettings, fit_rule_params, load_study

    study = load_study(repo / "config" / "config.yaml")
    by_method = {}
    for cell in study.cells:
        by_method.setdefault(cell.method, cell)
    fields = {f.name for f in dataclasses.fields(FitSettings)} - {"threads"}
    for method, cell in by_method.items():
        params = fit_rule_params(cell, study.config)
        settings = FitSettings.from_cell(cell, study.config)
        expected = {k: v for k, v in settings.rerun_key().items()}
        assert params["settings"] == expected
        assert set(params["settings"]) | set(FAMILY_ONLY_SETTINGS) >= fields
        assert params["data_regime"] == study.config["data_regimes"][cell.data_regime]

    def changed(edit, cell):
        config = copy.deepcopy(study.config)
        edit(config)
        return fit_rule_params(cell, config) != fit_rule_params(cell, study.config)

    nuts, advi = by_method["nuts"], by_method["advi"]
    assert changed(lambda c: c["nuts"].update(tune=700), nuts)
    assert not changed(lambda c: c["nuts"].update(tune=700), advi)  # not an ADVI setting
    assert changed(lambda c: c["vi"].update(khat_draws=500), advi)

    def rebuilt_changes(edit, cell):
        """The same cell of the study rebuilt from an edited config (cells carry settings)."""
        config = copy.deepcopy(study.config)
        edit(config)
        again = build_study(config).cell_by_id[cell.cell_id]
        return fit_rule_params(again, config) != fit_rule_params(cell, study.config)

    # the cell's optimiser: its learning rate and its update rule are ADVI's own settings
    lr = lambda c: c["optimizers"][advi.optimizer].update(learning_rate=0.123)  # noqa: E731
    assert rebuilt_changes(lr, advi) and not rebuilt_changes(lr, nuts)
    assert rebuilt_changes(lambda c: c["optimizers"][advi.optimizer].update(name="sgd"), advi)
    assert changed(lambda c: c.update(draws=10), advi) and changed(lambda c: c.update(draws=10),
                                                                    nuts)
    assert changed(lambda c: c["inits"]["jitter"].update(scale=2.0),
                   next(x for x in study.cells if x.method == "advi" and x.init == "jitter"))
    assert changed(lambda c: c["data_regimes"][advi.data_regime].update(noise_sd=0.2), advi)
    assert not changed(lambda c: c["dadvi"].update(n_fixed_draws=5), advi)
    assert changed(lambda c: c["dadvi"].update(n_fixed_draws=5), by_method["dadvi"])


def test_a_derived_method_finishes_the_chunk_of_the_same_seeds_and_settings():
    """Pathfinder + PSIS resamples the per-path Pathfinder cell's stored paths: its source is
    the chunk of that cell with the same init (across grids) and exactly the same seeds; a chunk
    without one is fitted on its own."""
    raw = {"study_name": "t", "chunk_size": 2,
           "inits": {"j": {"kind": "jitter"}, "k": {"kind": "jitter", "scale": 2.0},
                     "d": {"kind": "default"}},
           "grids": [{"name": "paths", "models": ["marginal"], "methods": ["pathfinder"],
                      "inits": ["j", "k"], "seeds": 4},
                     {"name": "psis", "models": ["marginal"], "methods": ["pathfinder_psis"],
                      "inits": ["j"], "seeds": [0, 1, 2, 5]},
                     {"name": "alone", "models": ["marginal"], "methods": ["pathfinder_psis"],
                      "inits": ["d"], "seeds": 2}]}
    study = build_study(raw)
    psis = "marginal__pathfinder_psis__init-j"
    assert study.source_chunk(psis, 0) == ("marginal__pathfinder__init-j", 0)
    assert study.source_chunk(psis, 1) is None  # seeds (2, 5): no chunk of the same seeds
    assert study.source_chunk("marginal__pathfinder_psis__init-d", 0) is None
    assert study.source_chunk("marginal__pathfinder__init-j", 0) is None  # not derived
    # a per-path fit that evaluates logP at fewer draws than it returns stores no paths
    fewer = build_study({**raw, "vi": {"khat_draws": 100}})
    assert fewer.config["vi"]["khat_draws"] < fewer.config["draws"]
    assert fewer.source_chunk(psis, 0) is None


def _grouping_study(per_job, iterations=200):
    from vimodes.config import build_study

    return build_study({
        "study_name": "t", "seed_base": 11, "chunk_size": 2, "draws": 50,
        "cells_per_fit_group": per_job,
        "data_regimes": {"default": {"n_obs": 300}, "small": {"n_obs": 200}},
        "optimizers": {"default": {"name": "adagrad_window", "learning_rate": 0.001},
                       "adam_1e-2": {"name": "adam", "learning_rate": 0.01}},
        "inits": {"default": {"kind": "default"}, "jitter": {"kind": "jitter", "scale": 1.0}},
        "grids": [
            {"name": "vec", "models": ["marginal"], "methods": ["advi", "fullrank_advi"],
             "optimizers": ["default", "adam_1e-2"], "iterations": [iterations],
             "inits": ["jitter"],
             "engines": ["vectorised"], "seeds": 3, "data_regimes": ["default", "small"]},
            {"name": "ref", "models": ["marginal"], "methods": ["advi"], "iterations": [200],
             "inits": ["jitter"], "engines": ["pymc"], "seeds": 2},
            {"name": "cavi", "models": ["marginal"], "methods": ["cavi"], "iterations": [20],
             "seeds": 2}]})


def test_fit_groups_hold_each_vectorised_chunk_once_by_grid_and_chunk():
    study = _grouping_study(3)
    jobs = study.fit_jobs()
    members = [m for job in jobs for m in job.members]
    assert sorted(members) == sorted(study.fit_chunks())  # every chunk in exactly one job
    for job in study.fit_groups():
        cells = [study.cell_by_id[cell] for cell, _ in job.members]
        assert 1 <= len(job.members) <= 3
        assert all(c.engine == "vectorised" for c in cells)
        assert len({c.grid for c in cells}) == 1
        assert len({chunk for _, chunk in job.members}) == 1
        assert job.rule == f"fit_group_{job.name}" and job.name.startswith(cells[0].grid)
    singles = [job for job in jobs if job.name is None]
    assert all(len(job.members) == 1 and job.rule == "fit_chunk" for job in singles)
    # PyMC's engine and CAVI stay one chunk per job; so does every chunk at 1 per job
    assert {study.cell_by_id[job.members[0][0]].engine for job in singles} == {"pymc"}
    assert not study.grouped_cells & {job.members[0][0] for job in singles}
    # 8 cells in the grid (two regimes), 2 chunks each, at 3 per job: 3 + 3 + 2 per chunk
    assert sorted(len(job.members) for job in study.fit_groups()) == [2, 2, 3, 3, 3, 3]
    assert not _grouping_study(1).fit_groups()
    # a long run's chunks stay alone
    long_runs = _grouping_study(3, iterations=20_100)
    assert not long_runs.fit_groups() and len(long_runs.fit_jobs()) == len(study.fit_chunks())
    assert len(_grouping_study(1).fit_jobs()) == len(study.fit_chunks())


def test_single_chain_nuts_chunks_are_grouped_and_multi_chain_ones_are_not():
    from vimodes.config import build_study

    study = build_study({
        "study_name": "t", "seed_base": 11, "nuts_chunk_size": 2, "cells_per_fit_group": 8,
        "data_regimes": {"default": {"n_obs": 300}, "noisy": {"n_obs": 300, "noise_sd": 0.5},
                         "small": {"n_obs": 200}},
        "grids": [
            {"name": "refs", "models": ["marginal"], "methods": ["nuts"], "chains": [1],
             "seeds": 3, "data_regimes": ["default", "noisy", "small"]},
            {"name": "chains", "models": ["marginal"], "methods": ["nuts"], "chains": [4],
             "seeds": 2, "data_regimes": ["default", "noisy"]},
            {"name": "alone", "models": ["ordered"], "methods": ["nuts"], "chains": [1],
             "seeds": 4}]})
    groups = study.fit_groups()
    assert sorted(len(g.members) for g in groups) == [3, 3]  # chunk 0 and chunk 1 of 3 cells
    assert all(study.cell_by_id[cell].chains == 1 for g in groups for cell, _ in g.members)
    # a grid of one groupable cell has nothing to share: its chunks are jobs of their own
    singles = [job.members[0] for job in study.fit_jobs() if job.name is None]
    assert {cell for cell, _ in singles} == {
        c.cell_id for c in study.cells if c.chains == 4 or c.model == "ordered"}
    assert len(singles) == 2 + 2


def _fit_group(study, group, regimes, tmp_path):
    """Simulate the regimes' first data blocks and fit ``group`` in one process: (the blocks by
    regime, each member's folder, each member's log)."""
    from vimodes.pipeline import fit_group
    from vimodes.simulate import block_folder, simulate_block

    blocks = {}
    for regime in regimes:
        blocks[regime] = str(tmp_path / block_folder(regime, 0, study.config["data_block_size"]))
        simulate_block(study, regime, blocks[regime])
    group_dirs = [tmp_path / "group" / cell / f"chunk-{chunk}" for cell, chunk in group.members]
    logs = [tmp_path / "logs" / f"{cell}-{chunk}.log" for cell, chunk in group.members]
    fit_group(study, list(group.members), sorted(blocks.values()), group_dirs, logs)
    return blocks, group_dirs, logs


def _assert_chunk_alone_writes_the_same(study, blocks, cell, chunk, group_dir, tmp_path):
    """Fit the chunk alone from its own regime's block: the same files, canonical hashes equal."""
    from vimodes.canonical import output_sha256
    from vimodes.pipeline import fit_chunk
    from vimodes.simulate import files_in_blocks

    alone = tmp_path / "alone" / cell / f"chunk-{chunk}"
    own = blocks[study.cell_by_id[cell].data_regime]
    fit_chunk(study, cell, chunk, files_in_blocks([own], study.chunk_seeds(cell, chunk)), alone)
    names = sorted(p.name for p in alone.iterdir())
    assert names and names == sorted(p.name for p in group_dir.iterdir())
    for name in names:
        assert output_sha256(group_dir / name) == output_sha256(alone / name), name


def test_a_fit_group_compiles_once_per_settings_and_data_size(tmp_path, monkeypatch):
    """Chunks of the same fit settings and data size in one group share one fitter (two data
    regimes of 300 points here), and each writes the files it writes alone; classified in one
    process, each chunk's table is the one it gets alone."""
    import pandas as pd

    import vimodes.fitters
    from vimodes.config import build_study
    from vimodes.pipeline import classify_chunk, classify_group

    study = build_study({
        "study_name": "t", "seed_base": 11, "chunk_size": 2, "draws": 50,
        "cells_per_fit_group": 4,
        "data_regimes": {"default": {"n_obs": 300}, "noisy": {"n_obs": 300, "noise_sd": 0.5}},
        "inits": {"jitter": {"kind": "jitter", "scale": 1.0}},
        "grids": [{"name": "vec", "models": ["marginal"], "methods": ["advi"],
                   "iterations": [200], "inits": ["jitter"], "engines": ["vectorised"],
                   "seeds": 2, "data_regimes": ["default", "noisy"]}]})
    (group,) = study.fit_groups()
    built = []
    make_fitter = vimodes.fitters.make_fitter
    monkeypatch.setattr(vimodes.fitters, "make_fitter",
                        lambda *args: built.append(args) or make_fitter(*args))
    blocks, group_dirs, _ = _fit_group(study, group, ("default", "noisy"), tmp_path)
    assert len(group.members) == 2 and len(built) == 1
    for (cell, chunk), group_dir in zip(group.members, group_dirs):
        _assert_chunk_alone_writes_the_same(study, blocks, cell, chunk, group_dir, tmp_path)
    # the group's chunks classified in one process: each table is the one of the chunk alone
    members = [{"cell": cell, "chunk": chunk, "seeds": list(study.chunk_seeds(cell, chunk)),
                "reference": None} for cell, chunk in group.members]
    tables = [tmp_path / "classified" / f"{cell}-{chunk}.parquet" for cell, chunk in group.members]
    class_logs = [tmp_path / "logs" / f"classify-{cell}-{chunk}.log"
                  for cell, chunk in group.members]
    classify_group(study, members, group_dirs, tables, class_logs)
    for member, group_dir, table, log_file in zip(members, group_dirs, tables, class_logs):
        alone = classify_chunk(study, group_dir, member["seeds"], tmp_path / "alone.parquet")
        assert len(alone) >= len(member["seeds"])
        pd.testing.assert_frame_equal(pd.read_parquet(table), pd.read_parquet(
            tmp_path / "alone.parquet"))
        assert f"chunk {member['chunk']} of {member['cell']}" in log_file.read_text()


def test_a_chunk_refuses_a_data_set_of_another_regime(tmp_path):
    from vimodes.pipeline import fit_chunk
    from vimodes.simulate import block_folder, files_in_blocks, simulate_block

    study = _grouping_study(1)
    cell = next(c for c in study.cells if c.data_regime == "small" and c.method == "advi")
    wrong = str(tmp_path / block_folder("default", 0, study.config["data_block_size"]))
    simulate_block(study, "default", wrong)
    with pytest.raises(ValueError, match="not of 'small'"):
        fit_chunk(study, cell.cell_id, 0, files_in_blocks([wrong], study.chunk_seeds(
            cell.cell_id, 0)), tmp_path / "fits")


def test_a_fit_group_writes_what_its_chunks_write_alone(tmp_path):
    """Fitting chunks one after another in one process (pipeline.fit_group) gives every file
    each chunk's own fit_chunk job gives (canonical hashes: timings left out)."""
    study = _grouping_study(4)
    # a group whose chunks fit two data regimes: each must read its own regime's data sets
    group = next(g for g in study.fit_groups()
                 if len({study.cell_by_id[cell].data_regime for cell, _ in g.members}) == 2)
    blocks, group_dirs, logs = _fit_group(study, group, ("default", "small"), tmp_path)
    for (cell, chunk), group_dir, log_file in zip(group.members, group_dirs, logs):
        _assert_chunk_alone_writes_the_same(study, blocks, cell, chunk, group_dir, tmp_path)
        n_obs = study.config["data_regimes"][study.cell_by_id[cell].data_regime]["n_obs"]
        assert json.loads(next(group_dir.glob("seed-*.json")).read_text())["n_obs"] == n_obs
        assert f"chunk {chunk} of {cell}" in log_file.read_text()
