"""A cost model per protection: client and server time and traffic as functions of n, d, k, dropout.

Notation: ``n`` clients, ``d`` parameters, ``k`` neighbours per client (``n - 1`` for the
complete graph), ``p = round(dropout * n)`` clients that drop after sharing keys, ``s = n - p``
survivors, ``C = ceil(d / 4096)`` CKKS ciphertexts (N = 8192), ``w = bits / 8`` bytes per ring
element. Each cost is a non-negative combination of a few *features*, one per term of the
protocol's work:

* plaintext — client ``a0 + a1 d``; server ``b0 + b1 s + b2 s d``; up ``4 d``; down ``0``.
* SecAgg / SecAgg+ (fedcrypt and Flower) — client ``a0 + a1 k + a2 (k + 1) d + a3 d``:
  key agreements and share encryption per neighbour, one PRG expansion per mask (self
  mask + k pairwise), the encoding; server ``b0 + b1 n + b2 n k + b3 s d + b4 (s + p k) d``:
  per-client messages, routing and Shamir per share, summing s uploads, re-expanding s self masks and the k pairwise
  masks of each dropped client (Bonawitz et al. 2017, Sec. 4; Bell et al. 2020, Sec. 3);
  up ``u0 + u1 k + u2 d``; down ``v0 + v1 k``.
* CKKS (fedcrypt and TenSEAL) — client ``a0 + a1 C`` (encrypt and decrypt per
  ciphertext); server ``b0 + b1 s C``; up ``u0 + u1 C``; down ``v0 + v1 C``.

The coefficients are fitted to the measured medians (CPU time of the calls, for the
times) by a non-negative minimax fit of the
*relative* residuals (each cell weighs the same whatever its size): the fit minimises the
largest deviation ``model / measured - 1``, which is reported per cell, in sample and
leave-one-out (each cell predicted from the others).
The model then extrapolates to sizes this machine cannot hold (``n`` up to 10,000, ``d``
up to 4e7). It is a model of this implementation on this machine, not a bound.

Invariants: features are computed from the same ``(n, d, k, dropout, bits)`` that the
benchmark used; a protection with fewer measured cells than coefficients is fitted with
the coefficients it can identify and the rest fixed at zero (reported as such).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .cells import secagg_plus_degree

__all__ = ["FEATURES", "FittedModel", "fit", "predict", "degree_for", "QUANTITIES"]

#: the four modelled quantities and the row columns they are fitted to.
#: Times are fitted to the CPU-time medians: on a shared machine the wall time includes
#: waiting for a core, which no formula in n and d can model.
QUANTITIES = {
    "client_s": "client_cpu_s_median",
    "server_s": "server_cpu_s_median",
    "bytes_up": "bytes_up",
    "bytes_down": "bytes_down",
}

Point = Mapping[str, float]
Feature = Callable[[Point], float]


def _ct(point: Point) -> float:
    return float(math.ceil(point["d"] / 4096))


def _p(point: Point) -> float:
    return float(round(point["dropout"] * point["n"]))


def _s(point: Point) -> float:
    return point["n"] - _p(point)


_MASKING: dict[str, list[tuple[str, Feature]]] = {
    "client_s": [
        ("1", lambda q: 1.0),
        ("k", lambda q: q["k"]),
        ("(k+1) d", lambda q: (q["k"] + 1) * q["d"]),
        ("d", lambda q: q["d"]),
    ],
    "server_s": [
        ("1", lambda q: 1.0),
        ("n", lambda q: q["n"]),
        ("n k", lambda q: q["n"] * q["k"]),
        ("s d", lambda q: _s(q) * q["d"]),
        ("(s + p k) d", lambda q: (_s(q) + _p(q) * q["k"]) * q["d"]),
    ],
    "bytes_up": [("1", lambda q: 1.0), ("k", lambda q: q["k"]), ("w d", lambda q: q["bits"] / 8 * q["d"])],
    "bytes_down": [("1", lambda q: 1.0), ("k", lambda q: q["k"])],
}
_HE: dict[str, list[tuple[str, Feature]]] = {
    "client_s": [("1", lambda q: 1.0), ("C", _ct)],
    "server_s": [("1", lambda q: 1.0), ("s C", lambda q: _s(q) * _ct(q))],
    "bytes_up": [("1", lambda q: 1.0), ("C", _ct)],
    "bytes_down": [("1", lambda q: 1.0), ("C", _ct)],
}
#: verified aggregation (PINE): a proof of O(sqrt(d)) field elements beside the d of the
#: vector; each aggregator checks every report (linear in d per report).
_VERIFIED: dict[str, list[tuple[str, Feature]]] = {
    "client_s": [("1", lambda q: 1.0), ("d", lambda q: q["d"])],
    "server_s": [("1", lambda q: 1.0), ("s d", lambda q: _s(q) * q["d"])],
    "bytes_up": [("1", lambda q: 1.0), ("sqrt d", lambda q: math.sqrt(q["d"])), ("d", lambda q: q["d"])],
    "bytes_down": [("1", lambda q: 1.0)],
}
_PLAIN: dict[str, list[tuple[str, Feature]]] = {
    "client_s": [("1", lambda q: 1.0), ("d", lambda q: q["d"])],
    "server_s": [("1", lambda q: 1.0), ("s", _s), ("s d", lambda q: _s(q) * q["d"])],
    "bytes_up": [("d", lambda q: q["d"])],
    "bytes_down": [("1", lambda q: 1.0)],
}

#: protection -> quantity -> [(term name, feature function)]
FEATURES: dict[str, dict[str, list[tuple[str, Feature]]]] = {
    "plaintext": _PLAIN,
    "secagg": _MASKING,
    "secagg+": _MASKING,
    "flower-secagg+": _MASKING,
    "ckks": _HE,
    "tenseal": _HE,
    "verified": _VERIFIED,
}


def degree_for(protection: str, n: int) -> int:
    """The ``k`` the benchmark uses by default: ``n - 1`` (SecAgg), ``2 ceil(log2 n)`` (SecAgg+)."""
    if protection == "secagg":
        return n - 1
    if protection in ("secagg+", "flower-secagg+"):
        return secagg_plus_degree(n)
    return 0


@dataclass
class FittedModel:
    """The fitted coefficients of one protection and how well they match the measurements.

    Attributes:
        protection: the protection.
        coefficients: quantity -> {term: coefficient}.
        deviations: quantity -> list of ``model / measured - 1`` over the fitted cells.
        cells: how many measured cells the fit used.
        holdout_deviations: the same, each cell predicted by a fit without it (empty when
            there are no more cells than coefficients).
    """

    protection: str
    coefficients: dict[str, dict[str, float]]
    deviations: dict[str, list[float]]
    cells: int
    holdout_deviations: dict[str, list[float]] = field(default_factory=dict)

    def max_abs_deviation(self, quantity: str) -> float:
        """The largest ``|model / measured - 1|`` of a quantity (nan without cells)."""
        values = self.deviations.get(quantity, [])
        return max((abs(v) for v in values), default=math.nan)

    def max_abs_holdout_deviation(self, quantity: str) -> float:
        """The largest leave-one-out ``|model / measured - 1|`` (nan without enough cells)."""
        values = self.holdout_deviations.get(quantity, [])
        return max((abs(v) for v in values), default=math.nan)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "protection": self.protection,
            "cells": self.cells,
            "coefficients": self.coefficients,
            "formulas": {q: " + ".join(f"{c:.4g}*[{t}]" for t, c in terms.items()) for q, terms in self.coefficients.items()},
            "max_abs_deviation": {q: self.max_abs_deviation(q) for q in self.coefficients},
            "max_abs_holdout_deviation": {q: self.max_abs_holdout_deviation(q) for q in self.coefficients},
            "deviations": self.deviations,
            "holdout_deviations": self.holdout_deviations,
        }


def _point(row: Mapping[str, Any]) -> dict[str, float]:
    return {
        "n": float(row["n"]),
        "d": float(row["d"]),
        "k": float(row["k"] or 0),
        "dropout": float(row["dropout"]),
        "bits": float(row["bits"] or 32),
    }


def _minimax(design: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the largest ``|design @ c / measured - 1|``.

    A linear program (Chebyshev fit on relative residuals): minimise ``t`` subject to
    ``-t <= (A c)_i / m_i - 1 <= t`` and ``c >= 0``. Columns are scaled to unit maximum
    first so that the solver sees comparable magnitudes.
    """
    from scipy.optimize import linprog

    a = design / measured[:, None]
    scale = np.where(a.max(axis=0) > 0, a.max(axis=0), 1.0)
    a = a / scale
    rows, cols = a.shape
    cost = np.zeros(cols + 1)
    cost[-1] = 1.0
    upper = np.hstack([a, -np.ones((rows, 1))])  #  A c - t <= 1
    lower = np.hstack([-a, -np.ones((rows, 1))])  # -A c - t <= -1
    result = linprog(
        cost,
        A_ub=np.vstack([upper, lower]),
        b_ub=np.concatenate([np.ones(rows), -np.ones(rows)]),
        bounds=[(0, None)] * (cols + 1),
        method="highs",
    )
    if not result.success:  # fall back to relative least squares
        from scipy.optimize import nnls

        solution, _ = nnls(a, np.ones(rows))
        return solution / scale
    return result.x[:cols] / scale


