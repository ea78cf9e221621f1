"""Combining the analyses of m imputed data sets: Rubin's rules.

Each of the ``m`` completed data sets is analysed with the same model; the
``m`` estimates ``Q_l`` and their squared standard errors ``U_l`` are
combined as (Rubin 1987, eqs. 3.1.2-3.1.7; van Buuren 2018, section 2.3):

- pooled estimate ``Qbar = mean(Q_l)``;
- within-imputation variance ``Ubar = mean(U_l)``;
- between-imputation variance ``B = var(Q_l)`` (denominator ``m - 1``);
- total variance ``T = Ubar + (1 + 1/m) B``;
- relative increase in variance ``riv = (1 + 1/m) B / Ubar``;
- proportion of the variance due to missingness ``lambda = (1 + 1/m) B / T``;
- degrees of freedom (Barnard & Rubin 1999): ``nu_old = (m - 1) / lambda^2``,
  ``nu_obs = (nu_com + 1) / (nu_com + 3) nu_com (1 - lambda)`` and
  ``nu = nu_old nu_obs / (nu_old + nu_obs)``, where ``nu_com`` is the
  complete-data degrees of freedom; with ``nu_com`` infinite, ``nu = nu_old``
  (Rubin 1987, eq. 3.1.6). As R's ``mice::pool`` does, ``lambda`` is floored
  at 1e-4 inside this formula so that ``B = 0`` gives a finite ``nu``;
- fraction of missing information ``fmi = (riv + 2 / (nu + 3)) / (riv + 1)``
  (the formula of ``mice::pool``);
- interval ``Qbar +/- t_{nu, 1 - alpha/2} sqrt(T)``.

Complete-data degrees of freedom. For a random-intercept fit,
``nu_com = n - k`` with ``k`` the number of model parameters: the fixed
effects, the cluster variance and (gaussian) the residual variance. That is
``df.residual()`` of an lme4 ``merMod`` (``nobs - npar``), which is what
``mice::pool`` uses for ``glmer``/``lmer`` fits (it reads
``df.residual(model)``), so the numbers here reproduce ``pool()`` on the
same estimates.

The cluster SD. Its sampling distribution is skewed and bounded by 0, so it
is pooled on the log scale: ``Q_l = log(sd_l)`` with variance
``U_l = se(log sd_l)^2`` (the delta-method / observed-information SE that
:class:`hmlib.stats.mixed.RandomInterceptFit` carries), combined by the rules
above, and transformed back: estimate ``exp(Qbar)``, interval
``exp(Qbar +/- t sqrt(T))``, standard error ``exp(Qbar) sqrt(T)`` (delta
method). When some imputation's SD is 0 (boundary) the log is undefined;
the SD is then pooled as the plain mean of the SDs, without standard error
or interval, and a note says so.

The residual SD (gaussian fits) is pooled the same way, on the log scale.
The fits do not carry an observed-information SE of ``log(sigma)``, so its
within-imputation variance is the large-sample ``1 / (2 nu_w)`` with
``nu_w = n - J - (p - 1)`` the within-cluster residual degrees of freedom
(exact for the balanced one-way ANOVA estimator; with thousands of rows it
is tiny next to the between-imputation variance anyway). The intraclass
correlation of the analysis model, :attr:`PooledResult.icc`, is then
``sd_u^2 / (sd_u^2 + sd_e^2)`` from the pooled SDs (binomial: on the latent
scale, ``sd_e^2 = pi^2 / 3``).

References
----------
Rubin DB (1987). Multiple Imputation for Nonresponse in Surveys. Wiley.
Barnard J, Rubin DB (1999). Small-sample degrees of freedom with multiple
imputation. Biometrika 86(4):948-955.
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed. CRC.
von Hippel PT (2007). Regression with missing Ys: an improved strategy for
analyzing multiply imputed data. Sociological Methodology 37:83-117.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.methods import NOT_ESTIMABLE
from hmlib.results import ESTIMATE_COLUMNS
from hmlib.stats.design import fit_analysis_model

__all__ = ["PooledScalar", "PooledResult", "pool_rubin", "pool_fits", "analyse_imputations",
           "rubin_arrays", "residual_log_sd_se", "intraclass_correlation"]

#: mice::pool floors lambda at this value inside the Barnard-Rubin formula.
LAMBDA_FLOOR = 1e-4


def rubin_arrays(estimates, variances, df_complete=np.inf, level: float = 0.95) -> dict:
    """Rubin's rules on arrays: the numpy core of :func:`pool_rubin`.

    Parameters
    ----------
    estimates, variances : array_like, shape (m,) or (m, k)
        Estimates and squared standard errors of ``k`` parameters in ``m``
        imputations.
    df_complete : float or array_like of shape (k,)
        Complete-data degrees of freedom (``np.inf`` for large samples).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    dict
        Arrays of shape (k,) (scalars when the input is 1-d): ``estimate,
        within, between, total, std_error, riv, lambda, fmi, df,
        df_complete, ci_lower, ci_upper`` and the int ``m``.

    Raises
    ------
    ValueError
        Fewer than 2 imputations, shapes that differ, non-finite values, or
        negative variances.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level!r}.")
    Q = np.asarray(estimates, dtype=float)
    U = np.asarray(variances, dtype=float)
    scalar = Q.ndim == 1
    if scalar:
        Q, U = Q[:, None], U[:, None]
    if Q.ndim != 2 or Q.shape != U.shape:
        raise ValueError(f"estimates {np.shape(estimates)} and variances {np.shape(variances)} must "
                         "have the same shape (m,) or (m, k).")
    m = Q.shape[0]
    if m < 2:
        raise ValueError(f"Rubin's rules need at least 2 imputations, got {m}.")
    if not (np.all(np.isfinite(Q)) and np.all(np.isfinite(U))):
        raise ValueError("estimates and variances must be finite.")
    if np.any(U < 0):
        raise ValueError("variances must be non-negative (pass squared standard errors).")
    dfcom = np.broadcast_to(np.asarray(df_complete, dtype=float), (Q.shape[1],)).copy()
    if np.any(dfcom <= 0):
        raise ValueError(f"complete-data degrees of freedom must be positive, got {df_complete!r}.")
    qbar = Q.mean(axis=0)
    ubar = U.mean(axis=0)
    b = Q.var(axis=0, ddof=1)
    t = ubar + (1.0 + 1.0 / m) * b
    with np.errstate(divide="ignore", invalid="ignore"):
        riv = np.where(ubar > 0, (1.0 + 1.0 / m) * b / ubar, np.where(b > 0, np.inf, 0.0))
        lam = np.where(t > 0, (1.0 + 1.0 / m) * b / t, 0.0)
    lam_df = np.maximum(lam, LAMBDA_FLOOR)
    df_old = (m - 1) / lam_df ** 2
    finite = np.isfinite(dfcom)
    dfc = np.where(finite, dfcom, 1.0)
    df_obs = (dfc + 1.0) / (dfc + 3.0) * dfc * (1.0 - lam_df)
    df = np.where(finite, df_old * df_obs / (df_old + df_obs), df_old)
    fmi = (riv + 2.0 / (df + 3.0)) / (riv + 1.0)
    fmi = np.where(np.isinf(riv), 1.0, fmi)
    se = np.sqrt(t)
    tq = stats.t.ppf(0.5 + level / 2.0, df)
    out = {"estimate": qbar, "within": ubar, "between": b, "total": t, "std_error": se, "riv": riv,
           "lambda": lam, "fmi": fmi, "df": df, "df_complete": dfcom,
           "ci_lower": qbar - tq * se, "ci_upper": qbar + tq * se}
    if scalar:
        out = {k: float(v[0]) for k, v in out.items()}
    out["m"] = int(m)
    return out


