"""Multilevel imputation with random slopes: the ``2l.pan`` "type 2" model, on standardised columns.

For repeated measures (visits within patients) the imputation model of an
incomplete continuous variable ``y`` has a random intercept *and* random
slopes, usually on time, as R's ``mice`` method ``2l.pan`` with the slope
column given type 2 (Schafer & Yucel 2002):

``y_ij = x_ij' beta + w_ij' b_i + e_ij``, ``b_i ~ N(0, Psi)``, ``e_ij ~ N(0, sigma^2)``,

where ``w_ij = (1, s_ij)`` holds the intercept and the slope columns ``s``
(each slope column is also a fixed effect), ``Psi`` is unstructured
(``q x q``, ``q = 1 + number of slopes``) and ``x`` holds the predictors and,
as hmlib does for random intercepts, their cluster means (Grund, Luedtke &
Robitzsch 2018; the cluster mean of time matters once patients drop out).

Standardisation (the trap). ``2l.pan`` works on the user's units and puts an
inverse-Wishart prior with identity scale on ``Psi`` (``Dinv = diag(q)``):
with time in days, the slope variance is about ``1e-6`` per day^2, and the
identity prior swamps it (on the reference registry of #16 a true 0.35 was
estimated at 0.10; on ``tests/results/random_slope_registry.csv``, 0.094 with
time in days against 0.348 in years: ``random_slope_imputation.R``). Here every column of the design, the slope columns
included, is centred and scaled on the rows where ``y`` is recorded, and
``y`` is z-scored on its recorded values, so ``Psi`` is in units where 1 is
the variance of ``y`` and a slope of 1 is one SD of ``y`` per SD of time;
the model and the imputed values do not depend on the units of time (up to
rounding; RS-IMP-003). ``Psi`` and ``sigma`` are reported on the user's
scale (:attr:`RandomSlopeImputation.random_cov`: the intercept at time 0 and
the slope per unit of the user's time).

Priors (standardised units). ``p(beta)`` flat except the ``N(0, 1)`` prior on
the coefficients of cluster-mean columns that the random-intercept kernel
uses; ``p(sigma^2) ~ 1 / sigma^2``; ``Psi`` has the prior of Huang & Wand
(2013): ``Psi | a ~ inverse-Wishart(nu + q - 1, 2 nu diag(1 / a))``,
``a_k ~ inverse-gamma(1/2, 1 / A^2)``, with ``nu = 2`` and ``A = 1``. Each
SD is then half-t(2) with scale 1 SD of ``y`` per SD of the column (flat near
0, as the random-intercept kernel's uniform prior on ``tau``), and each
correlation uniform on (-1, 1). An inverse-Wishart with a fixed small scale
(the multivariate inverse-gamma(eps, eps), Gelman 2006) was tried first and
pulled small slope SDs to 0: with 30 clusters the posterior median of a
slope SD whose ML estimate is 0.045 (SE 0.023) was 0.018 (RS-IMP-012); with
identity scale, 2l.pan's, it was 0.128. Fewer than ``5 q`` clusters recording
``y`` are refused.

Gibbs sampler (:func:`random_slopes_gibbs_draw`), each sweep:

1. ``(beta, b) | Psi, sigma^2``: one joint Gaussian draw. The precision has a
   ``p x p`` block for ``beta``, a block-diagonal part ``D_i = W_i'W_i /
   sigma^2 + Psi^-1`` for the clusters and cross terms ``W_i'X_i / sigma^2``;
   ``beta`` is drawn from its marginal (the Schur complement of the cluster
   blocks), then each ``b_i | beta ~ N(D_i^-1 W_i'(y_i - X_i beta) / sigma^2,
   D_i^-1)``: the generalisation of the random-intercept kernel's block draw
   (:func:`hmlib.stats.imputation.kernels.block_gaussian`), so the sampler
   does not stall on the trade between ``beta`` and the cluster effects.
2. ``sigma^2 | beta, b = RSS / chi2_n``.
3. ``Psi | b, a ~ inverse-Wishart(nu + q - 1 + J_obs, 2 nu diag(1 / a) + sum b_i b_i')``
   over the ``J_obs`` clusters that record ``y`` (a cluster without recorded
   values has ``b_i ~ N(0, Psi)`` in step 1 and carries no information on
   ``Psi``), then ``a_k | Psi ~ inverse-gamma((nu + q) / 2, nu (Psi^-1)_kk + 1 / A^2)``.

All updates use per-cluster sufficient statistics
(:func:`~hmlib.stats.imputation.kernels.cluster_sufficient_statistics`; the
random-effect columns are columns of the fixed design, so their cross
products are sub-blocks), and a sweep costs ``O(J (p^2 q + q^3))``. The
state (``Psi``, ``a``, ``sigma^2``) is carried between calls as in
:func:`~hmlib.stats.imputation.kernels.ri_gibbs_draw`: ``GIBBS_BURN_IN``
sweeps at a chain's first call, ``GIBBS_SWEEPS`` later. Missing values are
``x' beta* + w' b*_i + e``; ``pmm=True`` matches as 2l.pmm does (type 1).

Binary variables: :func:`impute_random_slopes` imputes a 0/1 target with
the random-slope logistic kernel
(:func:`~hmlib.stats.imputation.slopes_logistic.random_slopes_logistic_draw`:
a Gibbs sampler of ``(1 + slopes | cluster)`` on the Polya-Gamma augmented
logistic model, its state carried between calls as the continuous
kernel's; ``random_cov`` then holds its ``Psi`` on the logit scale); until
2026-12-06 it used the random-intercept logistic draw with the slopes as
fixed effects, which shrinks a patient's own trend in the variable to the
common trend, and later that day a Laplace fit with ``beta*`` and ``Psi*``
from the normal approximation at the optimum.

:func:`impute_random_slopes` is the self-contained public function for one
incomplete variable with complete predictors (``m`` chains, each of
``iterations`` calls of the kernel; the design is the same in every call, so
its sums are computed once); the chained-equations engine
(:func:`hmlib.stats.imputation.impute`) does not use it yet.

References
----------
Schafer JL, Yucel RM (2002). Computational strategies for multivariate
linear mixed-effects models with missing values. J Comput Graph Stat 11(2):437-457.
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., sections 7.5-7.10.
Grund S, Luedtke O, Robitzsch A (2018). Multiple imputation of missing data
for multilevel models: simulations and recommendations. Organ Res Methods 21(1):111-149.
Huang A, Wand MP (2013). Simple marginally noninformative prior distributions
for covariance matrices. Bayesian Anal 8(2):439-452.
Gelman A (2006). Prior distributions for variance parameters in hierarchical
models. Bayesian Anal 1(3):515-534.
Enders CK, Du H, Keller BT (2020). A model-based imputation procedure for
multilevel regression models with random coefficients, interaction effects,
and nonlinear terms. Psychol Methods 25(1):88-112.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, FitError
from hmlib.stats.imputation.chained import split_rhat
from hmlib.stats.imputation.kernels import cluster_sums, prepare_design, standardise_target
from hmlib.stats.imputation.slopes_kernel import (MIN_CLUSTERS_PER_EFFECT, PSI_PRIOR_DF, PSI_PRIOR_SD_SCALE,
                                                  draw_inverse_wishart, random_slopes_gibbs_draw)
from hmlib.stats.imputation.slopes_logistic import random_slopes_logistic_draw
from hmlib.stats.imputation.univariate import CLUSTER_COEF_PRIOR_SD

__all__ = ["random_slopes_gibbs_draw", "impute_random_slopes", "RandomSlopeImputation", "draw_inverse_wishart",
           "PSI_PRIOR_DF", "PSI_PRIOR_SD_SCALE", "MIN_CLUSTERS_PER_EFFECT"]


@dataclass(frozen=True, eq=False)
class RandomSlopeImputation:
    """``m`` imputations of one variable under the random-slope model, with the chains' traces.

    Attributes
    ----------
    target : str
    index : pandas.Index
        The input frame's index (rows in the input order).
    missing : numpy.ndarray of bool, shape (n,)
        The rows imputed.
    values : numpy.ndarray, shape (m, n)
        The completed target, one row per imputation (recorded values unchanged).
    chain_means : numpy.ndarray, shape (m, iterations)
        Mean of the imputed values after each kernel call of each chain.
    random_names : tuple of str
        ``("Intercept", <slope>, ...)``: the random effects (the intercept at the slopes' 0).
    random_cov : numpy.ndarray, shape (m, iterations, q, q)
        ``Psi`` drawn at each call, on the user's scale (a binary target's on the logit scale, per unit of the
        slope columns).
    residual_sd : numpy.ndarray, shape (m, iterations)
        ``sigma`` drawn at each call, on the user's scale (NaN for a binary target).
    model : str
        The imputation model in words.
    notes : tuple of str
        Fall-backs and dropped columns.
    seed, iterations : int
    """

    target: str
    index: pd.Index
    missing: np.ndarray
    values: np.ndarray
    chain_means: np.ndarray
    random_names: tuple
    random_cov: np.ndarray
    residual_sd: np.ndarray
    model: str
    notes: tuple
    seed: int
    iterations: int

    @property
    def m(self) -> int:
        """Number of imputations."""
        return int(self.values.shape[0])

    def columns(self) -> pd.DataFrame:
        """The ``m`` completed target columns (``imputation_1`` ...), indexed as the input frame."""
        return pd.DataFrame(self.values.T, index=self.index,
                            columns=[f"imputation_{k + 1}" for k in range(self.m)])

    def completed(self, frame: pd.DataFrame) -> list:
        """``m`` copies of ``frame`` (the input frame) with the target completed; ``frame`` is not changed."""
        if not frame.index.equals(self.index):
            raise DataError("completed() needs the frame that was imputed (its index differs).")
        out = []
        for row in self.values:
            done = frame.copy()
            done[self.target] = row
            out.append(done)
        return out

    def diagnostics(self) -> pd.DataFrame:
        """Split R-hat over the chains' second halves (``iterations >= 8``, else NaN) and the final draws' means.

        Rows: ``mean(imputed)``, ``sd(<effect>)`` for each random effect, ``cor(<slope>)`` with the
        intercept, and ``sigma``.
        """
        sds = np.sqrt(np.maximum(np.diagonal(self.random_cov, axis1=2, axis2=3), 0.0))
        traces = {"mean(imputed)": self.chain_means}
        for k, name in enumerate(self.random_names):
            traces[f"sd({name})"] = sds[:, :, k]
        for k, name in enumerate(self.random_names[1:], start=1):
            with np.errstate(invalid="ignore", divide="ignore"):
                traces[f"cor({name})"] = self.random_cov[:, :, 0, k] / (sds[:, :, 0] * sds[:, :, k])
        traces["sigma"] = self.residual_sd
        rows = []
        for name, trace in traces.items():
            half = trace[:, trace.shape[1] // 2:]
            finite = np.all(np.isfinite(half))
            rows.append({"quantity": name, "rhat": split_rhat(half) if finite else float("nan"),
                         "final_mean": float(np.mean(trace[:, -1]))})
        return pd.DataFrame(rows)


def _numeric_column(frame: pd.DataFrame, name: str, role: str) -> np.ndarray:
    if name not in frame.columns:
        raise DataError(f"{role} column {name!r} is not in the data; the columns are {list(frame.columns)}.")
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
    bad = frame[name].notna().to_numpy() & np.isnan(values)
    if bad.any():
        raise DataError(f"{role} column {name!r} has {int(bad.sum())} non-numeric values; recode it as numbers.")
    return values


def _checked_columns(frame, target, predictors, cluster, slopes):
    """The target, the fixed columns (slopes first) and the cluster codes, or a DataError saying what is wrong."""
    if not slopes:
        raise DataError("impute_random_slopes needs at least one slope column (e.g. slopes=['time']); without "
                        "one, use the random-intercept imputation (hmlib.stats.imputation.impute).")
    if cluster not in frame.columns:
        raise DataError(f"cluster column {cluster!r} is not in the data.")
    if frame[cluster].isna().any():
        raise DataError(f"cluster column {cluster!r} has {int(frame[cluster].isna().sum())} missing labels; "
                        "every row needs its cluster.")
    codes, labels = pd.factorize(frame[cluster], sort=True)
    y = _numeric_column(frame, target, "target")
    names = list(dict.fromkeys([*slopes, *(p for p in predictors if p not in slopes)]))
    if target in names or cluster in names:
        raise DataError(f"the target {target!r} and the cluster {cluster!r} cannot be predictors or slopes.")
    X = np.column_stack([_numeric_column(frame, nm, "slope" if nm in slopes else "predictor") for nm in names]) \
        if names else np.empty((len(frame), 0))
    for k, nm in enumerate(names):
        if np.isnan(X[:, k]).any():
            raise DataError(f"{'slope' if nm in slopes else 'predictor'} column {nm!r} has "
                            f"{int(np.isnan(X[:, k]).sum())} missing values; impute_random_slopes imputes one "
                            "variable from complete predictors (impute or drop those rows first).")
    J = labels.size
    sizes = np.bincount(codes, minlength=J).astype(float)
    for k, nm in enumerate(names[:len(slopes)]):
        means = cluster_sums(X[:, k], codes, J) / sizes
        if np.allclose(X[:, k], means[codes], rtol=0.0, atol=1e-12 * max(1.0, float(np.abs(X[:, k]).max()))):
            raise DataError(f"slope column {nm!r} does not vary within any {cluster!r}: a random slope needs "
                            "several values per cluster (a time or visit variable); drop it from slopes.")
    return y, X, names, codes, J


def _cluster_level_design(X, names, codes, J, obs, slopes, cluster_means: bool, notes: list, target: str):
    """The fixed design: the columns (slopes first) and, within budget, the cluster means of those that vary
    within clusters (a patient-level column's mean is the column itself)."""
    J_obs = int(np.unique(codes[obs]).size)
    q = len(slopes) + 1
    if J_obs < MIN_CLUSTERS_PER_EFFECT * q:
        raise FitError(f"only {J_obs} clusters record {target!r}: a random intercept and {q - 1} slope(s) need "
                       f"at least {MIN_CLUSTERS_PER_EFFECT * q} to estimate their {q} x {q} covariance; use the "
                       "random-intercept imputation instead.")
    sizes = np.bincount(codes, minlength=J).astype(float)
    means = (cluster_sums(X, codes, J) / sizes[:, None])[codes] if X.shape[1] else X
    spread = np.abs(X - means).max(axis=0, initial=0.0) if X.shape[1] else np.zeros(0)
    varying = np.flatnonzero(spread > 1e-12 * np.maximum(1.0, np.abs(X).max(axis=0, initial=0.0)))
    if not (cluster_means and varying.size):
        return X, list(names), []
    needed = max(10, 5 * varying.size)
    if J_obs < needed:
        notes.append(f"Imputation model for '{target}': the cluster means were left out ({J_obs} clusters record "
                     f"it, {needed} needed for {varying.size} cluster-level columns).")
        return X, list(names), []
    mean_names = [f"mean({names[k]})" for k in varying]
    return np.column_stack([X, means[:, varying]]), [*names, *mean_names], mean_names


def _to_user_scale(X, names, obs, slopes, scale):
    """``T`` with (user-scale effects) = ``T`` (standardised effects): intercept at the slopes' 0, slopes per unit."""
    q = len(slopes) + 1
    T = np.eye(q)
    for k, nm in enumerate(slopes, start=1):
        col = X[obs, names.index(nm)]
        mu = col.mean()
        sd = np.sqrt(np.mean((col - mu) ** 2))
        T[0, k] = -mu / sd
        T[k, k] = 1.0 / sd
    return scale * T


def impute_random_slopes(frame: pd.DataFrame, *, target: str, predictors, cluster: str, slopes, m: int = 20,
                         iterations: int = 10, seed: int = 0, cluster_means: bool = True, continuous: str = "norm",
                         donors: int = 5) -> RandomSlopeImputation:
    """Impute one variable ``m`` times from a model with a random intercept and random slopes per cluster.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per measurement (visit); any row order; never modified.
    target : str
        The incomplete variable: continuous, or 0/1 (the random-slope logistic model, module docstring).
    predictors : sequence of str
        Complete numeric columns predicting it (the outcome of the analysis model among them).
    cluster : str
        The grouping column (the patient).
    slopes : sequence of str
        Columns with a random slope (usually time, in any unit); complete, varying within clusters,
        and also fixed effects (added to the predictors when not there).
    m : int
        Imputations (independent chains).
    iterations : int
        Calls of the kernel per chain (``GIBBS_BURN_IN`` sweeps, then ``GIBBS_SWEEPS`` per call);
        the last call's draw is the imputation, the calls' traces the chain diagnostics.
    seed : int
        Chain ``k`` uses ``Generator(PCG64(SeedSequence(seed).spawn(m)[k]))``.
    cluster_means : bool
        Add the cluster means of the slopes and predictors that vary within clusters as columns (within
        the few-cluster budget of the random-intercept engine: ``max(10, 5 q)`` clusters recording the
        target).
    continuous : {"norm", "pmm"}
        Normal draws (2l.pan) or predictive mean matching on the same sampler (2l.pmm).
    donors : int
        Donors for ``pmm``.

    Returns
    -------
    RandomSlopeImputation

    Raises
    ------
    DataError
        A column absent or not numeric, a slope or predictor with missing values, a slope that does
        not vary within any cluster, missing cluster labels.
    FitError
        Fewer than ``5 q`` clusters record the target; a slope collinear with the other columns.

    See Also
    --------
    random_slopes_gibbs_draw : the kernel.
    hmlib.stats.imputation.impute : chained equations with random intercepts.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> patient = np.repeat(np.arange(40), 5)
    >>> day = np.tile(np.arange(5) * 90.0, 40)
    >>> y = rng.normal(size=40)[patient] + (0.004 + 0.002 * rng.normal(size=40)[patient]) * day
    >>> frame = pd.DataFrame({"patient": patient, "day": day, "y": y + rng.normal(size=200)})
    >>> frame.loc[::7, "y"] = np.nan
    >>> res = impute_random_slopes(frame, target="y", predictors=[], cluster="patient", slopes=["day"], m=3)
    >>> res.columns().shape
    (200, 3)
    """
    if continuous not in ("norm", "pmm"):
        raise ValueError(f"continuous must be 'norm' or 'pmm', got {continuous!r}.")
    if m < 1 or iterations < 1:
        raise ValueError(f"m and iterations must be at least 1, got m={m}, iterations={iterations}.")
    slopes = list(dict.fromkeys(slopes))
    y, X, names, codes, J = _checked_columns(frame, target, list(predictors), cluster, slopes)
    obs = ~np.isnan(y)
    if not obs.any():
        raise DataError(f"{target!r} is never recorded; there is nothing to impute it from.")
    mis = ~obs
    notes: list[str] = []
    X, all_names, mean_names = _cluster_level_design(X, names, codes, J, obs, slopes, cluster_means, notes, target)
    Do, Dp, kept = prepare_design(X, all_names, obs, mis, notes=_NoteList(notes), target=target)
    if any(s not in kept for s in slopes):
        raise FitError(f"slope column(s) {[s for s in slopes if s not in kept]} are constant or collinear with the "
                       f"other slopes where {target!r} is recorded; drop them from slopes.")
    random_columns = [0, *(kept.index(s) + 1 for s in slopes)]
    ridge = np.r_[0.0, [1.0 / CLUSTER_COEF_PRIOR_SD ** 2 if nm in mean_names else 0.0 for nm in kept]]
    yo = y[obs]
    binary = bool(np.isin(yo, (0.0, 1.0)).all() and np.unique(yo).size == 2)
    T = _to_user_scale(X, all_names, obs, slopes, 1.0 if binary else standardise_target(yo)[1])
    chains = _run_chains(Do, yo, codes, obs, Dp, J, T, m=m, iterations=iterations, seed=seed, binary=binary,
                         random_columns=random_columns, ridge=ridge, pmm=continuous == "pmm", donors=donors,
                         notes=notes, target=target)
    values = np.tile(y, (m, 1))
    values[:, mis] = chains["draws"]
    effects = f"a random intercept and random slope(s) on {', '.join(map(repr, slopes))} per '{cluster}', " \
              "unstructured covariance"
    kind = f"logistic mixed model with {effects} (2l.bin type 2, Gibbs sampler, Polya-Gamma augmented)" \
        if binary else \
        f"linear mixed model with {effects} ({'pmm' if continuous == 'pmm' else '2l.pan type 2'})"
    model = f"{target} ~ {' + '.join(kept) if kept else '1'}: {kind}; columns standardised"
    return RandomSlopeImputation(target=target, index=frame.index.copy(), missing=mis, values=values,
                                 chain_means=chains["chain_means"], random_names=("Intercept", *slopes),
                                 random_cov=chains["random_cov"], residual_sd=chains["residual_sd"], model=model,
                                 notes=tuple(dict.fromkeys(notes)), seed=seed, iterations=iterations)


def _run_chains(Do, yo, codes, obs, Dp, J, T, *, m, iterations, seed, binary, random_columns, ridge, pmm, donors,
                notes, target) -> dict:
    """``m`` chains of ``iterations`` kernel calls: the last draws and the traces (user scale, through ``T``)."""
    q = len(random_columns)
    out = {"draws": np.empty((m, Dp.shape[0])), "chain_means": np.full((m, iterations), np.nan),
           "random_cov": np.full((m, iterations, q, q), np.nan), "residual_sd": np.full((m, iterations), np.nan)}
    cache: dict = {}
    co, cp = codes[obs], codes[~obs]
    for k, child in enumerate(np.random.SeedSequence(seed).spawn(m)):
        rng = np.random.Generator(np.random.PCG64(child))
        state: dict = {}
        for it in range(iterations):
            if binary:
                draw = random_slopes_logistic_draw(Do, yo, co, Dp, cp, J, rng, random_columns=random_columns,
                                                   notes=_NoteList(notes), target=target, state=state, cache=cache)
                out["random_cov"][k, it] = T @ state["psi"] @ T.T
            else:
                draw = random_slopes_gibbs_draw(Do, yo, co, Dp, cp, J, rng, random_columns=random_columns,
                                                state=state, pmm=pmm, donors=donors, prior_precision=ridge,
                                                cache=cache)
                out["random_cov"][k, it] = T @ state["psi"] @ T.T
                out["residual_sd"][k, it] = T[0, 0] * np.sqrt(state["sig2"])
            out["chain_means"][k, it] = float(draw.mean()) if draw.size else np.nan
        out["draws"][k] = draw
    return out


class _NoteList:
    """``notes.add(text)`` for the kernels' fall-back messages, into a list."""

    def __init__(self, target: list):
        self._target = target

    def add(self, text: str) -> None:
        self._target.append(text)