def fit(rows: Iterable[Mapping[str, Any]], *, holdout: bool = True) -> dict[str, FittedModel]:
    """Fit every protection's coefficients to the ``status == "ok"`` rows (DP-off cells only).

    The fit minimises the largest relative deviation over the cells (:func:`_minimax`).
    ``deviations`` are in-sample; ``holdout_deviations`` are leave-one-out: each cell
    predicted by the model fitted to the other cells, the honest test of the formulas
    (skipped with ``holdout=False``).
    """
    by_protection: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("dp", "off") == "off":
            by_protection.setdefault(str(row["protection"]), []).append(row)
    models = {}
    for protection, group in by_protection.items():
        coefficients: dict[str, dict[str, float]] = {}
        deviations: dict[str, list[float]] = {}
        left_out: dict[str, list[float]] = {}
        for quantity, column in QUANTITIES.items():
            terms = FEATURES[protection][quantity]
            points = [_point(r) for r in group]
            measured = np.array([float(r[column]) for r in group])
            design = np.array([[f(q) for _, f in terms] for q in points])
            usable = measured > 0
            if not usable.any():
                coefficients[quantity] = {name: 0.0 for name, _ in terms}
                deviations[quantity] = []
                left_out[quantity] = []
                continue
            a, m = design[usable], measured[usable]
            coef = _minimax(a, m)
            coefficients[quantity] = {name: float(c) for (name, _), c in zip(terms, coef)}
            deviations[quantity] = [float(v) for v in (a @ coef) / m - 1]
            loo = []
            if holdout and len(m) > len(terms):
                for i in range(len(m)):
                    keep = np.arange(len(m)) != i
                    c_i = _minimax(a[keep], m[keep])
                    loo.append(float(a[i] @ c_i / m[i] - 1))
            left_out[quantity] = loo
        models[protection] = FittedModel(protection, coefficients, deviations, len(group), left_out)
    return models