@dataclass(frozen=True)
class PooledScalar:
    """One parameter pooled by Rubin's rules.

    Attributes
    ----------
    estimate : float
        ``Qbar``, the mean of the m estimates.
    std_error : float
        ``sqrt(T)``.
    ci_lower, ci_upper : float
        t interval with ``df`` degrees of freedom.
    within, between, total : float
        ``Ubar``, ``B``, ``T``.
    riv, lambda_, fmi : float
        Relative increase in variance, ``(1 + 1/m) B / T``, fraction of
        missing information.
    df, df_complete : float
        Barnard-Rubin and complete-data degrees of freedom.
    m : int
    level : float
    """

    estimate: float
    std_error: float
    ci_lower: float
    ci_upper: float
    within: float
    between: float
    total: float
    riv: float
    lambda_: float
    fmi: float
    df: float
    df_complete: float
    m: int
    level: float


def pool_rubin(estimates, variances, n_obs=None, *, n_params: int = 1, level: float = 0.95) -> PooledScalar:
    """Pool one scalar over m imputations by Rubin's rules (Barnard-Rubin df).

    Parameters
    ----------
    estimates : array_like, shape (m,)
        The parameter's estimate in each imputed data set.
    variances : array_like, shape (m,)
        Its squared standard error in each imputed data set.
    n_obs : int, optional
        Sample size of the complete-data analysis; ``None`` for a large
        sample (complete-data df infinite).
    n_params : int
        Parameters of the complete-data model: ``df_complete = n_obs -
        n_params`` (as ``mice::pool.scalar(Q, U, n, k)``).
    level : float
        Confidence level of the interval.

    Returns
    -------
    PooledScalar

    Raises
    ------
    ValueError
        Fewer than 2 imputations, mismatched lengths, non-finite input, or
        ``n_obs <= n_params``.

    References
    ----------
    Rubin (1987), eqs. 3.1.2-3.1.7; Barnard & Rubin (1999).

    Examples
    --------
    >>> p = pool_rubin([1.0, 1.2, 0.9], [0.04, 0.05, 0.04], n_obs=100, n_params=2)
    >>> round(p.estimate, 4), round(p.total, 5)
    (1.0333, 0.07444)
    """
    dfcom = np.inf if n_obs is None else float(n_obs) - float(n_params)
    out = rubin_arrays(np.ravel(estimates), np.ravel(variances), dfcom, level)
    return PooledScalar(estimate=out["estimate"], std_error=out["std_error"], ci_lower=out["ci_lower"],
                        ci_upper=out["ci_upper"], within=out["within"], between=out["between"],
                        total=out["total"], riv=out["riv"], lambda_=out["lambda"], fmi=out["fmi"],
                        df=out["df"], df_complete=out["df_complete"], m=out["m"], level=level)


