"""Study configuration: validation against the JSON schema and expansion into cells and fit chunks.

Validation collects *every* problem (schema errors and cross-references) before anything runs and
raises one :class:`ConfigError` whose message names each offending key path, what was expected,
what was found and, where possible, a suggestion.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vimodes.methods import (
    METHOD_SPECS,
    family,
    method_spec,
    methods_on_engine,
    methods_where,
)

# The schema ships inside the package (package data), so that a workflow used as a Snakemake
# module or an installed (non-editable) package finds it; workflow/schemas/config.schema.yaml,
# where Snakemake workflows keep their schema, is a link to this file.
SCHEMA_RESOURCE = resources.files("vimodes") / "schemas" / "config.schema.yaml"

VI_METHODS = methods_where(family="vi")  # PyMC's pm.fit family (optimiser, minibatch)
# iterations between stored loss means / snapshots of a VI fit (here, not in vimodes.fitting,
# so that readers of fit records need not import PyMC)
TRACE_EVERY = 100
VECTORISED_METHODS = methods_on_engine("vectorised")  # methods the vectorised engine implements
ENGINES = ("pymc", "vectorised")


class ConfigError(ValueError):
    """Raised with all problems of a configuration at once."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        lines = [f"{len(problems)} problem(s) in {source}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def _settings_key(cell: Cell, method: str) -> tuple:
    """A cell's levels with ``method`` in place of its own, without its grid and seeds."""
    levels = asdict(cell)
    del levels["grid"], levels["seeds"]
    levels["method"] = method
    return tuple(sorted(levels.items()))


@dataclass(frozen=True)
class Cell:
    """One combination of factor levels; fitted once per seed."""

    grid: str
    model: str
    method: str
    optimizer: str
    learning_rate: float | None
    optimizer_name: str | None
    iterations: int | None
    init: str
    batch_size: int | None
    chains: int | None
    data_regime: str
    seeds: tuple[int, ...]
    engine: str = "pymc"
    checkpoints: tuple[int, ...] = ()
    #: the model's K where it differs from the data regime's K (over-fitting); None = as many
    #: components as the truth. A level equal to the data's K is stored as None, so that a cell
    #: has one id however it was declared and existing cell ids do not change.
    components: int | None = None

    @cached_property  # read for every job of every plan: computed once per cell
    def cell_id(self) -> str:
        """A readable, unique directory name; axes that do not apply to the method are left out."""
        parts = [self.model, self.method]
        spec = method_spec(self.method)
        if spec.uses("optimizer"):
            parts.append(self.optimizer)
        if spec.uses("iterations"):
            parts.append(f"it{self.iterations}")
        if spec.uses("init"):
            parts.append(f"init-{self.init}")
        if spec.uses("batch_size"):
            parts.append("fullbatch" if self.batch_size == 0 else f"b{self.batch_size}")
        if self.engine != "pymc":
            parts.append(f"engine-{self.engine}")
        if spec.uses("chains"):
            parts.append(f"c{self.chains}")
        if self.data_regime != "default":
            parts.append(f"data-{self.data_regime}")
        if self.components is not None:
            parts.append(f"k{self.components}")
        return "__".join(parts)

    def axes(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("seeds")
        record["checkpoints"] = list(self.checkpoints)
        record["cell_id"] = self.cell_id
        return record


def describe_file(path: str | Path) -> str:
    """`config file <path>`, relative to the working directory when below it (as typed)."""
    path = Path(path)
    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return f"config file {path}"


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    source = describe_file(path)
    if not path.is_file():
        raise ConfigError([f"config file '{path}' does not exist"], source=source)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        # yaml counts lines and columns from 0; editors from 1
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(filter(None, [getattr(err, "context", None),
                                         getattr(err, "problem", None)])) or str(err)
        raise ConfigError([f"{where}not valid YAML: {problem}"], source=source) from None
    if not isinstance(data, dict):
        raise ConfigError(["expected a mapping of keys (study_name, grids, ...) at the top "
                           f"level, found {type(data).__name__}"], source=source)
    return data


def required_keys() -> list[str]:
    """Top-level keys that a study must declare (no default can stand in for them)."""
    return list(load_schema()["required"])


def study_config(config: dict, configfiles: list[str | Path], overrides: dict,
                 default_path: str | Path) -> tuple[dict, str]:
    """The configuration of this run and a description of where it came from.

    `config` is what Snakemake assembled from `--configfile` files (`configfiles`) and
    `--config` values (`overrides`). A config file is a whole study and replaces the default
    study at `default_path`; merging a partial file onto it would silently mix two studies
    (nested keys of the default leaking in), so a file that lacks a required top-level key is
    refused. Without a config file the default study is used, with `--config` values on top.
    """
    with_overrides = (" with --config " + " ".join(f"{k}={v}" for k, v in overrides.items())
                      if overrides else "")
    handed = [key for key in config if key not in overrides]
    if not configfiles and handed:
        # a module's `config:` or a consumer's `configfile:` directive: a whole study, too
        source = "the configuration handed to the workflow (module config: or configfile:)"
        missing = [key for key in required_keys() if key not in config]
        if missing:
            raise ConfigError([
                f"missing required top-level key(s) {', '.join(missing)}. A configuration "
                "handed to this workflow is a complete study, it is not merged onto the "
                f"default ({describe_file(default_path)}): start from a copy of that file."],
                source=source)
        return dict(config), source + with_overrides
    if not configfiles:
        return ({**load_yaml(default_path), **config},
                describe_file(default_path) + with_overrides)
    files = [describe_file(f).removeprefix("config file ") for f in configfiles]
    source = ("config file " if len(files) == 1 else "config files ") + ", ".join(files)
    declared = set()
    for path in configfiles:
        declared |= set(load_yaml(path))
    missing = [key for key in required_keys() if key not in declared]
    if missing:
        raise ConfigError([
            f"missing required top-level key(s) {', '.join(missing)}. A --configfile is a "
            f"complete study that replaces the default ({describe_file(default_path)}), it is "
            "not merged onto it. To change single top-level values of the default study use "
            "--config key=value (e.g. --config chunk_size=25); otherwise copy the default "
            "file and edit the copy."], source=source)
    return dict(config), source


def load_schema() -> dict:
    """The config schema, with the method registry's names as the methods' enum (read when
    called, so that a method registered at run time is accepted)."""
    schema = yaml.safe_load(SCHEMA_RESOURCE.read_text(encoding="utf-8"))
    schema["$defs"]["grid"]["properties"]["methods"]["items"] = {"enum": list(METHOD_SPECS)}
    return schema


def _path_of(error: jsonschema.ValidationError) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path]
    return "config" + "".join(parts)


