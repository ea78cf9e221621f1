"""Multiple imputation of two-level (patients in clusters) data by chained equations.

One interface, four ways of treating the clusters, so that the report can
put them side by side:

``flat``
    Single-level chained equations; the cluster is ignored (the comparator,
    R's ``mice`` with ``norm``/``pmm``/``logreg``). Cluster covariates are
    treated as patient-level columns, so after imputation they may differ
    between the patients of one cluster, as in ``mice`` without ``2lonly``
    methods.
``stratified``
    The flat models fitted separately within each stratum: each cluster, or
    each cluster type when a complete categorical cluster covariate is given
    (``strata`` chooses explicitly). It breaks in small strata: a stratum
    where the variable is never observed, where it has fewer observed values
    than model terms + 2, or (binary) where a single value was observed, is
    imputed from the flat model fitted to all patients instead; the notes
    say how many strata fell back and why.
``fixed_effects``
    Single-level models with one intercept per cluster (cluster indicator
    columns, fitted through the within-cluster normal equations so 500
    clusters cost no more than 5). A cluster where the variable is never
    observed has no estimable intercept; it gets a draw from the normal
    distribution with the mean and SD of the other clusters' estimated
    intercepts (noted). Binary: the cluster intercepts carry a
    ``N(logit(mean), 5^2)`` prior so that a cluster with one observed value
    keeps a finite intercept.
``multilevel``
    Two-level chained equations with random intercepts, as R's ``mice``
    ``2l.pan``/``2l.norm``/``2l.bin``/``2lonly.norm``/``2lonly.pmm`` and
    ``miceadds``' ``2l.pmm``.

Multilevel imputation models
----------------------------
Each incomplete patient-level variable ``y`` is imputed from a
random-intercept model ``y_ij = x_ij' beta + u_j + e_ij`` whose predictors
``x`` are: every other patient-level variable, the outcome included (the
outcome always predicts); their cluster means (Grund, Luedtke & Robitzsch
2018; turn off with ``cluster_means=False``); the cluster covariates; and
indicator columns of the higher-level units (``higher_levels``, as fixed
effects). Only random intercepts are used: random slopes on unscaled
predictors are what made R's ``2l.pan`` badly biased on the reference
registry (``/work/shared/reference/README.md``). Every predictor column is
z-scored on the rows used for fitting, and continuous targets are z-scored
on their observed values, so the model form and the priors do not depend on
units. Constant columns and columns linearly dependent on the others (the
residual SD after projection on the preceding columns is below 1e-6 of the
column's SD; the later column goes) are dropped before fitting; the notes
name them.

Few clusters. Cluster-level columns vary only between clusters, so their
coefficients are estimated from the clusters that observe the target, not
from its rows. With few such clusters (4 clinics, say) the cluster means are
nearly collinear with the cluster intercepts, their coefficients are not
identified, and a cluster without observed values was imputed by wild
extrapolation (10^2 to 10^8 SDs off). The cluster means therefore enter a
target's model only when at least ``max(10, 5 q)`` clusters observe it,
``q`` being the number of cluster-level columns (cluster means, cluster
covariates, higher-level indicators); otherwise they are left out, noted,
and recorded in ``ImputationResult.cluster_means_dropped``. As a last check,
continuous imputed values more than 5 observed SDs beyond the observed
range are noted (``ImputationResult.extrapolated``).

- Continuous, ``continuous="norm"`` (2l.pan / 2l.norm): a Gibbs sampler on
  the observed rows. Given the variance components, ``(beta, u)`` is drawn
  jointly from its Gaussian full conditional (``beta`` from its marginal
  via the Schur complement of the cluster block, then ``u | beta``), so the
  sampler does not stall on the correlation between ``beta`` and ``u``
  that cluster-mean predictors create. Then ``sigma^2 | beta, u`` (prior
  ``1/sigma^2``) and ``tau^2 | u`` (uniform prior on ``tau`` over
  ``(0, 1]`` SD of the target, Gelman 2006;
  ``tau^2 = (sum u_j^2 + 1e-4) / chi2_{J_obs - 1}`` truncated at 1: the
  bound only binds with few clusters, where the untruncated draw has no
  mean). The coefficients of cluster-level columns carry a ``N(0, 1)``
  prior (standardised units; negligible with many clusters). With
  ``cluster_residual_variance=True`` (as 2l.norm; Kasim & Raudenbush 1998)
  each cluster has its own ``sigma_j^2 ~ scaled-Inv-chi2(4, s^2)`` with
  ``s^2`` drawn from its conditional (prior ``1/s^2``). All updates use
  per-cluster sufficient statistics, so a sweep costs ``O(J p^2)``. The
  sampler state (variance components) of each chain is carried from one
  chained-equations iteration to the next: 20 sweeps at the first
  iteration, 3 at each later one. Missing values are then drawn as
  ``x' beta* + u*_j + e``; a cluster without any observed value gets
  ``u*_j ~ N(0, tau*^2)`` (never 0).
- Continuous, ``continuous="pmm"`` (2l.pmm): the same sampler; the
  observed rows' predictions use the posterior mean of ``(beta, u)`` given
  the drawn variance components, the missing rows' use the draw (type-1
  matching), and each missing value takes the observed value of a random
  one of the ``donors`` (5) nearest observed predictions (Little 1988;
  Morris, White & Royston 2014). Suited to skewed or bounded variables.
- Binary (2l.bin): the random-intercept logistic model is fitted by
  :func:`hmlib.stats.mixed.fit_random_intercept` (Laplace) on the observed rows;
  ``beta* ~ N(beta_hat, cov)``, ``log tau* ~ N(log tau_hat, se^2)`` (capped
  at 5 on the logit scale), then
  each ``u*_j`` from the normal approximation at the mode of its
  conditional posterior given ``beta*, tau*`` and the cluster's observed
  values (``N(0, tau*^2)`` for a cluster without observed value); values
  are drawn from ``expit(x' beta* + u*_j)``. If the fit fails (e.g. the
  variable is observed in one cluster only) the flat logistic draw is used
  and noted.
- Categorical with more than two levels: nested dichotomies. With levels
  ``0..K-1``, level 0 is drawn against "higher" by the binary method of
  the chosen approach, then level 1 against "higher" among the rest, and
  so on; each dichotomy is a proper binary model, and together they define
  a valid multinomial distribution (the multilevel version has a random
  intercept per dichotomy). mice's ``polyreg``/``2l.polyreg`` analogue.
- Cluster covariates missing for whole clusters (2lonly.norm, 2lonly.pmm,
  for ``multilevel``, ``stratified`` and ``fixed_effects``): one value per
  cluster, from a Bayesian linear (or ``pmm``, or logistic) regression
  across clusters on the cluster means of all patient-level variables, the
  other cluster covariates and the higher-level indicators. If few
  clusters observe the covariate (fewer than terms + 3), the model falls
  back to intercept only (noted). A covariate recorded in some rows of a
  cluster is first copied to that cluster's other rows.

Flat models: ``norm`` is Bayesian linear regression (``sigma^2`` from
``RSS / chi2_{n-p}``, then ``beta``; mice's ``norm.draw`` with its 1e-5
ridge), ``pmm`` matches on it as above, binary uses a logistic regression
with weakly informative ``N(0, 2.5^2)`` priors on the standardised
coefficients (so that separation in a small stratum gives finite draws;
Gelman et al. 2008) and draws ``beta*`` from the normal approximation.

Chains and outcome. As in mice, each of the ``m`` imputations is its own
chain: missing values start as random draws from the observed values, and
``iterations`` rounds of the chained equations follow (variables with
missing values visited in the order predictors, outcome, cluster
covariates). Chain ``k`` uses ``numpy.random.Generator(PCG64)`` seeded by
child ``k`` of ``SeedSequence(seed)``, so results depend only on the seed.
The mean of each variable's imputed values is recorded per chain and
iteration (``chain_means``) and summarised by split R-hat over the last half
of the iterations (Vehtari et al. 2021; NaN when that half has fewer than 4
iterations). Missing outcomes are imputed in the chains (so those patients'
predictors are imputed using the outcome's information), and the analysis
then drops the patients with imputed outcomes (von Hippel 2007,
:func:`hmlib.stats.pooling.analyse_imputations`).

References
----------
van Buuren S, Groothuis-Oudshoorn K (2011). mice: Multivariate imputation
by chained equations in R. J Stat Softw 45(3).
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., ch. 7.
Schafer JL, Yucel RM (2002). Computational strategies for multivariate
linear mixed-effects models with missing values. J Comput Graph Stat 11.
Kasim RM, Raudenbush SW (1998). Application of Gibbs sampling to nested
variance components models with heterogeneous within-group variance.
J Educ Behav Stat 23(2):93-116.
Grund S, Luedtke O, Robitzsch A (2018). Multiple imputation of missing data
for multilevel models: simulations and recommendations. Organ Res Methods
21(1):111-149.
Resche-Rigon M, White IR (2018). Multiple imputation by chained equations
for systematically and sporadically missing multilevel data. Stat Methods
Med Res 27(6):1634-1649.
Drechsler J (2015). Multiple imputation of multilevel missing data: rigor
versus simplicity. J Educ Behav Stat 40(1):69-95.
Gelman A (2006). Prior distributions for variance parameters in
hierarchical models. Bayesian Anal 1(3):515-534.
Gelman A, Jakulin A, Pittau MG, Su YS (2008). A weakly informative default
prior distribution for logistic and other regression models. Ann Appl Stat
2(4):1360-1383.
Little RJA (1988). Missing-data adjustments in large surveys. J Bus Econ
Stat 6(3):287-296.
Morris TP, White IR, Royston P (2014). Tuning multiple imputation by
predictive mean matching and local residual draws. BMC Med Res Methodol 14:75.
von Hippel PT (2007). Regression with missing Ys: an improved strategy for
analyzing multiply imputed data. Sociol Methodol 37:83-117.
Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner PC (2021).
Rank-normalization, folding, and localization: an improved R-hat. Bayesian
Anal 16(2):667-718.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, special, stats

from hmlib.exceptions import DataError, FitError

__all__ = ["METHODS", "CONTINUOUS_METHODS", "ImputationResult", "impute", "impute_registry",
           "split_rhat"]

METHODS = ("flat", "stratified", "fixed_effects", "multilevel")
CONTINUOUS_METHODS = ("norm", "pmm")

#: Gibbs sweeps of the random-intercept sampler at the first iteration of a
#: chain, and at each later iteration (the state is carried over).
GIBBS_BURN_IN = 20
GIBBS_SWEEPS = 3
#: Degrees of freedom of the scaled-inverse-chi2 prior of cluster-specific
#: residual variances (cluster_residual_variance=True).
RESIDUAL_PRIOR_DF = 4.0
#: Keeps the draw of tau^2 (standardised units) away from exactly 0.
TAU2_FLOOR = 1e-4
#: Upper end of the uniform prior on tau, in SDs of the (observed) target: cluster effects
#: cannot vary more than the variable itself. Binds only when few clusters observe the target
#: (the scaled-inverse-chi2 draw with J_obs - 1 = 2 degrees of freedom has no mean).
TAU_MAX = 1.0
#: The same bound for 2l.bin, on the logit scale: a cluster SD of 5 already spans rates from
#: about 0 to about 1. Near tau_hat = 0 the SE of log tau is huge, and the log-normal draw of
#: tau would otherwise overflow.
LOGISTIC_TAU_MAX = 5.0
#: Prior SD of standardised logistic coefficients (intercept: 10).
LOGISTIC_PRIOR_SD = 2.5
#: Prior SD of the cluster intercepts of the fixed-effects logistic model.
FE_LOGISTIC_PRIOR_SD = 5.0
#: A column is collinear when its residual SD after projection on the columns
#: before it is below this share of its SD.
COLLINEAR_TOL = 1e-6
#: Cluster means enter a multilevel model only when at least this many clusters observe the target ...
MIN_CLUSTERS_FOR_MEANS = 10
#: ... and at least this many per cluster-level column (cluster means, cluster covariates, higher levels).
CLUSTERS_PER_CLUSTER_COLUMN = 5
#: Prior SD of the standardised coefficients of cluster-level columns in the random-intercept
#: Gibbs sampler (target and columns z-scored: one column alone cannot explain more than the
#: target's SD, so 1 is weak; it only bites when the clusters cannot identify the coefficients).
CLUSTER_COEF_PRIOR_SD = 1.0
#: A continuous imputed value this many observed SDs beyond the observed range is implausible
#: under a working model; the notes say so.
EXTRAPOLATION_SDS = 5.0


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImputationResult:
    """m completed data sets and what happened while making them.

    Attributes
    ----------
    method : str
        ``"flat"``, ``"stratified"``, ``"fixed_effects"`` or ``"multilevel"``.
    continuous : str
        ``"norm"`` or ``"pmm"``: how continuous variables were imputed.
    m, iterations : int
        Imputations (chains) and chained-equations iterations per chain.
    completed : list of pandas.DataFrame
        The m completed data sets: the model columns of the input (cluster,
        higher levels, cluster covariates, outcome, predictors; in input
        order, input index), with only the missing cells filled.
        Categorical columns keep their dtype and levels; numeric columns
        that were imputed come back as float64.
    imputed_mask : pandas.DataFrame
        True where a cell was missing and has been filled.
    chain_means : dict
        ``{variable: array (m, iterations)}``: mean of the imputed values
        (binary: share of the second level; categorical with more levels:
        mean level code; cluster covariates: mean over imputed clusters).
    rhat : dict
        ``{variable: split R-hat of chain_means over the last half}``.
    notes : list of str
        Fall-backs and other remarks in plain language.
    seed : int
    models : dict
        ``{variable: description of its imputation model}``.
    strata : str or None
        Column that defined the strata (``stratified`` only).
    fallbacks : dict
        Stratified only: ``{variable: {"strata": k, "of": n, "reasons":
        {reason: count}}}`` for each variable whose stratified model could
        not be fitted in ``k`` of the ``n`` strata (those strata were imputed
        from the flat model). Empty when no stratum fell back.
    cluster_means_dropped : dict
        Multilevel only: ``{variable: {"clusters": J_obs, "cluster_columns":
        q, "needed": k}}`` for each variable whose model left out the
        cluster means because only ``J_obs`` clusters observe it, fewer
        than the ``k`` needed for its ``q`` cluster-level columns (module
        docstring).
    extrapolated : dict
        ``{variable: largest distance, in observed SDs, of an imputed value
        beyond the observed range}`` for continuous variables where it
        exceeded ``EXTRAPOLATION_SDS`` (a sign of an extrapolating model).
    """

    method: str
    continuous: str
    m: int
    iterations: int
    completed: list = field(repr=False)
    imputed_mask: pd.DataFrame = field(repr=False)
    chain_means: dict = field(repr=False)
    rhat: dict
    notes: list
    seed: int
    models: dict = field(default_factory=dict)
    strata: str | None = None
    fallbacks: dict = field(default_factory=dict)
    cluster_means_dropped: dict = field(default_factory=dict)
    extrapolated: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Method label for ``estimates.csv``, e.g. ``"multilevel_mi"``, ``"flat_pmm_mi"``."""
        return f"{self.method}{'_pmm' if self.continuous == 'pmm' else ''}_mi"

    @property
    def imputed_variables(self) -> tuple:
        """Variables that had missing values, in the order they were visited."""
        return tuple(self.chain_means)

    def summary(self) -> str:
        """Plain text: method, variables, models, R-hat, notes (returned, not printed)."""
        lines = [f"{self.method} imputation ({self.continuous} for continuous variables), m = {self.m}, "
                 f"{self.iterations} iterations, seed {self.seed}"]
        for var in self.chain_means:
            n_missing = int(self.imputed_mask[var].sum())
            lines.append(f"  {var}: {n_missing} missing; {self.models.get(var, '')}; "
                         f"R-hat {self.rhat.get(var, float('nan')):.3f}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def split_rhat(draws) -> float:
    """Split R-hat of m chains (Gelman et al. 2013, BDA3 section 11.4).

    Parameters
    ----------
    draws : array_like, shape (m, n)
        One row per chain.

    Returns
    -------
    float
        Each chain is split in two halves (the middle draw dropped when
        ``n`` is odd); NaN when the halves are shorter than 2 draws; 1 when
        every draw is the same; inf when the chains are constant but differ.
    """
    x = np.asarray(draws, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"draws must be 2-dimensional (chains x draws), got shape {x.shape}.")
    half = x.shape[1] // 2
    if half < 2 or x.shape[0] < 1:
        return float("nan")
    chains = np.vstack([x[:, :half], x[:, x.shape[1] - half:]])
    within = chains.var(axis=1, ddof=1).mean()
    between = half * chains.mean(axis=1).var(ddof=1)
    if within <= 0:
        return 1.0 if between <= 0 else float("inf")
    var_plus = (half - 1) / half * within + between / half
    return float(np.sqrt(var_plus / within))


# --------------------------------------------------------------------------
# Variables and the problem
# --------------------------------------------------------------------------
@dataclass(eq=False)
class _Variable:
    """One model column, coded as floats (categorical: level codes)."""

    name: str
    level: int                # 1 = patient, 2 = cluster
    kind: str                 # "continuous" | "binary" | "categorical"
    values: np.ndarray        # n (level 1) or J (level 2); NaN where missing
    missing: np.ndarray       # bool, same length
    categories: tuple = ()    # original labels of the codes (coded columns only)

    @property
    def n_categories(self) -> int:
        return len(self.categories) if self.kind == "categorical" else 2

    def features(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "categorical":
            return (x[:, None] == np.arange(1, self.n_categories)[None, :]).astype(float)
        return x[:, None]

    def feature_names(self) -> list:
        if self.kind == "categorical":
            return [f"{self.name}[{c}]" for c in self.categories[1:]]
        return [self.name]


class _Notes:
    """Ordered, de-duplicated notes."""

    def __init__(self):
        self._items: dict[str, None] = {}

    def add(self, text: str) -> None:
        self._items.setdefault(text, None)

    def items(self) -> list:
        return list(self._items)


@dataclass(eq=False)
class _Problem:
    method: str
    continuous: str
    hetero: bool
    cluster_means: bool
    donors: int
    n: int
    J: int
    codes: np.ndarray
    sizes: np.ndarray
    level1: list
    level2: list
    higher: np.ndarray        # J x H indicator columns of the higher-level units
    higher_names: list
    strata: np.ndarray | None
    strata_rows: list
    strata_labels: list
    notes: _Notes
    broken: dict              # var -> {stratum label: reason}
    state: dict | None = None  # Gibbs state of the current chain
    means_dropped: dict = field(default_factory=dict)   # var -> {"clusters", "cluster_columns", "needed"}
    extrapolated: dict = field(default_factory=dict)    # var -> largest excess beyond the observed range (SDs)

    @property
    def visit(self) -> list:
        return [v for v in [*self.level1, *self.level2] if v.missing.any()]


# --------------------------------------------------------------------------
# Numerical helpers
# --------------------------------------------------------------------------
def _cluster_sums(values: np.ndarray, codes: np.ndarray, J: int) -> np.ndarray:
    if values.ndim == 1:
        return np.bincount(codes, weights=values, minlength=J)
    out = np.empty((J, values.shape[1]))
    for k in range(values.shape[1]):
        out[:, k] = np.bincount(codes, weights=values[:, k], minlength=J)
    return out


def _cholesky(S: np.ndarray, what: str) -> np.ndarray:
    S = 0.5 * (S + S.T)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6):
        try:
            if jitter:
                S = S + jitter * max(float(np.trace(S)) / S.shape[0], 1e-12) * np.eye(S.shape[0])
            return np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            continue
    raise FitError(f"{what}: the normal equations are singular even after removing collinear "
                   "columns; the imputation model cannot be fitted.")


def _block_gaussian(A, C, D, b_beta, b_alpha, rng=None):
    """Mean (and a draw) of the Gaussian with precision [[A, C'], [C, diag(D)]].

    The linear term is ``(b_beta, b_alpha)``. ``beta`` is drawn from its
    marginal (precision ``A - C' D^-1 C``, the Schur complement), then
    ``alpha | beta ~ N((b_alpha - C beta) / D, 1 / D)``.
    """
    CD = C / D[:, None]
    S = A - C.T @ CD
    rhs = b_beta - CD.T @ b_alpha
    L = _cholesky(S, "coefficient draw")
    beta_hat = linalg.cho_solve((L, True), rhs, check_finite=False)
    alpha_hat = (b_alpha - C @ beta_hat) / D
    if rng is None:
        return beta_hat, alpha_hat, None, None
    beta = beta_hat + linalg.solve_triangular(L, rng.standard_normal(beta_hat.size), lower=True, trans="T",
                                              check_finite=False)
    alpha = (b_alpha - C @ beta) / D + rng.standard_normal(D.size) / np.sqrt(D)
    return beta_hat, alpha_hat, beta, alpha


def _independent_columns(Z: np.ndarray, centred: bool = False) -> np.ndarray:
    """Sorted indices of a maximal set of linearly independent columns (after centring).

    Columns are taken in order; a column is dropped when less than
    ``COLLINEAR_TOL^2`` of its (centred) sum of squares is left after
    projecting it on the columns kept before it. Works on the Gram matrix
    (an incremental Cholesky factorisation), which is cheap for the few
    columns of an imputation model.
    """
    n, q = Z.shape
    if q == 0 or n == 0:
        return np.arange(0)
    C = Z if centred else Z - Z.mean(axis=0)
    G = C.T @ C
    kept: list[int] = []
    L = np.zeros((q, q))
    for j in range(q):
        gjj = G[j, j]
        if gjj <= 1e-18 * n:
            continue
        if kept:
            l = linalg.solve_triangular(L[:len(kept), :len(kept)], G[kept, j], lower=True)
            resid = gjj - float(l @ l)
        else:
            l = np.empty(0)
            resid = gjj
        if resid <= COLLINEAR_TOL ** 2 * gjj:
            continue
        k = len(kept)
        L[k, :k] = l
        L[k, k] = np.sqrt(resid)
        kept.append(j)
    return np.asarray(kept, dtype=int)


def _prepare(X: np.ndarray, names: list, fit_rows, pred_rows, *, intercept: bool = True,
             notes: _Notes | None = None, target: str = ""):
    """Standardise on the fitting rows, drop constant and collinear columns.

    Returns the fitting and prediction design matrices (leading intercept
    column when requested) and the kept column names.
    """
    Xo = X[fit_rows]
    Xp = X[pred_rows]
    if X.shape[1]:
        mu = Xo.mean(axis=0)
        centred = Xo - mu
        sd = np.sqrt(np.einsum("ij,ij->j", centred, centred) / max(Xo.shape[0], 1))
        keep = np.flatnonzero(sd > 1e-9 * np.maximum(1.0, np.abs(mu)))
        Zo = centred[:, keep] / sd[keep]
        independent = _independent_columns(Zo, centred=True)
        chosen = keep[independent]
        if notes is not None and len(chosen) < len(keep):
            dropped = [names[k] for k in keep if k not in set(chosen.tolist())]
            notes.add(f"Imputation model for '{target}': dropped {', '.join(map(repr, dropped))} "
                      "(linearly dependent on the other predictors where it is observed).")
        Zo = Zo[:, independent]
        Zp = (Xp[:, chosen] - mu[chosen]) / sd[chosen]
        kept = [names[k] for k in chosen]
    else:
        Zo, Zp, kept = np.empty((Xo.shape[0], 0)), np.empty((Xp.shape[0], 0)), []
    if intercept:
        Zo = np.column_stack([np.ones(Zo.shape[0]), Zo])
        Zp = np.column_stack([np.ones(Zp.shape[0]), Zp])
    return Zo, Zp, kept


def _standardise_target(y: np.ndarray):
    centre = float(y.mean())
    scale = float(y.std())
    return centre, (scale if scale > 0 else 1.0)


def _pmm_match(yhat_obs: np.ndarray, yhat_mis: np.ndarray, rng, donors: int) -> np.ndarray:
    """Index (into the observed rows) of the donor of each missing row.

    The donor is a random one of the ``donors`` observed rows with the
    closest predicted means (type-1 matching: observed predicted from the
    estimate, missing from the draw).
    """
    n = yhat_obs.size
    k = max(1, min(donors, n))
    order = np.argsort(yhat_obs, kind="stable")
    s = yhat_obs[order]
    width = min(2 * k, n)
    pos = np.searchsorted(s, yhat_mis)
    start = np.clip(pos - k, 0, n - width)
    idx = start[:, None] + np.arange(width)[None, :]
    dist = np.abs(s[idx] - yhat_mis[:, None])
    if width > k:
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
    else:
        nearest = np.broadcast_to(np.arange(width), (yhat_mis.size, width))
    pick = nearest[np.arange(yhat_mis.size), rng.integers(nearest.shape[1], size=yhat_mis.size)]
    return order[idx[np.arange(yhat_mis.size), pick]]


# --------------------------------------------------------------------------
# Single-level draws
# --------------------------------------------------------------------------
def _linear_draw(Do, yo, Dp, rng, *, pmm: bool, donors: int) -> np.ndarray:
    """Bayesian linear regression draw (mice norm.draw), or pmm on it."""
    centre, scale = _standardise_target(yo)
    z = (yo - centre) / scale
    n, p = Do.shape
    xtx = Do.T @ Do
    xtx = xtx + np.diag(1e-5 * np.diag(xtx))
    L = _cholesky(xtx, "linear imputation model")
    beta_hat = linalg.cho_solve((L, True), Do.T @ z, check_finite=False)
    resid = z - Do @ beta_hat
    sigma = np.sqrt(float(resid @ resid) / rng.chisquare(max(n - p, 1)))
    beta = beta_hat + sigma * linalg.solve_triangular(L, rng.standard_normal(p), lower=True, trans="T",
                                                      check_finite=False)
    if pmm:
        return yo[_pmm_match(Do @ beta_hat, Dp @ beta, rng, donors)]
    return centre + scale * (Dp @ beta + sigma * rng.standard_normal(Dp.shape[0]))


def _logistic_mode(D, y, prior_prec, offset=None, max_iter: int = 60):
    """Posterior mode of a logistic regression with independent normal priors (mean 0)."""
    p = D.shape[1]
    beta = np.zeros(p)
    off = 0.0 if offset is None else offset

    def objective(b):
        eta = D @ b + off
        return float(y @ eta - np.logaddexp(0.0, eta).sum() - 0.5 * np.sum(prior_prec * b * b))

    value = objective(beta)
    H = None
    for _ in range(max_iter):
        eta = D @ beta + off
        prob = special.expit(eta)
        w = prob * (1.0 - prob)
        grad = D.T @ (y - prob) - prior_prec * beta
        H = D.T @ (D * w[:, None]) + np.diag(prior_prec)
        step = linalg.cho_solve((_cholesky(H, "logistic imputation model"), True), grad)
        t = 1.0
        for _ in range(30):
            candidate = beta + t * step
            new_value = objective(candidate)
            if new_value >= value - 1e-10 * abs(value):
                break
            t *= 0.5
        beta, value = candidate, new_value
        if np.max(np.abs(t * step)) < 1e-8:
            break
    eta = D @ beta + off
    prob = special.expit(eta)
    H = D.T @ (D * (prob * (1.0 - prob))[:, None]) + np.diag(prior_prec)
    return beta, H


def _logistic_prior(p: int) -> np.ndarray:
    prec = np.full(p, 1.0 / LOGISTIC_PRIOR_SD ** 2)
    prec[0] = 1.0 / 100.0
    return prec


def _logistic_draw(Do, yo, Dp, rng) -> np.ndarray:
    """Logistic regression draw (mice logreg, with weakly informative priors)."""
    beta_hat, H = _logistic_mode(Do, yo, _logistic_prior(Do.shape[1]))
    L = _cholesky(H, "logistic imputation model")
    beta = beta_hat + linalg.solve_triangular(L, rng.standard_normal(beta_hat.size), lower=True, trans="T")
    return (rng.random(Dp.shape[0]) < special.expit(Dp @ beta)).astype(float)


# --------------------------------------------------------------------------
# Fixed-effects (cluster intercept) draws
# --------------------------------------------------------------------------
def _within_independent(Do, co, J):
    """Columns of Do that stay independent after removing cluster means."""
    n_j = np.bincount(co, minlength=J).astype(float)
    means = _cluster_sums(Do, co, J) / np.maximum(n_j, 1.0)[:, None]
    return _independent_columns(Do - means[co])


def _empty_cluster_intercepts(alpha_hat, has, rng, J, cp, notes, target):
    if notes is not None and np.isin(cp, np.flatnonzero(~has)).any():
        notes.add(f"Fixed-effects imputation of '{target}': some clusters never observe it, so their "
                  "intercepts cannot be estimated; they were drawn from a normal distribution with the "
                  "mean and SD of the other clusters' estimated intercepts.")
    centre = float(alpha_hat[has].mean())
    spread = float(alpha_hat[has].std(ddof=1)) if has.sum() > 1 else 0.0
    return centre + spread * rng.standard_normal(J)


def _fe_linear_draw(Do, yo, co, Dp, cp, J, rng, *, pmm, donors, notes, target):
    cols = _within_independent(Do, co, J)
    Do, Dp = Do[:, cols], Dp[:, cols]
    centre, scale = _standardise_target(yo)
    z = (yo - centre) / scale
    n_j = np.bincount(co, minlength=J).astype(float)
    has = n_j > 0
    D = np.where(has, n_j, 1.0)
    A = Do.T @ Do
    C = _cluster_sums(Do, co, J)
    b_beta = Do.T @ z
    b_alpha = np.bincount(co, weights=z, minlength=J)
    beta_hat, alpha_hat, beta_u, alpha_u = _block_gaussian(A, C, D, b_beta, b_alpha, rng)
    resid = z - Do @ beta_hat - alpha_hat[co]
    df = z.size - Do.shape[1] - int(has.sum())
    if df < 1:
        notes.add(f"Fixed-effects imputation of '{target}': fewer observed values than cluster "
                  "intercepts + predictors; the residual variance rests on 1 degree of freedom.")
        df = 1
    sigma = np.sqrt(float(resid @ resid) / rng.chisquare(df))
    beta = beta_hat + sigma * (beta_u - beta_hat)
    alpha = alpha_hat + sigma * (alpha_u - alpha_hat)
    if (~has).any():
        alpha = np.where(has, alpha, _empty_cluster_intercepts(alpha_hat, has, rng, J, cp, notes, target))
    if pmm:
        return yo[_pmm_match(Do @ beta_hat + alpha_hat[co], Dp @ beta + alpha[cp], rng, donors)]
    return centre + scale * (Dp @ beta + alpha[cp] + sigma * rng.standard_normal(Dp.shape[0]))


def _fe_logistic_draw(Do, yo, co, Dp, cp, J, rng, *, notes=None, target=""):
    cols = _within_independent(Do, co, J)
    Do, Dp = Do[:, cols], Dp[:, cols]
    rate = float(np.clip(yo.mean(), 0.01, 0.99))
    mu0 = float(np.log(rate / (1 - rate)))
    a_prec = 1.0 / FE_LOGISTIC_PRIOR_SD ** 2
    b_prec = np.full(Do.shape[1], 1.0 / LOGISTIC_PRIOR_SD ** 2)
    n_j = np.bincount(co, minlength=J)
    has = n_j > 0
    beta = np.zeros(Do.shape[1])
    alpha = np.full(J, mu0)

    def log_post(b, a):
        eta = Do @ b + a[co]
        return float(yo @ eta - np.logaddexp(0.0, eta).sum() - 0.5 * np.sum(b_prec * b * b)
                     - 0.5 * a_prec * np.sum((a - mu0) ** 2))

    def system(b, a):
        eta = Do @ b + a[co]
        prob = special.expit(eta)
        w = np.maximum(prob * (1 - prob), 1e-10)
        zw = w * eta + (yo - prob)
        A = Do.T @ (Do * w[:, None]) + np.diag(b_prec)
        C = _cluster_sums(Do * w[:, None], co, J)
        D = np.bincount(co, weights=w, minlength=J) + a_prec
        return A, C, D, Do.T @ zw, np.bincount(co, weights=zw, minlength=J) + a_prec * mu0

    value = log_post(beta, alpha)
    for _ in range(60):
        b_new, a_new, _, _ = _block_gaussian(*system(beta, alpha))
        t = 1.0
        for _ in range(30):
            cb, ca = beta + t * (b_new - beta), alpha + t * (a_new - alpha)
            new_value = log_post(cb, ca)
            if new_value >= value - 1e-10 * abs(value):
                break
            t *= 0.5
        change = max(np.max(np.abs(cb - beta), initial=0.0), np.max(np.abs(ca - alpha)))
        beta, alpha, value = cb, ca, new_value
        if change < 1e-8:
            break
    beta_hat, alpha_hat, beta_d, alpha_d = _block_gaussian(*system(beta, alpha), rng)
    if (~has).any():
        alpha_d = np.where(has, alpha_d, _empty_cluster_intercepts(alpha_hat, has, rng, J, cp, notes, target))
    return (rng.random(Dp.shape[0]) < special.expit(Dp @ beta_d + alpha_d[cp])).astype(float)


# --------------------------------------------------------------------------
# Random-intercept draws
# --------------------------------------------------------------------------
def _ri_gibbs_draw(Do, yo, co, Dp, cp, J, rng, *, state: dict, hetero: bool, pmm: bool, donors: int,
                   prior_precision=None):
    """Gibbs sampler of the random-intercept normal model, then draws (2l.pan / 2l.norm / 2l.pmm).

    ``prior_precision`` (length ``p``, 0 = flat) adds independent ``N(0, 1 / precision)``
    priors on the standardised coefficients (the cluster-level columns' ridge).
    """
    centre, scale = _standardise_target(yo)
    z = (yo - centre) / scale
    n, p = Do.shape
    # per-cluster sufficient statistics in one pass over rows sorted by cluster
    order = np.argsort(co, kind="stable")
    cs, Xs, zs_sorted = co[order], Do[order], z[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    rows = np.concatenate([(Xs[:, :, None] * Xs[:, None, :]).reshape(n, p * p), Xs, Xs * zs_sorted[:, None],
                           zs_sorted[:, None], (zs_sorted ** 2)[:, None], np.ones((n, 1))], axis=1)
    sums = np.zeros((J, rows.shape[1]))
    sums[cs[starts]] = np.add.reduceat(rows, starts, axis=0)
    XX = sums[:, :p * p].reshape(J, p, p)
    S = sums[:, p * p:p * p + p]
    Xz = sums[:, p * p + p:p * p + 2 * p]
    zs, zz, n_j = sums[:, -3], sums[:, -2], sums[:, -1]
    has = n_j > 0
    J_obs = int(has.sum())
    first = "tau2" not in state
    tau2 = state.get("tau2", 0.25)
    sig2 = np.broadcast_to(np.asarray(state.get("sig2", 0.75), dtype=float), (J,)).copy()
    s2 = state.get("s2", 0.75)
    nu = RESIDUAL_PRIOR_DF
    ridge = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, dtype=float)
    for _ in range(GIBBS_BURN_IN if first else GIBBS_SWEEPS):
        w = 1.0 / sig2
        A = np.einsum("j,jkl->kl", w, XX) + np.diag(ridge)
        C = w[:, None] * S
        D = w * n_j + 1.0 / tau2
        beta_hat, u_hat, beta, u = _block_gaussian(A, C, D, (w[:, None] * Xz).sum(axis=0), w * zs, rng)
        rss = (zz - 2.0 * Xz @ beta - 2.0 * u * zs + np.einsum("k,jkl,l->j", beta, XX, beta)
               + 2.0 * u * (S @ beta) + n_j * u * u)
        rss = np.maximum(rss, 0.0)
        # sigma^2 | beta, u does not involve the prior of beta
        if hetero:
            sig2 = (rss + nu * s2) / rng.chisquare(n_j + nu)
            s2 = rng.gamma(shape=0.5 * nu * J_obs, scale=1.0 / (0.5 * nu * np.sum(1.0 / sig2[has])))
        else:
            sig2 = np.full(J, float(rss.sum()) / rng.chisquare(max(z.size, 1)))
        tau2 = _draw_tau2(float(np.sum(u[has] ** 2)) + TAU2_FLOOR, max(J_obs - 1, 1), rng)
    state.update(tau2=tau2, sig2=sig2 if hetero else float(sig2[0]), s2=s2)
    if pmm:
        return yo[_pmm_match(Do @ beta_hat + u_hat[co], Dp @ beta + u[cp], rng, donors)]
    return centre + scale * (Dp @ beta + u[cp] + np.sqrt(sig2[cp]) * rng.standard_normal(Dp.shape[0]))


def _draw_tau2(scale_sum: float, df: int, rng) -> float:
    """``tau^2 = scale_sum / chi2_df`` truncated to ``tau <= TAU_MAX`` (uniform prior on (0, TAU_MAX]).

    An untruncated draw inside the bound is kept; otherwise the chi-square is redrawn from
    its distribution truncated to ``chi2 >= scale_sum / TAU_MAX^2`` by inversion. Together
    that is an exact draw from the truncated distribution, and the random stream is the
    plain one whenever the bound does not bind.
    """
    x = rng.chisquare(df)
    if scale_sum / x <= TAU_MAX ** 2:
        return scale_sum / x
    lower = scale_sum / TAU_MAX ** 2
    tail = stats.chi2.sf(lower, df)
    if not tail > 0:
        return TAU_MAX ** 2
    x = max(float(stats.chi2.isf(rng.uniform(0.0, tail), df)), lower)
    return scale_sum / x


def _conditional_modes(offset, y, codes, J, tau2):
    """Modes and curvatures of u_j | beta, tau for a random-intercept logistic model."""
    u = np.zeros(J)
    prec = 1.0 / tau2
    for _ in range(100):
        prob = special.expit(offset + u[codes])
        grad = np.bincount(codes, weights=y - prob, minlength=J) - prec * u
        curv = np.bincount(codes, weights=prob * (1 - prob), minlength=J) + prec
        step = np.clip(grad / curv, -2.0, 2.0)
        u = u + step
        if np.max(np.abs(step)) < 1e-9:
            break
    prob = special.expit(offset + u[codes])
    curv = np.bincount(codes, weights=prob * (1 - prob), minlength=J) + prec
    return u, curv


def _ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, *, notes: _Notes, target: str):
    """2l.bin: hmlib.stats.mixed fit, then beta*, tau*, u* and the values."""
    from hmlib.stats.mixed import fit_random_intercept

    try:
        fit = fit_random_intercept(yo, Do, co, family="binomial")
    except FitError as exc:
        notes.add(f"Random-intercept logistic model for '{target}' could not be fitted ({exc}); "
                  "those values were drawn from the flat logistic model instead.")
        return _logistic_draw(Do, yo, Dp, rng)
    cov = 0.5 * (fit.cov + fit.cov.T)
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(fit.coef))):
        notes.add(f"Random-intercept logistic model for '{target}' gave no usable covariance matrix; those "
                  "values were drawn from the flat logistic model instead.")
        return _logistic_draw(Do, yo, Dp, rng)
    vals, vecs = np.linalg.eigh(cov)
    beta = fit.coef + vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * rng.standard_normal(vals.size))
    sd = float(fit.cluster_sd)
    log_se = float(fit.log_cluster_sd_std_error)
    if sd > 0 and np.isfinite(log_se):
        tau = min(sd * np.exp(min(log_se * rng.standard_normal(), 700.0)), LOGISTIC_TAU_MAX)
    else:
        tau = sd
        notes.add(f"Random-intercept logistic model for '{target}': the cluster SD was estimated at "
                  f"{sd:.3g} without a standard error in some imputations; it was used as estimated.")
    if tau > 0:
        u_mode, curv = _conditional_modes(Do @ beta, yo, co, J, tau * tau)
        u = u_mode + rng.standard_normal(J) / np.sqrt(curv)
    else:
        u = np.zeros(J)
    return (rng.random(Dp.shape[0]) < special.expit(Dp @ beta + u[cp])).astype(float)


