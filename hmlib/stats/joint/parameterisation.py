"""The choices made from the data before sampling: centred or not, and how many quadrature nodes.

Both rules plug in maximum-likelihood random-intercept fits
(:func:`hmlib.stats.mixed.fit_random_intercept`; with levels above the
cluster, nested ones, :func:`hmlib.stats.mixed.fit_nested_intercepts`) of
each submodel on the rows it observes (:func:`ml_fits`):

- :func:`choose_parameterisation`: a submodel's cluster intercepts are
  centred when the average cluster information share ``I_j / (1 + I_j)``
  (``I_j = n_j tau^2 / s^2``; ``s^2`` the residual variance, or
  ``1 / (p (1 - p))`` for binary responses) is at least
  :data:`CENTRED_SHARE`, non-centred otherwise (measurements in
  :mod:`hmlib.stats.joint`). With random slopes the outcome's and every
  predictor submodel's blocks of correlated intercepts and slopes are
  non-centred whatever the share; ``"centred"`` given explicitly draws the
  block's intercepts directly and its slopes given them
  (:func:`hmlib.stats.joint.slopes.correlated_effects`). Measured (2 chains
  x 1000 draws after 1000 warm-up, seed 1, missingness submodel off, time
  incl. compiling): on the brms parity data (147 patients, 1-6 visits,
  outcome share 0.6 or more) the smallest bulk ESS of a reported quantity
  was 350 non-centred in 6 s and 545 with centred intercepts in 14 s; on a
  registry with a weakly informed slope SD (``longitudinal_registry(3,
  n_sites=1, n_patients=150, n_visits=6)``) 307 in 5 s and 202 in 21 s;
- :func:`fallback_parameterisation`: after a run that missed the
  convergence gate with divergent transitions, every centred choice not
  given explicitly becomes non-centred (:mod:`hmlib.stats.joint.sampling`).
  The rule above plugs in ML point estimates of the SDs; when a level's
  posterior puts much mass on SDs well below its ML estimate (few units,
  an SD near the boundary), its centred effects form a funnel that the
  sampler cannot enter, and divergences are its signature. Non-centred
  effects remove that funnel at the cost of slower mixing where the data
  are informative. Measured on the nested truth study's replicate 9138
  (16 countries; ``bench/joint_nested_truth.py``): see the README.
- :func:`choose_quadrature_nodes`: the fewest Gauss-Hermite nodes of
  :data:`QUADRATURE_CANDIDATES` whose summed log-likelihood of the rows with
  the focus integrated out is within :data:`QUADRATURE_TOLERANCE` of a
  64-node rule, at a pessimistic plug-in.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from hmlib.exceptions import FitError
from hmlib.stats.joint.data import ContinuousPredictor, JointData
from hmlib.stats.mixed import fit_random_intercept
from hmlib.stats.mixed.nested_intercepts import fit_nested_intercepts

__all__ = ["CENTRED_SHARE", "QUADRATURE_CANDIDATES", "QUADRATURE_TOLERANCE", "ml_fits", "category_splits",
           "choose_parameterisation", "fallback_parameterisation", "choose_quadrature_nodes"]

#: A submodel's cluster intercepts are centred when the average cluster
#: information share ``I_j / (1 + I_j)`` is at least this.
CENTRED_SHARE = 0.6
#: Gauss-Hermite node counts tried by ``quadrature_nodes="auto"`` (fewest first)
#: and the largest error allowed in the summed log-likelihood of the rows
#: whose focus value is integrated out (see :func:`choose_quadrature_nodes`).
QUADRATURE_CANDIDATES = (5, 7, 9, 12, 16, 24, 32)
QUADRATURE_TOLERANCE = 1e-3


def _information_share(fit, n_per_cluster: np.ndarray, family: str, rate: float | None = None,
                       tau: float | None = None) -> float:
    """Average of I_j / (1 + I_j), the cluster information rule (module docstring); ``tau`` default the fit's
    cluster SD."""
    tau = float(fit.cluster_sd if tau is None else tau)
    if not tau > 0:
        return 0.0
    per_obs = 1.0 / fit.residual_sd ** 2 if family == "gaussian" else rate * (1.0 - rate)
    info = n_per_cluster * per_obs * tau ** 2
    return float(np.mean(info / (1.0 + info)))


def _outcome_design(data: JointData) -> np.ndarray:
    """Intercept, ``Z`` and the incomplete predictors (0 where missing) on the outcome model's scale."""
    x_fill = [np.where(v.observed, (v.values - v.centre) / v.scale, 0.0) for v in data.continuous]
    x_fill += [np.nan_to_num(b.values) for b in data.binaries]
    x_fill += [c.indicators() for c in data.categoricals]
    return np.column_stack([np.ones(data.n), data.Z, *x_fill])