@dataclass(frozen=True, eq=False)
class PooledResult:
    """A random-intercept analysis pooled over m imputations.

    Attributes
    ----------
    method : str
        Method label used in ``estimates.csv`` (e.g. ``"multilevel_mi"``).
    terms : tuple of str
        Fixed-effect terms, then ``sd(<level>)`` for each level above the
        cluster (outermost first) and ``sd(<cluster>)``.
    estimate, std_error, ci_lower, ci_upper : numpy.ndarray
        Pooled values per term (the SD row transformed back from the log
        scale; see the module docstring).
    within, between, total, riv, lambda_, fmi, df, df_complete : numpy.ndarray
        Rubin's quantities per term (for the SD row: on the log-SD scale).
    m : int
    n_patients, n_clusters : int
        Rows and clusters in each complete-data analysis.
    level : float
    per_imputation : pandas.DataFrame
        ``imputation, term, estimate, std_error`` for every fit (SD rows:
        the SD and the SE of its log; gaussian fits add ``sd(residual)``).
    notes : tuple of str
        Plain-language remarks (e.g. an SD at the boundary).
    family : str
        ``"gaussian"`` or ``"binomial"`` (``""`` when the fits do not say).
    residual_sd : dict or None
        Gaussian: the residual SD pooled on the log scale (module
        docstring), ``estimate, std_error, ci_lower, ci_upper`` transformed
        back and ``riv, lambda, fmi, df`` on the log scale. None otherwise.
    """

    method: str
    terms: tuple
    estimate: np.ndarray
    std_error: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    within: np.ndarray
    between: np.ndarray
    total: np.ndarray
    riv: np.ndarray
    lambda_: np.ndarray
    fmi: np.ndarray
    df: np.ndarray
    df_complete: np.ndarray
    m: int
    n_patients: int
    n_clusters: int
    level: float
    per_imputation: pd.DataFrame = field(repr=False)
    notes: tuple = ()
    family: str = ""
    residual_sd: dict | None = None

    @property
    def icc(self) -> float:
        """Intraclass correlation of the analysis model from the pooled SDs.

        Gaussian: ``sd_u^2 / (sd_u^2 + sd_e^2)`` with the pooled cluster and
        residual SDs; binomial: on the latent logistic scale, ``sd_u^2 /
        (sd_u^2 + pi^2 / 3)``. With levels above the cluster ``sd_u^2`` is
        the sum of every level's variance (two patients of one cluster share
        its higher units' effects too). With random slopes it is the
        intercepts' ICC at the slopes' value 0 (slope SDs left out). NaN when
        the residual SD is not available.
        """
        residual = None if self.residual_sd is None else self.residual_sd["estimate"]
        between = float(np.sqrt(sum(float(e) ** 2 for t, e in zip(self.terms, self.estimate)
                                    if t.startswith("sd(") and "|" not in t)))
        return intraclass_correlation(between, self.family, residual)

    def to_frame(self) -> pd.DataFrame:
        """Rows of the estimates contract (``hmlib.results.ESTIMATE_COLUMNS``)."""
        return pd.DataFrame({
            "method": self.method,
            "term": list(self.terms),
            "estimate": self.estimate,
            "std_error": self.std_error,
            "ci_lower": self.ci_lower,
            "ci_upper": self.ci_upper,
            "n_patients": int(self.n_patients),
            "n_clusters": int(self.n_clusters),
        }).loc[:, list(ESTIMATE_COLUMNS)]

    @property
    def diagnostics(self) -> pd.DataFrame:
        """Per term: ``term, riv, lambda, fmi, df`` (SD row on the log scale)."""
        return pd.DataFrame({"term": list(self.terms), "riv": self.riv, "lambda": self.lambda_,
                             "fmi": self.fmi, "df": self.df})

    def term(self, name: str) -> dict:
        """All pooled quantities of one term as a dict."""
        try:
            i = self.terms.index(name)
        except ValueError:
            raise KeyError(f"no term {name!r}; terms are {list(self.terms)}") from None
        return {"term": name, "estimate": float(self.estimate[i]), "std_error": float(self.std_error[i]),
                "ci_lower": float(self.ci_lower[i]), "ci_upper": float(self.ci_upper[i]),
                "riv": float(self.riv[i]), "lambda": float(self.lambda_[i]), "fmi": float(self.fmi[i]),
                "df": float(self.df[i])}

    def summary(self) -> str:
        """Plain-text table (returned, not printed)."""
        frame = self.to_frame().merge(self.diagnostics, on="term")
        width = max(len(t) for t in self.terms)
        lines = [f"{self.method}: Rubin's rules over m = {self.m} imputations; "
                 f"{self.n_patients} patients in {self.n_clusters} clusters",
                 f"{'term':<{width}}  {'estimate':>9}  {'std.err':>8}  {'CI':>19}  {'fmi':>5}  {'df':>7}"]
        for r in frame.itertuples(index=False):
            lines.append(f"{r.term:<{width}}  {r.estimate:>9.4g}  {r.std_error:>8.3g}  "
                         f"({r.ci_lower:>8.4g}, {r.ci_upper:>8.4g})  {r.fmi:>5.3f}  {r.df:>7.1f}")
        if self.residual_sd is not None:
            rs = self.residual_sd
            lines.append(f"residual SD {rs['estimate']:.4g} ({rs['ci_lower']:.4g}, {rs['ci_upper']:.4g})")
        if np.isfinite(self.icc):
            lines.append(f"ICC {self.icc:.3f}" + (" (latent scale)" if self.family == "binomial" else ""))
        lines.extend(self.notes)
        return "\n".join(lines)