def _schema_problem(error: jsonschema.ValidationError) -> str:
    where = _path_of(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in error.schema.get("properties", {})]
        msgs = []
        for key in unknown:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; allowed keys: {', '.join(allowed)}"
            msgs.append(f"{where}: unknown key '{key}'{suggestion}")
        return "\n  - ".join(msgs)
    if error.validator == "enum":
        hint = difflib.get_close_matches(str(error.instance), [str(v) for v in error.validator_value], n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        return (f"{where}: expected one of {list(error.validator_value)}, found {error.instance!r}"
                f"{suggestion}")
    if error.validator == "type":
        return f"{where}: expected type {error.validator_value}, found {error.instance!r}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where}: expected {error.validator} {error.validator_value}, found {error.instance!r}"
    if error.absolute_path and error.absolute_path[-1] == "seeds" and error.validator == "oneOf":
        return (f"{where}: {error.instance!r} is not valid: expected a number of seeds n >= 1 "
                "(seeds 0..n-1), a non-empty list of distinct seeds >= 0, or "
                "{start: first seed, count: n >= 1}")
    if error.validator == "minItems":
        return f"{where}: expected at least {error.validator_value} item(s), found {error.instance!r}"
    return f"{where}: {error.message}"


def _fill_defaults(instance: Any, schema: dict, root: dict) -> Any:
    """Insert the schema's defaults for missing keys, recursively (after validation)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = schema.get("properties", {})
            for key in instance:
                if key not in known:
                    instance[key] = _fill_defaults(instance[key], extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        instance = [_fill_defaults(item, schema["items"], root) for item in instance]
    return instance


def _seed_list(spec: Any) -> list[int]:
    if isinstance(spec, int):
        return list(range(spec))
    if isinstance(spec, dict):
        start = spec.get("start", 0)
        return list(range(start, start + spec["count"]))
    return list(spec)


def validate_config(raw: dict, source: str = "config") -> dict:
    """Validate `raw` against the schema and cross-references; return it with defaults filled."""
    from vimodes.model_specs import MODEL_NAMES

    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_schema_problem(e) for e in errors]
    if problems:
        raise ConfigError(problems, source)

    config = _fill_defaults(copy.deepcopy(raw), schema, schema)

    for name, regime in config["data_regimes"].items():
        if len(regime["weights"]) != len(regime["slopes"]):
            problems.append(f"config.data_regimes.{name}.weights: expected one weight per slope "
                            f"({len(regime['slopes'])}), found {len(regime['weights'])}")
        if abs(sum(regime["weights"]) - 1.0) > 1e-9:
            problems.append(f"config.data_regimes.{name}.weights: expected weights summing to 1, "
                            f"found {regime['weights']} (sum {sum(regime['weights'])})")
        if regime["x_low"] >= regime["x_high"]:
            problems.append(f"config.data_regimes.{name}: expected x_low < x_high, found "
                            f"{regime['x_low']} >= {regime['x_high']}")
        if len(set(regime["slopes"])) != len(regime["slopes"]):
            problems.append(f"config.data_regimes.{name}.slopes: expected all slopes distinct "
                            f"(the permutation modes must be distinct), found {regime['slopes']}")

    mechanism_regime = config["mechanism"]["data_regime"]
    if mechanism_regime not in config["data_regimes"]:
        problems.append(f"config.mechanism.data_regime: unknown data regime '{mechanism_regime}'; "
                        f"expected one of {list(config['data_regimes'])}")

    grid_names = [g["name"] for g in config["grids"]]
    for name in {n for n in grid_names if grid_names.count(n) > 1}:
        problems.append(f"config.grids: grid name '{name}' is used more than once")

    references = (("models", MODEL_NAMES), ("optimizers", tuple(config["optimizers"])),
                  ("inits", tuple(config["inits"])), ("data_regimes", tuple(config["data_regimes"])))
    for index, grid in enumerate(config["grids"]):
        for axis, known in references:
            for value in grid.get(axis, []):
                if value not in known:
                    hint = difflib.get_close_matches(value, known, n=1)
                    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                    problems.append(f"config.grids[{index}].{axis}: unknown {axis[:-1]} '{value}'; "
                                    f"expected one of {list(known)}{suggestion}")
        problems += _component_problems(config, grid, index)
        if "svgd" in grid["methods"] and any(b != 0 for b in grid["batch_sizes"]):
            problems.append(f"config.grids[{index}].batch_sizes: SVGD in PyMC does not support "
                            f"minibatches; expected [0] (full batch), found {grid['batch_sizes']}")
        if "vectorised" in grid["engines"]:
            others = [m for m in grid["methods"] if m not in VECTORISED_METHODS]
            if others:
                problems.append(f"config.grids[{index}].engines: the vectorised engine fits "
                                f"{list(VECTORISED_METHODS)}; move {others} to a grid with "
                                f"engines [pymc]")
            bad = [i for i in grid["iterations"] if i % 100]
            if bad:
                problems.append(f"config.grids[{index}].iterations: the vectorised engine runs "
                                f"blocks of 100 iterations; found {bad}")
        if grid["checkpoints"]:
            bad = [c for c in grid["checkpoints"]
                   if c % 100 or c >= min(grid["iterations"])]
            if bad:
                problems.append(f"config.grids[{index}].checkpoints: expected multiples of 100 "
                                f"below every budget {grid['iterations']}, found {bad}")
            others = [m for m in grid["methods"] if m not in VECTORISED_METHODS]
            if others:
                problems.append(f"config.grids[{index}].checkpoints: only ADVI stores "
                                f"checkpoints, found methods {others}")
        for method in grid["methods"]:
            spec = METHOD_SPECS.get(method)
            if spec is None or not spec.uses("init"):
                continue
            kinds = {i: config["inits"][i]["kind"] for i in grid["inits"] if i in config["inits"]}
            bad = [i for i, kind in kinds.items() if kind not in spec.init_kinds]
            if bad:
                problems.append(f"config.grids[{index}].inits: {spec.label} supports only the init "
                                f"kinds {list(spec.init_kinds)}, found {bad} in {grid['inits']}")
    if problems:
        raise ConfigError(problems, source)

    seen: dict[str, str] = {}
    for index, grid in enumerate(config["grids"]):
        for cell in _grid_cells(config, grid):
            key = cell.cell_id
            if key in seen:
                problems.append(f"config.grids[{index}] ('{grid['name']}'): duplicate cell '{key}', "
                                f"already declared by grid '{seen[key]}'; remove it from one grid")
            else:
                seen[key] = grid["name"]
    if problems:
        raise ConfigError(problems, source)
    return config


def model_components(config: dict, components: int | None, regime: str) -> int:
    """The model's K of a cell: its `components` level, or None = the data regime's K."""
    return len(config["data_regimes"][regime]["slopes"]) if components is None else components


def _component_problems(config: dict, grid: dict, index: int) -> list[str]:
    """The model K of every (model, components, data regime) of a grid must be one the models
    and the classifier support: the question's variants are K = 2 only, and the outcome
    taxonomy has classes for K_model >= K_data (over-fitting), none for an under-fitted model."""
    from vimodes.model_specs import MODEL_SPECS

    problems = []
    for components, regime in itertools.product(grid["components"], grid["data_regimes"]):
        if regime not in config["data_regimes"]:
            continue  # reported as an unknown data regime
        k_model = model_components(config, components, regime)
        k_data = len(config["data_regimes"][regime]["slopes"])
        level = "null (as the data)" if components is None else str(components)
        for model in grid["models"]:
            spec = MODEL_SPECS.get(model)
            if spec is not None and spec.question_likelihood and k_model != 2:
                problems.append(f"config.grids[{index}].components: model '{model}' is the "
                                f"question's 2-component model, but components {level} on data "
                                f"regime '{regime}' gives K = {k_model}")
        if k_model < k_data:
            problems.append(f"config.grids[{index}].components: K = {k_model} is fewer than the "
                            f"{k_data} components of data regime '{regime}' (under-fitting has no "
                            f"outcome classes)")
    return problems


def _grid_cells(config: dict, grid: dict) -> list[Cell]:
    cells: dict[str, Cell] = {}
    seeds = tuple(_seed_list(grid["seeds"]))
    for (model, method, opt, iters, init, batch, chains, regime, engine,
         components) in itertools.product(
        grid["models"], grid["methods"], grid["optimizers"], grid["iterations"], grid["inits"],
        grid["batch_sizes"], grid["chains"], grid["data_regimes"], grid["engines"],
        grid["components"],
    ):
        spec = method_spec(method)
        uses_optimizer = spec.uses("optimizer")
        uses_iterations = spec.uses("iterations")
        uses_init = spec.uses("init")
        optimizer = config["optimizers"][opt]
        cell = Cell(
            grid=grid["name"],
            model=model,
            method=method,
            optimizer=opt if uses_optimizer else "none",
            optimizer_name=optimizer["name"] if uses_optimizer else None,
            learning_rate=optimizer["learning_rate"] if uses_optimizer else None,
            iterations=iters if uses_iterations else None,
            init=init if uses_init else "none",
            batch_size=batch if spec.uses("batch_size") else None,
            chains=chains if spec.uses("chains") else None,
            data_regime=regime,
            seeds=seeds,
            engine=engine if engine in spec.engines else spec.engines[0],
            checkpoints=tuple(sorted(grid["checkpoints"])) if spec.checkpoints else (),
            components=None if model_components(config, components, regime) == len(
                config["data_regimes"][regime]["slopes"]) else components,
        )
        # Axes that do not apply to a method collapse onto one cell.
        cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


# FitSettings fields that only the fitters of these method families read (vimodes.methods.family)
FAMILY_ONLY_SETTINGS = {
    "tune": ("nuts",), "target_accept": ("nuts",), "sampler": ("nuts",),
    "pathfinder_paths": ("pathfinder",),
    "dadvi_fixed_draws": ("dadvi",), "dadvi_optimizer": ("dadvi",),
    "svgd_particles": ("vi",),
}


@dataclass(frozen=True)
class FitSettings:
    """Everything a fit of one cell depends on besides its data set and seed: the cell's axes
    resolved against the config. The one place that reads the config for a fit: the fitters
    take it, and the workflow's rerun trigger is ``fit_rule_params``, built from it."""

    model: str
    method: str
    draws: int = 1000
    optimizer_name: str | None = "adagrad_window"
    learning_rate: float | None = 0.001
    iterations: int | None = 10000
    init_kind: str = "default"
    init_scale: float = 1.0
    batch_size: int | None = 128
    convergence_tolerance: float | None = 1e-4
    svgd_particles: int = 100
    pathfinder_paths: int = 4
    chains: int | None = 1
    tune: int = 1000
    target_accept: float = 0.8
    sampler: str = "nutpie"
    likelihood: str = "pymc"
    khat_draws: int = 1000  # draws for PSIS k-hat and its MCSE ...
    khat_seeds: int | None = None  # ... for seeds below this (None: every seed)
    elbo_draws: int = 100  # draws for the full-data ELBO of every fit
    threads: int = 1
    engine: str = "pymc"  # VI engine: PyMC's own loop or the vectorised JAX engine
    checkpoints: tuple[int, ...] = ()  # iterations at which the approximation is also stored
    n_components: int = 2  # the model's K (resolved from the cell and its data regime)
    dadvi_fixed_draws: int = 30
    dadvi_optimizer: str = "L-BFGS-B"

    @classmethod
    def from_cell(cls, cell: Cell, config: dict, threads: int = 1) -> FitSettings:
        init = config["inits"].get(cell.init, {"kind": "default", "scale": 1.0})
        return cls(
            model=cell.model, method=cell.method, draws=config["draws"],
            optimizer_name=cell.optimizer_name, learning_rate=cell.learning_rate,
            iterations=cell.iterations, init_kind=init["kind"], init_scale=init.get("scale", 1.0),
            batch_size=cell.batch_size, convergence_tolerance=config["vi"]["convergence_tolerance"],
            svgd_particles=config["vi"]["svgd_particles"],
            pathfinder_paths=config["vi"]["pathfinder_paths"], chains=cell.chains,
            tune=config["nuts"]["tune"], target_accept=config["nuts"]["target_accept"],
            sampler=config["nuts"]["sampler"],
            likelihood=config["vi"]["full_batch_likelihood"] if cell.method in VI_METHODS
            else config["nuts"]["likelihood"],
            khat_draws=config["vi"]["khat_draws"], khat_seeds=config["vi"]["khat_seeds"],
            elbo_draws=config["vi"]["elbo_draws"], threads=threads,
            engine=cell.engine, checkpoints=tuple(cell.checkpoints),
            n_components=model_components(config, getattr(cell, "components", None),
                                          cell.data_regime),
            dadvi_fixed_draws=config["dadvi"]["n_fixed_draws"],
            dadvi_optimizer=config["dadvi"]["optimizer"],
        )


    def rerun_key(self) -> dict[str, Any]:
        """The settings as plain values, without ``threads`` (how many cores a job gets does
        not change what it computes) and without the settings only another family of fitters
        reads (``FAMILY_ONLY_SETTINGS``), so that e.g. changing ``nuts.tune`` refits NUTS only."""
        out = asdict(self)
        out.pop("threads")
        out["checkpoints"] = list(self.checkpoints)
        own = family(self.method)
        for name, families in FAMILY_ONLY_SETTINGS.items():
            if own not in families:
                out.pop(name)
        return out


def fit_rule_params(cell: Cell, config: dict) -> dict[str, Any]:
    """What the fit rule's ``params`` hold so that Snakemake reruns a fit when anything it
    depends on changes: the FitSettings of the cell, the seed base and the data regime's
    definition (its data files are inputs too, but a changed regime must refit even when the
    files were regenerated by hand)."""
    return {"settings": FitSettings.from_cell(cell, config).rerun_key(),
            "seed_base": config["seed_base"],
            "data_regime": config["data_regimes"][cell.data_regime]}


# the reference posterior of a data regime (Study.reference_cell)
REFERENCE_METHOD, REFERENCE_MODEL = "nuts", "marginal"


# vectorised chunks of longer runs get a job each (Study.groupable)
GROUP_MAX_ITERATIONS = 20_000


@dataclass(frozen=True)
class FitJob:
    """One fit job: the (cell id, chunk) pairs it fits, in order; ``name`` is None for a job of
    one chunk (rules ``fit_chunk``, ``classify_chunk``), else the group's name (rules
    ``fit_group_<name>``, ``classify_group_<name>``)."""

    members: tuple[tuple[str, int], ...]
    name: str | None = None

    @property
    def rule(self) -> str:
        return "fit_chunk" if self.name is None else f"fit_group_{self.name}"

    @property
    def chunk_dirs(self) -> list[str]:
        return [f"data/fits/{cell}/chunk-{chunk}" for cell, chunk in self.members]

    @property
    def classify_rule(self) -> str:
        """The rule that classifies the job's chunks: one process for a group's, as it fits."""
        return "classify_chunk" if self.name is None else f"classify_group_{self.name}"

    @property
    def classified_paths(self) -> list[str]:
        return [f"data/classified/{cell}/chunk-{chunk}.parquet" for cell, chunk in self.members]


@dataclass(frozen=True)
class Study:
    config: dict
    cells: tuple[Cell, ...]

    @cached_property  # every job's input functions look cells up: built once per study
    def cell_by_id(self) -> dict[str, Cell]:
        return {c.cell_id: c for c in self.cells}

    def chunks(self, cell: Cell) -> list[tuple[int, ...]]:
        # NUTS fits cost 10-100 VI fits each: smaller NUTS jobs keep the two cores evenly busy
        size = self.config["nuts_chunk_size" if cell.method == "nuts" else "chunk_size"]
        seeds = sorted(cell.seeds)
        return [tuple(seeds[i:i + size]) for i in range(0, len(seeds), size)]

    def chunk_seeds(self, cell_id: str, chunk: int) -> tuple[int, ...]:
        return self.chunks(self.cell_by_id[cell_id])[chunk]

    def fit_chunks(self) -> list[tuple[str, int]]:
        return [(c.cell_id, i) for c in self.cells for i in range(len(self.chunks(c)))]

    def reference_cell(self, regime: str) -> Cell | None:
        """The cell whose fits set the classifier's slope tolerances for data regime ``regime``:
        single-chain NUTS on the exchangeable marginal model with the data's K (the study's
        reference posterior); None when the study has no such cell (then the tolerances use the
        asymptotic sd of ``vimodes.classify.reference_slope_sd``)."""
        for cell in self.cells:
            if (cell.method == REFERENCE_METHOD and cell.chains == 1
                    and cell.model == REFERENCE_MODEL and cell.components is None
                    and cell.data_regime == regime):
                return cell
        return None

    @cached_property
    def _cells_by_settings(self) -> dict[tuple, Cell]:
        return {_settings_key(c, c.method): c for c in self.cells}

    def source_chunk(self, cell_id: str, chunk: int) -> tuple[str, int] | None:
        """The chunk whose stored results this chunk finishes instead of fitting again: of the
        cell of the method this one derives from (``MethodSpec.derived_from``, e.g. Pathfinder
        + PSIS resamples the per-path Pathfinder cell's paths) with every other axis equal, and
        of exactly this chunk's seeds, when that cell stores what this one needs
        (``MethodSpec.source_stores``); None otherwise."""
        cell = self.cell_by_id[cell_id]
        spec = method_spec(cell.method)
        if spec.derived_from is None or not (spec.source_stores is None
                                             or spec.source_stores(self.config)):
            return None
        source = self._cells_by_settings.get(_settings_key(cell, spec.derived_from))
        if source is None:
            return None
        seeds = self.chunk_seeds(cell_id, chunk)
        for index, source_seeds in enumerate(self.chunks(source)):
            if source_seeds == seeds:
                return source.cell_id, index
        return None

    def groupable(self, cell: Cell) -> bool:
        """Whether the cell's chunks may share a fit job with other cells (``fit_groups``), unless
        a chunk finishes another chunk's stored results: the vectorised engine's chunks of at
        most ``GROUP_MAX_ITERATIONS`` iterations, whose job is mostly fixed cost (importing PyMC
        and JAX, building the model), and single-chain NUTS chunks, whose job compiles nutpie's
        model (15-25 s, which nutpie cannot cache on disk) for a few chains of ~5 s each; a
        group compiles it once per data size (``pipeline.fit_group``). A longer VI run's loop
        outweighs the fixed cost, and grouping it would only make long jobs longer (a
        cluster's time limit); a multi-chain NUTS job runs its chains on several cores, a
        group on one."""
        if any(self.source_chunk(cell.cell_id, i) is not None
               for i in range(len(self.chunks(cell)))):
            return False
        if cell.method == "nuts":
            return (cell.chains or 1) == 1
        return cell.engine == "vectorised" and (cell.iterations or 0) <= GROUP_MAX_ITERATIONS

    @cached_property
    def _fit_jobs(self) -> tuple[FitJob, ...]:
        size = self.config.get("cells_per_fit_group", 1)
        singles, pending = [], {}
        for cell in self.cells:
            for index in range(len(self.chunks(cell))):
                if size > 1 and self.groupable(cell):
                    # the same chunk of the cells of one grid: a group changes only when its
                    # grid does (new seeds make new chunks, hence new groups; other grids'
                    # groups stay as they are)
                    pending.setdefault((cell.grid, index), []).append((cell.cell_id, index))
                else:
                    singles.append(FitJob(((cell.cell_id, index),)))
        groups = []
        for (grid, index), chunks in pending.items():
            if len(chunks) == 1:  # a grid of one groupable cell: nothing to share
                singles.append(FitJob(tuple(chunks)))
                continue
            # as even as possible (9 chunks at 8 per job: 5 + 4, not 8 + 1); a part of one is
            # still a group, so that all chunks of a cell are fitted by group rules
            n_parts = -(-len(chunks) // size)
            bounds = [round(i * len(chunks) / n_parts) for i in range(n_parts + 1)]
            groups.extend(FitJob(tuple(chunks[a:b]), f"{grid}_c{index}_{part}")
                          for part, (a, b) in enumerate(zip(bounds, bounds[1:])))
        return tuple(singles + groups)

    def fit_jobs(self) -> tuple[FitJob, ...]:
        """Every fit job of the study: a chunk on its own (rule ``fit_chunk``), or up to
        ``cells_per_fit_group`` chunks of groupable cells fitted one after another in one
        process (a ``fit_group_<name>`` rule), which pays the imports and the set-up once
        (benchmarks/README.md). A group holds the same chunk index of cells of one grid, so
        that adding seeds (new chunks) or grids leaves every existing group as
        it was; changing a grid's cells regroups that grid's chunks. Every chunk is in exactly
        one job."""
        return self._fit_jobs

    def fit_groups(self) -> tuple[FitJob, ...]:
        """The jobs of several chunks (``fit_jobs`` with a name)."""
        return tuple(job for job in self._fit_jobs if job.name)

    @cached_property
    def grouped_cells(self) -> frozenset[str]:
        """The cells whose chunks are fitted by a group job, not by ``fit_chunk``."""
        return frozenset(cell for job in self.fit_groups() for cell, _ in job.members)

    def datasets(self) -> list[tuple[str, int]]:
        return sorted({(c.data_regime, s) for c in self.cells for s in c.seeds})

    def config_hash(self) -> str:
        return config_hash(self.config)

    def provenance(self) -> dict:
        """What every output records about the run that wrote it: the config, its hash, the
        seed base and the package versions."""
        from vimodes.records import package_versions

        return {"config_hash": self.config_hash(), "study_name": self.config["study_name"],
                "seed_base": self.config["seed_base"],
                **{f"version_{k}": v for k, v in package_versions().items()}}


def config_hash(config: dict) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def build_study(raw: dict, source: str = "config") -> Study:
    config = validate_config(raw, source)
    cells = [cell for grid in config["grids"] for cell in _grid_cells(config, grid)]
    return Study(config=config, cells=tuple(cells))


def load_study(path: str | Path) -> Study:
    return build_study(load_yaml(path), source=describe_file(path))