def category_splits(var) -> list:
    """0/1 responses (NaN where not used) of the binary fits that stand in for a categorical submodel.

    Nominal: each level against the reference, on the rows with either;
    ordinal: rank at least ``k`` against below, for each cut point ``k``.
    """
    codes = var.codes
    if var.ordinal:
        rank = np.where(var.observed, np.asarray(var.ranks)[np.nan_to_num(codes).astype(int)], np.nan)
        return [np.where(var.observed, (rank >= k).astype(float), np.nan) for k in range(1, var.n_levels)]
    return [np.where(codes == level, 1.0, np.where(codes == 0, 0.0, np.nan)) for level in range(1, var.n_levels)]


def ml_fits(data: JointData) -> dict:
    """Maximum-likelihood random-intercept fits of each submodel on the rows it observes.

    With levels above the cluster (``data.higher``) the fits have nested
    intercepts, so that each level's SD is its own: a two-level fit's cluster
    SD would hold the variation between the units above too (and, for the
    missingness indicator, that of whole units that never record the
    variable), overstating the clusters' information.

    Returns
    -------
    dict
        ``{key: (fit or None, rows)}``; keys ``outcome`` (complete rows, all
        predictors, standardised as in the joint model), ``x<k>``, ``b<k>``,
        ``c<k>:<j>`` (the binary splits of categorical predictor ``k``,
        :func:`category_splits`), ``missingness``. Used for the
        parameterisation and quadrature rules only; a fit that fails is None.
    """
    units = {level.name: level.parent[data.codes] for level in data.higher}

    def fit(response, X, rows, family):
        try:
            if units:
                return fit_nested_intercepts(response[rows], X[rows], data.codes[rows],
                                             {name: unit[rows] for name, unit in units.items()}, family=family,
                                             term_names=[f"t{i}" for i in range(X.shape[1])], cluster_name="cluster")
            return fit_random_intercept(response[rows], X[rows], data.codes[rows], family=family)
        except Exception:  # noqa: BLE001 -- a failed ML fit only means "no information here"
            return None

    everything = np.ones(data.n, bool)
    base = np.column_stack([np.ones(data.n), data.Z])
    complete = everything.copy()
    for var in data.incomplete:
        complete &= var.observed
    outcome_rows = complete if complete.sum() >= 10 else everything
    fits = {"outcome": (fit(data.y, _outcome_design(data), outcome_rows, data.family), outcome_rows)}
    for k, var in enumerate(data.continuous):
        fits[f"x{k}"] = (fit(np.nan_to_num(var.response), base, var.observed, "gaussian"), var.observed)
    for k, var in enumerate(data.binaries):
        fits[f"b{k}"] = (fit(np.nan_to_num(var.values), base, var.observed, "binomial"), var.observed)
    for k, var in enumerate(data.categoricals):
        for j, split in enumerate(category_splits(var)):
            rows = np.isfinite(split)
            fits[f"c{k}:{j}"] = (fit(np.nan_to_num(split), base, rows, "binomial"), rows)
    if data.missingness_model:
        fits["missingness"] = (fit(data.focus_missing.astype(float), base, everything, "binomial"), everything)
    return fits