def _n_model_params(fit) -> int:
    """lme4's npar: fixed effects + one variance per level (+ residual variance, gaussian)."""
    levels = 1 + len(getattr(fit, "higher", ()))
    q = 1 + len(getattr(fit, "slopes", ()))  # the cluster level's effects: q(q+1)/2 covariance parameters
    return len(fit.coef) + levels + q * (q + 1) // 2 - 1 + (1 if getattr(fit, "family", "binomial") == "gaussian"
                                                            else 0)


def intraclass_correlation(cluster_sd: float, family: str, residual_sd: float | None = None) -> float:
    """ICC of a random-intercept model from its SDs.

    Gaussian: ``sd_u^2 / (sd_u^2 + sd_e^2)`` (NaN without ``residual_sd``);
    binomial: on the latent logistic scale, ``sd_u^2 / (sd_u^2 + pi^2 / 3)``.
    """
    su2 = float(cluster_sd) ** 2
    if family == "binomial":
        return su2 / (su2 + np.pi ** 2 / 3.0)
    if residual_sd is None or not np.isfinite(residual_sd) or not np.isfinite(su2):
        return float("nan")
    total = su2 + float(residual_sd) ** 2
    return su2 / total if total > 0 else float("nan")


def _pool_log_sd(sds, log_se, dfcom: float, level: float):
    """Rubin's rules on log SDs, transformed back; None when some SD is 0 or lacks an SE."""
    sds = np.asarray(sds, dtype=float)
    log_se = np.asarray(log_se, dtype=float)
    if not (np.all(sds > 0) and np.all(np.isfinite(log_se))):
        return None
    out = rubin_arrays(np.log(sds), log_se ** 2, max(dfcom, 1.0), level)
    centre = float(np.exp(out["estimate"]))
    return dict(out, estimate=centre, std_error=centre * out["std_error"],
                ci_lower=float(np.exp(out["ci_lower"])), ci_upper=float(np.exp(out["ci_upper"])))