# --------------------------------------------------------------------------
# Designs
# --------------------------------------------------------------------------
def _level1_design(problem: _Problem, current: dict, target: _Variable):
    """Design of a level-1 target: its columns, their names and the names of the cluster-level ones.

    The third value is ``(mean_names, cluster_names)``: the cluster-mean columns and all
    cluster-level columns (cluster means, cluster covariates, higher-level indicators).
    """
    blocks, names = [], []
    for v in problem.level1:
        if v is target:
            continue
        blocks.append(v.features(current[v.name]))
        names.extend(v.feature_names())
    base = np.column_stack(blocks) if blocks else np.empty((problem.n, 0))
    parts, all_names = [base], list(names)
    codes = problem.codes
    mean_names: list[str] = []
    if problem.method in ("multilevel", "stratified"):
        if problem.method == "multilevel" and problem.cluster_means and base.shape[1]:
            means = _cluster_sums(base, codes, problem.J) / problem.sizes[:, None]
            parts.append(means[codes])
            mean_names = [f"mean({nm})" for nm in names]
            all_names.extend(mean_names)
        for v in problem.level2:
            parts.append(v.features(current[v.name])[codes])
            all_names.extend(v.feature_names())
        if problem.method == "multilevel" and problem.higher.shape[1]:
            parts.append(problem.higher[codes])
            all_names.extend(problem.higher_names)
    cluster_names = all_names[len(names):]
    return np.column_stack(parts), all_names, (mean_names, cluster_names)


