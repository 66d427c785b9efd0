"""Config files as a user meets them: which file a run uses, what a partial file does, the messages
of bad files, and schema defaults that match the shipped default study."""

import copy

import pytest
import yaml

from helpers import SMOKE
from vimodes.config import ConfigError, build_study, load_schema, load_study, load_yaml, study_config


@pytest.fixture
def default_path(repo):
    return repo / "config" / "config.yaml"


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# A --configfile replaces the default study; a partial one is refused


def test_complete_config_file_replaces_the_default(repo, default_path):
    smoke_path = repo / SMOKE
    smoke = load_yaml(smoke_path)
    config, source = study_config(copy.deepcopy(smoke), [smoke_path], {}, default_path)
    assert config == smoke  # nothing of config.yaml leaks in (e.g. its optimiser adam_1e-2)
    assert source.startswith("config file ") and source.endswith("smoke.yaml")


def test_without_config_file_the_default_study_takes_config_values(default_path):
    config, source = study_config({"chunk_size": 7}, [], {"chunk_size": 7}, default_path)
    assert config["chunk_size"] == 7
    assert config["grids"] == load_yaml(default_path)["grids"]
    assert "config.yaml" in source and "--config chunk_size=7" in source


def test_partial_config_file_is_refused_with_the_way_out(tmp_path, default_path):
    partial = tmp_path / "fewer_particles.yaml"
    partial.write_text("vi: {svgd_particles: 5}\n")
    message = _message(study_config, {"vi": {"svgd_particles": 5}}, [partial], {}, default_path)
    assert "fewer_particles.yaml" in message
    assert "missing required top-level key(s) study_name, grids" in message
    assert "--config key=value" in message and "copy the default file" in message


# ---------------------------------------------------------------------------------------------
# Error messages name the file and say what is wrong in the user's terms


def test_invalid_yaml_reports_file_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text(
        "study_name: broken\ngrids:\n  - name: [unclosed\n    models: [marginal]\n")
    message = _message(load_yaml, "broken.yaml")
    assert message.startswith("1 problem(s) in config file broken.yaml:")
    assert "line 4, column 11: not valid YAML" in message


def test_top_level_that_is_not_a_mapping_is_named(tmp_path):
    (tmp_path / "list.yaml").write_text("- study_name: x\n")
    message = _message(load_yaml, tmp_path / "list.yaml")
    assert "list.yaml" in message and "expected a mapping" in message and "found list" in message


def test_schema_errors_name_the_config_file(repo, tmp_path, monkeypatch):
    raw = load_yaml(repo / SMOKE)
    raw["draws"] = "many"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    message = _message(load_study, "mine.yaml")
    assert message.startswith("1 problem(s) in config file mine.yaml:")
    assert "config.draws: expected type integer, found 'many'" in message


@pytest.mark.parametrize("seeds", [0, {"start": 3, "count": 0}, []])
def test_bad_seed_count_reads_as_a_sentence(repo, seeds):
    raw = load_yaml(repo / SMOKE)
    raw["grids"][0]["seeds"] = seeds
    message = _message(build_study, raw, source="config file mine.yaml")
    assert f"config.grids[0].seeds: {seeds!r} is not valid: expected a number of seeds n >= 1 " \
        "(seeds 0..n-1), a non-empty list of distinct seeds >= 0, or {start: first seed, " \
        "count: n >= 1}" in message
    assert "is not valid under any of the given schemas" not in message


# ---------------------------------------------------------------------------------------------
# A new config gets the settings of the shipped default study

# Keys whose schema default is deliberately not config.yaml's value, with the reason.
INTENTIONALLY_DIFFERENT = {
    "study_name": "names the study; config.yaml names its own",
    "grids": "required: a study always declares its grids",
    "optimizers": "config.yaml declares more levels; the schema's one level, `default`, is compared",
    "inits": "config.yaml declares more levels; the schema's one level, `default`, is compared",
    "data_regimes": "the schema's `default: {}` is filled from $defs/data_regime, compared below",
}


def _defaults_vs_values(schema_node: dict, values: dict, where: str, root: dict):
    """(key path, schema default, config value) for every key both declare, recursively."""
    if "$ref" in schema_node:
        schema_node = root["$defs"][schema_node["$ref"].split("/")[-1]]
    for key, sub in schema_node.get("properties", {}).items():
        if key not in values:
            continue
        if "properties" in sub or "$ref" in sub:
            yield from _defaults_vs_values(sub, values[key], f"{where}.{key}", root)
        elif "default" in sub:
            yield f"{where}.{key}", sub["default"], values[key]


def test_schema_defaults_are_the_default_study_values(default_path):
    schema = load_schema()
    shipped = load_yaml(default_path)
    compared = []
    for key, sub in schema["properties"].items():
        if key in INTENTIONALLY_DIFFERENT or key not in shipped:
            continue
        if "properties" in sub:
            compared += _defaults_vs_values(sub, shipped[key], key, schema)
        else:
            compared.append((key, sub["default"], shipped[key]))
    # the named levels a grid uses when it names none
    for key in ("optimizers", "inits"):
        level = schema["properties"][key]["default"]["default"]
        compared.append((f"{key}.default", level, shipped[key]["default"]))
    compared += _defaults_vs_values({"$ref": "#/$defs/data_regime"},
                                    shipped["data_regimes"]["default"], "data_regimes.default",
                                    schema)
    assert len(compared) >= 15  # the walk did reach nuts.*, vi.* and the data regime
    differing = [(k, d, v) for k, d, v in compared if d != v]
    assert not differing, f"schema default != config/config.yaml: {differing}"