def residual_log_sd_se(n_obs: int, n_clusters: int, n_coef: int) -> float:
    """Large-sample SE of ``log(residual SD)`` of a random-intercept fit: ``1 / sqrt(2 nu_w)``.

    ``nu_w = n_obs - n_clusters - (n_coef - 1)`` are the within-cluster residual degrees of
    freedom (at least 1).
    """
    return float(1.0 / np.sqrt(2.0 * max(n_obs - n_clusters - (n_coef - 1), 1)))


def _level_sds(fits, cluster_name: str) -> list:
    """``[(level name, SDs over the fits, log-SD SEs over the fits)]``: higher levels outermost first, the cluster
    last."""
    out = []
    for k, higher in enumerate(getattr(fits[0], "higher", ())):
        out.append((higher.name, np.array([f.higher[k].sd for f in fits], dtype=float),
                    np.array([f.higher[k].log_sd_std_error for f in fits], dtype=float)))
    out.append((cluster_name, np.array([f.cluster_sd for f in fits], dtype=float),
                np.array([f.log_cluster_sd_std_error for f in fits], dtype=float)))
    for k, slope in enumerate(getattr(fits[0], "slopes", ()), start=1):
        out.append((f"{slope}|{cluster_name}", np.array([f.cluster_level.sd[k] for f in fits], dtype=float),
                    np.array([f.cluster_level.log_sd_std_error[k] for f in fits], dtype=float)))
    return out


