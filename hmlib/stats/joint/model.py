"""The PyMC model of the joint model: submodels, correlated cluster effects, summed and integrated likelihood.

:func:`build_joint_model` writes the model of :mod:`hmlib.stats.joint` for a
:class:`~hmlib.stats.joint.data.JointData`, in named parts built in this
order (the order of the sampler's parameters, so it is part of what makes a
seeded fit repeatable):

1. the outcome's intercept and cluster effects, with the missingness
   submodel and its correlated cluster effects (:func:`_cluster_intercepts`);
2. one submodel per incomplete continuous predictor, whose missing values are
   latent parameters or, for the focus, integrated out
   (:func:`_continuous_submodels`);
3. one submodel per incomplete binary predictor, with the random slopes when there are any
   (:func:`_binary_submodels`);
4. one submodel per incomplete categorical predictor with three or more
   levels (:func:`_categorical_submodels`): baseline-category logit
   (nominal) or cumulative logit (ordinal), with cluster random intercepts
   or, with random slopes, correlated intercepts and slopes (:func:`_submodel_slopes`,
   :func:`_nominal_slopes`);
5. the outcome's coefficients and linear predictor (:func:`_outcome_predictor`);
6. the outcome likelihood: plain rows, then one potential per pattern of
   summed-out binaries and categoricals and integrated-out focus
   (:func:`_outcome_likelihood`).

Categorical submodels. With levels ``0..K-1`` (0 the reference) a nominal
predictor has ``log P(x = k) / P(x = 0) = c_k + Z d_k + v_kj`` for
``k >= 1``, one cluster intercept ``v_kj ~ N(0, tau_k)`` per level
(independent, as brms's ``categorical`` family with ``(1 | site)``; with
random slopes each level's ``v_kj`` becomes its own LKJ block of an
intercept and slopes, ``(1 + t | patient)``); an
ordinal one, on the ranks ``r`` of its levels, ``logit P(r >= k) = Z d + v_j
- theta_k`` (with random slopes ``v_j`` plus the cluster's slopes times the
slope columns, one LKJ block) with ordered cut points ``theta_1 < ... < theta_{K-1}`` (brms's
``cumulative("logit")``). Priors: ``Normal(m_k, 2.5)`` on the intercepts
(``m_k`` the observed log odds of level ``k`` against the reference) and on
the cut points (``m_k`` the logit of the observed share below rank ``k``),
restricted to their order; coefficients and SDs as every submodel. A row
missing the predictor contributes ``sum_k P(x = k) p(y | x = k)`` (K terms,
times the states of the row's other summed-out predictors).

PyMC and PyTensor are imported when a model is built, so that importing
hmlib stays quick.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import special

from hmlib.exceptions import FitError
from hmlib.stats.joint.data import JointData
from hmlib.stats.joint.priors import check_priors, correlated_sd_log_prior, sd_prior
from hmlib.stats.joint.slopes import cluster_part, correlated_effects

__all__ = ["build_joint_model"]


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


def _unit_effects(prefix: str, data: JointData, priors: dict, centred: bool, shape: tuple = ()):
    """The effects of every level above the cluster, summed for each cluster (``J`` x ``shape``), or 0 without any.

    Level ``l`` (outermost first) has the SD ``<prefix>_above<l>_cluster_sd`` (the cluster SD's prior, so the
    prior scenarios reweight it too) and its units' own effects ``<prefix>_above<l>``. Hierarchically centred
    when ``centred`` (a unit's total ``<prefix>_above<l>_level ~ N(its outer unit's total, sd)``: a unit above
    the cluster holds at least as much data as each of its clusters, so a submodel informative enough to
    centre its clusters is informative enough for this too), else non-centred (``<prefix>_above<l>_z``).
    ``shape``: one column per non-reference level of a nominal submodel.
    """
    import pymc as pm

    outer = 0.0
    for l, level in enumerate(data.higher):
        sd = sd_prior(f"{prefix}_above{l}_cluster_sd", priors["cluster_sd"], shape=shape[0] if shape else None)
        mean = 0.0 if l == 0 else outer[_outer_units(data, l)]
        if centred:
            total = pm.Normal(f"{prefix}_above{l}_level", mu=mean, sigma=sd, shape=(level.n_units, *shape))
        else:
            total = mean + pm.Normal(f"{prefix}_above{l}_z", mu=0.0, sigma=1.0, shape=(level.n_units, *shape)) * sd
        pm.Deterministic(f"{prefix}_above{l}", total - mean)
        outer = total
    return outer[data.higher[-1].parent] if data.higher else 0.0


def _outer_units(data: JointData, l: int) -> np.ndarray:
    """For each unit of level ``l`` (``l >= 1``), its unit of level ``l - 1``."""
    up = np.zeros(data.higher[l].n_units, dtype=np.int64)
    up[data.higher[l].parent] = data.higher[l - 1].parent
    return up


def _nested_clusters(prefix: str, J: int, tau, centred: bool, data: JointData, priors: dict, shape: tuple = (),
                     centred_above: bool | None = None):
    """A submodel's cluster effects ``<prefix>_cluster`` with levels above: each cluster's total effect, its units'
    (:func:`_unit_effects`, centred as ``centred_above``, default as the clusters) plus its own
    (``<prefix>_within``), centred as ``centred``."""
    import pymc as pm

    above = _unit_effects(prefix, data, priors, centred if centred_above is None else centred_above, shape)
    if centred:
        total = pm.Normal(f"{prefix}_cluster", mu=above, sigma=tau, shape=(J, *shape))
    else:
        z = pm.Normal(f"{prefix}_within_z", mu=0.0, sigma=1.0, shape=(J, *shape))
        total = pm.Deterministic(f"{prefix}_cluster", above + z * tau)
    pm.Deterministic(f"{prefix}_within", total - above)
    return total


def _submodel_clusters(prefix: str, J: int, tau, centred: dict, data: JointData, priors: dict):
    """``(1 | cluster)`` effects of a submodel, nested in the levels above the cluster when there are any
    (``centred``: the model's choices, keyed ``<prefix>`` and ``<prefix>@above``)."""
    if data.higher:
        return _nested_clusters(prefix, J, tau, centred[prefix], data, priors,
                                centred_above=centred[f"{prefix}@above"])
    return _cluster_effects(f"{prefix}_cluster", J, tau, centred[prefix])


def _nested_outcome(a, tau_y, J: int, above, centred: bool):
    """The outcome's cluster effects ``u`` (totals) and their standardised own part ``z1``.

    Centred: the levels ``m_j ~ N(a + above_j, tau_y)`` (hierarchically centred on the intercept and the
    cluster's units, :func:`_outcome_levels`); else ``u = above + tau_y z1``. With levels above the cluster,
    ``outcome_within`` is the cluster's own part.
    """
    import pymc as pm

    nested = not isinstance(above, float)      # 0.0 without levels above: the two-level graph, term for term
    if centred:
        levels = pm.Normal("outcome_cluster_level", mu=a + above if nested else a, sigma=tau_y, shape=J)
        u = pm.Deterministic("outcome_cluster", levels - a)
        z1 = (u - above) / tau_y if nested else u / tau_y
    else:
        z1 = pm.Normal("outcome_cluster_z", 0.0, 1.0, shape=J)
        u = pm.Deterministic("outcome_cluster", above + tau_y * z1 if nested else tau_y * z1)
    if nested:
        pm.Deterministic("outcome_within", u - above)
    return u, z1


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
    """The PyMC model of :class:`~hmlib.stats.joint.data.JointData` (see :mod:`hmlib.stats.joint`).

    Parameters
    ----------
    data : JointData
    priors : dict, optional
        Overrides of :data:`~hmlib.stats.joint.priors.DEFAULT_PRIORS`.
    parameterisation : dict, optional
        ``{"outcome" | "missingness" | "x<k>" | "b<k>" | "c<k>": "centred" | "noncentred"}``
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
        ``c<k>_*`` per incomplete categorical predictor (``_intercept``
        (nominal, one per non-reference level) or ``_cutpoints`` (ordinal),
        ``_coef``, ``_cluster_sd``, ``_cluster``);
        ``miss_*`` and ``re_corr`` for the missingness submodel.
    """
    import pymc as pm

    priors = check_priors(priors)
    parameterisation = dict(parameterisation or {})
    if int(quadrature_nodes) < 2:
        raise FitError(f"quadrature_nodes must be at least 2, got {quadrature_nodes!r}.")
    keys = ["outcome", "missingness", *(f"x{k}" for k in range(len(data.continuous))),
            *(f"b{k}" for k in range(len(data.binaries))), *(f"c{k}" for k in range(len(data.categoricals)))]
    centred = {key: parameterisation.get(key, "centred") == "centred" for key in keys}
    # the levels above the cluster: their own choice (``<key>@above``), else the clusters'
    centred |= {f"{key}@above": parameterisation.get(f"{key}@above", parameterisation.get(key, "centred"))
                == "centred" for key in keys}
    with pm.Model() as model:
        a, u = _cluster_intercepts(data, priors, centred)
        outcome_x, focus_sub = _continuous_submodels(data, priors, centred)
        binary_eta = _binary_submodels(data, priors, centred)
        category_logp = _categorical_submodels(data, priors, centred)
        b, eta, sigma_y = _outcome_predictor(data, priors, a, u, outcome_x)
        _outcome_likelihood(data, b, eta, sigma_y, focus_sub, (binary_eta, category_logp), int(quadrature_nodes))
    return model


def _cluster_intercepts(data: JointData, priors: dict, centred: dict):
    """The outcome's intercept and cluster effects ``(a, u)``, with the missingness submodel when it is on.

    (u, w) bivariate normal: u = tau_y z1 and w = slope z1 + e, e ~ N(0, resid),
    i.e. the regression of w on z1, sampled in (slope, resid) where its
    geometry is simpler (500 clusters, 20,000 patients: bulk ESS of rho 390 in
    (tau_r, rho) coordinates, 492 in these). The priors stay on
    tau_r = sqrt(slope^2 + resid^2) and rho = slope / tau_r (LKJ for 2 x 2:
    (rho + 1) / 2 ~ Beta(eta, eta)), plus log |d(tau_r, rho) / d(slope, resid)|
    = log(sqrt(1 - rho^2) / tau_r). u and w are each centred or not on their own rule.

    When the rule centres the missingness effects and not the outcome's (well-informed ``w``, weakly
    informed ``u``), the regression runs the other way (:func:`_outcome_on_missingness`).
    """
    import pymc as pm
    import pytensor.tensor as pt

    J, codes, Z = data.n_clusters, data.codes, data.Z
    a = pm.Normal("outcome_intercept", mu=_logit_rate(data.y) if data.family == "binomial" else 0.0,
                  sigma=priors["intercept"][1])
    above = _unit_effects("outcome", data, priors, centred["outcome@above"])
    if data.slopes:
        u, w = _outcome_slopes(data, priors, centred, above)
        if w is None:
            return a, u
    elif data.missingness_model and centred["missingness"] and not centred["outcome"]:
        u, w = _outcome_on_missingness(data, priors, centred, above)
    else:
        tau_y = sd_prior("outcome_cluster_sd", priors["cluster_sd"])
        if not data.missingness_model:
            if not data.higher:
                u = _outcome_levels(a, tau_y, J) if centred["outcome"] else \
                    _cluster_effects("outcome_cluster", J, tau_y, False)
                return a, u
            u, _ = _nested_outcome(a, tau_y, J, above, centred["outcome"])
            return a, u
        slope = pm.Flat("miss_slope")
        resid = pm.HalfFlat("miss_resid_sd")
        tau_r = pm.Deterministic("miss_cluster_sd", pt.sqrt(slope ** 2 + resid ** 2))
        rho = pm.Deterministic("re_corr", slope / tau_r)
        pm.Potential("miss_prior", correlated_sd_log_prior(tau_r, rho, priors))
        u, z1 = _nested_outcome(a, tau_y, J, above, centred["outcome"])
        above_w = _unit_effects("miss", data, priors, centred["missingness@above"])
        own = slope * z1                            # without levels above, above_w is 0.0 and left out
        if centred["missingness"]:
            w = pm.Normal("miss_cluster", mu=own + above_w if data.higher else own, sigma=resid, shape=J)
        else:
            z2 = pm.Normal("miss_cluster_z", 0.0, 1.0, shape=J)
            w = pm.Deterministic("miss_cluster", own + resid * z2 + above_w if data.higher else own + resid * z2)
        if data.higher:
            pm.Deterministic("miss_within", w - above_w)
    miss = data.focus_missing.astype(float)
    miss_fixed = _regression("miss", Z, priors, _logit_rate(miss))
    pm.Bernoulli("miss_indicator", logit_p=miss_fixed + w[codes], observed=miss)
    return a, u


def _outcome_slopes(data: JointData, priors: dict, centred: dict, above):
    """Random intercepts and slopes of the outcome (with the missingness intercept in the same LKJ covariance
    when that submodel is on): ``(effects, w)``, ``effects`` J x (1 + q + ...), ``w`` None without missingness.

    Named: ``outcome_cluster`` (intercepts), ``outcome_cluster_slopes`` (J x q), ``outcome_cluster_sd`` and
    ``outcome_slopes_cluster_sd`` (q), ``outcome_cluster_corr``; with missingness ``miss_cluster``,
    ``miss_cluster_sd`` and ``re_corr`` (on the standardised scale: with the intercept at the mean of the slope
    predictors). Centred or not as the outcome's rule says (:mod:`hmlib.stats.joint.slopes`). With levels
    above the cluster, ``above`` (the outcome's unit effects per cluster, :func:`_unit_effects`) and the
    missingness's own unit effects are added to the intercepts (random intercepts only at those levels, as
    brms's ``(1 | site) + (1 + month | site:patient)``): ``outcome_cluster`` and ``miss_cluster`` are then the
    totals and ``outcome_within``, ``miss_within`` the clusters' own parts, the ones in the covariance.
    """
    import pymc as pm
    import pytensor.tensor as pt

    q = len(data.slopes)
    n = 1 + q + int(data.missingness_model)
    effects, stds, corr = correlated_effects("outcome_cluster", data.n_clusters, n, priors, centred["outcome"])
    if data.higher:
        pm.Deterministic("outcome_within", effects[:, 0])
        effects = pt.concatenate([(effects[:, 0] + above)[:, None], effects[:, 1:]], axis=1)
    pm.Deterministic("outcome_cluster", effects[:, 0])
    pm.Deterministic("outcome_cluster_slopes", effects[:, 1:1 + q])
    pm.Deterministic("outcome_cluster_sd", stds[0])
    pm.Deterministic("outcome_slopes_cluster_sd", stds[1:1 + q])
    if not data.missingness_model:
        return effects, None
    pm.Deterministic("miss_cluster_sd", stds[n - 1])
    pm.Deterministic("re_corr", corr[n - 1, 0])
    w = effects[:, n - 1]
    if data.higher:
        pm.Deterministic("miss_within", w)
        w = w + _unit_effects("miss", data, priors, centred["missingness@above"])
    return effects, pm.Deterministic("miss_cluster", w)


def _outcome_on_missingness(data: JointData, priors: dict, centred: dict, above):
    """Centred missingness effects first, the outcome's as their regression on them: ``(u, w)``.

    ``w = above_w + tau_r zw`` is drawn directly (``miss_cluster ~ N(above_w, tau_r)``) and
    ``u = above + slope zw + resid z`` (non-centred, ``z ~ N(0, 1)``), sampled in ``slope = rho tau_y``
    and ``resid = sqrt(1 - rho^2) tau_y`` with the priors kept on ``tau_y`` and ``rho`` exactly as in the
    other order (:func:`~hmlib.stats.joint.priors.correlated_sd_log_prior`): the same model, the same
    named quantities. In the other order rho can only move with ``J`` weakly informed outcome effects;
    here it is a regression coefficient on effects the data pin down (measurements in
    :mod:`hmlib.stats.joint`).
    """
    import pymc as pm
    import pytensor.tensor as pt

    J = data.n_clusters
    tau_r = sd_prior("miss_cluster_sd", priors["cluster_sd"])
    above_w = _unit_effects("miss", data, priors, centred["missingness@above"])
    w = pm.Normal("miss_cluster", mu=above_w, sigma=tau_r, shape=J)
    if data.higher:
        pm.Deterministic("miss_within", w - above_w)
    slope = pm.Flat("outcome_slope")
    resid = pm.HalfFlat("outcome_resid_sd")
    tau_y = pm.Deterministic("outcome_cluster_sd", pt.sqrt(slope ** 2 + resid ** 2))
    rho = pm.Deterministic("re_corr", slope / tau_y)
    pm.Potential("outcome_prior", correlated_sd_log_prior(tau_y, rho, priors))
    zw = (w - above_w) / tau_r if data.higher else w / tau_r
    z = pm.Normal("outcome_cluster_z", 0.0, 1.0, shape=J)
    own = slope * zw + resid * z
    u = pm.Deterministic("outcome_cluster", above + own if data.higher else own)
    if data.higher:
        pm.Deterministic("outcome_within", own)
    return u, w


def _continuous_submodels(data: JointData, priors: dict, centred: dict):
    """One submodel per incomplete continuous predictor.

    Returns
    -------
    outcome_x : list of tensors
        Standardised original-scale value per row, 0 where integrated out.
    focus_sub : tuple or None
        ``(mu at missing rows, sigma, predictor, missing rows)`` of an integrated-out focus.
    """
    import pymc as pm
    import pytensor.tensor as pt

    J, codes, Z = data.n_clusters, data.codes, data.Z
    outcome_x = []
    focus_sub = None
    for k, var in enumerate(data.continuous):
        prefix = f"x{k}"
        fixed = _regression(prefix, Z, priors, 0.0)
        if data.slopes:
            mu = fixed + _submodel_slopes(prefix, data, priors, centred)
        else:
            tau = sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"])
            mu = fixed + _submodel_clusters(prefix, J, tau, centred, data, priors)[codes]
        sigma = sd_prior(f"{prefix}_sigma", priors["residual_sd"])
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
    return outcome_x, focus_sub


def _submodel_slopes(prefix: str, data: JointData, priors: dict, centred: dict):
    """A predictor submodel's random intercepts and slopes, per row (its own LKJ covariance; continuous and
    binary predictors, the latter on the logit scale).

    Named as the outcome's: ``<prefix>_cluster``, ``<prefix>_cluster_slopes``, ``<prefix>_cluster_sd``,
    ``<prefix>_slopes_cluster_sd``, ``<prefix>_cluster_corr``. With levels above the cluster their unit
    effects are added to the intercepts (:func:`_outcome_slopes`): ``<prefix>_cluster`` the totals,
    ``<prefix>_within`` the clusters' own intercepts.
    """
    import pymc as pm
    import pytensor.tensor as pt

    q = len(data.slopes)
    effects, stds, _ = correlated_effects(f"{prefix}_cluster", data.n_clusters, 1 + q, priors, centred[prefix])
    if data.higher:
        pm.Deterministic(f"{prefix}_within", effects[:, 0])
        above = _unit_effects(prefix, data, priors, centred[f"{prefix}@above"])
        effects = pt.concatenate([(effects[:, 0] + above)[:, None], effects[:, 1:]], axis=1)
    pm.Deterministic(f"{prefix}_cluster", effects[:, 0])
    pm.Deterministic(f"{prefix}_cluster_slopes", effects[:, 1:])
    pm.Deterministic(f"{prefix}_cluster_sd", stds[0])
    pm.Deterministic(f"{prefix}_slopes_cluster_sd", stds[1:])
    return cluster_part(effects, data, q)


def _binary_submodels(data: JointData, priors: dict, centred: dict) -> list:
    """One submodel per incomplete binary predictor: observed rows enter it, missing ones are summed out later.

    ``logit P(x = 1) = c + Z d`` plus the cluster's random intercept or, with random slopes, its intercept and
    slopes with their own LKJ covariance (:func:`_submodel_slopes`; brms's ``(1 + t | patient)`` in a bernoulli
    formula).

    Returns ``logit P(x = 1)`` per row (tensors), one per binary predictor.
    """
    import pymc as pm

    J, codes, Z = data.n_clusters, data.codes, data.Z
    binary_eta = []
    for k, var in enumerate(data.binaries):
        prefix = f"b{k}"
        fixed = _regression(prefix, Z, priors, _logit_rate(var.values[var.observed]))
        if data.slopes:
            eta_b = fixed + _submodel_slopes(prefix, data, priors, centred)
        else:
            tau = sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"])
            eta_b = fixed + _submodel_clusters(prefix, J, tau, centred, data, priors)[codes]
        obs_idx = np.flatnonzero(var.observed)
        pm.Bernoulli(f"{prefix}_observed", logit_p=eta_b[obs_idx], observed=var.values[obs_idx])
        binary_eta.append(eta_b)
    return binary_eta


def _category_start(values: np.ndarray, n_levels: int, ranks) -> np.ndarray:
    """Prior locations: observed log odds against the reference (nominal) or logits of the cumulative shares."""
    counts = np.bincount(values.astype(int), minlength=n_levels) + 0.5
    if ranks is None:
        return np.log(counts[1:] / counts[0])
    by_rank = np.zeros(n_levels)
    by_rank[ranks] = counts
    below = np.cumsum(by_rank)[:-1] / by_rank.sum()
    return special.logit(below)


def ordinal_log_probabilities(eta, cutpoints, n_levels: int, xp):
    """Log P(rank = r), r = 0..K-1, of a cumulative logit model ``logit P(rank >= k) = eta - theta_k``.

    Works on tensors (``xp`` = pytensor.tensor) and on numpy arrays (``xp``
    = :mod:`numpy`, with ``eta`` of shape (..., n) and ``cutpoints`` (...,
    K - 1)); ``n_levels`` is K. Differences of sigmoids are taken on the log scale:
    ``log(s(x) - s(y)) = log s(x) + log s(-y) + log(1 - exp(y - x))``.
    """
    a = eta[..., :, None] - cutpoints[..., None, :]                 # ... x n x (K - 1)
    if xp is np:
        log_sig = lambda x: -np.logaddexp(0.0, -x)                  # noqa: E731
        log1mexp = lambda x: np.log(-np.expm1(x))                   # noqa: E731
        stack = lambda parts: np.stack(parts, axis=-1)              # noqa: E731
    else:
        log_sig = lambda x: -xp.softplus(-x)                        # noqa: E731
        log1mexp = xp.log1mexp
        stack = lambda parts: xp.stack(parts, axis=-1)              # noqa: E731
    K = int(n_levels)
    parts = [log_sig(-a[..., 0])]
    for r in range(1, K - 1):
        parts.append(log_sig(a[..., r - 1]) + log_sig(-a[..., r]) + log1mexp(a[..., r] - a[..., r - 1]))
    parts.append(log_sig(a[..., K - 2]))
    return stack(parts)


def _categorical_submodels(data: JointData, priors: dict, centred: dict) -> list:
    """One submodel per incomplete categorical predictor; returns its log P(x = level) per row (n x K tensors).

    Observed rows enter the submodel's likelihood; missing ones are summed
    out in the outcome likelihood. Columns are in the order of the
    predictor's ``levels`` (an ordinal one is modelled on its ranks).
    """
    import pymc as pm
    import pytensor.tensor as pt
    from pymc.distributions.transforms import ordered

    J, codes, Z = data.n_clusters, data.codes, data.Z
    out = []
    for k, var in enumerate(data.categoricals):
        prefix, K = f"c{k}", var.n_levels
        start = _category_start(var.codes[var.observed], K, var.ranks)
        if var.ordinal:
            cut = pm.Normal(f"{prefix}_cutpoints", mu=start, sigma=priors["intercept"][1], shape=K - 1,
                            transform=ordered, initval=np.sort(start) + np.linspace(0, 1e-3, K - 1))
            if data.slopes:
                eta = _submodel_slopes(prefix, data, priors, centred)
            else:
                tau = sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"])
                eta = _submodel_clusters(prefix, J, tau, centred, data, priors)[codes]
            if Z.shape[1]:
                eta = eta + pm.math.dot(Z, pm.Normal(f"{prefix}_coef", 0.0, priors["coef"][1], shape=Z.shape[1]))
            logp = ordinal_log_probabilities(eta, cut, K, pt)[:, np.asarray(var.ranks)]
        else:
            intercept = pm.Normal(f"{prefix}_intercept", mu=start, sigma=priors["intercept"][1], shape=K - 1)
            if data.slopes:
                v_rows = _nominal_slopes(prefix, data, priors, centred, K)
            else:
                v_rows = _nominal_clusters(prefix, data, priors, centred, K)[codes]
            eta = intercept[None, :] + v_rows
            if Z.shape[1]:
                eta = eta + pm.math.dot(Z, pm.Normal(f"{prefix}_coef", 0.0, priors["coef"][1],
                                                     shape=(Z.shape[1], K - 1)))
            logp = pt.special.log_softmax(pt.concatenate([pt.zeros((data.n, 1)), eta], axis=1), axis=1)
        obs_idx = np.flatnonzero(var.observed)
        pm.Potential(f"{prefix}_observed", logp[obs_idx, var.codes[obs_idx].astype(int)].sum())
        out.append(logp)
    return out


def _nominal_clusters(prefix: str, data: JointData, priors: dict, centred: dict, K: int):
    """A nominal submodel's ``(1 | cluster)`` intercepts, one independent set per non-reference level (J x (K - 1)),
    nested in the levels above the cluster when there are any."""
    import pymc as pm

    J = data.n_clusters
    tau = sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"], shape=K - 1)
    if data.higher:
        return _nested_clusters(prefix, J, tau, centred[prefix], data, priors, shape=(K - 1,),
                                centred_above=centred[f"{prefix}@above"])
    if centred[prefix]:
        return pm.Normal(f"{prefix}_cluster", mu=0.0, sigma=tau, shape=(J, K - 1))
    v_z = pm.Normal(f"{prefix}_cluster_z", mu=0.0, sigma=1.0, shape=(J, K - 1))
    return pm.Deterministic(f"{prefix}_cluster", v_z * tau)


def _nominal_slopes(prefix: str, data: JointData, priors: dict, centred: dict, K: int):
    """A nominal submodel's random intercepts and slopes, per row and non-reference level (n x (K - 1) tensor).

    The non-reference levels' intercepts and slopes form one block of ``(K - 1) (1 + q)`` correlated effects per
    cluster with an LKJ covariance (``<prefix>_levels_cluster_*``, level-major: level 1's intercept and slopes,
    then level 2's; :func:`~hmlib.stats.joint.slopes.correlated_effects`): brms's ``categorical`` family with
    ``(1 + t |p| patient)``. A patient's persistent finding raises the log odds of every level above the
    reference together, which blocks independent between levels (brms's ``(1 + t | patient)``, hmlib before
    2026-12-07) cannot express: on simulated visits in patients the summed-out predictor's coefficients came out
    1.3-3.2% of the truth higher with the shared block, within Monte Carlo error of the full data's
    (``bench/joint_random_slopes_truth.py --categorical``, against ``--independent-levels``). Named as the
    binary submodels' with a level axis: ``<prefix>_cluster`` (J x (K - 1) intercepts; with levels above the
    cluster the totals, ``<prefix>_within`` the clusters' own), ``<prefix>_cluster_slopes`` (J x (K - 1) x q),
    ``<prefix>_cluster_sd`` (K - 1) and ``<prefix>_slopes_cluster_sd`` ((K - 1) x q).
    """
    import pymc as pm

    effects, stds = _nominal_level_effects(prefix, data, priors, centred, K)
    intercepts = effects[:, :, 0]
    if data.higher:
        pm.Deterministic(f"{prefix}_within", intercepts)
        intercepts = intercepts + _unit_effects(prefix, data, priors, centred[f"{prefix}@above"], shape=(K - 1,))
    intercepts = pm.Deterministic(f"{prefix}_cluster", intercepts)
    slopes = pm.Deterministic(f"{prefix}_cluster_slopes", effects[:, :, 1:])
    pm.Deterministic(f"{prefix}_cluster_sd", stds[:, 0])
    pm.Deterministic(f"{prefix}_slopes_cluster_sd", stds[:, 1:])
    z = data.Z[:, list(data.slope_columns)]                               # n x q
    return intercepts[data.codes] + (slopes[data.codes] * z[:, None, :]).sum(axis=2)


def _nominal_level_effects(prefix: str, data: JointData, priors: dict, centred: dict, K: int) -> tuple:
    """The clusters' own intercepts and slopes of a nominal submodel, one LKJ block across its non-reference
    levels (:func:`_nominal_slopes`): ``(effects, stds)``, tensors J x (K - 1) x (1 + q) and (K - 1) x (1 + q)."""
    q = len(data.slopes)
    J = data.n_clusters
    effects, stds, _ = correlated_effects(f"{prefix}_levels_cluster", J, (K - 1) * (1 + q), priors, centred[prefix])
    return effects.reshape((J, K - 1, 1 + q)), stds.reshape((K - 1, 1 + q))   # level-major


def _outcome_predictor(data: JointData, priors: dict, a, u, outcome_x):
    """The outcome's coefficients ``b``, its linear predictor with the known values, and ``sigma_y`` (gaussian)."""
    import pymc as pm

    Z = data.Z
    p_total = len(data.outcome_terms)
    b = pm.Normal("outcome_coef", mu=0.0, sigma=priors["coef"][1], shape=p_total)
    eta = a + (cluster_part(u, data, len(data.slopes)) if data.slopes else u[data.codes])
    if Z.shape[1]:
        eta = eta + pm.math.dot(Z, b[: Z.shape[1]])
    for k, x in enumerate(outcome_x):
        eta = eta + b[Z.shape[1] + k] * x
    first_binary = Z.shape[1] + len(data.continuous)
    for k, var in enumerate(data.binaries):
        eta = eta + b[first_binary + k] * np.nan_to_num(var.values)
    for k, var in enumerate(data.categoricals):
        eta = eta + pm.math.dot(var.indicators(), b[data.categorical_columns(k)])
    sigma_y = sd_prior("outcome_sigma", priors["residual_sd"]) if data.family == "gaussian" else None
    return b, eta, sigma_y


def _outcome_likelihood(data: JointData, b, eta, sigma_y, focus_sub, discrete, quadrature_nodes: int) -> None:
    """The outcome's likelihood: an observed variable for the plain rows, one potential per missing pattern.

    Rows with summed-out or integrated-out values are grouped by pattern
    (which binaries and categoricals are missing, whether the focus is); the
    likelihood of a row is sum_states weight * p(y | state). ``discrete`` is
    ``(binary logits, categorical log-probabilities)``.
    """
    import pymc as pm

    n = data.n
    integrate = np.zeros(n, bool) if focus_sub is None else ~focus_sub[2].observed
    missing = [~v.observed for v in (*data.binaries, *data.categoricals)]
    discrete_missing = np.column_stack(missing) if missing else np.zeros((n, 0), bool)
    pattern_keys = np.column_stack([integrate, discrete_missing])
    simple = ~pattern_keys.any(axis=1)
    if simple.any():
        idx = np.flatnonzero(simple)
        if data.family == "binomial":
            pm.Bernoulli("outcome_observed", logit_p=eta[idx], observed=data.y[idx])
        else:
            pm.Normal("outcome_observed", mu=eta[idx], sigma=sigma_y, observed=data.y[idx])
    patterns = np.unique(pattern_keys[~simple], axis=0) if (~simple).any() else np.zeros((0, 0))
    nodes, weights = np.polynomial.hermite_e.hermegauss(quadrature_nodes)
    for p_index, key in enumerate(patterns):
        rows = np.flatnonzero((pattern_keys == key).all(axis=1))
        total = _pattern_log_likelihood(data, rows, key, b, eta, sigma_y, focus_sub, discrete, nodes, weights)
        pm.Potential(f"outcome_marginal_{p_index}", total)


def _sum_out_categoricals(data: JointData, rows: np.ndarray, which: np.ndarray, b, category_logp, eta_rows, weight,
                          binomial: bool):
    """Extend the states of a pattern by every level combination of its missing categoricals.

    States are ordered with the earlier states (binaries) major; ``weight``
    holds probabilities (binomial outcome) or log-probabilities (gaussian).
    """
    import pytensor.tensor as pt

    if not which.size:
        return eta_rows, weight
    states = np.array(list(itertools.product(*(range(data.categoricals[k].n_levels) for k in which))), dtype=int)
    switched = np.zeros((len(states), len(data.outcome_terms)))      # which outcome terms each state turns on
    for col, k in enumerate(which):
        on = states[:, col] > 0
        switched[np.flatnonzero(on), data.categorical_columns(k)[states[on, col] - 1]] = 1.0
    shift = pt.dot(switched, b)                                      # states
    eta_rows = (eta_rows[:, :, None] + shift[None, None, :]).reshape((rows.size, -1))
    cat_weight = None
    for col, k in enumerate(which):
        logp = category_logp[k][rows][:, states[:, col]]             # rows x states
        term = pt.exp(logp) if binomial else logp
        cat_weight = term if cat_weight is None else (cat_weight * term if binomial else cat_weight + term)
    if weight is None:
        return eta_rows, cat_weight
    combined = weight[:, :, None] * cat_weight[:, None, :] if binomial else weight[:, :, None] + cat_weight[:, None, :]
    return eta_rows, combined.reshape((rows.size, -1))


def _pattern_log_likelihood(data: JointData, rows: np.ndarray, key: np.ndarray, b, eta, sigma_y, focus_sub,
                            discrete, nodes: np.ndarray, weights: np.ndarray):
    """Summed log-likelihood of the rows of one missing pattern (a tensor).

    A binary outcome works on the probability scale (sigmoids, no
    log-sum-exp: 3 times cheaper, and p(y | state) cannot underflow at sane
    linear predictors); a gaussian one on the log scale. For a gaussian
    outcome and a normal focus the integral is exact in closed form.
    """
    import pytensor.tensor as pt

    p = data.Z.shape[1]
    first_binary = p + len(data.continuous)
    focus_k = next((k for k, v in enumerate(data.continuous) if v.mode == "marginal"), None)
    binomial = data.family == "binomial"
    analytic = data.family == "gaussian" and focus_sub is not None and focus_sub[2].distribution == "normal"
    node_weights = weights / weights.sum()
    log_weights = np.log(weights / weights.sum())
    binary_eta, category_logp = discrete
    with_focus = bool(key[0])
    which = np.flatnonzero(key[1:1 + len(data.binaries)])
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
    eta_rows, weight = _sum_out_categoricals(data, rows, np.flatnonzero(key[1 + len(data.binaries):]), b,
                                             category_logp, eta_rows, weight, binomial)
    sd_rows = sigma_y
    if with_focus:
        mu_f, sigma_f, var, mis_idx = focus_sub
        pos = np.searchsorted(mis_idx, rows)
        coef_f = b[p + focus_k]
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
        return pt.log((likelihood * weight).sum(axis=1)).sum()
    ll = _normal_logp(data.y[rows][:, None], eta_rows, sd_rows)
    return ll.sum() if weight is None else pt.logsumexp(ll + weight, axis=1).sum()