def _level2_design(problem: _Problem, current: dict, target: _Variable):
    blocks, names = [], []
    for v in problem.level1:
        blocks.append(_cluster_sums(v.features(current[v.name]), problem.codes, problem.J)
                      / problem.sizes[:, None])
        names.extend(f"mean({nm})" for nm in v.feature_names())
    for v in problem.level2:
        if v is target:
            continue
        blocks.append(v.features(current[v.name]))
        names.extend(v.feature_names())
    if problem.higher.shape[1]:
        blocks.append(problem.higher)
        names.extend(problem.higher_names)
    X = np.column_stack(blocks) if blocks else np.empty((problem.J, 0))
    return X, names


# --------------------------------------------------------------------------
# Per-variable imputation
# --------------------------------------------------------------------------
def _flat_fit_and_draw(X, names, y, obs, mis, rng, *, kind, problem, target, note_collinear=True):
    Do, Dp, _ = _prepare(X, names, obs, mis, notes=problem.notes if note_collinear else None, target=target)
    n_obs = int(np.sum(obs))
    if n_obs - Do.shape[1] < 2:
        problem.notes.add(f"Imputation model for '{target}': only {n_obs} observed values, too few for its "
                          f"{Do.shape[1]} terms; imputed from an intercept-only model.")
        Do, Dp = Do[:, :1], Dp[:, :1]
    if kind == "binary":
        return _logistic_draw(Do, y[obs], Dp, rng)
    return _linear_draw(Do, y[obs], Dp, rng, pmm=problem.continuous == "pmm", donors=problem.donors)