def _slope_correlations(fits, cluster_name: str) -> list:
    """``[(term, correlations over the fits, Fisher-z SEs over the fits)]`` of the cluster level's random
    effects (as :func:`hmlib.stats.mixed.results.variance_rows` names them); empty without slopes."""
    if not getattr(fits[0], "slopes", ()):
        return []
    cols = fits[0].cluster_level.columns
    out = []
    for s in range(len(cols)):
        for r in range(s + 1, len(cols)):
            term = f"cor({cols[r]}|{cluster_name})" if s == 0 else f"cor({cols[s]},{cols[r]}|{cluster_name})"
            out.append((term, np.array([f.cluster_level.cor[r, s] for f in fits], dtype=float),
                        np.array([f.cluster_level.atanh_cor_std_error[r, s] for f in fits], dtype=float)))
    return out


def _pooled_cor_row(term: str, cors, z_se, fixed: dict, dfcom: float, level: float, notes: list) -> dict:
    """A correlation pooled by Rubin's rules on Fisher's z scale and transformed back; the mean of the
    estimates (with a note) when some fit is at +-1 or has no standard error."""
    cors, z_se = np.asarray(cors, dtype=float), np.asarray(z_se, dtype=float)
    if np.all(np.abs(cors) < 1) and np.all(np.isfinite(z_se)):
        out = rubin_arrays(np.arctanh(cors), z_se ** 2, max(dfcom, 1.0), level)
        centre = float(np.tanh(out["estimate"]))
        return dict(out, estimate=centre, std_error=(1 - centre ** 2) * out["std_error"],
                    ci_lower=float(np.tanh(out["ci_lower"])), ci_upper=float(np.tanh(out["ci_upper"])))
    n0 = int(np.sum(~(np.abs(cors) < 1) | ~np.isfinite(z_se)))
    notes.append(f"The correlation {term} was estimated at +-1 (or without a standard error) in {n0} of "
                 f"{len(cors)} imputed data sets, so it cannot be pooled on Fisher's z scale; the reported value "
                 "is the mean of the m estimates, without interval.")
    row = {k: float("nan") for k in fixed}
    row.update(estimate=float(np.mean(cors)), df_complete=dfcom)
    return row


def _pooled_sd_row(what: str, sds, log_se, fixed: dict, dfcom: float, level: float, notes: list) -> dict:
    """One level's SD pooled on the log scale, or the mean of the estimates (with a note) when it cannot be."""
    row = _pool_log_sd(sds, log_se, dfcom, level)
    if row is not None:
        return row
    n0 = int(np.sum(~(sds > 0) | ~np.isfinite(log_se)))
    notes.append(f"The {what} was estimated at 0 (or without a standard error) in {n0} of "
                 f"{len(sds)} imputed data sets, so it cannot be pooled on the log scale; the "
                 "reported SD is the mean of the m estimates, without interval.")
    nan = float("nan")
    row = {k: nan for k in fixed}
    row.update(estimate=float(np.mean(sds)), df_complete=dfcom)
    return row