def predict(model: FittedModel, *, n: float, d: float, k: float | None = None, dropout: float = 0.0, bits: int = 32) -> dict[str, float]:
    """The model's client/server seconds and bytes up/down at a point."""
    point = {
        "n": float(n),
        "d": float(d),
        "k": float(degree_for(model.protection, int(n)) if k is None else k),
        "dropout": float(dropout),
        "bits": float(bits),
    }
    out = {}
    for quantity, terms in FEATURES[model.protection].items():
        coef = model.coefficients.get(quantity, {})
        out[quantity] = float(sum(coef.get(name, 0.0) * f(point) for name, f in terms))
    return out


def traffic_expansion(model: FittedModel, n: int, d: int, bits: int = 32) -> float:
    """Bytes a client sends over the bytes of its bare ``bits``-bit input (Bonawitz's figure)."""
    return predict(model, n=n, d=d, bits=bits)["bytes_up"] / (d * bits / 8)


def sweep(
    models: Mapping[str, FittedModel], axis: str, values: Sequence[float], *, n: int, d: float, dropout: float = 0.0
) -> dict[str, list[dict[str, float]]]:
    """Model predictions for each protection along ``axis`` ("n" or "d"), the other fixed."""
    out: dict[str, list[dict[str, float]]] = {}
    for protection, model in models.items():
        series = []
        for value in values:
            nn = int(value) if axis == "n" else n
            dd = float(value) if axis == "d" else d
            series.append({axis: float(value), **predict(model, n=nn, d=dd, dropout=dropout)})
        out[protection] = series
    return out