def _cluster_level_budget(problem: _Problem, var: _Variable, X, names, cluster_info, obs):
    """Leave out the cluster means when too few clusters observe the target to identify them.

    The cluster-level columns vary only between clusters, so their coefficients are
    estimated from the clusters that observe the target, not from its rows. With few
    such clusters (or as many columns as clusters) they are unidentified and a cluster
    without observed values is imputed by wild extrapolation. Returns the design
    without the cluster-mean columns when fewer than ``max(MIN_CLUSTERS_FOR_MEANS,
    CLUSTERS_PER_CLUSTER_COLUMN * q)`` clusters observe the target (``q`` = all
    cluster-level columns), else the design unchanged.
    """
    mean_names, cluster_names = cluster_info
    if not mean_names:
        return X, names
    clusters_observing = int(np.unique(problem.codes[obs]).size)
    q = len(cluster_names)
    needed = max(MIN_CLUSTERS_FOR_MEANS, CLUSTERS_PER_CLUSTER_COLUMN * q)
    if clusters_observing >= needed:
        return X, names
    previous = problem.means_dropped.get(var.name)
    if previous is None or clusters_observing < previous["clusters"]:
        problem.means_dropped[var.name] = {"clusters": clusters_observing, "cluster_columns": q,
                                           "needed": needed}
    drop = set(mean_names)
    keep = np.array([nm not in drop for nm in names])
    return X[:, keep], [nm for nm, k in zip(names, keep) if k]