def pool_fits(fits, *, method: str, n_patients: int, n_clusters: int, level: float = 0.95) -> PooledResult:
    """Pool m random-intercept fits (one per imputed data set) by Rubin's rules.

    Parameters
    ----------
    fits : sequence of hmlib.stats.mixed.RandomInterceptFit
        Same model (same term names) fitted to each completed data set.
    method : str
        Label for the ``method`` column of ``estimates.csv``.
    n_patients, n_clusters : int
        Rows and clusters of each analysis (reported, not used in the maths).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    PooledResult
        Fixed effects pooled directly; the cluster SD pooled on the log
        scale (module docstring). Complete-data df ``n_obs - k`` with ``k``
        lme4's number of parameters, as ``mice::pool``.

    Raises
    ------
    ValueError
        Fewer than 2 fits, or fits with different terms.
    """
    fits = list(fits)
    if len(fits) < 2:
        raise ValueError(f"pooling needs at least 2 fitted imputations, got {len(fits)}.")
    terms = tuple(fits[0].term_names)
    for f in fits[1:]:
        if tuple(f.term_names) != terms:
            raise ValueError(f"the fits have different terms ({terms} vs {tuple(f.term_names)}); "
                             "fit the same model to every imputed data set.")
    cluster_name = getattr(fits[0], "cluster_name", "cluster")
    Q = np.array([f.coef for f in fits], dtype=float)
    U = np.array([np.asarray(f.std_error, dtype=float) ** 2 for f in fits])
    dfcom = float(fits[0].n_obs - _n_model_params(fits[0]))
    fixed = rubin_arrays(Q, U, max(dfcom, 1.0), level)
    notes: list[str] = []
    levels = _level_sds(fits, cluster_name)
    sd_rows = [_pooled_sd_row("cluster SD" if name == cluster_name else f"SD of {name}", sds, log_se, fixed, dfcom,
                              level, notes) for name, sds, log_se in levels]
    correlations = _slope_correlations(fits, cluster_name)
    sd_rows += [_pooled_cor_row(term, cors, z_se, fixed, dfcom, level, notes) for term, cors, z_se in correlations]
    separated = sorted({t for f in fits for t in getattr(f, "separated", ())})
    if separated:
        notes.append(f"Separation (a category or combination of predictors that always or never has the outcome) "
                     f"in {sum(bool(getattr(f, 'separated', ())) for f in fits)} of {len(fits)} imputed data sets: "
                     f"the estimates of {', '.join(separated)} diverge and are not estimable.")
        method = f"{method}:{NOT_ESTIMABLE}"
    family = str(getattr(fits[0], "family", ""))
    residual = None
    extra_terms, extra_est, extra_se = (), np.empty((len(fits), 0)), np.empty((len(fits), 0))
    res_sds = np.array([np.nan if getattr(f, "residual_sd", None) is None else f.residual_sd for f in fits],
                       dtype=float)
    if family == "gaussian" and np.all(np.isfinite(res_sds)):
        res_log_se = np.array([residual_log_sd_se(f.n_obs, f.n_clusters, len(f.coef)) for f in fits])
        residual = _pool_log_sd(res_sds, res_log_se, dfcom, level)
        if residual is None:
            notes.append("The residual SD was 0 in some imputed data set; it and the ICC are not pooled.")
        extra_terms, extra_est, extra_se = ("sd(residual)",), res_sds[:, None], res_log_se[:, None]
    sd_terms = (*(f"sd({name})" for name, _, _ in levels), *(term for term, _, _ in correlations))
    variance = [*levels, *correlations]
    per = pd.DataFrame({
        "imputation": np.repeat(np.arange(1, len(fits) + 1), len(terms) + len(sd_terms) + len(extra_terms)),
        "term": [t for _ in fits for t in (*terms, *sd_terms, *extra_terms)],
        "estimate": np.column_stack([Q, *(values for _, values, _ in variance), extra_est]).ravel(),
        "std_error": np.column_stack([np.sqrt(U), *(se for _, _, se in variance), extra_se]).ravel(),
    })

    def cat(key):
        return np.r_[fixed[key], [row[key] for row in sd_rows]]

    return PooledResult(
        method=method, terms=(*terms, *sd_terms), estimate=cat("estimate"), std_error=cat("std_error"),
        ci_lower=cat("ci_lower"), ci_upper=cat("ci_upper"), within=cat("within"), between=cat("between"),
        total=cat("total"), riv=cat("riv"), lambda_=cat("lambda"), fmi=cat("fmi"), df=cat("df"),
        df_complete=cat("df_complete"), m=len(fits), n_patients=int(n_patients),
        n_clusters=int(n_clusters), level=level, per_imputation=per, notes=tuple(notes), family=family,
        residual_sd=residual)


