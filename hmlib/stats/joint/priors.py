"""The priors of the joint model: their specs, checks, table, PyMC families and densities.

A prior is stated as a spec on a standardised scale (:data:`DEFAULT_PRIORS`):
``("normal", scale)`` for coefficients and intercepts, ``("halfnormal",
scale)`` or ``("halfstudentt", nu, scale)`` for cluster and residual SDs, and
the LKJ ``eta`` of the 2 x 2 correlation of the outcome and missingness
cluster effects (``(rho + 1) / 2 ~ Beta(eta, eta)``). Every place that turns a
spec into a distribution goes through this module: the PyMC model
(:func:`sd_prior`, :func:`correlated_sd_log_prior`) and the prior reweighting
(:func:`sd_log_density`).

PyMC and PyTensor are imported when a model is built, so that importing
hmlib stays quick.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special, stats

from hmlib.exceptions import FitError

__all__ = ["DEFAULT_PRIORS", "check_priors", "priors_table", "sd_family", "sd_prior", "correlated_sd_log_prior",
           "sd_log_density", "prior_text"]

#: Default priors, on standardised scales (see :mod:`hmlib.stats.joint`).
DEFAULT_PRIORS = {
    "coef": ("normal", 2.5),
    "intercept": ("normal", 2.5),
    "cluster_sd": ("halfnormal", 1.0),
    "residual_sd": ("halfnormal", 1.0),
    "lkj_eta": 2.0,
}


def check_priors(priors: dict | None) -> dict:
    """:data:`DEFAULT_PRIORS` with the overrides in ``priors``, checked.

    Raises
    ------
    FitError
        An unknown prior, or a spec of the wrong family or with a scale <= 0.
    """
    merged = dict(DEFAULT_PRIORS)
    for key, value in (priors or {}).items():
        if key not in DEFAULT_PRIORS:
            raise FitError(f"unknown prior '{key}'; the priors are {sorted(DEFAULT_PRIORS)}.")
        merged[key] = value
    for key in ("coef", "intercept"):
        fam, *args = merged[key]
        if fam != "normal" or len(args) != 1 or not args[0] > 0:
            raise FitError(f"prior '{key}' must be ('normal', scale > 0), got {merged[key]!r}.")
    for key in ("cluster_sd", "residual_sd"):
        fam, *args = merged[key]
        ok = (fam == "halfnormal" and len(args) == 1 and args[0] > 0) or \
             (fam == "halfstudentt" and len(args) == 2 and args[0] > 0 and args[1] > 0)
        if not ok:
            raise FitError(f"prior '{key}' must be ('halfnormal', scale) or ('halfstudentt', nu, scale), "
                           f"got {merged[key]!r}.")
    if not float(merged["lkj_eta"]) > 0:
        raise FitError(f"prior 'lkj_eta' must be > 0, got {merged['lkj_eta']!r}.")
    return merged


def priors_table(priors: dict | None = None, slopes: tuple = ()) -> pd.DataFrame:
    """The priors of the joint model, for the report.

    Parameters
    ----------
    priors : dict, optional
        Overrides of :data:`DEFAULT_PRIORS`.
    slopes : tuple of str, optional
        The random slopes (:mod:`hmlib.stats.joint.slopes`): the SD and
        correlation rows then say that they cover the slopes too.

    Returns
    -------
    pandas.DataFrame
        Columns ``parameter, applies_to, prior, scale``.

    Examples
    --------
    >>> priors_table()["prior"].tolist()[2]
    'Half-Normal(0, 1)'
    """
    p = check_priors(priors)

    def sd_text(spec):
        return f"Half-Normal(0, {spec[1]:g})" if spec[0] == "halfnormal" else \
            f"Half-Student-t({spec[1]:g}, 0, {spec[2]:g})"

    slope_text = ", ".join(slopes)
    sd_applies = "cluster intercepts of every submodel" + (
        f", and the random slopes on {slope_text} (outcome and every predictor submodel)" if slopes else "")
    sd_scale = "logit scale (binary responses) or SDs of the standardised response" + (
        f"; a slope's per SD of {slope_text}" if slopes else "")
    cor_applies = ("outcome and missingness cluster intercepts" if not slopes else
                   f"cluster intercepts and slopes on {slope_text}: the outcome's with the missingness intercept, "
                   "each predictor submodel's (a nominal one's per level)")
    rows = [
        ("coefficients", "every submodel (outcome, predictors, missingness)",
         f"Normal(0, {p['coef'][1]:g})", "per SD of a numeric predictor; per unit of a 0/1 column"),
        ("intercepts", "every submodel", f"Normal(m, {p['intercept'][1]:g})",
         "m = logit(observed rate) for 0/1 responses, 0 for standardised continuous ones"),
        ("cluster SDs", sd_applies, sd_text(p["cluster_sd"]), sd_scale),
        ("residual SDs", "gaussian outcome and continuous predictor submodels", sd_text(p["residual_sd"]),
         "SDs of the standardised response"),
        ("correlation", cor_applies, f"LKJ({float(p['lkj_eta']):g})",
         f"(rho + 1) / 2 ~ Beta({float(p['lkj_eta']):g}, {float(p['lkj_eta']):g})" if not slopes else
         f"LKJ({float(p['lkj_eta']):g}) on each correlation matrix"),
    ]
    return pd.DataFrame(rows, columns=["parameter", "applies_to", "prior", "scale"])


def sd_family(spec):
    """The PyMC distribution class and its arguments of an SD prior spec."""
    import pymc as pm

    if spec[0] == "halfnormal":
        return pm.HalfNormal, {"sigma": float(spec[1])}
    return pm.HalfStudentT, {"nu": float(spec[1]), "sigma": float(spec[2])}


def sd_prior(name: str, spec, shape=None):
    """A named SD with the prior ``spec`` (inside a PyMC model context); ``shape`` for one SD per level."""
    family, kwargs = sd_family(spec)
    return family(name, **kwargs) if shape is None else family(name, **kwargs, shape=shape)


def correlated_sd_log_prior(tau, rho, priors: dict):
    """Log prior density of (slope, resid) of the missingness cluster effects (see :mod:`hmlib.stats.joint.model`).

    ``log p_sd(tau) + log p_LKJ(rho) + log(sqrt(1 - rho^2) / tau)``, normalised,
    so that ``(tau, rho)`` have exactly the priors of :data:`DEFAULT_PRIORS`.
    """
    import pymc as pm
    import pytensor.tensor as pt

    family, kwargs = sd_family(priors["cluster_sd"])
    sd_dist = family.dist(**kwargs)
    eta = float(priors["lkj_eta"])
    log_lkj = (eta - 1.0) * (pt.log1p(rho) + pt.log1p(-rho) - 2.0 * np.log(2.0)) - \
        special.betaln(eta, eta) - np.log(2.0)
    return pm.logp(sd_dist, tau) + log_lkj + 0.5 * pt.log1p(-rho ** 2) - pt.log(tau)


def sd_log_density(values: np.ndarray, spec) -> np.ndarray:
    """Log density of a half-normal / half-Student-t prior (normalised; positive values), with numpy."""
    spec = tuple(spec)
    if spec[0] == "halfnormal":
        return stats.halfnorm.logpdf(values, scale=float(spec[1]))
    if spec[0] == "halfstudentt":
        return math.log(2.0) + stats.t.logpdf(values, df=float(spec[1]), scale=float(spec[2]))
    raise FitError(f"a cluster-SD prior is ('halfnormal', scale) or ('halfstudentt', nu, scale), got {spec!r}.")


def prior_text(spec) -> str:
    """A spec as text: ``halfnormal(0.5)``, ``halfstudentt(3, 2.5)``."""
    return f"{spec[0]}({', '.join(f'{float(v):g}' for v in spec[1:])})"
