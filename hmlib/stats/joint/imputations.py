"""After sampling: draws of the missing focus values, partial pooling, posterior predictive checks.

Works on the posterior draws (``{name: (chain, draw, ...) array}``) of a fit,
thinned to :data:`IMPUTATION_DRAWS` draws:

- :func:`draw_focus_missing`: the missing focus values. A latent focus has
  them as draws already; an integrated-out or summed-out focus has them drawn
  from their exact conditional ``p(x | y, theta)`` by rejection sampling
  against the outcome likelihood (sampling-importance resampling for the
  rare entries still pending after :data:`REJECTION_ROUNDS` rounds);
- :func:`focus_by_cluster`: per cluster, the raw against the partially
  pooled cluster effect of the focus submodel and the posterior of the
  cluster's completed mean; the posterior predictive check of the observed
  values; the imputed values in clusters that never measured the focus.

For a categorical focus (binary or with more levels) the cluster-level
summaries are of the share of patients *not* in the reference level: the
raw and pooled cluster effects are on the logit of that share, and the
predictive check compares observed and replicated shares.

The tables are per cluster and unsuppressed: small-cell suppression is the
report's (:mod:`hmlib.steps.joint_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from hmlib.stats.joint.data import BinaryPredictor, CategoricalPredictor, ContinuousPredictor, JointData
from hmlib.stats.joint.model import ordinal_log_probabilities
from hmlib.stats.joint.slopes import slope_part_draws

__all__ = ["IMPUTATION_DRAWS", "REJECTION_ROUNDS", "SIR_PROPOSALS", "fixed_part", "category_probabilities",
           "draw_focus_missing", "focus_by_cluster"]

#: Posterior draws (thinned) used for imputations and predictive checks.
IMPUTATION_DRAWS = 200
#: Rejection-sampling rounds before the pending entries are drawn by SIR.
REJECTION_ROUNDS = 200
#: Proposals per pending entry in that sampling-importance resampling.
SIR_PROPOSALS = 2000


def _thin(total: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(total, wanted)).round().astype(int))


def _flat(post: dict, name: str, index: np.ndarray) -> np.ndarray:
    values = post[name]
    return values.reshape(-1, *values.shape[2:])[index]


def fixed_part(post: dict, prefix: str, Z: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Draws x rows of the intercept + Z coef of one submodel (``prefix``: ``x<k>``, ``b<k>``, ``miss``)."""
    fixed = np.repeat(_flat(post, f"{prefix}_intercept", index)[:, None], Z.shape[0], axis=1)
    if Z.shape[1]:
        fixed = fixed + _flat(post, f"{prefix}_coef", index) @ Z.T
    return fixed


def category_probabilities(data: JointData, post: dict, k: int, index: np.ndarray, rows: np.ndarray, *,
                           with_cluster: bool = True) -> np.ndarray:
    """Draws x rows x K probabilities of categorical predictor ``k``'s levels under its submodel (numpy).

    Columns in the order of the predictor's ``levels``; ``with_cluster=False``
    sets the cluster intercepts (and random slopes) to 0 (the average cluster).
    """
    var: CategoricalPredictor = data.categoricals[k]
    prefix, K, Z = f"c{k}", var.n_levels, data.Z[rows]
    cluster = _flat(post, f"{prefix}_cluster", index)
    if var.ordinal:
        eta = cluster[:, data.codes[rows]] + slope_part_draws(post, prefix, data, rows, index) if with_cluster \
            else np.zeros((index.size, rows.size))
        if Z.shape[1]:
            eta = eta + _flat(post, f"{prefix}_coef", index) @ Z.T
        logp = ordinal_log_probabilities(eta, _flat(post, f"{prefix}_cutpoints", index), K, np)[..., var.ranks]
    else:
        eta = np.repeat(_flat(post, f"{prefix}_intercept", index)[:, None, :], rows.size, axis=1)
        if with_cluster:
            eta = eta + cluster[:, data.codes[rows], :]
            if data.slopes and f"{prefix}_cluster_slopes" in post:        # draws x J x (K - 1) x q
                slopes = _flat(post, f"{prefix}_cluster_slopes", index)
                z = data.Z[rows][:, list(data.slope_columns)]
                eta = eta + np.einsum("drkq,rq->drk", slopes[:, data.codes[rows]], z)
        if Z.shape[1]:
            eta = eta + np.einsum("rp,dpk->drk", Z, _flat(post, f"{prefix}_coef", index))
        logits = np.concatenate([np.zeros((*eta.shape[:2], 1)), eta], axis=-1)
        logp = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    return np.exp(logp)