def _fit_completed_task(frame: pd.DataFrame, shared: dict):
    """The analysis model on one completed data set (a task of :func:`analyse_imputations`)."""
    options = dict(shared)
    keep = options.pop("keep_rows")
    data = frame if keep is None else frame.loc[keep]
    return fit_analysis_model(data, **options)


def analyse_imputations(result, *, outcome: str, predictors, cluster: str, family: str,
                        levels: dict | None = None, nagq: int = 1, method: str | None = None,
                        delete_imputed_outcomes: bool = True, level: float = 0.95,
                        map_tasks=None, higher_levels=(), random_slopes=()) -> PooledResult:
    """Fit the analysis model to each imputed data set and pool the fits.

    The analysis model is ``outcome ~ predictors + (1 | cluster)``
    (:func:`hmlib.stats.design.fit_analysis_model`). Patients whose outcome was
    imputed are left out of the analysis (von Hippel's 2007 "multiple
    imputation, then deletion"): they helped impute the predictors, but
    imputed outcomes add only noise to the outcome model when the
    imputation model holds no variables beyond the analysis model's.

    Parameters
    ----------
    result : hmlib.stats.imputation.ImputationResult
    outcome, cluster : str
    predictors : sequence of str
    family : {"binomial", "gaussian"}
    levels : dict, optional
        Categorical levels (as :func:`hmlib.stats.design.design_matrix`).
    nagq : int
        Quadrature nodes for binomial fits (1 = Laplace).
    method : str, optional
        Label for ``estimates.csv``; default ``result.label``.
    delete_imputed_outcomes : bool
        Apply von Hippel's deletion (default True).
    level : float
        Confidence level.
    map_tasks : callable, optional
        ``map_tasks(fn, tasks, shared)`` returning ``[fn(task, shared) for
        task in tasks]`` in order (e.g. :meth:`hmlib.parallel.TaskPool.map`):
        fits the m analyses as tasks. Default: one after the other, here.
    higher_levels : sequence of str
        Columns of the levels above the cluster, outermost first: the
        analysis model has nested random intercepts
        (:func:`hmlib.stats.design.fit_analysis_model`), each level's SD
        pooled on the log scale.
    random_slopes : sequence of str
        Numeric predictors with a random slope per cluster: their SDs pooled on the log scale and their
        correlations with the intercept on Fisher's z scale.

    Returns
    -------
    PooledResult
    """
    mask = result.imputed_mask
    delete = delete_imputed_outcomes and outcome in mask.columns and bool(mask[outcome].any())
    shared = {"keep_rows": ~mask[outcome].to_numpy() if delete else None, "outcome": outcome,
              "predictors": list(predictors), "cluster": cluster, "family": family, "levels": levels, "nagq": nagq,
              "higher_levels": tuple(higher_levels), "random_slopes": tuple(random_slopes)}
    if map_tasks is None:
        fits = [_fit_completed_task(frame, shared) for frame in result.completed]
    else:
        fits = map_tasks(_fit_completed_task, list(result.completed), shared)
    label = method or getattr(result, "label", f"{result.method}_mi")
    pooled = pool_fits(fits, method=label, n_patients=fits[0].n_obs, n_clusters=fits[0].n_clusters,
                       level=level)
    if delete_imputed_outcomes and outcome in mask.columns and mask[outcome].any():
        n_del = int(mask[outcome].sum())
        note = (f"{n_del} rows with an imputed outcome were left out of the analysis model "
                "(multiple imputation, then deletion; von Hippel 2007).")
        pooled = PooledResult(**{**pooled.__dict__, "notes": (*pooled.notes, note)})
    return pooled