def _level1_draw(problem: _Problem, var: _Variable, X, names, y, obs, mis, kind: str, rng, key,
                 cluster_info=((), ())):
    """Draw values of one level-1 (binary or continuous) target at rows ``mis``."""
    method = problem.method
    codes = problem.codes
    if method == "flat":
        return _flat_fit_and_draw(X, names, y, obs, mis, rng, kind=kind, problem=problem, target=var.name)
    if method == "stratified":
        return _stratified_draw(problem, var, X, names, y, obs, mis, kind, rng)
    if method == "fixed_effects":
        Do, Dp, _ = _prepare(X, names, obs, mis, intercept=False, notes=problem.notes, target=var.name)
        if kind == "binary":
            return _fe_logistic_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                                     notes=problem.notes, target=var.name)
        return _fe_linear_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                               pmm=problem.continuous == "pmm", donors=problem.donors,
                               notes=problem.notes, target=var.name)
    X, names = _cluster_level_budget(problem, var, X, names, cluster_info, obs)
    Do, Dp, kept = _prepare(X, names, obs, mis, notes=problem.notes, target=var.name)
    n_obs = int(obs.sum())
    if n_obs - Do.shape[1] < 2:
        problem.notes.add(f"Imputation model for '{var.name}': only {n_obs} observed values, too few for its "
                          f"{Do.shape[1]} terms; imputed from a model with the random intercept only.")
        Do, Dp, kept = Do[:, :1], Dp[:, :1], []
    if kind == "binary":
        return _ri_logistic_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                                 notes=problem.notes, target=var.name)
    cluster_level = set(cluster_info[1])
    ridge = np.r_[0.0, [1.0 / CLUSTER_COEF_PRIOR_SD ** 2 if nm in cluster_level else 0.0 for nm in kept]]
    state = problem.state.setdefault(key, {})
    return _ri_gibbs_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng, state=state,
                          hetero=problem.hetero, pmm=problem.continuous == "pmm", donors=problem.donors,
                          prior_precision=ridge)