def choose_parameterisation(data: JointData, fits: dict, override: dict | None) -> tuple[dict, dict]:
    """``{submodel: "centred" | "noncentred"}`` and the information shares behind it.

    With levels above the cluster (``data.higher``), each submodel also gets a choice for them,
    keyed ``<submodel>@above``: the same rule with the rows of the units of the level directly
    above the cluster and that level's SD from the nested fit (:func:`ml_fits`); the clusters'
    rule takes the nested fit's cluster SD, their variation within those units. An override key
    ``<submodel>@above`` sets that choice; a plain key sets the clusters' only.

    Parameters
    ----------
    data : JointData
    fits : dict
        From :func:`ml_fits`.
    override : dict, optional
        ``{"outcome" | "missingness" | <predictor>: "centred" | "noncentred"}``; with levels above the
        cluster also ``<submodel>@above``.

    Returns
    -------
    choice, shares : dict
        Keyed by internal submodel key (``outcome``, ``missingness``, ``x<k>``, ``b<k>``, ``c<k>``; a
        categorical submodel's share is the average over its binary splits).
    """
    override = dict(override or {})
    J = data.n_clusters
    shares: dict[str, float] = {}
    responses = {"outcome": data.y, "missingness": data.focus_missing.astype(float)}
    responses |= {f"x{k}": v.response for k, v in enumerate(data.continuous)}
    responses |= {f"b{k}": v.values for k, v in enumerate(data.binaries)}
    responses |= {f"c{k}:{j}": split for k, v in enumerate(data.categoricals)
                  for j, split in enumerate(category_splits(v))}
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
        if data.higher:
            # the level directly above the cluster: its units hold the rows of all their clusters
            level = data.higher[-1]
            units = np.bincount(level.parent[data.codes[counted]], minlength=level.n_units).astype(float)
            shares[f"{key}@above"] = _information_share(fit, units, family, rate, tau=fit.higher[-1].sd)
    for k in range(len(data.categoricals)):        # one choice per categorical submodel: its splits' average
        for suffix in ("", "@above"):
            split_keys = [key for key in shares if key.startswith(f"c{k}:") and key.endswith(suffix)
                          and (suffix or "@" not in key)]
            if split_keys or not suffix:
                shares[f"c{k}{suffix}"] = float(np.mean([shares.pop(key) for key in split_keys])) \
                    if split_keys else 0.0
    choice = {key: ("centred" if value >= CENTRED_SHARE else "noncentred") for key, value in shares.items()}
    if data.slopes:
        # blocks of correlated intercepts and slopes (outcome and every predictor submodel): non-centred by
        # default (module docstring); an override "centred" draws their intercepts directly
        choice |= {key: "noncentred" for key in choice if key == "outcome" or key.startswith(("x", "b", "c"))}
    for key, value in override.items():
        if value not in ("centred", "noncentred"):
            raise FitError(f"parameterisation must be 'centred' or 'noncentred', got {value!r} for {key!r}.")
        name, above, rest = key.partition("@")
        if above and (rest != "above" or not data.higher):
            raise FitError(f"parameterisation key {key!r}: the only suffix is '@above', for the levels above the "
                           "cluster (higher_levels).")
        choice[data.submodel_key(name) + above + rest] = value
    return choice, shares


def fallback_parameterisation(data: JointData, choice: dict, override: dict | None) -> dict | None:
    """The parameterisation of the fall-back run after divergences: every centred choice non-centred.

    Parameters
    ----------
    data : JointData
    choice : dict
        The choices of the divergent run (:func:`choose_parameterisation`).
    override : dict, optional
        The explicit choices given to the fit (display keys, as in
        :func:`choose_parameterisation`); these are kept.

    Returns
    -------
    dict or None
        The new choices, or None when nothing could change (every choice
        not given explicitly is non-centred already).

    Examples
    --------
    >>> fallback_parameterisation(data, {"outcome": "centred", "outcome@above": "centred"}, None)  # doctest: +SKIP
    {'outcome': 'noncentred', 'outcome@above': 'noncentred'}
    """
    pinned = set()
    for key in override or {}:
        name, above, rest = key.partition("@")
        pinned.add(data.submodel_key(name) + above + rest)
    switched = {key: ("noncentred" if key not in pinned else value) for key, value in choice.items()}
    return switched if switched != choice else None


def _cluster_blups(fit, J: int) -> np.ndarray:
    effects = np.zeros(J)
    effects[np.asarray(fit.cluster_labels, dtype=int)] = fit.cluster_effects
    return effects


def choose_quadrature_nodes(data: JointData, fits: dict) -> tuple[int, float]:
    """Fewest Gauss-Hermite nodes whose marginal log-likelihood is within :data:`QUADRATURE_TOLERANCE`.

    The check plugs in the ML fits (:func:`ml_fits`) with the focus
    coefficient pushed 4 standard errors further from 0, and compares the
    summed log-likelihood of the rows whose focus value is integrated out
    with a 64-node rule.

    Returns
    -------
    nodes : int
    error : float
        Its log-likelihood error (0 when nothing is integrated numerically;
        NaN when an ML fit failed and the most nodes are taken).
    """
    var = data.focus_variable
    if not isinstance(var, ContinuousPredictor) or var.mode != "marginal" or var.observed.all():
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
    Xo = _outcome_design(data)[rows]
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