def _outcome_eta_known(data: JointData, post: dict, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draws x rows of the outcome linear predictor without the summed-out/integrated parts (numpy)."""
    Z = data.Z[rows]
    coef = _flat(post, "outcome_coef", index)
    eta = _flat(post, "outcome_intercept", index)[:, None] + _flat(post, "outcome_cluster", index)[:,
                                                                                                 data.codes[rows]]
    eta = eta + slope_part_draws(post, "outcome", data, rows, index)
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
    for k, var in enumerate(data.categoricals):
        eta = eta + coef[:, data.categorical_columns(k)] @ var.indicators()[rows].T
    return eta


def draw_focus_missing(data: JointData, post: dict, index: np.ndarray, rng) -> np.ndarray:
    """Draws x missing rows of the focus variable (submodel scale for continuous, 0/1 for binary, level index
    0..K-1 for a categorical one).

    Latent focus: the stored draws. Integrated-out or summed-out focus:
    draws from ``p(x | y, theta)`` by rejection sampling, proposing the row's
    missing values (the focus and any missing binary or categorical
    predictor of the row) from their submodels and accepting with probability
    ``p(y | x) / max p(y | .)`` (the bound is 1 for a binary outcome and
    ``1 / (sigma sqrt(2 pi))`` for a gaussian one); this is exact. Each round
    works on the entries still pending; the rare entries still pending after
    :data:`REJECTION_ROUNDS` rounds (acceptance below about 2%: an event in a
    patient the model gives a tiny risk) are drawn by sampling-importance
    resampling from :data:`SIR_PROPOSALS` proposals.
    """
    var = data.focus_variable
    mis_rows = np.flatnonzero(~var.observed)
    if isinstance(var, ContinuousPredictor) and var.mode == "latent":
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
        eta_b = fixed_part(post, f"b{k}", data.Z[mis_rows], index) + \
            _flat(post, f"b{k}_cluster", index)[:, data.codes[mis_rows]] + \
            slope_part_draws(post, f"b{k}", data, mis_rows, index)
        binary_props.append((coef[:, first + k], special.expit(eta_b), missing_here, b is var))
    category_props = []   # (coefficient draws x (K - 1), cumulative P draws x rows x K, missing in row, is the focus)
    for k, c in enumerate(data.categoricals):
        missing_here = ~c.observed[mis_rows]
        if missing_here.any():
            cumulative = np.cumsum(category_probabilities(data, post, k, index, mis_rows), axis=-1)
            category_props.append((coef[:, data.categorical_columns(k)], cumulative, missing_here, c is var))
    continuous_focus = isinstance(var, ContinuousPredictor)
    if continuous_focus:
        k = data.continuous.index(var)
        mu = fixed_part(post, f"x{k}", data.Z[mis_rows], index) + \
            _flat(post, f"x{k}_cluster", index)[:, data.codes[mis_rows]] + \
            slope_part_draws(post, f"x{k}", data, mis_rows, index)
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
        for coef_c, cumulative, missing_here, is_focus in category_props:
            level = (rng.random(shape)[..., None] > cumulative[d, r]).sum(axis=-1).clip(max=cumulative.shape[-1] - 1)
            with_coef = np.concatenate([np.zeros((coef_c.shape[0], 1)), coef_c], axis=1)
            eta += with_coef[d, level] * missing_here[r]
            if is_focus:
                proposal = level.astype(float)
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
    for _ in range(REJECTION_ROUNDS):
        proposal, log_ratio = propose(d_pending, r_pending)
        accept = np.log(rng.random(d_pending.size)) < log_ratio
        result[d_pending[accept], r_pending[accept]] = proposal[accept]
        d_pending, r_pending = d_pending[~accept], r_pending[~accept]
        if d_pending.size == 0:
            return result
    proposal, log_ratio = propose(d_pending, r_pending, size=SIR_PROPOSALS)
    weights = np.exp(log_ratio - log_ratio.max(axis=0))
    cumulative = np.cumsum(weights / weights.sum(axis=0), axis=0)
    pick = (cumulative < rng.random(d_pending.size)).sum(axis=0).clip(max=SIR_PROPOSALS - 1)
    result[d_pending, r_pending] = proposal[pick, np.arange(d_pending.size)]
    return result


@dataclass(frozen=True, eq=False)
class _Focus:
    """The incomplete focus, its submodel and the thinned draws the post-processing works on.

    ``kind`` is ``"continuous"``, ``"binary"`` or ``"categorical"``. A
    categorical focus is summarised by the share of patients not in its
    reference level: ``indicator`` (observed rows: 0/1, NaN where missing) and
    the draws x n probabilities of that share with (``share_pooled``) and
    without (``share_fixed``) the cluster intercepts.
    """

    var: object
    prefix: str
    kind: str
    index: np.ndarray
    mu_fixed: np.ndarray | None     # draws x n, the submodel's fixed part (continuous, binary)
    counts_obs: np.ndarray          # observed focus values per cluster
    counts_all: np.ndarray          # patients per cluster
    share_fixed: np.ndarray | None = None
    share_pooled: np.ndarray | None = None

    @property
    def is_discrete(self) -> bool:
        """Binary or categorical: summarised by a share."""
        return self.kind != "continuous"

    @property
    def indicator(self) -> np.ndarray:
        """Per row: 1 when the recorded value is not the reference level (0/1 for a binary), NaN where missing."""
        if self.kind == "categorical":
            return np.where(self.var.observed, (np.nan_to_num(self.var.codes) > 0).astype(float), np.nan)
        return self.var.values


def focus_by_cluster(data: JointData, post: dict, rng) -> dict:
    """Partial pooling, posterior predictive check and never-measured clusters for the focus.

    Returns
    -------
    dict
        ``partial_pooling`` and ``ppc`` (frames, one row per cluster),
        ``unmeasured`` (dict) and ``draws_used``; ``{}`` when the focus is complete.
    """
    var = data.focus_variable
    if var is None or var.observed.all():
        return {}
    n_total = next(iter(post.values())).shape[0] * next(iter(post.values())).shape[1]
    index = _thin(n_total, IMPUTATION_DRAWS)
    J, codes = data.n_clusters, data.codes
    counts = {"counts_obs": np.bincount(codes[var.observed], minlength=J),
              "counts_all": np.bincount(codes, minlength=J)}
    if isinstance(var, CategoricalPredictor):
        k = data.categoricals.index(var)
        rows = np.arange(data.n)
        shares = [1.0 - category_probabilities(data, post, k, index, rows, with_cluster=w)[..., 0]
                  for w in (False, True)]
        focus = _Focus(var=var, prefix=f"c{k}", kind="categorical", index=index, mu_fixed=None,
                       share_fixed=shares[0], share_pooled=shares[1], **counts)
    else:
        is_binary = isinstance(var, BinaryPredictor)
        k = (data.binaries if is_binary else data.continuous).index(var)
        prefix = f"b{k}" if is_binary else f"x{k}"
        focus = _Focus(var=var, prefix=prefix, kind="binary" if is_binary else "continuous", index=index,
                       mu_fixed=fixed_part(post, prefix, data.Z, index), **counts)
    pooling, completed, cluster_means = _partial_pooling(data, post, rng, focus)
    ppc = _posterior_predictive(data, post, rng, focus)
    unmeasured = _never_measured(data, focus, completed, cluster_means)
    return {"partial_pooling": pooling, "ppc": ppc, "unmeasured": unmeasured, "draws_used": int(index.size)}


def _categorical_cluster_effects(data: JointData, focus: _Focus) -> np.ndarray:
    """Draws x J: logit of a cluster's share not in the reference level, minus the same at cluster effect 0."""
    J, codes = data.n_clusters, data.codes
    sums = [np.stack([np.bincount(codes, weights=row, minlength=J) for row in share])
            for share in (focus.share_pooled, focus.share_fixed)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return special.logit(sums[0] / focus.counts_all) - special.logit(sums[1] / focus.counts_all)


def _partial_pooling(data: JointData, post: dict, rng, focus: _Focus):
    """The partial-pooling table, the completed focus values (draws x n) and the cluster means (draws x J)."""
    var, prefix, index = focus.var, focus.prefix, focus.index
    J, codes, obs = data.n_clusters, data.codes, focus.var.observed
    counts_obs, counts_all = focus.counts_obs, focus.counts_all
    indicator = focus.indicator
    if focus.kind == "categorical":
        v_all = _categorical_cluster_effects(data, focus)
        tau = float(np.sqrt(np.mean(np.var(v_all, axis=1))))      # between-cluster SD of that effect
    else:
        v_all = post[f"{prefix}_cluster"].reshape(-1, J)
        tau = float(post[f"{prefix}_cluster_sd"].mean())

    # raw cluster deviation (submodel scale, in original units) and the pooled one
    if focus.is_discrete:
        expected = focus.share_fixed.mean(axis=0) if focus.kind == "categorical" else \
            special.expit(focus.mu_fixed.mean(axis=0))
        resid_sum = np.bincount(codes[obs], weights=indicator[obs], minlength=J)
        pred_sum = np.bincount(codes[obs], weights=expected[obs], minlength=J)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw_effect = special.logit((resid_sum + 0.5) / (counts_obs + 1.0)) - \
                special.logit((pred_sum + 0.5) / (counts_obs + 1.0))
        rate = float(np.mean(indicator[obs]))
        info = counts_obs * rate * (1 - rate) * tau ** 2
        units = 1.0
    else:
        fixed_mean = focus.mu_fixed.mean(axis=0)
        resid = np.bincount(codes[obs], weights=var.response[obs] - fixed_mean[obs], minlength=J)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw_effect = resid / counts_obs
        sigma = float(post[f"{prefix}_sigma"].mean())
        info = counts_obs * tau ** 2 / sigma ** 2
        units = var.sub_scale
    raw_effect = np.where(counts_obs > 0, raw_effect, np.nan) * units

    # completed focus values: observed + imputed draws (a categorical focus: level index)
    imputed = draw_focus_missing(data, post, index, rng)                # draws x n_missing
    mis_rows = np.flatnonzero(~obs)
    known = var.codes if focus.kind == "categorical" else var.values
    completed = np.broadcast_to(np.nan_to_num(known), (index.size, data.n)).copy()
    completed[:, mis_rows] = imputed if focus.is_discrete else var.to_original(imputed)
    summarised = (completed > 0).astype(float) if focus.kind == "categorical" else completed
    cluster_means = np.stack([np.bincount(codes, weights=row, minlength=J) for row in summarised]) / counts_all
    raw_mean = np.bincount(codes[obs], weights=indicator[obs], minlength=J)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_mean = np.where(counts_obs > 0, raw_mean / counts_obs, np.nan)
    pooling = pd.DataFrame({
        "cluster": data.cluster_labels, "n_patients": counts_all, "n_observed": counts_obs,
        "raw_mean": raw_mean, "raw_effect": raw_effect,
        "pooled_effect": v_all.mean(axis=0) * units, "pooled_effect_sd": v_all.std(axis=0, ddof=1) * units,
        "shrinkage": 1.0 / (1.0 + info),
        "pooled_mean": cluster_means.mean(axis=0), "pooled_mean_sd": cluster_means.std(axis=0, ddof=1),
    })
    pooling["unit"], pooling["unit_effect"] = _pooled_toward(data, post, focus, v_all, units)
    return pooling, completed, cluster_means


def _pooled_toward(data: JointData, post: dict, focus: _Focus, v_all: np.ndarray, units: float):
    """With levels above the cluster: each cluster's unit (innermost level above) and the posterior mean of that
    unit's total effect, on the focus effect's scale: what the cluster is pooled towards (the world, through its
    unit, is what the unit is pooled towards). ``(None, NaN)`` without levels above, or for a categorical focus
    (its effect is a summary of several submodel intercepts, not one)."""
    J = data.n_clusters
    if not data.higher or focus.kind == "categorical":
        return None, np.nan
    level = data.higher[-1]
    within = post[f"{focus.prefix}_within"].reshape(-1, J)
    # a cluster's total minus its own part is its unit's total; averaged over the unit's clusters, so that the
    # clusters of one unit carry one value (they differ only by rounding)
    per_cluster = (v_all - within).mean(axis=0)
    per_unit = (np.bincount(level.parent, weights=per_cluster, minlength=level.n_units)
                / np.bincount(level.parent, minlength=level.n_units))
    return level.labels[level.parent].astype(str), per_unit[level.parent] * units


def _posterior_predictive(data: JointData, post: dict, rng, focus: _Focus) -> pd.DataFrame:
    """Observed against replicated mean (and SD) of the focus, per cluster with observed values."""
    var, prefix, index = focus.var, focus.prefix, focus.index
    J, codes, obs = data.n_clusters, data.codes, focus.var.observed
    obs_rows = np.flatnonzero(obs)
    if focus.kind == "categorical":
        share = focus.share_pooled[:, obs_rows]
        rep = (rng.random(share.shape) < share).astype(float)
    else:
        v = _flat(post, f"{prefix}_cluster", index)                      # draws x J
        mu = focus.mu_fixed[:, obs_rows] + v[:, codes[obs_rows]] + \
            slope_part_draws(post, prefix, data, obs_rows, index)
        if focus.kind == "binary":
            rep = (rng.random(mu.shape) < special.expit(mu)).astype(float)
        else:
            sigma_draws = _flat(post, f"{prefix}_sigma", index)[:, None]
            rep = var.to_original(mu + sigma_draws * rng.standard_normal(mu.shape))
    c_obs = codes[obs_rows]
    measured = focus.counts_obs > 0
    n_c = focus.counts_obs[measured]

    def by_cluster(values):            # draws x n_obs -> (mean, sd) draws x measured clusters
        s1 = np.stack([np.bincount(c_obs, weights=r, minlength=J) for r in values])[:, measured]
        s2 = np.stack([np.bincount(c_obs, weights=r * r, minlength=J) for r in values])[:, measured]
        mean = s1 / n_c
        var_ = np.maximum(s2 / n_c - mean ** 2, 0.0) * n_c / np.maximum(n_c - 1, 1)
        return mean, np.sqrt(var_)

    rep_mean, rep_sd = by_cluster(rep)
    obs_mean, obs_sd = by_cluster(focus.indicator[obs_rows][None, :])
    ppc = pd.DataFrame({
        "cluster": data.cluster_labels[measured], "n_observed": n_c,
        "observed_mean": obs_mean[0], "replicated_mean": rep_mean.mean(axis=0),
        "replicated_mean_lower": np.quantile(rep_mean, 0.025, axis=0),
        "replicated_mean_upper": np.quantile(rep_mean, 0.975, axis=0),
        "p_mean": (rep_mean >= obs_mean).mean(axis=0),
    })
    if not focus.is_discrete:
        ppc["observed_sd"] = obs_sd[0]
        ppc["replicated_sd"] = rep_sd.mean(axis=0)
        ppc["replicated_sd_lower"] = np.quantile(rep_sd, 0.025, axis=0)
        ppc["replicated_sd_upper"] = np.quantile(rep_sd, 0.975, axis=0)
        ppc["p_sd"] = (rep_sd >= obs_sd).mean(axis=0)
    ppc["mean_outside"] = (ppc["observed_mean"] < ppc["replicated_mean_lower"]) | \
        (ppc["observed_mean"] > ppc["replicated_mean_upper"])
    return ppc


def _never_measured(data: JointData, focus: _Focus, completed: np.ndarray, cluster_means: np.ndarray) -> dict:
    """The imputed focus values in clusters that never measured it, against the observed ones elsewhere.

    A categorical focus adds ``levels`` and, under ``imputed`` and
    ``observed``, ``shares`` (level -> share); its histogram has one bin per
    level (index 0..K-1).
    """
    var, codes = focus.var, data.codes
    obs = var.observed
    never = np.flatnonzero(focus.counts_obs == 0)
    if not never.size:
        return {"clusters": [], "n_patients": 0}
    mis_rows = np.flatnonzero(~obs)
    in_never = np.isin(codes[mis_rows], never)
    values = completed[:, mis_rows][:, in_never].reshape(-1)
    categorical = focus.kind == "categorical"
    observed_values = var.codes[obs] if categorical else var.values[obs]
    both = np.r_[values, observed_values]
    bins = np.arange(var.n_levels + 1) - 0.5 if categorical else [-0.5, 0.5, 1.5] if focus.is_discrete else 30
    edges = np.histogram_bin_edges(both, bins=bins)
    counts_all = focus.counts_all
    out = {
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
    if categorical:
        out["levels"] = [str(level) for level in var.levels]
        for key, vals in (("imputed", values), ("observed", observed_values)):
            shares = np.bincount(vals.astype(int), minlength=var.n_levels) / vals.size
            out[key]["shares"] = {str(level): float(sh) for level, sh in zip(var.levels, shares)}
    return out


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _distribution(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
            "q05": float(q[0]), "q25": float(q[1]), "q50": float(q[2]), "q75": float(q[3]), "q95": float(q[4])}