def _stratified_draw(problem: _Problem, var: _Variable, X, names, y, obs, mis, kind, rng):
    out = np.empty(int(mis.sum()))
    position = np.cumsum(mis) - 1          # row -> index into out
    fallback_rows = []
    broken = problem.broken.setdefault(var.name, {})
    for s, rows in enumerate(problem.strata_rows):
        m_rows = rows[mis[rows]]
        if m_rows.size == 0:
            continue
        o_rows = rows[obs[rows]]
        label = problem.strata_labels[s]
        reason = None
        if o_rows.size == 0:
            reason = "no observed value"
        elif kind == "binary" and np.unique(y[o_rows]).size < 2:
            reason = "a single observed value"
        else:
            Do, Dp, _ = _prepare(X, names, o_rows, m_rows)
            if o_rows.size - Do.shape[1] < 2:
                reason = "fewer observed values than model terms + 2"
            elif kind == "binary":
                out[position[m_rows]] = _logistic_draw(Do, y[o_rows], Dp, rng)
            else:
                out[position[m_rows]] = _linear_draw(Do, y[o_rows], Dp, rng, pmm=problem.continuous == "pmm",
                                                     donors=problem.donors)
        if reason is not None:
            broken[label] = reason
            fallback_rows.append(m_rows)
    if fallback_rows:
        rows = np.concatenate(fallback_rows)
        fb_mis = np.zeros(problem.n, dtype=bool)
        fb_mis[rows] = True
        draws = _flat_fit_and_draw(X, names, y, obs, fb_mis, rng, kind=kind, problem=problem,
                                   target=var.name, note_collinear=False)
        out[position[np.flatnonzero(fb_mis)]] = draws
    return out


def _level2_draw(problem: _Problem, var: _Variable, X, names, y, obs, mis, kind, rng):
    Do, Dp, _ = _prepare(X, names, obs, mis, notes=problem.notes, target=var.name)
    if int(obs.sum()) - Do.shape[1] < 3:
        problem.notes.add(f"Cluster-level model for '{var.name}': only {int(obs.sum())} clusters observe it, "
                          "too few for its predictors; imputed from an intercept-only model.")
        Do, Dp = np.ones((int(obs.sum()), 1)), np.ones((int(mis.sum()), 1))
    if kind == "binary":
        return _logistic_draw(Do, y[obs], Dp, rng)
    return _linear_draw(Do, y[obs], Dp, rng, pmm=problem.continuous == "pmm", donors=problem.donors)


def _impute_variable(problem: _Problem, var: _Variable, current: dict, rng) -> None:
    """One chained-equations update of ``var`` in ``current`` (in place)."""
    obs = ~var.missing
    mis = var.missing
    if var.level == 1:
        X, names, cluster_info = _level1_design(problem, current, var)

        def draw(y, o, msk, kind, key):
            return _level1_draw(problem, var, X, names, y, o, msk, kind, rng, key, cluster_info)
    else:
        X, names = _level2_design(problem, current, var)

        def draw(y, o, msk, kind, key):
            return _level2_draw(problem, var, X, names, y, o, msk, kind, rng)

    y = current[var.name].copy()
    if var.kind == "continuous":
        y[mis] = draw(y, obs, mis, "continuous", var.name)
        _check_range(problem, var, y[mis])
    elif var.kind == "binary":
        if np.unique(var.values[obs]).size < 2:
            y[mis] = var.values[obs][0]
        else:
            y[mis] = draw(y, obs, mis, "binary", var.name)
    else:
        y = _nested_dichotomies(var, y, obs, mis, draw)
    current[var.name] = y


def _check_range(problem: _Problem, var: _Variable, imputed: np.ndarray) -> None:
    """Record how far imputed values fall beyond the observed range (in observed SDs), if far."""
    observed = var.values[~var.missing]
    if observed.size < 2 or imputed.size == 0:
        return
    sd = float(observed.std())
    if not sd > 0:
        return
    excess = max(float(observed.min() - imputed.min()), float(imputed.max() - observed.max()), 0.0) / sd
    if not np.isfinite(excess) or excess > EXTRAPOLATION_SDS:
        excess = float("inf") if not np.isfinite(excess) else excess
        problem.extrapolated[var.name] = max(problem.extrapolated.get(var.name, 0.0), excess)


def _nested_dichotomies(var: _Variable, y, obs, mis, draw):
    remaining = mis.copy()
    y = y.copy()
    observed_codes = var.values
    for k in range(var.n_categories - 1):
        if not remaining.any():
            break
        fit_rows = obs & (observed_codes >= k)
        target = (observed_codes == k).astype(float)
        present = np.unique(target[fit_rows])
        if present.size == 0:
            break
        if present.size == 1:
            hit = np.full(int(remaining.sum()), present[0])
        else:
            hit = draw(target, fit_rows, remaining, "binary", f"{var.name}[{k}]")
        rows = np.flatnonzero(remaining)
        chosen = rows[hit > 0.5]
        y[chosen] = k
        remaining[chosen] = False
    y[remaining] = var.n_categories - 1
    return y


# --------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------
def _code_variable(name, series: pd.Series, kind: str, levels):
    """Return (kind, values, categories) for one column."""
    missing = series.isna().to_numpy()
    if kind == "categorical":
        present = series[~missing]
        text = present.astype(str)
        cats = list(levels) if levels is not None else sorted(text.unique().tolist())
        cats = [str(c) for c in cats]
        index = {c: i for i, c in enumerate(cats)}
        unknown = sorted(set(text.unique().tolist()) - set(index))
        if unknown:
            raise DataError(f"column '{name}' has value(s) {unknown[:3]} that are not among its levels "
                            f"{cats}; add them to the levels or recode them.")
        codes = np.full(len(series), np.nan)
        codes[~missing] = text.map(index).to_numpy(dtype=float)
        originals = []
        for c in cats:
            hit = present[text == c]
            originals.append(hit.iloc[0] if len(hit) else c)
        # one level: a constant (dropped from every design; missing cells get that level)
        return ("categorical" if len(cats) > 2 else "binary"), codes, tuple(originals)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~missing & np.isnan(values)
    if bad.any():
        raise DataError(f"column '{name}' is numeric but {int(bad.sum())} value(s) are not numbers, e.g. "
                        f"{series[bad].iloc[0]!r}; declare it categorical or fix the values.")
    observed = values[~missing]
    if observed.size and np.all(np.isin(observed, (0.0, 1.0))):
        return "binary", values, ()
    return "continuous", values, ()


