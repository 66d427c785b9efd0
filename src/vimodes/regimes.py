"""Data regimes as numbers a practitioner controls or faces, and the one-factor-at-a-time map.

A data regime (``config.data_regimes``) is described by five DESCRIPTORS: the number of points,
the separation of the slopes (the smallest distance between two true slopes), the noise sd, the
heavier component's weight and the width of the x range. A regime of the regime map differs
from the BASE regime (``default``) in exactly one descriptor: that descriptor is its AXIS. The
figure and the report section of the regime map read the axis from here, so adding a regime to
the config is all it takes to add a point to the map.

This module is vocabulary: it imports only the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_REGIME = "default"


@dataclass(frozen=True)
class RegimeAxis:
    name: str
    label: str
    log_scale: bool = False


REGIME_AXES = (
    RegimeAxis("n_obs", "number of points N", log_scale=True),
    RegimeAxis("separation", "separation of the slopes"),
    RegimeAxis("noise_sd", "noise sd"),
    RegimeAxis("heavier_weight", "weight of the heavier component"),
    RegimeAxis("x_width", "width of the x range"),
)
AXIS_BY_NAME = {axis.name: axis for axis in REGIME_AXES}


def regime_descriptors(regime: dict) -> dict[str, float]:
    """The five descriptors (and K) of one ``config.data_regimes`` entry."""
    slopes = sorted(float(s) for s in regime["slopes"])
    gaps = [b - a for a, b in zip(slopes, slopes[1:])]
    return {
        "n_obs": float(regime["n_obs"]),
        "separation": min(gaps) if gaps else 0.0,
        "noise_sd": float(regime["noise_sd"]),
        "heavier_weight": max(float(w) for w in regime["weights"]) / sum(regime["weights"]),
        "x_width": float(regime.get("x_high", 1.0)) - float(regime.get("x_low", -1.0)),
        "components": float(len(slopes)),
    }


def regime_axis(regime: dict, base: dict) -> tuple[str, float] | None:
    """(axis name, value) of a regime that differs from ``base`` in exactly one descriptor;
    ("base", nan) for the base regime itself; None when it differs in K, in several
    descriptors (a crossed regime) or in none while not being the base data (e.g. both slopes
    shifted): not a point of the one-factor map."""
    mine, theirs = regime_descriptors(regime), regime_descriptors(base)
    if mine["components"] != theirs["components"]:
        return None
    differ = [a.name for a in REGIME_AXES
              if not math.isclose(mine[a.name], theirs[a.name], rel_tol=1e-9, abs_tol=1e-12)]
    if not differ:
        # same descriptors but e.g. both slopes moved: not the base data, and no axis of the map
        return ("base", float("nan")) if _canonical(regime) == _canonical(base) else None
    if len(differ) > 1:
        return None
    return (differ[0], mine[differ[0]])


def _canonical(regime: dict) -> tuple:
    return (int(regime["n_obs"]), tuple(float(s) for s in regime["slopes"]),
            tuple(float(w) for w in regime["weights"]), float(regime["noise_sd"]),
            float(regime.get("x_low", -1.0)), float(regime.get("x_high", 1.0)))


def regime_map(regimes: dict[str, dict], base: str = BASE_REGIME) -> dict[str, tuple[str, float]]:
    """name -> (axis, value) for the base regime and every one-factor regime of ``regimes``;
    empty when there is no base regime."""
    if base not in regimes:
        return {}
    out = {}
    for name, regime in regimes.items():
        axis = regime_axis(regime, regimes[base])
        if axis is not None:
            out[name] = axis
    return out
