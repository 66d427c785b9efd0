"""The fitter of a cell, chosen by its engine and the method registry and imported on demand,
so that the modules that plan, pipe and report never import a fitter's libraries (PyMC, JAX)
and no fitter module imports another's dispatcher."""

from __future__ import annotations

import importlib

from vimodes.config import FitSettings
from vimodes.methods import method_spec

# engines that fit every method they implement with one class ("module:Class")
ENGINE_FITTERS = {"vectorised": "vimodes.vectorised:VectorisedVIFitter"}


def make_fitter(settings: FitSettings, n_obs: int):
    """The vectorised engine's fitter, or else the method registry's ``fitter`` class; each
    takes ``(settings, n_obs)`` and compiles what a chunk of seeds shares."""
    target = ENGINE_FITTERS.get(settings.engine) or method_spec(settings.method).fitter
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)(settings, n_obs)