def _infer_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def _build_problem(frame, *, method, cluster, outcome, outcome_family, predictors, kinds, levels,
                   cluster_covariates, higher_levels, continuous, hetero, cluster_means, strata, donors):
    levels = dict(levels or {})
    kinds = dict(kinds or {})
    notes = _Notes()
    groups = frame[cluster]
    if groups.isna().any():
        raise DataError(f"the cluster column '{cluster}' is missing in {int(groups.isna().sum())} row(s); "
                        "remove those rows first (hmlib.data.load_registry does).")
    codes, labels = pd.factorize(groups, sort=True)
    codes = codes.astype(np.intp)
    J = len(labels)
    if J < 2:
        raise DataError(f"the cluster column '{cluster}' has a single value; imputation by cluster needs "
                        "at least 2 clusters.")
    n = len(frame)
    sizes = np.bincount(codes, minlength=J).astype(float)
    if outcome_family not in ("binomial", "gaussian"):
        raise ValueError(f"outcome_family must be 'binomial' or 'gaussian', got {outcome_family!r}.")

    level1_cols = [*predictors, outcome]
    level2_cols = list(cluster_covariates)
    if method == "flat":
        level1_cols, level2_cols = [*level1_cols, *level2_cols], []
    level1, level2 = [], []
    for col in [*level1_cols, *level2_cols]:
        series = frame[col]
        if series.isna().all():
            raise DataError(f"'{col}' is missing in all {n} rows; it cannot be imputed. Remove it from the "
                            "model or check the export.")
        kind = kinds.get(col) or _infer_kind(series)
        if col == outcome:
            kind = "numeric"
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"kinds['{col}'] must be 'numeric' or 'categorical', got {kind!r}.")
        coded_kind, values, cats = _code_variable(col, series, kind, levels.get(col))
        if col == outcome:
            if outcome_family == "binomial" and coded_kind != "binary":
                raise DataError(f"the outcome '{outcome}' must be 0/1 for outcome_family: binomial.")
            if outcome_family == "gaussian":
                coded_kind = "continuous"
        missing = np.isnan(values)
        if col in level2_cols:
            per_cluster = pd.Series(values).groupby(codes)
            distinct = per_cluster.nunique(dropna=True)
            if (distinct > 1).any():
                raise DataError(f"cluster covariate '{col}' varies within {int((distinct > 1).sum())} "
                                "cluster(s); a cluster-level column must be constant within each cluster.")
            cluster_values = per_cluster.first().reindex(range(J)).to_numpy(dtype=float)
            partial = int((missing & ~np.isnan(cluster_values[codes])).sum())
            if partial:
                notes.add(f"'{col}' was missing in {partial} row(s) of clusters that record it elsewhere; "
                          "those rows took their cluster's value before imputation.")
            level2.append(_Variable(col, 2, coded_kind, cluster_values, np.isnan(cluster_values), cats))
        else:
            level1.append(_Variable(col, 1, coded_kind, values, missing, cats))

    higher_blocks, higher_names = [], []
    for col in higher_levels:
        series = frame[col]
        if series.isna().any():
            raise DataError(f"higher-level column '{col}' is missing in {int(series.isna().sum())} row(s); "
                            "each cluster must belong to a known higher-level unit.")
        per_cluster = pd.Series(series.astype(str).to_numpy()).groupby(codes)
        if (per_cluster.nunique() > 1).any():
            raise DataError(f"clusters are not nested in '{col}': some cluster belongs to more than one "
                            f"'{col}'.")
        unit = per_cluster.first().reindex(range(J)).to_numpy()
        units = sorted(set(unit.tolist()))
        for u in units[1:]:
            higher_blocks.append((unit == u).astype(float))
            higher_names.append(f"{col}[{u}]")
    higher = np.column_stack(higher_blocks) if higher_blocks else np.empty((J, 0))

    strata_codes, strata_rows, strata_labels, strata_name = None, [], [], None
    if method == "stratified":
        strata_name = strata
        if strata_name is None:
            candidates = [c for c in cluster_covariates
                          if (kinds.get(c) or _infer_kind(frame[c])) == "categorical" and frame[c].notna().all()]
            strata_name = candidates[0] if candidates else cluster
        elif strata_name != cluster and strata_name not in cluster_covariates:
            raise ValueError(f"strata must be the cluster column '{cluster}' or one of the cluster "
                             f"covariates {list(cluster_covariates)}, got {strata_name!r}.")
        if strata_name != cluster and frame[strata_name].isna().any():
            notes.add(f"Stratified imputation: '{strata_name}' has missing values, so the strata are the "
                      f"clusters ('{cluster}') instead.")
            strata_name = cluster
        s_codes, s_labels = pd.factorize(frame[strata_name], sort=True)
        strata_codes = s_codes.astype(np.intp)
        order = np.argsort(strata_codes, kind="stable")
        bounds = np.searchsorted(strata_codes[order], np.arange(len(s_labels) + 1))
        strata_rows = [order[bounds[s]:bounds[s + 1]] for s in range(len(s_labels))]
        strata_labels = [str(x) for x in s_labels]
    if hetero and method != "multilevel":
        notes.add("cluster_residual_variance applies to multilevel imputation only; ignored.")
    return _Problem(method=method, continuous=continuous, hetero=bool(hetero and method == "multilevel"),
                    cluster_means=cluster_means, donors=int(donors), n=n, J=J, codes=codes, sizes=sizes,
                    level1=level1, level2=level2, higher=higher, higher_names=higher_names,
                    strata=strata_codes, strata_rows=strata_rows, strata_labels=strata_labels,
                    notes=notes, broken={}), strata_name


def _model_description(problem: _Problem, var: _Variable) -> str:
    cont = problem.continuous
    if var.level == 2:
        body = {"continuous": "2lonly.pmm" if cont == "pmm" else "2lonly.norm",
                "binary": "2lonly logistic", "categorical": "2lonly logistic, nested dichotomies"}[var.kind]
        return f"{body}: one value per cluster, from cluster means and cluster covariates"
    if problem.method == "multilevel":
        base = {"continuous": ("2l.pmm: random-intercept normal (Gibbs), predictive mean matching"
                               if cont == "pmm" else
                               "2l.norm: random-intercept normal, cluster-specific residual variances (Gibbs)"
                               if problem.hetero else "2l.pan: random-intercept normal (Gibbs)"),
                "binary": "2l.bin: random-intercept logistic",
                "categorical": "2l.bin per nested dichotomy"}[var.kind]
        dropped = problem.means_dropped.get(var.name)
        if not problem.cluster_means:
            return base
        if dropped is None:
            return base + " with cluster means"
        return base + f" without cluster means (only {dropped['clusters']} clusters observe it)"
    single = {"continuous": "pmm" if cont == "pmm" else "norm (Bayesian linear regression)",
              "binary": "logistic regression", "categorical": "logistic regression per nested dichotomy"}
    where = {"flat": "clusters ignored", "stratified": "fitted within each stratum",
             "fixed_effects": "with one intercept per cluster"}[problem.method]
    return f"{single[var.kind]}, {where}"


def _chain_mean(var: _Variable, y: np.ndarray) -> float:
    # binary: share of code 1; categorical: mean level code
    return float(y[var.missing].mean())


def _run_chain(problem: _Problem, rng, iterations: int):
    current = {}
    for var in [*problem.level1, *problem.level2]:
        y = var.values.copy()
        if var.missing.any():
            pool = var.values[~var.missing]
            y[var.missing] = pool[rng.integers(pool.size, size=int(var.missing.sum()))]
        current[var.name] = y
    problem.state = {}
    visit = problem.visit
    trace = {v.name: np.empty(iterations) for v in visit}
    for it in range(iterations):
        for var in visit:
            _impute_variable(problem, var, current, rng)
            trace[var.name][it] = _chain_mean(var, current[var.name])
    return current, trace


def _completed_frame(base: pd.DataFrame, problem: _Problem, current: dict, masks: dict) -> pd.DataFrame:
    out = base.copy()
    for var in problem.visit:
        rows = masks[var.name]
        if not rows.any():
            continue
        y = current[var.name]
        filled = y[problem.codes][rows] if var.level == 2 else y[rows]
        if var.categories:
            cats = np.empty(len(var.categories), dtype=object)
            cats[:] = list(var.categories)
            filled = cats[filled.astype(int)]
        col = out[var.name]
        if not var.categories:
            # imputed numbers need not be integers: numeric columns come back as float64
            col = pd.Series(pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan),
                            index=col.index, name=col.name)
            col[rows] = filled.astype(float)
        elif isinstance(col.dtype, pd.CategoricalDtype):
            col = col.copy()
            col[rows] = filled
        else:
            col = col.astype(object)
            col[rows] = filled
            try:
                col = col.astype(base[var.name].dtype)
            except (TypeError, ValueError):
                pass
        out[var.name] = col
    return out


