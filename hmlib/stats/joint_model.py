"""Bayesian joint model of an outcome and its incomplete predictors, with clusters.

The model is the one brms writes as ``bf(y ~ x + z + (1|site)) +
bf(x | mi() ~ z + (1|site))`` (Buerkner 2017), extended: every incomplete
predictor gets its own submodel, incomplete binary predictors are summed
out, and a missingness submodel shares a correlated cluster effect with the
outcome. It is fitted with PyMC and sampled by nutpie.

Model
-----
Rows ``i`` sit in clusters ``j = j[i]``. Predictors are *complete* (no missing
value; design ``Z``, numeric columns standardised, categorical columns
treatment coded as in :func:`hmlib.stats.design.design_matrix`) or *incomplete*.
The joint density factorises as ``p(y | x, z) prod_k p(x_k | z)``:

- outcome: ``g(E y_i) = a + Z_i b_z + sum_k b_k x_ik + u_j``, binomial with
  logit link or gaussian (``y`` standardised, residual SD ``sigma_y``);
- incomplete continuous predictor ``k`` (standardised):
  ``x_ik ~ N(c_k + Z_i d_k + v_kj, sigma_k)``; a positive, right-skewed
  variable (all observed values > 0 and sample skewness > 1, see
  :data:`LOGNORMAL_SKEWNESS`) is modelled on the log scale (lognormal)
  unless ``distributions`` says otherwise; the outcome always uses it on its
  original (standardised) scale;
- incomplete binary predictor ``k``: ``logit P(x_ik = 1) = c_k + Z_i d_k + v_kj``;
- cluster intercepts ``u_j ~ N(0, tau_y)``, ``v_kj ~ N(0, tau_k)``, independent
  across submodels (as brms's ``(1|site)`` in two formulae).

The outcome is not a predictor in the predictor submodels: the factorisation
``p(y | x) p(x)`` already lets the outcome inform the missing values. The
incomplete predictors are conditionally independent given ``Z`` and their
cluster effects (each submodel sees the complete predictors only); rows with
a missing outcome are left out (as brms does for a response without
``mi()``).

Missing values. A missing binary value is summed out: the row's outcome
likelihood is ``sum_{x=0,1} p(y | x) p(x)`` (over the product of the row's
missing binaries). A missing value of the *focus* variable is, by default
(``missing_values="marginal"``), integrated out by Gauss-Hermite quadrature
on its submodel's normal (or log-normal) distribution; for a gaussian
outcome and a normal focus the integral is exact in closed form. The number
of nodes is the fewest of :data:`QUADRATURE_CANDIDATES` whose summed
log-likelihood error is below :data:`QUADRATURE_TOLERANCE` at a pessimistic
plug-in (5 on the reference registry, error 6e-6). The posterior of every
parameter is then that of the model with latent missing values (up to that
quadrature error), with one parameter fewer per missing value and a
posterior that a low-rank mass matrix can learn; on the reference registry
this gives 4.9 times (focus coefficient) and 3.0 times (cluster SD) the
effective samples per second of the latent version, and 53 and 30 times
brms's, measured in the same run on the same machine, compile time included
(``bench/bench_joint.py --brms``). For a binary outcome the row sums are taken on
the probability scale (sigmoids, no log-sum-exp), three times cheaper. Draws
of the missing focus values are made afterwards from their exact conditional
``p(x | y, theta)`` (rejection sampling against the outcome likelihood) for
a thinned set of :data:`_IMPUTATION_DRAWS` posterior draws. Other incomplete
continuous predictors, and every one with ``missing_values="latent"`` (brms's
approach), are latent parameters, one per missing value.

Missingness submodel (shared parameter). With ``missingness_model=True`` the
indicator ``r_i`` (focus missing) follows ``logit P(r_i = 1) = e + Z_i f + w_j``
with ``(u_j, w_j)`` bivariate normal, SDs ``tau_y, tau_r`` and correlation
``rho``. ``rho`` answers, inside the model, whether clusters that leave the
focus variable unrecorded differ in their latent outcome propensity. The
assumption is that missingness depends on the cluster's latent outcome
propensity ``u_j`` and on the complete predictors, **not on the unobserved
value itself**: the missing values are missing at random given the random
effects. Values missing because they would have been high (MNAR at the patient
level) are outside this model; see the sensitivity step for that.

Priors (defaults, :data:`DEFAULT_PRIORS`, all on standardised scales):
``Normal(0, 2.5)`` on coefficients, ``Normal(m, 2.5)`` on intercepts (``m``
the logit of the observed rate for binary responses, 0 otherwise),
``HalfNormal(1)`` on cluster and residual SDs, ``LKJ(2)`` on the 2 x 2
correlation (``(rho + 1) / 2 ~ Beta(2, 2)``). Override with ``priors=``;
:func:`priors_table` writes them out.

Parameterisation. Cluster intercepts are centred (``u_j ~ N(0, tau)``) when the
data inform them well and non-centred (``u_j = tau z_j``) otherwise
(Betancourt & Girolami 2015; Papaspiliopoulos et al. 2007). The rule, per
submodel, uses a maximum-likelihood fit (:mod:`hmlib.stats.mixed`) on the rows the
submodel uses: with cluster information ``I_j = n_j tau^2 / s^2``
(``s^2`` the residual variance, or ``1 / (p (1 - p))`` for binary responses)
the submodel is centred when the average of ``I_j / (1 + I_j)`` over clusters
is at least :data:`CENTRED_SHARE` (0.6). Measured (``bench/bench_joint.py``
and the truth study's generator, bulk ESS of the outcome's site SD from 2 x
1000 draws): share 0.50 -> centred 286 and 437, non-centred 595 and 574;
share 0.64 -> centred 958, non-centred 733; share 0.69 -> centred 988,
non-centred 576. In the correlated outcome/missingness pair each of the two
follows its own rule (``u_j = tau_y z1_j`` and
``w_j = tau_r (rho z1_j + sqrt(1 - rho^2) z2_j)``, with ``u`` or ``w`` drawn
directly when centred).

Reporting. Coefficients are transformed back to the original scale of each
predictor (and of a gaussian outcome) draw by draw; estimates are posterior
means, ``std_error`` the posterior SD, intervals 95% equal-tailed. The
convergence gate asks, for every reported quantity, R-hat <= 1.01, bulk and
tail ESS >= 400 (tail ESS at the 5% and 95% quantiles, as Stan's
``posterior``), and no divergent transition (Vehtari et al. 2021).

Sampling. nutpie's NUTS with a low-rank mass matrix when the model has at
most :data:`LOW_RANK_MAX_PARAMETERS` unconstrained parameters (it learns the
correlation of intercepts, cluster effects and SDs: on the reference
registry 2.0 times the ESS per second of a diagonal one for both), else diagonal (with thousands of parameters
the low-rank update costs more than it saves; diagonal, 20,000 patients in
500 sites take 85 s with the gate passed, ``bench/bench_joint.py --parts large``).

Prior sensitivity without refitting. :meth:`JointModelResult.posterior_draws`
keeps the draws of the contract terms and of every cluster SD (no data
row); :func:`reweight_cluster_sd_prior` turns them into the posterior under
another prior on the cluster SDs by Pareto-smoothed importance sampling,
reporting Pareto k and the effective number of draws so that a caller
refits only when the weights cannot be trusted. On the demo registry the
reweighted focus coefficient and site SD agree with full refits within 1.6
Monte Carlo SEs for half-normal(0.5), half-normal(2.5) and half-Cauchy(1)
(Pareto k 0.20-0.45), in 0.01 s against 100-140 s per refit
(``bench/prior_reweighting.py``).

Validation (``tests/test_joint_model.py``, ``bench/``). The summed-out and
integrated-out likelihoods equal brute-force enumeration and adaptive
numerical integration. On ``tests/results/sim_registry.csv`` the posterior
mean of the lactate coefficient is 0.346 (4 seeds) and of the site SD
0.659; brms with the same priors (3 seeds) gives 0.349 and 0.661, within
Monte Carlo error; brms with its own default priors (5 seeds) 0.335 and
0.661, the lactate difference (0.11 posterior SD) being the priors'.
Over 100 simulated registries with known truth (4,000 patients in 40
sites, missingness submodel on; ``bench/joint_truth.py``) the posterior
means of the lactate coefficient and the site SD are off by -5.2% and +3.3%
(Monte Carlo SEs 2.8% and 1.9%), their 90% intervals cover 87% and 87% (MC
SE 3), and 95 of the 100 fits passed the gate; the missingness/outcome
correlation (truth 0.5, which the submodel only approximates) comes out
22% low.

References
----------
Buerkner P-C (2017). brms: An R package for Bayesian multilevel models using
Stan. J Stat Softw 80(1). (``mi()`` terms: vignette "Handle missing values".)
Betancourt M, Girolami M (2015). Hamiltonian Monte Carlo for hierarchical
models. In: Current Trends in Bayesian Methodology with Applications.
Papaspiliopoulos O, Roberts GO, Skold M (2007). A general framework for the
parametrization of hierarchical models. Stat Sci 22:59-73.
Ibrahim JG, Chen M-H, Lipsitz SR (2002). Bayesian methods for generalized
linear models with covariates missing at random. Can J Stat 30:55-78.
Little RJA (1995). Modeling the drop-out mechanism in repeated-measures
studies. JASA 90:1112-1121 (shared-parameter models).
Lewandowski D, Kurowicka D, Joe H (2009). Generating random correlation
matrices based on vines and extended onion method. J Multivar Anal 100.
Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner P-C (2021).
Rank-normalization, folding, and localization: an improved R-hat. Bayesian
Anal 16:667-718.

Examples
--------
>>> from hmlib.params import load_params
>>> from hmlib.data import load_registry
>>> registry = load_registry(load_params("params/demo.yaml"))   # doctest: +SKIP
>>> result = fit_joint_model(registry, seed=1)                  # doctest: +SKIP
>>> result.to_estimates()                                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from hmlib.exceptions import FitError

__all__ = ["DEFAULT_PRIORS", "LOGNORMAL_SKEWNESS", "METHOD", "JointData", "JointModelResult",
           "prepare_joint_data", "build_joint_model", "fit_joint_model", "priors_table",
           "choose_distribution", "outcome_to_original_scale", "GATE", "LOW_RANK_MAX_PARAMETERS",
           "CENTRED_SHARE", "QUADRATURE_CANDIDATES", "QUADRATURE_TOLERANCE", "PosteriorDraws",
           "PriorReweighting", "reweight_cluster_sd_prior", "model_fingerprint"]

#: Method name in ``estimates.csv``.
METHOD = "joint_bayes"
#: A positive incomplete variable whose observed sample skewness exceeds this
#: is modelled as lognormal (override with ``distributions=``).
LOGNORMAL_SKEWNESS = 1.0
#: Largest number of unconstrained parameters for which ``adaptation="auto"``
#: picks nutpie's low-rank mass matrix.
LOW_RANK_MAX_PARAMETERS = 500
#: A submodel's cluster intercepts are centred when the average cluster
#: information share ``I_j / (1 + I_j)`` is at least this (module docstring).
CENTRED_SHARE = 0.6
#: Gauss-Hermite node counts tried by ``quadrature_nodes="auto"`` (fewest first)
#: and the largest error allowed in the summed log-likelihood of the rows
#: whose focus value is integrated out (see :func:`_choose_quadrature_nodes`).
QUADRATURE_CANDIDATES = (5, 7, 9, 12, 16, 24, 32)
QUADRATURE_TOLERANCE = 1e-3
#: Convergence gate for every reported quantity.
GATE = {"rhat_max": 1.01, "ess_bulk_min": 400.0, "ess_tail_min": 400.0, "divergences_max": 0}
#: Default priors, on standardised scales (see the module docstring).
DEFAULT_PRIORS = {
    "coef": ("normal", 2.5),
    "intercept": ("normal", 2.5),
    "cluster_sd": ("halfnormal", 1.0),
    "residual_sd": ("halfnormal", 1.0),
    "lkj_eta": 2.0,
}
_SD_FAMILIES = ("halfnormal", "halfstudentt")
_FAST = {"draws": 500, "tune": 500}
_IMPUTATION_DRAWS = 200
_REJECTION_ROUNDS = 200
_SIR_PROPOSALS = 2000
_LEVEL = 0.95


# --------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Continuous:
    """An incomplete continuous predictor and its submodel."""

    name: str
    distribution: str          # "normal" | "lognormal"
    centre: float              # standardisation used in the outcome model
    scale: float
    sub_centre: float          # standardisation of the submodel response
    sub_scale: float           # (of log(x) when lognormal)
    values: np.ndarray         # original scale, NaN where missing
    response: np.ndarray       # submodel scale, standardised, NaN where missing
    observed: np.ndarray       # bool
    mode: str                  # "marginal" (integrated out) | "latent"

    def to_outcome_scale(self, sub_value):
        """Submodel-scale value(s) -> standardised original-scale value(s) (numpy)."""
        raw = sub_value * self.sub_scale + self.sub_centre
        if self.distribution == "lognormal":
            raw = np.exp(raw)
        return (raw - self.centre) / self.scale

    def to_original(self, sub_value):
        raw = sub_value * self.sub_scale + self.sub_centre
        return np.exp(raw) if self.distribution == "lognormal" else raw


@dataclass(frozen=True, eq=False)
class _Binary:
    """An incomplete binary predictor (0/1 numeric or a two-level category)."""

    name: str
    term: str
    values: np.ndarray         # 0/1, NaN where missing
    observed: np.ndarray


@dataclass(frozen=True, eq=False)
class JointData:
    """Arrays and metadata of one joint model (built by :func:`prepare_joint_data`).

    Holds patient-level arrays; it is never written out. Attributes are
    described where they are built; the main ones are ``y`` (outcome, on the
    model's scale), ``codes`` (cluster index per row), ``cluster_labels``,
    ``Z`` (standardised complete design without intercept), ``z_terms``,
    ``continuous`` and ``binaries`` (incomplete predictors), ``focus``.
    """

    outcome: str
    family: str
    cluster: str
    y: np.ndarray
    y_centre: float
    y_scale: float
    codes: np.ndarray
    cluster_labels: np.ndarray
    Z: np.ndarray
    z_terms: tuple
    z_centre: np.ndarray
    z_scale: np.ndarray
    continuous: tuple
    binaries: tuple
    focus: str
    focus_kind: str            # "continuous" | "binary" | "complete"
    term_order: tuple          # outcome terms in the user's predictor order
    missingness_model: bool
    n_dropped_outcome: int
    predictors: tuple

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_labels.size)

    @property
    def outcome_terms(self) -> tuple:
        """Outcome coefficients in model order: complete, continuous, binary."""
        return (*self.z_terms, *(c.name for c in self.continuous), *(b.term for b in self.binaries))

    @property
    def focus_missing(self) -> np.ndarray:
        var = self.focus_variable
        return np.zeros(self.n, bool) if var is None else ~var.observed

    @property
    def focus_variable(self):
        for var in (*self.continuous, *self.binaries):
            if var.name == self.focus:
                return var
        return None


def choose_distribution(values) -> str:
    """``"lognormal"`` for positive right-skewed values, else ``"normal"``.

    The rule: every observed value > 0 and the sample skewness (bias
    corrected) above :data:`LOGNORMAL_SKEWNESS`.
    """
    present = np.asarray(values, dtype=float)
    present = present[np.isfinite(present)]
    if present.size < 3 or np.any(present <= 0):
        return "normal"
    return "lognormal" if stats.skew(present, bias=False) > LOGNORMAL_SKEWNESS else "normal"


def _is_categorical(series: pd.Series, name: str, levels: dict) -> bool:
    return name in levels or not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def prepare_joint_data(frame: pd.DataFrame, *, outcome: str, predictors, cluster: str, family: str,
                       levels: dict | None = None, focus: str | None = None,
                       distributions: dict | None = None, missing_values: str = "marginal",
                       missingness_model: bool = True) -> JointData:
    """Standardise and index the data of the joint model.

    Parameters
    ----------
    frame : pandas.DataFrame
        Read only; a copy is used.
    outcome, cluster : str
    predictors : sequence of str
    family : {"binomial", "gaussian"}
    levels : dict, optional
        ``{column: levels}`` of categorical predictors (first = reference).
    focus : str, optional
        The incomplete predictor the report centres on (default: the one with
        most missing values).
    distributions : dict, optional
        ``{column: "normal" | "lognormal"}`` overrides of :func:`choose_distribution`.
    missing_values : {"marginal", "latent"}
        Integrate the focus variable's missing values out (default) or make
        them latent parameters as brms does.
    missingness_model : bool
        Add the shared-parameter missingness submodel (needs an incomplete focus).

    Returns
    -------
    JointData

    Raises
    ------
    FitError
        Unknown family or mode, a predictor that cannot be modelled (an
        incomplete categorical with more than two levels; a lognormal
        variable with values <= 0), fewer than two clusters.
    """
    if family not in ("binomial", "gaussian"):
        raise FitError(f"family must be 'binomial' or 'gaussian', got {family!r}.")
    if missing_values not in ("marginal", "latent"):
        raise FitError(f"missing_values must be 'marginal' or 'latent', got {missing_values!r}.")
    predictors = tuple(predictors)
    levels = dict(levels or {})
    distributions = dict(distributions or {})
    unknown = sorted(set(distributions) - set(predictors))
    if unknown:
        raise FitError(f"distributions names {unknown}, which are not predictors ({list(predictors)}).")
    for col, dist in distributions.items():
        if dist not in ("normal", "lognormal"):
            raise FitError(f"distribution of '{col}' must be 'normal' or 'lognormal', got {dist!r}.")
    missing_cols = [c for c in (outcome, cluster, *predictors) if c not in frame.columns]
    if missing_cols:
        raise FitError(f"column(s) {missing_cols} not in the data.")

    data = frame.loc[:, list(dict.fromkeys([cluster, outcome, *predictors]))].copy()
    keep = data[outcome].notna().to_numpy() & data[cluster].notna().to_numpy()
    n_dropped = int((~keep).sum())
    data = data.loc[keep].reset_index(drop=True)
    if len(data) == 0:
        raise FitError(f"no row has '{outcome}' and '{cluster}' recorded.")
    codes, labels = pd.factorize(data[cluster], sort=True)
    if labels.size < 2:
        raise FitError(f"the joint model needs at least two clusters in '{cluster}'; found {labels.size}.")

    y_raw = data[outcome].to_numpy(dtype=float)
    if family == "binomial":
        if not np.isin(y_raw, (0.0, 1.0)).all():
            raise FitError(f"the outcome '{outcome}' must be 0/1 for a binomial model.")
        y, y_centre, y_scale = y_raw, 0.0, 1.0
    else:
        y_centre, y_scale = float(y_raw.mean()), float(y_raw.std())
        if not y_scale > 0:
            raise FitError(f"the outcome '{outcome}' is constant.")
        y = (y_raw - y_centre) / y_scale

    z_cols, z_terms, z_centre, z_scale = [], [], [], []
    continuous, binaries, term_order = [], [], []
    n_missing = {}
    for col in predictors:
        series = data[col]
        missing = series.isna().to_numpy()
        n_missing[col] = int(missing.sum())
        if missing.all():
            raise FitError(f"predictor '{col}' has no recorded value among rows with the outcome recorded.")
        if _is_categorical(series, col, levels):
            found = [str(v) for v in (levels.get(col) or sorted(series.dropna().astype(str).unique()))]
            text = series.astype(str).to_numpy()
            if not missing.any():
                for level in found[1:]:
                    z_cols.append((text == level).astype(float))
                    z_terms.append(f"{col}[{level}]")
                    term_order.append(f"{col}[{level}]")
                    z_centre.append(0.0)
                    z_scale.append(1.0)
                continue
            if len(found) != 2:
                raise FitError(
                    f"predictor '{col}' is categorical with {len(found)} levels and {int(missing.sum())} "
                    "missing values; the joint model sums out incomplete binary predictors only. "
                    "Impute it with the multilevel imputation step, or merge levels into two.")
            values = np.where(missing, np.nan, (text == found[1]).astype(float))
            term = f"{col}[{found[1]}]"
            binaries.append(_Binary(col, term, values, ~missing))
            term_order.append(term)
            continue
        values = series.to_numpy(dtype=float)
        if not missing.any():
            centre, scale = float(values.mean()), float(values.std())
            if not scale > 0:
                raise FitError(f"predictor '{col}' is constant among the rows used.")
            z_cols.append((values - centre) / scale)
            z_terms.append(col)
            term_order.append(col)
            z_centre.append(centre)
            z_scale.append(scale)
            continue
        present = values[~missing]
        if np.isin(present, (0.0, 1.0)).all() and col not in distributions:
            binaries.append(_Binary(col, col, values, ~missing))
            term_order.append(col)
            continue
        dist = distributions.get(col) or choose_distribution(present)
        if dist == "lognormal" and np.any(present <= 0):
            raise FitError(f"'{col}' has values <= 0, so it cannot be lognormal; use distributions={{'{col}': "
                           "'normal'}.")
        centre, scale = float(present.mean()), float(present.std())
        if not scale > 0:
            raise FitError(f"predictor '{col}' is constant where recorded.")
        sub = np.log(present) if dist == "lognormal" else present
        sub_centre, sub_scale = float(sub.mean()), float(sub.std())
        response = np.full(values.size, np.nan)
        response[~missing] = (sub - sub_centre) / sub_scale
        continuous.append(_Continuous(col, dist, centre, scale, sub_centre, sub_scale, values, response,
                                      ~missing, "latent"))
        term_order.append(col)

    incomplete = [v.name for v in (*continuous, *binaries)]
    if focus is None:
        focus = max(incomplete, key=lambda c: n_missing[c]) if incomplete else predictors[0]
    elif focus not in predictors:
        raise FitError(f"focus '{focus}' is not one of the predictors {list(predictors)}.")
    focus_kind = ("continuous" if focus in [c.name for c in continuous]
                  else "binary" if focus in [b.name for b in binaries] else "complete")
    if missing_values == "marginal":
        continuous = [c if c.name != focus else _replace_mode(c, "marginal") for c in continuous]

    Z = np.column_stack(z_cols) if z_cols else np.empty((len(data), 0))
    return JointData(
        outcome=outcome, family=family, cluster=cluster, y=y, y_centre=y_centre, y_scale=y_scale,
        codes=codes.astype(np.int64), cluster_labels=np.asarray(labels), Z=Z, z_terms=tuple(z_terms),
        z_centre=np.asarray(z_centre, float), z_scale=np.asarray(z_scale, float),
        continuous=tuple(continuous), binaries=tuple(binaries), focus=focus, focus_kind=focus_kind,
        term_order=tuple(term_order), missingness_model=bool(missingness_model and focus_kind != "complete"),
        n_dropped_outcome=n_dropped, predictors=predictors,
    )


def _replace_mode(var: _Continuous, mode: str) -> _Continuous:
    from dataclasses import replace

    return replace(var, mode=mode)


# --------------------------------------------------------------------------
# Priors and parameterisation
# --------------------------------------------------------------------------
def _check_priors(priors: dict | None) -> dict:
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


def priors_table(priors: dict | None = None) -> pd.DataFrame:
    """The priors of the joint model, for the report.

    Parameters
    ----------
    priors : dict, optional
        Overrides of :data:`DEFAULT_PRIORS`.

    Returns
    -------
    pandas.DataFrame
        Columns ``parameter, applies_to, prior, scale``.
    """
    p = _check_priors(priors)

    def sd_text(spec):
        return f"Half-Normal(0, {spec[1]:g})" if spec[0] == "halfnormal" else \
            f"Half-Student-t({spec[1]:g}, 0, {spec[2]:g})"

    rows = [
        ("coefficients", "every submodel (outcome, predictors, missingness)",
         f"Normal(0, {p['coef'][1]:g})", "per SD of a numeric predictor; per unit of a 0/1 column"),
        ("intercepts", "every submodel", f"Normal(m, {p['intercept'][1]:g})",
         "m = logit(observed rate) for 0/1 responses, 0 for standardised continuous ones"),
        ("cluster SDs", "cluster intercepts of every submodel", sd_text(p["cluster_sd"]),
         "logit scale (binary responses) or SDs of the standardised response"),
        ("residual SDs", "gaussian outcome and continuous predictor submodels", sd_text(p["residual_sd"]),
         "SDs of the standardised response"),
        ("correlation", "outcome and missingness cluster intercepts", f"LKJ({float(p['lkj_eta']):g})",
         f"(rho + 1) / 2 ~ Beta({float(p['lkj_eta']):g}, {float(p['lkj_eta']):g})"),
    ]
    return pd.DataFrame(rows, columns=["parameter", "applies_to", "prior", "scale"])


def _information_share(fit, n_per_cluster: np.ndarray, family: str, rate: float | None = None) -> float:
    """Average of I_j / (1 + I_j), the cluster information rule (module docstring)."""
    tau = float(fit.cluster_sd)
    if not tau > 0:
        return 0.0
    per_obs = 1.0 / fit.residual_sd ** 2 if family == "gaussian" else rate * (1.0 - rate)
    info = n_per_cluster * per_obs * tau ** 2
    return float(np.mean(info / (1.0 + info)))


def _ml_fits(data: JointData) -> dict:
    """Maximum-likelihood random-intercept fits of each submodel on the rows it observes.

    ``{key: (fit or None, rows)}``; keys ``outcome`` (complete rows, all
    predictors, standardised as in the joint model), ``x<k>``, ``b<k>``,
    ``missingness``. Used for the parameterisation rule and the quadrature
    rule only; a fit that fails is None.
    """
    from hmlib.stats.mixed import fit_random_intercept

    def fit(response, X, rows, family):
        try:
            return fit_random_intercept(response[rows], X[rows], data.codes[rows], family=family)
        except Exception:  # noqa: BLE001 -- a failed ML fit only means "no information here"
            return None

    everything = np.ones(data.n, bool)
    base = np.column_stack([np.ones(data.n), data.Z])
    complete = everything.copy()
    for var in (*data.continuous, *data.binaries):
        complete &= var.observed
    outcome_rows = complete if complete.sum() >= 10 else everything
    x_fill = [np.where(v.observed, (v.values - v.centre) / v.scale, 0.0) for v in data.continuous]
    x_fill += [np.nan_to_num(b.values) for b in data.binaries]
    Xo = np.column_stack([base, *x_fill])
    fits = {"outcome": (fit(data.y, Xo, outcome_rows, data.family), outcome_rows)}
    for k, var in enumerate(data.continuous):
        fits[f"x{k}"] = (fit(np.nan_to_num(var.response), base, var.observed, "gaussian"), var.observed)
    for k, var in enumerate(data.binaries):
        fits[f"b{k}"] = (fit(np.nan_to_num(var.values), base, var.observed, "binomial"), var.observed)
    if data.missingness_model:
        fits["missingness"] = (fit(data.focus_missing.astype(float), base, everything, "binomial"), everything)
    return fits


def _choose_parameterisation(data: JointData, fits: dict, override: dict | None) -> tuple[dict, dict]:
    """``{submodel: "centred" | "noncentred"}`` and the information shares behind it."""
    override = dict(override or {})
    J = data.n_clusters
    shares: dict[str, float] = {}
    responses = {"outcome": data.y, "missingness": data.focus_missing.astype(float)}
    responses |= {f"x{k}": v.response for k, v in enumerate(data.continuous)}
    responses |= {f"b{k}": v.values for k, v in enumerate(data.binaries)}
    for key, (fit, rows) in fits.items():
        if fit is None:
            shares[key] = 0.0
            continue
        # every row informs the outcome's cluster effect, observed rows the predictor submodels'
        counted = np.ones(data.n, bool) if key == "outcome" else rows
        counts = np.bincount(data.codes[counted], minlength=J).astype(float)
        family = data.family if key == "outcome" else ("gaussian" if key.startswith("x") else "binomial")
        rate = float(np.mean(responses[key][rows])) if family == "binomial" else None
        shares[key] = _information_share(fit, counts, family, rate)
    choice = {key: ("centred" if value >= CENTRED_SHARE else "noncentred") for key, value in shares.items()}
    for key, value in override.items():
        if value not in ("centred", "noncentred"):
            raise FitError(f"parameterisation must be 'centred' or 'noncentred', got {value!r} for {key!r}.")
        choice[_submodel_key(data, key)] = value
    return choice, shares


def _cluster_blups(fit, J: int) -> np.ndarray:
    effects = np.zeros(J)
    effects[np.asarray(fit.cluster_labels, dtype=int)] = fit.cluster_effects
    return effects


def _choose_quadrature_nodes(data: JointData, fits: dict) -> tuple[int, float]:
    """Fewest Gauss-Hermite nodes whose marginal log-likelihood is within :data:`QUADRATURE_TOLERANCE`.

    The check plugs in the ML fits (:func:`_ml_fits`) with the focus
    coefficient pushed 4 standard errors further from 0, and compares the
    summed log-likelihood of the rows whose focus value is integrated out
    with a 64-node rule. Returns ``(nodes, error)``.
    """
    var = data.focus_variable
    if not isinstance(var, _Continuous) or var.mode != "marginal" or var.observed.all():
        return QUADRATURE_CANDIDATES[0], 0.0
    if data.family == "gaussian" and var.distribution == "normal":
        return QUADRATURE_CANDIDATES[0], 0.0          # integrated in closed form
    k = data.continuous.index(var)
    outcome_fit, _ = fits["outcome"]
    sub_fit, _ = fits[f"x{k}"]
    if outcome_fit is None or sub_fit is None:
        return QUADRATURE_CANDIDATES[-1], float("nan")
    J = data.n_clusters
    rows = np.flatnonzero(~var.observed)
    p = data.Z.shape[1]
    coef = np.asarray(outcome_fit.coef)
    col = 1 + p + k
    b_focus = abs(coef[col]) + 4.0 * float(outcome_fit.std_error[col])
    x_fill = [np.where(v.observed, (v.values - v.centre) / v.scale, 0.0) for v in data.continuous]
    x_fill += [np.nan_to_num(b.values) for b in data.binaries]
    Xo = np.column_stack([np.ones(data.n), data.Z, *x_fill])[rows]
    eta0 = Xo @ coef - Xo[:, col] * coef[col] + _cluster_blups(outcome_fit, J)[data.codes[rows]]
    mu = np.column_stack([np.ones(rows.size), data.Z[rows]]) @ np.asarray(sub_fit.coef) + \
        _cluster_blups(sub_fit, J)[data.codes[rows]]
    sigma = float(sub_fit.residual_sd)
    y = data.y[rows][:, None]
    sd_y = float(outcome_fit.residual_sd) if data.family == "gaussian" else None

    def loglik(K):
        t, w = np.polynomial.hermite_e.hermegauss(K)
        x = var.to_outcome_scale(mu[:, None] + sigma * t[None, :])
        eta = eta0[:, None] + b_focus * x
        if data.family == "binomial":
            ll = y * eta - np.logaddexp(0.0, eta)
        else:
            ll = stats.norm.logpdf(y, eta, sd_y)
        return float(special.logsumexp(ll + np.log(w / w.sum())[None, :], axis=1).sum())

    reference = loglik(64)
    for K in QUADRATURE_CANDIDATES:
        error = abs(loglik(K) - reference)
        if error < QUADRATURE_TOLERANCE:
            return K, error
    return QUADRATURE_CANDIDATES[-1], error


def _submodel_key(data: JointData, key: str) -> str:
    """User-facing submodel name (outcome, missingness or a predictor) -> internal key."""
    if key in ("outcome", "missingness"):
        return key
    for k, var in enumerate(data.continuous):
        if var.name == key:
            return f"x{k}"
    for k, var in enumerate(data.binaries):
        if var.name == key:
            return f"b{k}"
    raise FitError(f"parameterisation names {key!r}, which is not 'outcome', 'missingness' or an "
                   "incomplete predictor.")


# --------------------------------------------------------------------------
# The PyMC model
# --------------------------------------------------------------------------
def _sd_family(spec):
    """The PyMC distribution class and its arguments of an SD prior spec."""
    import pymc as pm

    if spec[0] == "halfnormal":
        return pm.HalfNormal, {"sigma": float(spec[1])}
    return pm.HalfStudentT, {"nu": float(spec[1]), "sigma": float(spec[2])}


def _sd_prior(name: str, spec):
    family, kwargs = _sd_family(spec)
    return family(name, **kwargs)


def _correlated_sd_log_prior(tau, rho, priors: dict):
    """Log prior density of (slope, resid) of the missingness cluster effects (see build_joint_model).

    ``log p_sd(tau) + log p_LKJ(rho) + log(sqrt(1 - rho^2) / tau)``, normalised,
    so that ``(tau, rho)`` have exactly the priors of :data:`DEFAULT_PRIORS`.
    """
    import pymc as pm
    import pytensor.tensor as pt

    family, kwargs = _sd_family(priors["cluster_sd"])
    sd_dist = family.dist(**kwargs)
    eta = float(priors["lkj_eta"])
    log_lkj = (eta - 1.0) * (pt.log1p(rho) + pt.log1p(-rho) - 2.0 * np.log(2.0)) - \
        special.betaln(eta, eta) - np.log(2.0)
    return pm.logp(sd_dist, tau) + log_lkj + 0.5 * pt.log1p(-rho ** 2) - pt.log(tau)


def _logit_rate(values: np.ndarray) -> float:
    rate = float(np.clip(np.mean(values), 1e-3, 1 - 1e-3))
    return float(special.logit(rate))


def _regression(prefix: str, Z: np.ndarray, priors: dict, intercept_loc: float):
    """Intercept + coefficient vector of one submodel; returns the fixed part (tensor)."""
    import pymc as pm

    intercept = pm.Normal(f"{prefix}_intercept", mu=intercept_loc, sigma=priors["intercept"][1])
    if Z.shape[1] == 0:
        return intercept
    coef = pm.Normal(f"{prefix}_coef", mu=0.0, sigma=priors["coef"][1], shape=Z.shape[1])
    return intercept + pm.math.dot(Z, coef)


def _cluster_effects(name: str, J: int, sd, centred: bool):
    import pymc as pm

    if centred:
        return pm.Normal(name, mu=0.0, sigma=sd, shape=J)
    z = pm.Normal(f"{name}_z", mu=0.0, sigma=1.0, shape=J)
    return pm.Deterministic(name, sd * z)


def _outcome_levels(intercept, sd, J: int):
    """Centred outcome cluster effects, hierarchically centred on the intercept.

    The cluster levels ``m_j = a + u_j ~ N(a, sd)`` are sampled and
    ``u_j = m_j - a`` derived (Jacobian 1, so the prior is unchanged). With
    informative clusters, the only case where the rule centres the outcome,
    this removes the posterior correlation between ``a`` and the mean of the
    ``u_j`` that slows the intercept down (Gelfand, Sahu & Carlin 1995).
    """
    import pymc as pm

    levels = pm.Normal("outcome_cluster_level", mu=intercept, sigma=sd, shape=J)
    return pm.Deterministic("outcome_cluster", levels - intercept)


def _normal_logp(y, mu, sd):
    import pytensor.tensor as pt

    return -0.5 * np.log(2 * np.pi) - pt.log(sd) - 0.5 * ((y - mu) / sd) ** 2


def build_joint_model(data: JointData, *, priors: dict | None = None, parameterisation: dict | None = None,
                      quadrature_nodes: int = 12):
    """The PyMC model of :class:`JointData` (see the module docstring).

    Parameters
    ----------
    data : JointData
    priors : dict, optional
        Overrides of :data:`DEFAULT_PRIORS`.
    parameterisation : dict, optional
        ``{"outcome" | "missingness" | "x<k>" | "b<k>": "centred" | "noncentred"}``
        (internal keys, as returned by the rule); missing keys are centred.
    quadrature_nodes : int
        Gauss-Hermite nodes for the integrated-out focus values.

    Returns
    -------
    pymc.Model
        Named variables: ``outcome_intercept``, ``outcome_coef``,
        ``outcome_cluster_sd``, ``outcome_cluster``, ``outcome_sigma``
        (gaussian); ``x<k>_*`` / ``b<k>_*`` per incomplete predictor
        (``_intercept, _coef, _cluster_sd, _cluster, _sigma, _missing``);
        ``miss_*`` and ``re_corr`` for the missingness submodel.
    """
    import pymc as pm
    import pytensor.tensor as pt

    priors = _check_priors(priors)
    parameterisation = dict(parameterisation or {})
    if int(quadrature_nodes) < 2:
        raise FitError(f"quadrature_nodes must be at least 2, got {quadrature_nodes!r}.")
    J, n, codes, Z = data.n_clusters, data.n, data.codes, data.Z
    centred = {key: parameterisation.get(key, "centred") == "centred"
               for key in ["outcome", "missingness", *(f"x{k}" for k in range(len(data.continuous))),
                           *(f"b{k}" for k in range(len(data.binaries)))]}
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(quadrature_nodes))
    log_weights = np.log(weights / weights.sum())
    miss = data.focus_missing.astype(float)

    with pm.Model() as model:
        # ---- cluster intercepts of the outcome (and of missingness, correlated)
        a = pm.Normal("outcome_intercept", mu=_logit_rate(data.y) if data.family == "binomial" else 0.0,
                      sigma=priors["intercept"][1])
        tau_y = _sd_prior("outcome_cluster_sd", priors["cluster_sd"])
        if data.missingness_model:
            # (u, w) bivariate normal: u = tau_y z1 and w = slope z1 + e, e ~ N(0, resid), i.e. the
            # regression of w on z1, sampled in (slope, resid) where its geometry is simpler (500 clusters,
            # 20,000 patients: bulk ESS of rho 390 in (tau_r, rho) coordinates, 492 in these). The
            # priors stay on tau_r = sqrt(slope^2 + resid^2) and rho = slope / tau_r (LKJ for 2 x 2:
            # (rho + 1) / 2 ~ Beta(eta, eta)), plus log |d(tau_r, rho) / d(slope, resid)|
            # = log(sqrt(1 - rho^2) / tau_r). u and w are each centred or not on their own rule.
            slope = pm.Flat("miss_slope")
            resid = pm.HalfFlat("miss_resid_sd")
            tau_r = pm.Deterministic("miss_cluster_sd", pt.sqrt(slope ** 2 + resid ** 2))
            rho = pm.Deterministic("re_corr", slope / tau_r)
            pm.Potential("miss_prior", _correlated_sd_log_prior(tau_r, rho, priors))
            if centred["outcome"]:
                u = _outcome_levels(a, tau_y, J)
                z1 = u / tau_y
            else:
                z1 = pm.Normal("outcome_cluster_z", 0.0, 1.0, shape=J)
                u = pm.Deterministic("outcome_cluster", tau_y * z1)
            if centred["missingness"]:
                w = pm.Normal("miss_cluster", mu=slope * z1, sigma=resid, shape=J)
            else:
                z2 = pm.Normal("miss_cluster_z", 0.0, 1.0, shape=J)
                w = pm.Deterministic("miss_cluster", slope * z1 + resid * z2)
            miss_fixed = _regression("miss", Z, priors, _logit_rate(miss))
            pm.Bernoulli("miss_indicator", logit_p=miss_fixed + w[codes], observed=miss)
        else:
            u = _outcome_levels(a, tau_y, J) if centred["outcome"] else \
                _cluster_effects("outcome_cluster", J, tau_y, False)

        # ---- incomplete continuous predictors
        outcome_x = []          # standardised original-scale value per row (tensor), 0 where integrated out
        focus_sub = None        # (mu at missing rows, sigma) of an integrated-out focus
        for k, var in enumerate(data.continuous):
            prefix = f"x{k}"
            fixed = _regression(prefix, Z, priors, 0.0)
            tau = _sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"])
            v = _cluster_effects(f"{prefix}_cluster", J, tau, centred[prefix])
            sigma = _sd_prior(f"{prefix}_sigma", priors["residual_sd"])
            mu = fixed + v[codes]
            obs_idx = np.flatnonzero(var.observed)
            mis_idx = np.flatnonzero(~var.observed)
            pm.Normal(f"{prefix}_observed", mu=mu[obs_idx], sigma=sigma, observed=var.response[obs_idx])
            known = np.where(var.observed, (var.values - var.centre) / var.scale, 0.0)
            if var.mode == "marginal":
                outcome_x.append(pt.as_tensor_variable(known))
                focus_sub = (mu[mis_idx], sigma, var, mis_idx)
            else:
                latent = pm.Normal(f"{prefix}_missing", mu=mu[mis_idx], sigma=sigma, shape=mis_idx.size)
                sub = latent * var.sub_scale + var.sub_centre
                raw = pt.exp(sub) if var.distribution == "lognormal" else sub
                outcome_x.append(pt.set_subtensor(pt.as_tensor_variable(known)[mis_idx],
                                                  (raw - var.centre) / var.scale))

        # ---- incomplete binary predictors: observed rows enter their submodel, missing ones are summed out
        binary_eta = []         # logit P(x = 1) per row, tensors
        for k, var in enumerate(data.binaries):
            prefix = f"b{k}"
            fixed = _regression(prefix, Z, priors, _logit_rate(var.values[var.observed]))
            tau = _sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"])
            v = _cluster_effects(f"{prefix}_cluster", J, tau, centred[prefix])
            eta_b = fixed + v[codes]
            obs_idx = np.flatnonzero(var.observed)
            pm.Bernoulli(f"{prefix}_observed", logit_p=eta_b[obs_idx], observed=var.values[obs_idx])
            binary_eta.append(eta_b)

        # ---- outcome
        p_total = Z.shape[1] + len(data.continuous) + len(data.binaries)
        b = pm.Normal("outcome_coef", mu=0.0, sigma=priors["coef"][1], shape=p_total)
        eta = a + u[codes]
        if Z.shape[1]:
            eta = eta + pm.math.dot(Z, b[: Z.shape[1]])
        for k, x in enumerate(outcome_x):
            eta = eta + b[Z.shape[1] + k] * x
        first_binary = Z.shape[1] + len(data.continuous)
        for k, var in enumerate(data.binaries):
            eta = eta + b[first_binary + k] * np.nan_to_num(var.values)
        sigma_y = _sd_prior("outcome_sigma", priors["residual_sd"]) if data.family == "gaussian" else None

        focus_k = next((k for k, v in enumerate(data.continuous) if v.mode == "marginal"), None)
        integrate = np.zeros(n, bool) if focus_sub is None else ~focus_sub[2].observed
        binary_missing = np.column_stack([~v.observed for v in data.binaries]) if data.binaries \
            else np.zeros((n, 0), bool)
        pattern_keys = np.column_stack([integrate, binary_missing])
        simple = ~pattern_keys.any(axis=1)
        if simple.any():
            idx = np.flatnonzero(simple)
            if data.family == "binomial":
                pm.Bernoulli("outcome_observed", logit_p=eta[idx], observed=data.y[idx])
            else:
                pm.Normal("outcome_observed", mu=eta[idx], sigma=sigma_y, observed=data.y[idx])
        patterns = np.unique(pattern_keys[~simple], axis=0) if (~simple).any() else np.zeros((0, 0))
        analytic = data.family == "gaussian" and focus_sub is not None and focus_sub[2].distribution == "normal"
        # Rows with summed-out or integrated-out values, grouped by pattern (which binaries are missing,
        # whether the focus is): the likelihood of a row is sum_states weight * p(y | state). A binary
        # outcome works on the probability scale (sigmoids, no log-sum-exp: 3 times cheaper, and
        # p(y | state) cannot underflow at sane linear predictors); a gaussian one on the log scale.
        binomial = data.family == "binomial"
        node_weights = weights / weights.sum()
        for p_index, key in enumerate(patterns):
            rows = np.flatnonzero((pattern_keys == key).all(axis=1))
            with_focus = bool(key[0])
            which = np.flatnonzero(key[1:])
            combos = np.array(list(itertools.product((0.0, 1.0), repeat=which.size)), dtype=float).reshape(
                2 ** which.size, which.size)
            eta_rows = eta[rows][:, None]                      # rows x 1
            weight = None                                      # rows x states (probability or log scale)
            if which.size:
                eta_rows = eta_rows + pt.dot(combos, b[first_binary + which])[None, :]   # rows x combos
                for col, k in enumerate(which):
                    signed = (2.0 * combos[:, col] - 1.0)[None, :] * binary_eta[k][rows][:, None]
                    term = pt.sigmoid(signed) if binomial else -pt.softplus(-signed)
                    weight = term if weight is None else (weight * term if binomial else weight + term)
            sd_rows = sigma_y
            if with_focus:
                mu_f, sigma_f, var, mis_idx = focus_sub
                pos = np.searchsorted(mis_idx, rows)
                coef_f = b[Z.shape[1] + focus_k]
                if analytic:
                    eta_rows = eta_rows + coef_f * mu_f[pos][:, None]
                    sd_rows = pt.sqrt(sigma_y ** 2 + (coef_f * sigma_f) ** 2)
                else:
                    sub = mu_f[pos][:, None] + sigma_f * nodes[None, :]        # rows x K
                    raw = sub * var.sub_scale + var.sub_centre
                    raw = pt.exp(raw) if var.distribution == "lognormal" else raw
                    x_nodes = (raw - var.centre) / var.scale
                    # states = combos x nodes, flattened combo-major
                    eta_rows = (eta_rows[:, :, None] + coef_f * x_nodes[:, None, :]).reshape((rows.size, -1))
                    per_node = node_weights if binomial else log_weights
                    if weight is None:
                        weight = pt.as_tensor_variable(per_node)[None, :]
                    elif binomial:
                        weight = (weight[:, :, None] * per_node[None, None, :]).reshape((rows.size, -1))
                    else:
                        weight = (weight[:, :, None] + per_node[None, None, :]).reshape((rows.size, -1))
            if binomial:
                sign = (2.0 * data.y[rows] - 1.0)[:, None]
                likelihood = pt.sigmoid(sign * eta_rows)
                total = pt.log((likelihood * weight).sum(axis=1)).sum()
            else:
                ll = _normal_logp(data.y[rows][:, None], eta_rows, sd_rows)
                total = ll.sum() if weight is None else pt.logsumexp(ll + weight, axis=1).sum()
            pm.Potential(f"outcome_marginal_{p_index}", total)
    return model


# --------------------------------------------------------------------------
# Back to the original scale
# --------------------------------------------------------------------------
def outcome_to_original_scale(data: JointData, intercept: np.ndarray, coef: np.ndarray,
                              cluster_sd: np.ndarray, sigma: np.ndarray | None = None) -> dict:
    """Outcome coefficients on the original scale, draw by draw.

    With numeric predictors standardised as ``(x - m) / s`` (0/1 columns not)
    and a gaussian outcome as ``(y - m_y) / s_y``: ``beta = s_y b / s``,
    ``Intercept = m_y + s_y (a - sum b m / s)``, SDs times ``s_y``.

    Parameters
    ----------
    data : JointData
    intercept, cluster_sd : numpy.ndarray, shape (...)
    coef : numpy.ndarray, shape (..., p)
        In :attr:`JointData.outcome_terms` order.
    sigma : numpy.ndarray, optional
        Residual SD (gaussian).

    Returns
    -------
    dict
        ``{term: draws}`` with ``Intercept``, every term of ``outcome_terms``,
        ``sd(<cluster>)`` and, for gaussian, ``sigma``.
    """
    centres, scales = _outcome_standardisation(data)
    coef = np.asarray(coef, dtype=float)
    orig = coef / scales * data.y_scale
    icpt = data.y_centre + data.y_scale * (np.asarray(intercept) - (coef * centres / scales).sum(axis=-1))
    out = {"Intercept": icpt}
    for k, term in enumerate(data.outcome_terms):
        out[term] = orig[..., k]
    out[f"sd({data.cluster})"] = np.asarray(cluster_sd) * data.y_scale
    if sigma is not None:
        out["sigma"] = np.asarray(sigma) * data.y_scale
    return out


def _outcome_standardisation(data: JointData):
    centres = np.r_[data.z_centre, [c.centre for c in data.continuous], np.zeros(len(data.binaries))]
    scales = np.r_[data.z_scale, [c.scale for c in data.continuous], np.ones(len(data.binaries))]
    return centres, scales


# --------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------
def _diagnostics(draws: np.ndarray) -> dict:
    """R-hat (rank-normalised), bulk and tail ESS, MCSE of the mean, of (chain, draw) draws."""
    import arviz as az
    import xarray as xr

    ds = xr.Dataset({"q": (("chain", "draw"), np.asarray(draws, dtype=float))})
    ess_bulk = float(az.ess(ds, method="bulk")["q"])
    ess_tail = float(az.ess(ds, method="tail", prob=(0.05, 0.95))["q"])
    rhat = float(az.rhat(ds)["q"])
    mcse = float(np.std(draws) / math.sqrt(max(ess_bulk, 1.0)))
    return {"rhat": rhat, "ess_bulk": ess_bulk, "ess_tail": ess_tail, "mcse_mean": mcse}


def _summarise(draws: np.ndarray, level: float = _LEVEL) -> dict:
    flat = np.asarray(draws, dtype=float).reshape(-1)
    tail = (1.0 - level) / 2.0
    return {"estimate": float(flat.mean()), "std_error": float(flat.std(ddof=1)),
            "ci_lower": float(np.quantile(flat, tail)), "ci_upper": float(np.quantile(flat, 1 - tail))}


def _gate_message(table: pd.DataFrame, divergences: int, settings_hint: str) -> tuple[bool, str]:
    offenders = []
    for row in table.itertuples(index=False):
        problems = []
        if not row.rhat <= GATE["rhat_max"]:
            problems.append(f"R-hat {row.rhat:.3f} > {GATE['rhat_max']}")
        if not row.ess_bulk >= GATE["ess_bulk_min"]:
            problems.append(f"bulk ESS {row.ess_bulk:.0f} < {GATE['ess_bulk_min']:.0f}")
        if not row.ess_tail >= GATE["ess_tail_min"]:
            problems.append(f"tail ESS {row.ess_tail:.0f} < {GATE['ess_tail_min']:.0f}")
        if problems:
            offenders.append(f"{row.term} ({', '.join(problems)})")
    if divergences > GATE["divergences_max"]:
        offenders.append(f"{divergences} divergent transition(s)")
    if not offenders:
        return True, (f"converged: R-hat <= {table['rhat'].max():.3f}, bulk ESS >= {table['ess_bulk'].min():.0f}, "
                      f"tail ESS >= {table['ess_tail'].min():.0f} for every reported quantity, "
                      "no divergent transitions.")
    return False, f"not converged: {'; '.join(offenders)}. {settings_hint}"


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class JointModelResult:
    """A fitted joint model. Build it with :func:`fit_joint_model`.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per reported quantity: ``term, estimate, std_error, ci_lower,
        ci_upper, rhat, ess_bulk, ess_tail, mcse_mean`` (estimate = posterior
        mean, std_error = posterior SD, 95% equal-tailed interval, original
        scale). Terms: ``Intercept``, the predictors' terms, ``sd(<cluster>)``,
        then ``sigma`` (gaussian) and ``corr(missingness, outcome)``.
    converged : bool
        The gate of :data:`GATE` passed.
    convergence_message : str
        ``"converged: ..."`` or ``"not converged: ..."`` naming each offender.
    divergences : int
    timing : dict
        ``build_s`` (data preparation, parameterisation rule, PyMC model),
        ``compile_s`` (nutpie/numba compile), ``sampling_s``, ``post_s``,
        ``total_s``, and ``cpu_s`` (process CPU time of build + compile +
        sampling).
    ess_per_second : dict
        Bulk ESS per wall second (build + compile + sampling) of the focus
        coefficient and of the cluster SD.
    settings : dict
        draws, tune, chains, seed, fast, missing_values, quadrature_nodes,
        parameterisation chosen and the information shares behind it,
        distributions of the incomplete predictors, priors.
    correlation : dict or None
        Posterior of the missingness/outcome cluster-effect correlation
        (``estimate, std_error, ci_lower, ci_upper, prob_positive``).
    n_patients, n_clusters, n_dropped_outcome : int
    """

    data: JointData = field(repr=False)
    summary: pd.DataFrame
    converged: bool
    convergence_message: str
    divergences: int
    timing: dict
    ess_per_second: dict
    settings: dict
    correlation: dict | None
    n_patients: int
    n_clusters: int
    n_dropped_outcome: int
    draws: dict = field(repr=False)
    imputations: dict = field(repr=False)
    trace: object = field(repr=False, default=None)
    sd_draws: dict = field(repr=False, default_factory=dict)

    # -- the estimates contract
    def to_estimates(self) -> pd.DataFrame:
        """Rows of ``estimates.csv`` (method ``joint_bayes``), contract terms only."""
        terms = ["Intercept", *self.data.term_order, f"sd({self.data.cluster})"]
        table = self.summary.set_index("term").loc[terms].reset_index()
        # Estimates that failed the convergence gate are flagged in the method name itself.
        table.insert(0, "method", METHOD if self.converged else f"{METHOD}:not_converged")
        table["n_patients"] = self.n_patients
        table["n_clusters"] = self.n_clusters
        return table.loc[:, ["method", "term", "estimate", "std_error", "ci_lower", "ci_upper",
                             "n_patients", "n_clusters"]]

    def priors_table(self) -> pd.DataFrame:
        """The priors used (see :func:`priors_table`)."""
        return priors_table(self.settings["priors"])

    # -- focus variable by cluster
    def _focus(self):
        return self.data.focus_variable

    def partial_pooling(self) -> pd.DataFrame:
        """The focus variable's cluster intercepts: raw vs partially pooled.

        Returns
        -------
        pandas.DataFrame
            One row per cluster: ``cluster, n_patients, n_observed, raw_mean``
            (mean of the observed values), ``raw_effect`` (the cluster's own
            deviation: mean over its observed rows of the value minus the
            fixed part at the posterior mean, on the submodel's scale in
            original units; logit for a binary focus; NaN without observed
            values), ``pooled_effect`` and ``pooled_effect_sd`` (posterior
            mean and SD of the cluster intercept, same units), ``shrinkage``
            (``1 / (1 + n_obs I tau^2)`` at posterior means: 0 = the cluster's
            own estimate, 1 = the average cluster), ``pooled_mean`` and
            ``pooled_mean_sd`` (posterior mean and SD of the cluster's mean
            of the completed values: observed plus imputed). Empty when the
            focus is complete.
        """
        return self.imputations.get("partial_pooling", pd.DataFrame())

    def posterior_predictive(self) -> pd.DataFrame:
        """Posterior predictive check of the focus variable by cluster.

        Replicates the observed rows from the focus submodel (thinned
        posterior draws) and compares, per cluster with observed values,
        the observed mean and SD with the replicated ones: columns
        ``cluster, n_observed, observed_mean, replicated_mean, replicated_mean_lower,
        replicated_mean_upper, p_mean`` (share of replications with a mean at
        least the observed one), and the same for the SD (continuous focus
        only), plus ``mean_outside`` (observed mean outside the 95%
        predictive interval).
        """
        return self.imputations.get("ppc", pd.DataFrame())

    def imputed_in_unmeasured(self) -> dict:
        """The imputed focus values in clusters that never measured it.

        Returns
        -------
        dict
            ``clusters`` (labels), ``n_patients``, ``imputed`` (mean, sd and
            5/25/50/75/95% quantiles over all imputed values and draws),
            ``observed`` (the same for the observed values elsewhere),
            ``histogram`` (shared bin edges and both densities).
        """
        return self.imputations.get("unmeasured", {})

    # -- narrative and serialisation
    def narrative(self) -> list[str]:
        """Plain-language sentences generated from the numbers of this result."""
        d = self.data
        s = self.summary.set_index("term")
        focus = d.focus
        sentences = []
        term = _focus_term(d)
        if term is not None and term in s.index:
            r = s.loc[term]
            unit = "one unit" if d.focus_kind != "binary" else f"'{term}' (vs not)"
            if d.family == "binomial":
                sentences.append(
                    f"In the joint Bayesian model, {unit} higher {focus} goes with a log-odds ratio of "
                    f"{r.estimate:.3f} for {d.outcome} (odds ratio {math.exp(r.estimate):.2f}; 95% credible "
                    f"interval {r.ci_lower:.3f} to {r.ci_upper:.3f}), the missing {focus} values being "
                    "modelled rather than dropped.")
            else:
                sentences.append(
                    f"In the joint Bayesian model, {unit} higher {focus} goes with a change of {r.estimate:.3g} "
                    f"in {d.outcome} (95% credible interval {r.ci_lower:.3g} to {r.ci_upper:.3g}).")
        sd = s.loc[f"sd({d.cluster})"]
        scale = "log-odds" if d.family == "binomial" else f"{d.outcome} units"
        sentences.append(f"The between-{d.cluster} SD of the outcome is {sd.estimate:.3f} ({scale}; 95% credible "
                         f"interval {sd.ci_lower:.3f} to {sd.ci_upper:.3f}).")
        if self.correlation is not None:
            c = self.correlation
            if c["ci_lower"] > 0 or c["ci_upper"] < 0:
                direction = "higher" if c["estimate"] > 0 else "lower"
                verdict = (f"{d.cluster}s that leave {focus} unrecorded more often tend to have {direction} "
                           f"outcome propensity, so missingness is informative about the {d.cluster} "
                           "effects; the joint model uses this, complete-case analysis cannot")
            else:
                verdict = (f"the interval includes 0: no clear evidence that {d.cluster}s that record {focus} "
                           "less often differ in outcome propensity")
            sentences.append(
                f"The correlation between a {d.cluster}'s tendency to leave {focus} missing and its outcome "
                f"random effect is {c['estimate']:.2f} (95% credible interval {c['ci_lower']:.2f} to "
                f"{c['ci_upper']:.2f}; posterior probability {c['prob_positive']:.2f} that it is positive): "
                f"{verdict}. This assumes missingness depends on the {d.cluster}'s latent propensity and the "
                f"complete predictors, not on the unrecorded value itself.")
        pooled = self.partial_pooling()
        if len(pooled):
            partly = pooled.loc[(pooled["n_observed"] > 0) & (pooled["n_observed"] < pooled["n_patients"])]
            never = pooled.loc[pooled["n_observed"] == 0]
            if len(partly):
                share = partly["n_observed"] / partly["n_patients"]
                lo = partly.loc[share.idxmax()]
                hi = partly.loc[share.idxmin()]
                sentences.append(
                    f"Imputation uncertainty is uneven: the posterior SD of a {d.cluster}'s mean {focus} is "
                    f"{lo.pooled_mean_sd:.3g} where {lo.n_observed / lo.n_patients:.0%} of values were "
                    f"observed and {hi.pooled_mean_sd:.3g} where {hi.n_observed / hi.n_patients:.0%} "
                    "were" + (f", and {never['pooled_mean_sd'].mean():.3g} on average in the {len(never)} "
                              f"{d.cluster}(s) that never measured it." if len(never) else "."))
        unmeasured = self.imputed_in_unmeasured()
        if unmeasured.get("clusters"):
            imp, obs = unmeasured["imputed"], unmeasured["observed"]
            sentences.append(
                f"In the {len(unmeasured['clusters'])} {d.cluster}(s) that never recorded {focus} "
                f"({unmeasured['n_patients'] if unmeasured['n_patients'] >= 11 else 'fewer than 11'} "
                f"patients), the imputed values have mean {imp['mean']:.3g} "
                f"(90% of them between {imp['q05']:.3g} and {imp['q95']:.3g}), against an observed mean of "
                f"{obs['mean']:.3g} elsewhere; these values rest entirely on the model (the {d.cluster}'s "
                "own level is drawn from the between-cluster distribution), so they widen the uncertainty "
                "rather than add information.")
        ppc = self.posterior_predictive()
        if len(ppc):
            outside = int(ppc["mean_outside"].sum())
            sentences.append(
                f"Posterior predictive check: the observed mean {focus} lies outside the 95% predictive "
                f"interval of its replicated mean in {outside} of {len(ppc)} {d.cluster}s with observed values"
                + (" (about 5% are expected by chance)." if outside <= max(1, round(0.1 * len(ppc)))
                   else f"; more than chance would give: the {focus} submodel misfits some {d.cluster}s."))
        sentences.append(("Sampling " + self.convergence_message[0].lower() + self.convergence_message[1:]) if
                         self.converged else "Sampling " + self.convergence_message)
        t = self.timing
        eps = self.ess_per_second
        sentences.append(
            f"Building and compiling took {t['build_s'] + t['compile_s']:.0f} s and sampling "
            f"{t['sampling_s']:.0f} s ({self.settings['chains']} chains x {self.settings['draws']} draws); "
            f"effective samples per second: {eps.get('focus', float('nan')):.1f} for the {focus} coefficient, "
            f"{eps['cluster_sd']:.1f} for the cluster SD.")
        return sentences

    def posterior_draws(self, fingerprint: str = "") -> "PosteriorDraws":
        """The parameter draws a prior-sensitivity reweighting needs, without any data row.

        Parameters
        ----------
        fingerprint : str
            Identifies the data and model the fit belongs to (see
            :func:`model_fingerprint`), so that a saved file is not reused
            for other data.
        """
        terms = ["Intercept", *self.data.term_order, f"sd({self.data.cluster})"]
        return PosteriorDraws(
            terms={t: np.asarray(self.draws[t], dtype=float) for t in terms},
            cluster_sds={k: np.asarray(v, dtype=float) for k, v in self.sd_draws.items()},
            cluster_sd_prior=tuple(self.settings["priors"]["cluster_sd"]), converged=self.converged,
            convergence_message=self.convergence_message, n_patients=self.n_patients,
            n_clusters=self.n_clusters, fingerprint=fingerprint)

    def to_dict(self, min_cell: int = 11) -> dict:
        """JSON-ready aggregates, safe to share: no patient-level rows, small cells suppressed.

        Parameters
        ----------
        min_cell : int, default 11
            The per-cluster counts of the partial-pooling and predictive-check
            tables, and the observed means derived from them, are suppressed
            below it (:func:`hmlib.privacy.suppress_cluster_counts`, with
            complementary suppression); each cluster keeps a ``measured`` flag
            (any observed value) so that never-measured clusters stay known.
            NaN becomes None, numpy types plain Python.
        """
        from hmlib.privacy import suppress_cluster_counts, suppress_counts
        from hmlib.results import to_jsonable

        pooled = self.partial_pooling()
        if len(pooled):
            measured = pooled["n_observed"] > 0
            pooled = suppress_cluster_counts(pooled, n_column="n_patients", observed_column="n_observed",
                                             min_cell=min_cell, derived_from_observed=["raw_mean", "raw_effect"])
            pooled.insert(1, "measured", measured.to_numpy())
        ppc = self.posterior_predictive()
        if len(ppc):
            # the observed mean/SD and what is compared with them (p-values, outside flags) reveal the values
            derived = [c for c in ppc.columns if c.startswith(("observed_", "p_")) or c.endswith("_outside")]
            ppc = suppress_counts(ppc, ["n_observed"], min_cell, column_totals=False,
                                  derived_columns={c: ["n_observed"] for c in derived}).display
        settings = dict(self.settings)
        settings["priors"] = {k: list(v) if isinstance(v, tuple) else v for k, v in settings["priors"].items()}
        return to_jsonable({
            "method": METHOD,
            "outcome": self.data.outcome,
            "family": self.data.family,
            "cluster": self.data.cluster,
            "focus": self.data.focus,
            "n_patients": self.n_patients,
            "n_clusters": self.n_clusters,
            "n_dropped_outcome": self.n_dropped_outcome,
            "summary": self.summary.to_dict(orient="records"),
            "estimates": self.to_estimates().to_dict(orient="records"),
            "converged": self.converged,
            "convergence_message": self.convergence_message,
            "divergences": self.divergences,
            "timing": dict(self.timing),
            "ess_per_second": dict(self.ess_per_second),
            "settings": settings,
            "correlation": self.correlation,
            "priors": self.priors_table().to_dict(orient="records"),
            "partial_pooling": pooled.to_dict(orient="records"),
            "posterior_predictive": ppc.to_dict(orient="records"),
            "imputed_in_unmeasured": self.imputed_in_unmeasured(),
            "narrative": self.narrative(),
        })


# --------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------
def _registry_arguments(registry) -> dict:
    p = registry.params
    return {"frame": registry.frame, "outcome": p.outcome, "predictors": list(p.predictors),
            "cluster": p.cluster, "family": p.outcome_family, "levels": registry.levels,
            "focus": p.focus, "seed": p.seed, "fast": p.fast}


def fit_joint_model(data, *, outcome: str | None = None, predictors=None, cluster: str | None = None,
                    family: str | None = None, levels: dict | None = None, focus: str | None = None,
                    draws: int | None = None, tune: int | None = None, chains: int = 2, seed: int | None = None,
                    fast: bool | None = None, priors: dict | None = None, distributions: dict | None = None,
                    parameterisation: dict | None = None, missing_values: str = "marginal",
                    missingness_model: bool = True, quadrature_nodes: int | str = "auto", cores: int | None = None,
                    adaptation: str = "auto", keep_trace: bool = False) -> JointModelResult:
    """Fit the joint model (module docstring) with nutpie and summarise it.

    Parameters
    ----------
    data : hmlib.data.Registry or pandas.DataFrame
        A registry (outcome, predictors, cluster, family, levels, focus, seed
        and fast come from its params unless given) or a frame (then
        ``outcome``, ``predictors``, ``cluster``, ``family`` are required).
    draws, tune : int, optional
        Per chain; default 1000 each (500 in fast mode).
    chains : int
    seed : int
        Seeds the sampler and the post-hoc imputation draws. Required for a
        frame (a registry supplies its params' seed).
    fast : bool
        Small settings for tests and quick looks (draws = tune = 500).
    priors : dict, optional
        Overrides of :data:`DEFAULT_PRIORS`, e.g.
        ``{"cluster_sd": ("halfstudentt", 3, 2.5)}``.
    distributions : dict, optional
        ``{column: "normal" | "lognormal"}`` (default by :func:`choose_distribution`).
    parameterisation : dict, optional
        ``{"outcome" | "missingness" | <predictor>: "centred" | "noncentred"}``
        overriding the cluster-information rule.
    missing_values : {"marginal", "latent"}
        Integrate out the focus variable's missing values (default) or make
        them latent parameters (as brms).
    missingness_model : bool
        Include the shared-parameter missingness submodel.
    quadrature_nodes : int or "auto"
        Gauss-Hermite nodes for the integrated-out focus values; ``"auto"``
        takes the fewest of :data:`QUADRATURE_CANDIDATES` whose log-likelihood
        error is below :data:`QUADRATURE_TOLERANCE` at a pessimistic plug-in
        (see :func:`_choose_quadrature_nodes`).
    cores : int, optional
        Chains run in parallel on this many cores (default ``chains``).
    adaptation : {"auto", "diag", "low_rank"}
        nutpie's mass-matrix adaptation. ``"auto"``: ``"low_rank"`` (a
        diagonal plus low-rank mass matrix, which learns the posterior
        correlations of intercepts, cluster effects and SDs) when the model
        has at most :data:`LOW_RANK_MAX_PARAMETERS` unconstrained parameters,
        else ``"diag"`` (the low-rank update costs too much with thousands of
        latent missing values).
    keep_trace : bool
        Keep nutpie's DataTree on the result (large: holds every draw).

    Returns
    -------
    JointModelResult

    Raises
    ------
    FitError
        Bad arguments or data the model cannot take (see :func:`prepare_joint_data`).
    """
    import nutpie

    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if hasattr(data, "params") and hasattr(data, "frame"):
        reg = _registry_arguments(data)
        frame = reg.pop("frame")
        outcome = outcome or reg["outcome"]
        predictors = predictors or reg["predictors"]
        cluster = cluster or reg["cluster"]
        family = family or reg["family"]
        levels = levels if levels is not None else reg["levels"]
        focus = focus or reg["focus"]
        seed = reg["seed"] if seed is None else seed
        fast = reg["fast"] if fast is None else fast
    else:
        frame = data
        if outcome is None or predictors is None or cluster is None or family is None:
            raise FitError("fit_joint_model on a data frame needs outcome=, predictors=, cluster= and family=.")
        if seed is None:
            raise FitError("fit_joint_model needs seed= (an integer) so that the run can be repeated.")
    fast = bool(fast)
    draws = int(draws if draws is not None else (_FAST["draws"] if fast else 1000))
    tune = int(tune if tune is not None else (_FAST["tune"] if fast else 1000))
    if draws < 4 or tune < 0 or chains < 1:
        raise FitError(f"need draws >= 4, tune >= 0 and chains >= 1; got {draws}, {tune}, {chains}.")
    checked_priors = _check_priors(priors)
    jd = prepare_joint_data(frame, outcome=outcome, predictors=predictors, cluster=cluster, family=family,
                            levels=levels, focus=focus, distributions=distributions,
                            missing_values=missing_values, missingness_model=missingness_model)
    fits = _ml_fits(jd)
    choice, shares = _choose_parameterisation(jd, fits, parameterisation)
    quadrature_error = None
    if quadrature_nodes == "auto":
        quadrature_nodes, quadrature_error = _choose_quadrature_nodes(jd, fits)
    elif isinstance(quadrature_nodes, str):
        raise FitError(f"quadrature_nodes must be an integer or 'auto', got {quadrature_nodes!r}.")
    model = build_joint_model(jd, priors=checked_priors, parameterisation=choice,
                              quadrature_nodes=quadrature_nodes)
    keep = [name for name in model.named_vars if not name.endswith("_z")
            and not name.endswith("_observed") and not name.startswith("outcome_marginal")
            and name not in ("miss_indicator", "miss_prior", "miss_slope", "miss_resid_sd",
                                          "outcome_cluster_level")]
    t_built = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, var_names=keep)
    t_compiled = time.perf_counter()
    n_free = int(sum(np.size(v) for v in model.initial_point().values()))
    if adaptation == "auto":
        adaptation = "low_rank" if n_free <= LOW_RANK_MAX_PARAMETERS else "diag"
    elif adaptation not in ("diag", "low_rank"):
        raise FitError(f"adaptation must be 'auto', 'diag' or 'low_rank', got {adaptation!r}.")
    trace = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, cores=cores or chains,
                          seed=int(seed), progress_bar=False, adaptation=adaptation)
    t_sampled, cpu_sampled = time.perf_counter(), time.process_time()

    posterior = trace.posterior
    post = {name: posterior[name].values for name in posterior.data_vars}
    divergences = int(np.asarray(trace.sample_stats["diverging"].values).sum())

    gaussian = jd.family == "gaussian"
    original = outcome_to_original_scale(
        jd, post["outcome_intercept"], post["outcome_coef"], post["outcome_cluster_sd"],
        post["outcome_sigma"] if gaussian else None)
    rows = []
    order = ["Intercept", *jd.term_order, f"sd({jd.cluster})"] + (["sigma"] if gaussian else [])
    for term in order:
        rows.append({"term": term, **_summarise(original[term]), **_diagnostics(original[term])})
    correlation = None
    if jd.missingness_model:
        rho = post["re_corr"]
        rows.append({"term": "corr(missingness, outcome)", **_summarise(rho), **_diagnostics(rho)})
        correlation = {**_summarise(rho), "prob_positive": float(np.mean(rho > 0))}
    summary = pd.DataFrame(rows)
    hint = (f"Run longer (draws={draws}, tune={tune} now; try draws={2 * draws}, tune={max(2 * tune, 1000)}) "
            "or check the model." if not fast else "Fast mode uses small settings; run without fast=True.")
    converged, message = _gate_message(summary, divergences, hint)

    build_s = t_built - start_wall
    compile_s = t_compiled - t_built
    sampling_s = t_sampled - t_compiled
    used = build_s + compile_s + sampling_s
    table = summary.set_index("term")
    focus_term = _focus_term(jd)
    ess_per_second = {"cluster_sd": float(table.loc[f"sd({jd.cluster})", "ess_bulk"] / used)}
    if focus_term is not None and focus_term in table.index:
        ess_per_second["focus"] = float(table.loc[focus_term, "ess_bulk"] / used)

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20261127]))
    imputations = _focus_by_cluster(jd, post, rng)
    t_post = time.perf_counter()
    timing = {"build_s": build_s, "compile_s": compile_s, "sampling_s": sampling_s,
              "post_s": t_post - t_sampled, "total_s": t_post - start_wall,
              "cpu_s": cpu_sampled - start_cpu}
    settings = {
        "draws": draws, "tune": tune, "chains": chains, "seed": int(seed), "fast": fast,
        "missing_values": missing_values, "quadrature_nodes": int(quadrature_nodes),
        "quadrature_error_check": quadrature_error,
        "missingness_model": jd.missingness_model,
        "parameterisation": {_display_key(jd, k): v for k, v in choice.items()},
        "information_share": {_display_key(jd, k): v for k, v in shares.items()},
        "distributions": {c.name: c.distribution for c in jd.continuous},
        "binary_summed_out": [b.name for b in jd.binaries],
        "priors": checked_priors, "sampler": f"nutpie NUTS, {adaptation} mass-matrix adaptation",
        "adaptation": adaptation, "n_parameters": n_free,
    }
    return JointModelResult(
        data=jd, summary=summary, converged=converged, convergence_message=message, divergences=divergences,
        timing=timing, ess_per_second=ess_per_second, settings=settings, correlation=correlation,
        n_patients=jd.n, n_clusters=jd.n_clusters, n_dropped_outcome=jd.n_dropped_outcome,
        draws={k: original[k] for k in original} | ({"re_corr": post["re_corr"]} if jd.missingness_model else {}),
        imputations=imputations, trace=trace if keep_trace else None,
        sd_draws={k: v for k, v in post.items() if k.endswith("_cluster_sd")})


def _focus_term(data: JointData):
    """The outcome term of the focus variable (None if it is not a predictor term)."""
    var = data.focus_variable
    if var is None:
        return data.focus if data.focus in data.term_order else None
    return var.term if isinstance(var, _Binary) else var.name


def _display_key(data: JointData, key: str) -> str:
    if key.startswith("x") and key[1:].isdigit():
        return data.continuous[int(key[1:])].name
    if key.startswith("b") and key[1:].isdigit():
        return data.binaries[int(key[1:])].name
    return key


# --------------------------------------------------------------------------
# Post-processing: imputations, partial pooling, posterior predictive checks
# --------------------------------------------------------------------------
def _thin(total: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(total, wanted)).round().astype(int))


def _flat(post: dict, name: str, index: np.ndarray) -> np.ndarray:
    values = post[name]
    return values.reshape(-1, *values.shape[2:])[index]


def _fixed_part(post: dict, prefix: str, Z: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Draws x rows of the intercept + Z coef of one submodel."""
    fixed = np.repeat(_flat(post, f"{prefix}_intercept", index)[:, None], Z.shape[0], axis=1)
    if Z.shape[1]:
        fixed = fixed + _flat(post, f"{prefix}_coef", index) @ Z.T
    return fixed


def _outcome_eta_known(data: JointData, post: dict, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draws x rows of the outcome linear predictor without the summed-out/integrated parts (numpy)."""
    Z = data.Z[rows]
    coef = _flat(post, "outcome_coef", index)
    eta = _flat(post, "outcome_intercept", index)[:, None] + _flat(post, "outcome_cluster", index)[:,
                                                                                                 data.codes[rows]]
    p = Z.shape[1]
    if p:
        eta = eta + coef[:, :p] @ Z.T
    for k, var in enumerate(data.continuous):
        known = np.where(var.observed[rows], (var.values[rows] - var.centre) / var.scale, 0.0)
        x = np.broadcast_to(known, eta.shape).copy()
        if var.mode == "latent":
            mis_idx = np.flatnonzero(~var.observed)
            pos = np.searchsorted(mis_idx, rows)
            take = ~var.observed[rows]
            latent = _flat(post, f"x{k}_missing", index)[:, pos[take]]
            x[:, take] = var.to_outcome_scale(latent)
        eta = eta + coef[:, p + k][:, None] * x
    first = p + len(data.continuous)
    for k, var in enumerate(data.binaries):
        eta = eta + coef[:, first + k][:, None] * np.nan_to_num(var.values[rows])
    return eta


def _draw_focus_missing(data: JointData, post: dict, index: np.ndarray, rng) -> np.ndarray:
    """Draws x missing rows of the focus variable (submodel scale for continuous, 0/1 for binary).

    Latent focus: the stored draws. Integrated-out or summed-out focus:
    draws from ``p(x | y, theta)`` by rejection sampling, proposing the row's
    missing values (the focus and any missing binary predictor of the row)
    from their submodels and accepting with probability
    ``p(y | x) / max p(y | .)`` (the bound is 1 for a binary outcome and
    ``1 / (sigma sqrt(2 pi))`` for a gaussian one); this is exact. Each round
    works on the entries still pending; the rare entries still pending after
    :data:`_REJECTION_ROUNDS` rounds (acceptance below about 2%: an event in a
    patient the model gives a tiny risk) are drawn by sampling-importance
    resampling from :data:`_SIR_PROPOSALS` proposals.
    """
    var = data.focus_variable
    mis_rows = np.flatnonzero(~var.observed)
    if isinstance(var, _Continuous) and var.mode == "latent":
        k = data.continuous.index(var)
        return _flat(post, f"x{k}_missing", index)
    eta_known = _outcome_eta_known(data, post, index, mis_rows)
    p = data.Z.shape[1]
    coef = _flat(post, "outcome_coef", index)
    first = p + len(data.continuous)
    binary_props = []     # (coefficient draws, P(x = 1) draws x rows, missing in row, is the focus)
    for k, b in enumerate(data.binaries):
        missing_here = ~b.observed[mis_rows]
        if not missing_here.any():
            continue
        eta_b = _fixed_part(post, f"b{k}", data.Z[mis_rows], index) + \
            _flat(post, f"b{k}_cluster", index)[:, data.codes[mis_rows]]
        binary_props.append((coef[:, first + k], special.expit(eta_b), missing_here, b is var))
    continuous_focus = isinstance(var, _Continuous)
    if continuous_focus:
        k = data.continuous.index(var)
        mu = _fixed_part(post, f"x{k}", data.Z[mis_rows], index) + \
            _flat(post, f"x{k}_cluster", index)[:, data.codes[mis_rows]]
        sigma = _flat(post, f"x{k}_sigma", index)
        coef_f = coef[:, p + k]
    y = data.y[mis_rows]
    sigma_y = _flat(post, "outcome_sigma", index) if data.family == "gaussian" else None

    def propose(d, r, size=None):
        """Proposals and their outcome log-likelihood ratio to the bound, for entries (d, r)."""
        shape = d.shape if size is None else (size, d.size)
        eta = np.broadcast_to(eta_known[d, r], shape).copy()
        proposal = None
        for coef_b, prob, missing_here, is_focus in binary_props:
            c = (rng.random(shape) < prob[d, r]).astype(float) * missing_here[r]
            eta += coef_b[d] * c
            if is_focus:
                proposal = c
        if continuous_focus:
            proposal = mu[d, r] + sigma[d] * rng.standard_normal(shape)
            eta += coef_f[d] * var.to_outcome_scale(proposal)
        if data.family == "binomial":
            log_ratio = -np.logaddexp(0.0, np.where(y[r] == 1, -eta, eta))
        else:
            log_ratio = -0.5 * ((y[r] - eta) / sigma_y[d]) ** 2
        return proposal, log_ratio

    result = np.full(eta_known.shape, np.nan)
    d_pending, r_pending = np.indices(eta_known.shape).reshape(2, -1)
    for _ in range(_REJECTION_ROUNDS):
        proposal, log_ratio = propose(d_pending, r_pending)
        accept = np.log(rng.random(d_pending.size)) < log_ratio
        result[d_pending[accept], r_pending[accept]] = proposal[accept]
        d_pending, r_pending = d_pending[~accept], r_pending[~accept]
        if d_pending.size == 0:
            return result
    proposal, log_ratio = propose(d_pending, r_pending, size=_SIR_PROPOSALS)
    weights = np.exp(log_ratio - log_ratio.max(axis=0))
    cumulative = np.cumsum(weights / weights.sum(axis=0), axis=0)
    pick = (cumulative < rng.random(d_pending.size)).sum(axis=0).clip(max=_SIR_PROPOSALS - 1)
    result[d_pending, r_pending] = proposal[pick, np.arange(d_pending.size)]
    return result


def _focus_by_cluster(data: JointData, post: dict, rng) -> dict:
    """Partial pooling, posterior predictive check and never-measured clusters for the focus."""
    var = data.focus_variable
    if var is None or var.observed.all():
        return {}
    n_total = next(iter(post.values())).shape[0] * next(iter(post.values())).shape[1]
    index = _thin(n_total, _IMPUTATION_DRAWS)
    J, codes = data.n_clusters, data.codes
    is_binary = isinstance(var, _Binary)
    k = (data.binaries if is_binary else data.continuous).index(var)
    prefix = f"b{k}" if is_binary else f"x{k}"
    obs = var.observed
    counts_obs = np.bincount(codes[obs], minlength=J)
    counts_all = np.bincount(codes, minlength=J)

    mu_fixed = _fixed_part(post, prefix, data.Z, index)                 # draws x n (no cluster effect)
    v = _flat(post, f"{prefix}_cluster", index)                          # draws x J
    v_all = post[f"{prefix}_cluster"].reshape(-1, J)
    tau = float(post[f"{prefix}_cluster_sd"].mean())

    # raw cluster deviation (submodel scale, in original units) and the pooled one
    fixed_mean = mu_fixed.mean(axis=0)
    if is_binary:
        resid_sum = np.bincount(codes[obs], weights=var.values[obs], minlength=J)
        pred_sum = np.bincount(codes[obs], weights=special.expit(fixed_mean[obs]), minlength=J)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw_effect = special.logit((resid_sum + 0.5) / (counts_obs + 1.0)) - \
                special.logit((pred_sum + 0.5) / (counts_obs + 1.0))
        rate = float(np.mean(var.values[obs]))
        info = counts_obs * rate * (1 - rate) * tau ** 2
        units = 1.0
    else:
        resid = np.bincount(codes[obs], weights=var.response[obs] - fixed_mean[obs], minlength=J)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw_effect = resid / counts_obs
        sigma = float(post[f"{prefix}_sigma"].mean())
        info = counts_obs * tau ** 2 / sigma ** 2
        units = var.sub_scale
    raw_effect = np.where(counts_obs > 0, raw_effect, np.nan) * units

    # completed focus values: observed + imputed draws
    imputed = _draw_focus_missing(data, post, index, rng)                # draws x n_missing
    mis_rows = np.flatnonzero(~obs)
    completed = np.broadcast_to(np.nan_to_num(var.values), (index.size, data.n)).copy()
    completed[:, mis_rows] = imputed if is_binary else var.to_original(imputed)
    cluster_means = np.stack([np.bincount(codes, weights=row, minlength=J) for row in completed]) / counts_all
    raw_mean = np.bincount(codes[obs], weights=var.values[obs], minlength=J)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_mean = np.where(counts_obs > 0, raw_mean / counts_obs, np.nan)
    pooling = pd.DataFrame({
        "cluster": data.cluster_labels, "n_patients": counts_all, "n_observed": counts_obs,
        "raw_mean": raw_mean, "raw_effect": raw_effect,
        "pooled_effect": v_all.mean(axis=0) * units, "pooled_effect_sd": v_all.std(axis=0, ddof=1) * units,
        "shrinkage": 1.0 / (1.0 + info),
        "pooled_mean": cluster_means.mean(axis=0), "pooled_mean_sd": cluster_means.std(axis=0, ddof=1),
    })

    # posterior predictive check on the observed rows
    obs_rows = np.flatnonzero(obs)
    mu = mu_fixed[:, obs_rows] + v[:, codes[obs_rows]]
    if is_binary:
        rep = (rng.random(mu.shape) < special.expit(mu)).astype(float)
    else:
        sigma_draws = _flat(post, f"{prefix}_sigma", index)[:, None]
        rep = var.to_original(mu + sigma_draws * rng.standard_normal(mu.shape))
    c_obs = codes[obs_rows]
    measured = counts_obs > 0
    n_c = counts_obs[measured]

    def by_cluster(values):            # draws x n_obs -> (mean, sd) draws x measured clusters
        s1 = np.stack([np.bincount(c_obs, weights=r, minlength=J) for r in values])[:, measured]
        s2 = np.stack([np.bincount(c_obs, weights=r * r, minlength=J) for r in values])[:, measured]
        mean = s1 / n_c
        var_ = np.maximum(s2 / n_c - mean ** 2, 0.0) * n_c / np.maximum(n_c - 1, 1)
        return mean, np.sqrt(var_)

    rep_mean, rep_sd = by_cluster(rep)
    obs_mean, obs_sd = by_cluster(var.values[obs_rows][None, :])
    ppc = pd.DataFrame({
        "cluster": data.cluster_labels[measured], "n_observed": n_c,
        "observed_mean": obs_mean[0], "replicated_mean": rep_mean.mean(axis=0),
        "replicated_mean_lower": np.quantile(rep_mean, 0.025, axis=0),
        "replicated_mean_upper": np.quantile(rep_mean, 0.975, axis=0),
        "p_mean": (rep_mean >= obs_mean).mean(axis=0),
    })
    if not is_binary:
        ppc["observed_sd"] = obs_sd[0]
        ppc["replicated_sd"] = rep_sd.mean(axis=0)
        ppc["replicated_sd_lower"] = np.quantile(rep_sd, 0.025, axis=0)
        ppc["replicated_sd_upper"] = np.quantile(rep_sd, 0.975, axis=0)
        ppc["p_sd"] = (rep_sd >= obs_sd).mean(axis=0)
    ppc["mean_outside"] = (ppc["observed_mean"] < ppc["replicated_mean_lower"]) | \
        (ppc["observed_mean"] > ppc["replicated_mean_upper"])

    # clusters that never measured the focus
    never = np.flatnonzero(counts_obs == 0)
    unmeasured: dict = {"clusters": [], "n_patients": 0}
    if never.size:
        in_never = np.isin(codes[mis_rows], never)
        values = completed[:, mis_rows][:, in_never].reshape(-1)
        observed_values = var.values[obs]
        both = np.r_[values, observed_values]
        edges = np.histogram_bin_edges(both, bins=30 if not is_binary else [-0.5, 0.5, 1.5])
        unmeasured = {
            "clusters": [_plain(c) for c in data.cluster_labels[never]],
            "n_patients": int(counts_all[never].sum()),
            "imputed": _distribution(values), "observed": _distribution(observed_values),
            "by_cluster": [{"cluster": _plain(data.cluster_labels[j]), "n_patients": int(counts_all[j]),
                            "mean": float(cluster_means[:, j].mean()),
                            "mean_sd": float(cluster_means[:, j].std(ddof=1))} for j in never],
            "histogram": {"edges": edges.tolist(),
                          "imputed_density": np.histogram(values, edges, density=True)[0].tolist(),
                          "observed_density": np.histogram(observed_values, edges, density=True)[0].tolist()},
        }
    return {"partial_pooling": pooling, "ppc": ppc, "unmeasured": unmeasured, "draws_used": int(index.size)}


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _distribution(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
            "q05": float(q[0]), "q25": float(q[1]), "q50": float(q[2]), "q75": float(q[3]), "q95": float(q[4])}


# --------------------------------------------------------------------------
# Prior sensitivity by importance reweighting
# --------------------------------------------------------------------------
def model_fingerprint(registry) -> str:
    """SHA-256 of the input file and of the params that define the joint model.

    Stored with :class:`PosteriorDraws` so that draws saved by one run are
    never reused for another data file or model.
    """
    p = registry.params
    spec = {"data": registry.data_sha256,
            **{key: getattr(p, key, None) for key in ("outcome", "outcome_family", "predictors", "categorical",
                                                      "cluster", "focus", "cluster_covariates", "higher_levels")}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class PosteriorDraws:
    """Parameter draws of a joint-model fit, without any data row.

    Written by step 4 (:meth:`save`, a ``.npz`` file of draws of model
    parameters only) and read by step 5 (:meth:`load`) to reweight the
    posterior to other priors on the cluster SDs (:func:`reweight_cluster_sd_prior`).

    Attributes
    ----------
    terms : dict of str to ndarray
        Contract terms (``Intercept``, predictors' terms, ``sd(<cluster>)``),
        original scale, shape (chains, draws).
    cluster_sds : dict of str to ndarray
        Every SD that carries the ``cluster_sd`` prior, on the model's scale
        (the scale the prior is stated on).
    cluster_sd_prior : tuple
        The prior those SDs had, e.g. ``("halfnormal", 1.0)``.
    converged : bool
    convergence_message : str
    n_patients, n_clusters : int
    fingerprint : str
        :func:`model_fingerprint` of the registry the fit belongs to.
    """

    terms: dict
    cluster_sds: dict
    cluster_sd_prior: tuple
    converged: bool
    convergence_message: str
    n_patients: int
    n_clusters: int
    fingerprint: str = ""

    def save(self, path) -> Path:
        """Write the draws to ``path`` (``.npz``; written whole or not at all)."""
        from pathlib import Path

        path = Path(path)
        names = {"terms": list(self.terms), "cluster_sds": list(self.cluster_sds)}
        meta = {"names": names, "cluster_sd_prior": list(self.cluster_sd_prior), "converged": bool(self.converged),
                "convergence_message": self.convergence_message, "n_patients": int(self.n_patients),
                "n_clusters": int(self.n_clusters), "fingerprint": self.fingerprint}
        arrays = {f"t{i}": self.terms[k] for i, k in enumerate(names["terms"])}
        arrays |= {f"s{i}": self.cluster_sds[k] for i, k in enumerate(names["cluster_sds"])}
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "PosteriorDraws":
        """Read draws written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            terms = {k: z[f"t{i}"] for i, k in enumerate(meta["names"]["terms"])}
            sds = {k: z[f"s{i}"] for i, k in enumerate(meta["names"]["cluster_sds"])}
        return cls(terms=terms, cluster_sds=sds, cluster_sd_prior=tuple(meta["cluster_sd_prior"]),
                   converged=meta["converged"], convergence_message=meta["convergence_message"],
                   n_patients=meta["n_patients"], n_clusters=meta["n_clusters"], fingerprint=meta["fingerprint"])

    @classmethod
    def load_matching(cls, path, registry) -> "PosteriorDraws | None":
        """:meth:`load` if ``path`` exists and belongs to ``registry``'s data and model, else None."""
        from pathlib import Path

        if not Path(path).is_file():
            return None
        draws = cls.load(path)
        return draws if draws.fingerprint == model_fingerprint(registry) else None


@dataclass(frozen=True)
class PriorReweighting:
    """The joint-model posterior reweighted to another cluster-SD prior.

    Attributes
    ----------
    estimates : pandas.DataFrame
        Contract rows (method ``joint_bayes``, or ``joint_bayes:not_converged``
        when the reweighted fit had not converged): weighted posterior mean,
        SD and 95% equal-tailed interval.
    prior : tuple
        The new cluster-SD prior.
    pareto_k : float
        Pareto-smoothed importance sampling diagnostic (Vehtari et al. 2024).
    k_threshold : float
        ``min(1 - 1 / log10(S), 0.7)`` for ``S`` draws; above it the weights
        are not trustworthy and the model should be refitted.
    ess : float
        Effective number of draws of the weights, ``1 / sum(w^2)`` (out of ``n_draws``).
    n_draws : int
    reliable : bool
        ``pareto_k <= k_threshold`` and ``ess`` at least the gate's bulk ESS
        (:data:`GATE`): enough effective draws to report.
    message : str
    """

    estimates: pd.DataFrame
    prior: tuple
    pareto_k: float
    k_threshold: float
    ess: float
    n_draws: int
    reliable: bool
    message: str


def _sd_log_density(values: np.ndarray, spec) -> np.ndarray:
    """Log density of a half-normal / half-Student-t prior (normalised; positive values)."""
    spec = tuple(spec)
    if spec[0] == "halfnormal":
        return stats.halfnorm.logpdf(values, scale=float(spec[1]))
    if spec[0] == "halfstudentt":
        return math.log(2.0) + stats.t.logpdf(values, df=float(spec[1]), scale=float(spec[2]))
    raise FitError(f"a cluster-SD prior is ('halfnormal', scale) or ('halfstudentt', nu, scale), got {spec!r}.")


def _prior_text(spec) -> str:
    return f"{spec[0]}({', '.join(f'{float(v):g}' for v in spec[1:])})"


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    if np.all(w == w[0]):
        return float(np.quantile(x, q))          # equal weights: the fit's own (type 7) quantile
    order = np.argsort(x)
    xs, cw = x[order], np.cumsum(w[order])
    centres = cw - w[order] / 2.0             # midpoint rule, as type-7 quantiles do for equal weights
    return float(np.interp(q, centres / cw[-1], xs))


def reweight_cluster_sd_prior(draws: PosteriorDraws, prior, level: float = _LEVEL) -> PriorReweighting:
    """Reweight a joint-model posterior to another prior on its cluster SDs (no refit).

    Every cluster SD of the model (outcome, each incomplete predictor's
    submodel, missingness) had the prior ``draws.cluster_sd_prior``; under
    ``prior`` instead the posterior is proportional to the old one times
    ``prod_k p_new(tau_k) / p_old(tau_k)``. Those ratios, Pareto-smoothed
    (PSIS; arviz-stats), weight the existing draws. The estimate is honest when
    the Pareto ``k`` is at most ``min(1 - 1/log10(S), 0.7)``; above that the
    model should be refitted with the new prior (the caller's decision:
    :attr:`PriorReweighting.reliable`).

    Parameters
    ----------
    draws : PosteriorDraws
    prior : tuple
        ``("halfnormal", scale)`` or ``("halfstudentt", nu, scale)``.
    level : float
        Interval level (default 0.95).

    Returns
    -------
    PriorReweighting

    References
    ----------
    Vehtari A, Simpson D, Gelman A, Yao Y, Gabry J (2024). Pareto smoothed
    importance sampling. JMLR 25(72). Kallioinen N, Paananen T, Buerkner P-C,
    Vehtari A (2023). Detecting and diagnosing prior and likelihood sensitivity
    with power-scaling. Statistics and Computing 34:57.
    """
    from arviz_stats.base import array_stats

    prior = tuple(prior)
    old = tuple(draws.cluster_sd_prior)
    if not draws.cluster_sds:
        raise FitError("the joint-model draws hold no cluster SD to reweight.")
    shape = next(iter(draws.terms.values())).shape
    log_ratio = np.zeros(shape)
    for values in draws.cluster_sds.values():
        log_ratio += _sd_log_density(values, prior) - _sd_log_density(values, old)
    n_draws = int(np.prod(shape))
    flat_ratio = log_ratio.reshape(-1)
    if np.ptp(flat_ratio) == 0.0:
        weights, k = np.full(n_draws, 1.0 / n_draws), -np.inf
    else:
        ess_ratio = _diagnostics(log_ratio)["ess_bulk"] if shape[0] > 1 else float(n_draws)
        r_eff = float(np.clip(ess_ratio / n_draws, 0.05, 1.0))
        log_w, k = array_stats.psislw(-flat_ratio, r_eff=r_eff)
        weights = np.exp(np.asarray(log_w, dtype=float) - np.max(log_w))
        weights /= weights.sum()
        k = float(k)
    threshold = float(min(1.0 - 1.0 / math.log10(n_draws), 0.7))
    ess = float(1.0 / np.sum(weights ** 2))
    tail = (1.0 - level) / 2.0
    rows = []
    for term, values in draws.terms.items():
        x = np.asarray(values, dtype=float).reshape(-1)
        mean = float(np.sum(weights * x))
        rows.append({"term": term, "estimate": mean,
                     "std_error": float(math.sqrt(np.sum(weights * (x - mean) ** 2) * n_draws / (n_draws - 1))),
                     "ci_lower": _weighted_quantile(x, weights, tail),
                     "ci_upper": _weighted_quantile(x, weights, 1.0 - tail)})
    table = pd.DataFrame(rows)
    table.insert(0, "method", METHOD if draws.converged else f"{METHOD}:not_converged")
    table["n_patients"] = draws.n_patients
    table["n_clusters"] = draws.n_clusters
    reliable = bool(k <= threshold and ess >= GATE["ess_bulk_min"])
    k_text = "0" if not np.isfinite(k) else f"{k:.2f}"
    message = (f"posterior of the {_prior_text(old)} fit reweighted to the {_prior_text(prior)} prior on the cluster "
               f"SDs by Pareto-smoothed importance sampling: Pareto k {k_text} "
               f"({'at most' if k <= threshold else 'above'} {threshold:.2f}), {ess:.0f} effective of {n_draws} draws"
               f"{'' if ess >= GATE['ess_bulk_min'] else ' (fewer than ' + format(GATE['ess_bulk_min'], '.0f') + ')'}")
    return PriorReweighting(estimates=table, prior=prior, pareto_k=k, k_threshold=threshold, ess=ess,
                            n_draws=n_draws, reliable=reliable, message=message + ".")
