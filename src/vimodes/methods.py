"""The inference methods by name: one entry per method, read by the config, the rules, the
fitters, the figures and the report (no PyMC import: planning and reporting use it).

A new method is one fitter class (any importable module) and one entry here, added to this
module or at run time with ``register_method``: the config schema's method enum, the cell ids,
the rules, ``vimodes.fitters.make_fitter``, the classifier, the tables, the figures and the
report all read the registry (tests/workflow/test_registries.py registers one from outside the
package and runs it from the config to the report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# the grid axes a method can use beyond model, data regime and components
AXES = ("optimizer", "iterations", "init", "batch_size", "chains")
INIT_KINDS = ("default", "jitter", "prior")

_ADVI_STARTS = {
    "default": "Gaussian mean at PyMC's initial point (both slopes 0: the symmetric point)",
    "jitter": "initial point + N(0, s^2) per unconstrained coordinate",
    "prior": "initial point + s x (a prior draw - initial point)",
}
_NUTS_STARTS = dict.fromkeys(INIT_KINDS, "no init axis: nutpie's own initialisation of each "
                                         "chain")
_NOT_AVAILABLE = "not available (refused when the config is read)"
_PATHFINDER_STARTS = {
    "default": "each path at initial point + U(-2, 2) per coordinate (pymc-extras' default)",
    "jitter": "each path at initial point + U(-s, s) per coordinate",
    "prior": _NOT_AVAILABLE,
}

_VI_FITTER = "vimodes.fitting:VIFitter"
_PATHFINDER_FITTER = "vimodes.pathfinder_fit:PathfinderFitter"


def pathfinder_stores_paths(config: dict) -> bool:
    """Whether a per-path Pathfinder fit stores its paths for Pathfinder + PSIS to resample: it
    does when it evaluates logP at every draw (``vi.khat_draws >= draws``), as the importance
    weights need (``PathfinderFitter.stores_paths``, the same rule)."""
    return config["vi"]["khat_draws"] >= config["draws"]


@dataclass(frozen=True)
class MethodSpec:
    """What the rest of the package needs to know about one method.

    ``axes``: the grid axes that apply (the others are left out of the cell id and record
    "none"); ``engines``: the VI engines that implement it (the first is the default);
    ``full_data``: every step evaluates all N points (no minibatch); ``relabel_by``: the unit
    whose draws are relabelled together for the label-invariant errors ("chain": a chain or an
    approximation sits in one labelling; "draw": particles or pooled draws may mix);
    ``report_group``: "advi" (the main tables), "other" or "reference" (NUTS);
    ``deterministic_from_start``: the outcome is a function of data and start alone;
    ``minutes_per_fit``: the time-limit estimate per fit at N = 100000 and 10000 iterations
    (measured on a 2-core machine, see benchmarks/README.md; the rules add a 3x margin);
    ``fitter``: "module:Class" of the fitter, imported only when a fit job runs (planning and
    reporting never import PyMC); the class takes ``(FitSettings, n_obs)`` and its
    ``fit(data, seed_base, seed)`` returns a ``vimodes.fitting.FitResult``;
    ``derived_from``: a method whose fit of the same seed this one finishes instead of fitting
    again, when the study has that method's cell with every other axis equal and a chunk of
    exactly the same seeds, and ``source_stores(config)`` says that cell stores what is needed
    (``Study.source_chunk``; the fitter's ``fit_from_stored`` reads what the other stored).
    """

    name: str
    label: str
    colour: str
    axes: tuple[str, ...]
    starts: dict[str, str]
    fitter: str
    engines: tuple[str, ...] = ("pymc",)
    init_kinds: tuple[str, ...] = INIT_KINDS
    full_data: bool = False
    relabel_by: str = "chain"
    report_group: str = "other"
    deterministic_from_start: bool = False
    minutes_per_fit: float = 0.1
    checkpoints: bool = False  # can store the approximation at intermediate iterations
    family: str = field(default="")  # the fitter family (defaults to the name)
    derived_from: str | None = None
    source_stores: Callable[[dict], bool] | None = None

    def uses(self, axis: str) -> bool:
        return axis in self.axes


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("advi", "meanfield ADVI", "#1f77b4",
                   ("optimizer", "iterations", "init", "batch_size"), _ADVI_STARTS,
                   _VI_FITTER, engines=("pymc", "vectorised"), report_group="advi",
                   checkpoints=True, family="vi"),
        MethodSpec("fullrank_advi", "fullrank ADVI", "#ff7f0e",
                   ("optimizer", "iterations", "init", "batch_size"), _ADVI_STARTS,
                   _VI_FITTER, engines=("pymc", "vectorised"), report_group="advi",
                   checkpoints=True, family="vi"),
        MethodSpec("svgd", "SVGD", "#2ca02c",
                   ("optimizer", "iterations", "init", "batch_size"), {
                       "default": "particles at initial point + N(0, 1) each (identical "
                                  "particles cannot spread)",
                       "jitter": "particles at initial point + N(0, s^2) each",
                       "prior": "particles at initial point + N(0, s^2) each (as jitter)"},
                   _VI_FITTER, relabel_by="draw", family="vi"),
        MethodSpec("pathfinder", "Pathfinder", "#9467bd", ("init",), _PATHFINDER_STARTS,
                   _PATHFINDER_FITTER, init_kinds=("default", "jitter"), full_data=True,
                   relabel_by="draw", minutes_per_fit=1.0),
        MethodSpec("pathfinder_psis", "Pathfinder + PSIS", "#c5b0d5", ("init",),
                   _PATHFINDER_STARTS, _PATHFINDER_FITTER, init_kinds=("default", "jitter"),
                   full_data=True, relabel_by="draw", minutes_per_fit=1.5, family="pathfinder",
                   derived_from="pathfinder", source_stores=pathfinder_stores_paths),
        MethodSpec("dadvi", "DADVI", "#17becf", ("init",), {
                       kind: text + "; log sds 0" for kind, text in _ADVI_STARTS.items()},
                   "vimodes.dadvi_fit:DadviFitter", full_data=True, minutes_per_fit=0.5),
        MethodSpec("cavi", "CAVI", "#8c564b", ("iterations", "init"), {
                       "default": "slopes 0, 0 (the symmetric point; CAVI is then "
                                  "deterministic)",
                       "jitter": "slopes ~ N(0, s^2)",
                       "prior": "slopes ~ N(0, (2s)^2) (the slope prior, sd 2, times s)"},
                   "vimodes.cavi:CaviFitter", full_data=True, deterministic_from_start=True,
                   minutes_per_fit=0.05),
        MethodSpec("nuts", "NUTS", "#d62728", ("chains",), _NUTS_STARTS,
                   "vimodes.fitting:NutsFitter", full_data=True, report_group="reference",
                   # per chain: ~5 s at tune 500 or ~8 s at tune 1000 on one loaded core (the
                   # SIMD likelihood); the rule's 5 fixed minutes cover nutpie's compile
                   minutes_per_fit=0.5),
    )
}
METHOD_NAMES = tuple(METHOD_SPECS)  # also the order of tables and legends


def register_method(spec: MethodSpec) -> None:
    """Add a method from outside this module (a plugin, a test). Register before the modules
    that read the registry are imported (e.g. from a ``sitecustomize`` module): they derive
    their method lists when imported."""
    global METHOD_NAMES
    if spec.name in METHOD_SPECS:
        raise ValueError(f"method '{spec.name}' is already registered")
    if ":" not in spec.fitter:
        raise ValueError(f"method '{spec.name}': fitter must be 'module:Class', not "
                         f"{spec.fitter!r}")
    METHOD_SPECS[spec.name] = spec
    METHOD_NAMES = tuple(METHOD_SPECS)


def method_spec(name: str) -> MethodSpec:
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; known: {', '.join(METHOD_NAMES)}") from None


def family(name: str) -> str:
    spec = method_spec(name)
    return spec.family or spec.name


def methods_where(**conditions) -> tuple[str, ...]:
    """The method names whose spec has every given attribute value, e.g.
    ``methods_where(report_group="advi")``."""
    return tuple(name for name, spec in METHOD_SPECS.items()
                 if all(getattr(spec, key) == value for key, value in conditions.items()))


def methods_using(axis: str) -> tuple[str, ...]:
    return tuple(name for name, spec in METHOD_SPECS.items() if spec.uses(axis))


def methods_on_engine(engine: str) -> tuple[str, ...]:
    return tuple(name for name, spec in METHOD_SPECS.items() if engine in spec.engines)


def init_meaning(method: str, kind: str) -> str:
    """What init ``kind`` means for ``method`` (a kind the method does not take is refused when
    the config is read)."""
    return method_spec(method).starts.get(kind, _NOT_AVAILABLE)