# --------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------
def impute(frame: pd.DataFrame, *, method: str, cluster: str, outcome: str, outcome_family: str,
           predictors, kinds: dict | None = None, levels: dict | None = None, cluster_covariates=(),
           higher_levels=(), m: int = 20, iterations: int = 10, seed: int = 0, continuous: str = "norm",
           cluster_residual_variance: bool = False, cluster_means: bool = True, strata: str | None = None,
           donors: int = 5) -> ImputationResult:
    """Impute the missing values of a clustered data set m times.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patients in rows; never modified.
    method : {"flat", "stratified", "fixed_effects", "multilevel"}
        How the clusters enter the imputation models (module docstring).
    cluster, outcome : str
        Cluster id column (no missing values) and outcome column.
    outcome_family : {"binomial", "gaussian"}
        Binomial outcomes (0/1) are imputed as binary, gaussian as continuous.
    predictors : sequence of str
        Patient-level predictors of the analysis model.
    kinds : dict, optional
        ``{column: "numeric" | "categorical"}``; inferred from the dtype when
        absent. Numeric columns whose observed values are all 0 or 1 are
        imputed as binary; other numeric columns as continuous.
    levels : dict, optional
        ``{column: [levels]}`` of categorical columns (first = reference).
    cluster_covariates : sequence of str
        Cluster-level columns (constant within a cluster), used as
        predictors and imputed at the cluster level when missing.
    higher_levels : sequence of str
        Columns of units above the cluster (complete, clusters nested);
        their indicators enter the multilevel models as fixed effects.
    m : int
        Number of imputations (independent chains).
    iterations : int
        Chained-equations iterations per chain.
    seed : int
        Seed of ``numpy.random.SeedSequence``; chain k uses child k.
    continuous : {"norm", "pmm"}
        Normal-model draws or predictive mean matching for continuous
        variables.
    cluster_residual_variance : bool
        Multilevel only: cluster-specific residual variances (2l.norm)
        instead of a common one (2l.pan).
    cluster_means : bool
        Multilevel only: add the cluster means of the other patient-level
        variables to each model (default True; Grund et al. 2018), for each
        target observed in enough clusters to estimate their coefficients
        (module docstring, "Few clusters").
    strata : str, optional
        Stratified only: the cluster column or a cluster covariate. Default:
        the first complete categorical cluster covariate, else the cluster.
    donors : int
        Donor pool size of predictive mean matching.

    Returns
    -------
    ImputationResult

    Raises
    ------
    DataError
        A column is absent, missing everywhere, has text in a numeric
        column, a cluster covariate varies within a cluster, clusters are
        not nested in a higher level, the cluster id is missing.
    ValueError
        Unknown method, ``continuous`` or bad ``m``/``iterations``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> site = np.repeat(np.arange(10), 30)
    >>> x = rng.normal(size=300) + rng.normal(size=10)[site]
    >>> y = (rng.random(300) < 1 / (1 + np.exp(-x))).astype(float)
    >>> x[rng.random(300) < 0.3] = np.nan
    >>> data = pd.DataFrame({"site": site, "y": y, "x": x})
    >>> res = impute(data, method="multilevel", cluster="site", outcome="y",
    ...              outcome_family="binomial", predictors=["x"], m=3, iterations=4, seed=1)
    >>> len(res.completed), bool(res.completed[0]["x"].notna().all())
    (3, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if continuous not in CONTINUOUS_METHODS:
        raise ValueError(f"continuous must be one of {CONTINUOUS_METHODS}, got {continuous!r}.")
    for name, value in (("m", m), ("iterations", iterations), ("donors", donors)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    predictors = list(predictors)
    cluster_covariates = list(cluster_covariates)
    higher_levels = list(higher_levels)
    wanted = [cluster, *higher_levels, *cluster_covariates, outcome, *predictors]
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise DataError(f"column(s) {absent} are not in the data; check the roles passed to impute().")
    if len(set(wanted)) != len(wanted):
        raise DataError(f"a column has two roles among {wanted}; each column may appear once.")
    columns = [c for c in frame.columns if c in set(wanted)]
    base = frame.loc[:, columns].copy()

    problem, strata_name = _build_problem(
        base, method=method, cluster=cluster, outcome=outcome, outcome_family=outcome_family,
        predictors=predictors, kinds=kinds, levels=levels, cluster_covariates=cluster_covariates,
        higher_levels=higher_levels, continuous=continuous, hetero=cluster_residual_variance,
        cluster_means=cluster_means, strata=strata, donors=donors)

    mask_frame = pd.DataFrame(False, index=base.index, columns=columns)
    masks = {}
    for var in problem.visit:
        rows = base[var.name].isna().to_numpy()
        masks[var.name] = rows
        mask_frame[var.name] = rows
    for var in [*problem.level1, *problem.level2]:
        if var.kind == "binary" and var.missing.any() and np.unique(var.values[~var.missing]).size < 2:
            problem.notes.add(f"'{var.name}' takes a single observed value; its missing values were set to it.")
    if not problem.visit:
        problem.notes.add("No model variable has missing values; the m data sets are copies of the data.")

    seeds = np.random.SeedSequence(int(seed)).spawn(int(m))
    completed, traces = [], {v.name: np.empty((m, iterations)) for v in problem.visit}
    for k in range(m):
        rng = np.random.Generator(np.random.PCG64(seeds[k]))
        current, trace = _run_chain(problem, rng, iterations)
        for name, values in trace.items():
            traces[name][k] = values
        completed.append(_completed_frame(base, problem, current, masks))

    notes = problem.notes.items()
    fallbacks = {}
    for name, broken in problem.broken.items():
        if not broken:
            continue
        reasons: dict[str, int] = {}
        for reason in broken.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        total = len(problem.strata_rows)
        fallbacks[name] = {"strata": len(broken), "of": total, "reasons": reasons}
        detail = "; ".join(f"{count} with {reason}" for reason, count in reasons.items())
        notes.append(f"Stratified imputation of '{name}' broke down in {len(broken)} of {total} strata "
                     f"('{strata_name}'): {detail}. Their missing values were imputed from the flat model "
                     "fitted to all patients.")
    for name, info in problem.means_dropped.items():
        notes.append(f"Multilevel imputation of '{name}': only {info['clusters']} clusters observe it, fewer "
                     f"than the {info['needed']} needed to estimate the coefficients of its "
                     f"{info['cluster_columns']} cluster-level columns (at least {MIN_CLUSTERS_FOR_MEANS}, and "
                     f"{CLUSTERS_PER_CLUSTER_COLUMN} per column); the cluster means of the other variables were "
                     "left out of its model, which otherwise extrapolates wildly to clusters without observed "
                     "values.")
    for name, excess in problem.extrapolated.items():
        notes.append(f"Some imputed values of '{name}' lie {excess:.3g} observed SDs beyond its observed range "
                     f"(more than {EXTRAPOLATION_SDS:g}): its imputation model is extrapolating (too few clusters "
                     "or observed values for its predictors?). Check these imputations before using them; "
                     "continuous='pmm' keeps imputed values within the observed ones.")
    half = iterations // 2
    rhat = {name: split_rhat(values[:, iterations - half:]) if m > 1 else float("nan")
            for name, values in traces.items()}
    models = {v.name: _model_description(problem, v) for v in problem.visit}
    return ImputationResult(method=method, continuous=continuous, m=int(m), iterations=int(iterations),
                            completed=completed, imputed_mask=mask_frame, chain_means=traces, rhat=rhat,
                            notes=notes, seed=int(seed), models=models,
                            strata=strata_name if method == "stratified" else None, fallbacks=fallbacks,
                            cluster_means_dropped=dict(problem.means_dropped),
                            extrapolated=dict(problem.extrapolated))


def impute_registry(registry, *, method: str, m: int | None = None, iterations: int | None = None,
                    continuous: str = "norm", **options) -> ImputationResult:
    """:func:`impute` with the roles, kinds, levels and seed of a :class:`hmlib.data.Registry`.

    ``m`` and ``iterations`` default to 20 and 10, or 5 and 5 when the
    params say ``fast: true``. Other keyword arguments go to :func:`impute`.
    """
    p = registry.params
    fast = bool(getattr(p, "fast", False))
    return impute(registry.frame, method=method, cluster=p.cluster, outcome=p.outcome,
                  outcome_family=p.outcome_family, predictors=list(p.predictors), kinds=registry.kinds,
                  levels=registry.levels, cluster_covariates=list(p.cluster_covariates),
                  higher_levels=list(p.higher_levels), m=m or (5 if fast else 20),
                  iterations=iterations or (5 if fast else 10), seed=p.seed, continuous=continuous,
                  **options)
