"""One chained-equations update: the imputation model of each variable under each method.

:func:`impute_variable` redraws the missing values of one variable given the
current values of all the others: it builds the variable's design (the other
patient-level variables; for ``multilevel`` their cluster means, the cluster
covariates and the higher-level indicators; for a cluster covariate the
cluster means of the patient-level variables) and hands it to the kernel the
method calls for (:mod:`hmlib.stats.imputation.kernels`): flat, per stratum
with the flat fall-back, with fixed cluster intercepts, or with a random
intercept. The "few clusters" rule (cluster means left out when too few
clusters observe the target), the ridge on cluster-level coefficients and the
extrapolation check live here (package docstring, "Few clusters");
:func:`recorded_fallbacks` puts what they recorded into words.
"""

from __future__ import annotations

import numpy as np

from hmlib.stats.imputation.kernels import (cluster_sums, fe_linear_draw, fe_logistic_draw, linear_draw,
                                            logistic_draw, prepare_design, ri_gibbs_draw, ri_logistic_draw)
from hmlib.stats.imputation.problem import Problem, Variable
from hmlib.stats.imputation.slopes_kernel import random_slopes_gibbs_draw
from hmlib.stats.imputation.slopes_logistic import random_slopes_logistic_draw
from hmlib.stats.imputation.three_level import nested_gibbs_draw, nested_logistic_draw

__all__ = ["impute_variable", "recorded_fallbacks", "MIN_CLUSTERS_FOR_MEANS", "CLUSTERS_PER_CLUSTER_COLUMN",
           "CLUSTER_COEF_PRIOR_SD", "EXTRAPOLATION_SDS"]

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
#: Kinds of draw made by a logistic model: 0/1 values, or (one contrast of a categorical
#: variable's baseline-category model) their linear predictors.
_LOGISTIC_KINDS = ("binary", "logits")


# --------------------------------------------------------------------------
# Designs
# --------------------------------------------------------------------------
def _level1_design(problem: Problem, current: dict, target: Variable):
    """Design of a level-1 target: its columns, their names and the names of the cluster-level ones.

    The third value is ``(mean_names, cluster_names, unit_mean_names)``: the cluster-mean
    columns, all cluster-level columns (cluster means, cluster covariates, higher-level
    indicators, means over the units of the random higher level) and those last means.
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
    unit_mean_names: list[str] = []
    if problem.method in ("multilevel", "stratified"):
        if problem.method == "multilevel" and problem.cluster_means and base.shape[1]:
            means = cluster_sums(base, codes, problem.J) / problem.sizes[:, None]
            parts.append(means[codes])
            mean_names = [f"mean({nm})" for nm in names]
            all_names.extend(mean_names)
            if problem.random_level is not None:
                units = problem.higher_codes[codes]
                unit_sizes = np.bincount(units, minlength=problem.K).astype(float)
                parts.append((cluster_sums(base, units, problem.K) / unit_sizes[:, None])[units])
                unit_mean_names = [f"{problem.random_level} mean({nm})" for nm in names]
                all_names.extend(unit_mean_names)
        for v in problem.level2:
            parts.append(v.features(current[v.name])[codes])
            all_names.extend(v.feature_names())
        if problem.method == "multilevel" and problem.higher.shape[1]:
            # the random higher level's units have their intercepts: no indicator columns for them
            fixed = [not (problem.random_level and nm.startswith(f"{problem.random_level}["))
                     for nm in problem.higher_names]
            parts.append(problem.higher[codes][:, fixed])
            all_names.extend(nm for nm, keep in zip(problem.higher_names, fixed) if keep)
    cluster_names = all_names[len(names):]
    return np.column_stack(parts), all_names, (mean_names, cluster_names, unit_mean_names)


def _level2_design(problem: Problem, current: dict, target: Variable):
    blocks, names = [], []
    for v in problem.level1:
        blocks.append(cluster_sums(v.features(current[v.name]), problem.codes, problem.J)
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
def _flat_fit_and_draw(X, names, y, obs, mis, rng, *, kind, problem, target, note_collinear=True, cache=None):
    if cache is not None and "prepared" in cache:
        Do, Dp = cache["prepared"]
    else:
        Do, Dp, _ = prepare_design(X, names, obs, mis, notes=problem.notes if note_collinear else None,
                                   target=target)
        n_obs = int(np.sum(obs))
        if n_obs - Do.shape[1] < 2:
            problem.notes.add(f"Imputation model for '{target}': only {n_obs} observed values, too few for its "
                              f"{Do.shape[1]} terms; imputed from an intercept-only model.")
            Do, Dp = Do[:, :1], Dp[:, :1]
        if cache is not None:
            cache["prepared"] = (Do, Dp)
    if kind in _LOGISTIC_KINDS:
        return logistic_draw(Do, y[obs], Dp, rng, cache=cache, logits=kind == "logits")
    return linear_draw(Do, y[obs], Dp, rng, pmm=problem.continuous == "pmm", donors=problem.donors)


def _cluster_level_budget(problem: Problem, var: Variable, X, names, cluster_info, obs):
    """Leave out the cluster means when too few clusters observe the target to identify them.

    The cluster-level columns vary only between clusters, so their coefficients are
    estimated from the clusters that observe the target, not from its rows. With few
    such clusters (or as many columns as clusters) they are unidentified and a cluster
    without observed values is imputed by wild extrapolation. Returns the design
    without the cluster-mean columns when fewer than ``max(MIN_CLUSTERS_FOR_MEANS,
    CLUSTERS_PER_CLUSTER_COLUMN * q)`` clusters observe the target (``q`` = all
    cluster-level columns), else the design unchanged.
    """
    mean_names, cluster_names, unit_mean_names = cluster_info
    if unit_mean_names:
        # the means over the random higher level's units: identified from the units observing the target
        units_observing = int(np.unique(problem.higher_codes[problem.codes[obs]]).size)
        if units_observing < max(MIN_CLUSTERS_FOR_MEANS, CLUSTERS_PER_CLUSTER_COLUMN * len(unit_mean_names)):
            problem.notes.add(f"Imputation model for '{var.name}': only {units_observing} "
                              f"{problem.random_level} units observe it, too few for the {problem.random_level} "
                              "means of the other variables; they were left out.")
            keep = np.array([nm not in set(unit_mean_names) for nm in names])
            X, names = X[:, keep], [nm for nm, k in zip(names, keep) if k]
            cluster_names = [nm for nm in cluster_names if nm not in set(unit_mean_names)]
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


def _level1_draw(problem: Problem, var: Variable, X, names, y, obs, mis, kind: str, rng, key,
                 cluster_info=((), (), ())):
    """Draw values of one level-1 target at rows ``mis``: ``kind`` "continuous", "binary", or "logits"
    (the linear predictors of a logistic model under drawn parameters: one contrast of a
    baseline-category model, :func:`_baseline_category`)."""
    method = problem.method
    codes = problem.codes
    # a design no imputation changes, predicting the variable's own missing rows: prepared once
    fixed = problem.fixed_cache(var, key) if mis is var.missing else None
    if method == "flat":
        return _flat_fit_and_draw(X, names, y, obs, mis, rng, kind=kind, problem=problem, target=var.name,
                                  cache=fixed)
    if method == "stratified":
        return _stratified_draw(problem, var, X, names, y, obs, mis, kind, rng)
    if method == "fixed_effects":
        Do, Dp, _ = prepare_design(X, names, obs, mis, intercept=False, notes=problem.notes, target=var.name)
        if kind in _LOGISTIC_KINDS:
            return fe_logistic_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                                     notes=problem.notes, target=var.name, logits=kind == "logits")
        return fe_linear_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                               pmm=problem.continuous == "pmm", donors=problem.donors,
                               notes=problem.notes, target=var.name)
    if fixed is not None and "prepared" in fixed:
        Do, Dp, kept = fixed["prepared"]
    else:
        Do, Dp, kept = _multilevel_design(problem, var, X, names, obs, mis, cluster_info)
        if fixed is not None:
            fixed["prepared"] = (Do, Dp, kept)
    state = problem.state.setdefault(key, {})
    cache = problem.fixed_cache(var, key)
    three = problem.random_level is not None
    slopes = [0, *(1 + kept.index(nm) for nm in problem.random_slopes if nm in kept)]
    if kind in _LOGISTIC_KINDS and len(slopes) > 1:
        return random_slopes_logistic_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                                           random_columns=slopes, notes=problem.notes, target=var.name,
                                           state=state, cache=cache, logits=kind == "logits",
                                           hc=problem.higher_codes if three else None, K=problem.K)
    if kind in _LOGISTIC_KINDS and three:
        return nested_logistic_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, problem.higher_codes,
                                    problem.K, rng, notes=problem.notes, target=var.name, cache=cache,
                                    state=state, logits=kind == "logits")
    if kind in _LOGISTIC_KINDS:
        return ri_logistic_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                                 notes=problem.notes, target=var.name, state=state, cache=cache,
                                 logits=kind == "logits")
    cluster_level = set(cluster_info[1])
    ridge = np.r_[0.0, [1.0 / CLUSTER_COEF_PRIOR_SD ** 2 if nm in cluster_level else 0.0 for nm in kept]]
    if problem.random_slopes:
        return random_slopes_gibbs_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng,
                                        random_columns=slopes, state=state, pmm=problem.continuous == "pmm",
                                        donors=problem.donors, prior_precision=ridge, cache=cache,
                                        hc=problem.higher_codes if three else None, K=problem.K)
    if three:
        return nested_gibbs_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, problem.higher_codes,
                                 problem.K, rng, state=state, hetero=problem.hetero,
                                 pmm=problem.continuous == "pmm", donors=problem.donors, prior_precision=ridge,
                                 cache=cache)
    return ri_gibbs_draw(Do, y[obs], codes[obs], Dp, codes[mis], problem.J, rng, state=state,
                          hetero=problem.hetero, pmm=problem.continuous == "pmm", donors=problem.donors,
                          prior_precision=ridge, cache=cache)


def _multilevel_design(problem: Problem, var: Variable, X, names, obs, mis, cluster_info):
    """The multilevel model's design: cluster means within budget, standardised, collinear columns dropped."""
    X, names = _cluster_level_budget(problem, var, X, names, cluster_info, obs)
    Do, Dp, kept = prepare_design(X, names, obs, mis, notes=problem.notes, target=var.name)
    n_obs = int(obs.sum())
    if n_obs - Do.shape[1] < 2:
        problem.notes.add(f"Imputation model for '{var.name}': only {n_obs} observed values, too few for its "
                          f"{Do.shape[1]} terms; imputed from a model with the random intercept only.")
        Do, Dp, kept = Do[:, :1], Dp[:, :1], []
    return Do, Dp, kept


def _stratified_draw(problem: Problem, var: Variable, X, names, y, obs, mis, kind, rng):
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
        elif kind in _LOGISTIC_KINDS and np.unique(y[o_rows]).size < 2:
            reason = "a single observed value"
        else:
            Do, Dp, _ = prepare_design(X, names, o_rows, m_rows)
            if o_rows.size - Do.shape[1] < 2:
                reason = "fewer observed values than model terms + 2"
            elif kind in _LOGISTIC_KINDS:
                out[position[m_rows]] = logistic_draw(Do, y[o_rows], Dp, rng, logits=kind == "logits")
            else:
                out[position[m_rows]] = linear_draw(Do, y[o_rows], Dp, rng, pmm=problem.continuous == "pmm",
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


def _level2_draw(problem: Problem, var: Variable, X, names, y, obs, mis, kind, rng):
    Do, Dp, _ = prepare_design(X, names, obs, mis, notes=problem.notes, target=var.name)
    if int(obs.sum()) - Do.shape[1] < 3:
        problem.notes.add(f"Cluster-level model for '{var.name}': only {int(obs.sum())} clusters observe it, "
                          "too few for its predictors; imputed from an intercept-only model.")
        Do, Dp = np.ones((int(obs.sum()), 1)), np.ones((int(mis.sum()), 1))
    if kind in _LOGISTIC_KINDS:
        return logistic_draw(Do, y[obs], Dp, rng, logits=kind == "logits")
    return linear_draw(Do, y[obs], Dp, rng, pmm=problem.continuous == "pmm", donors=problem.donors)


def impute_variable(problem: Problem, var: Variable, current: dict, rng) -> None:
    """One chained-equations update of ``var`` in ``current`` (in place)."""
    obs = ~var.missing
    mis = var.missing
    if var.level == 1:
        fixed = problem.fixed_cache(var, "design")
        if fixed is not None and "X" in fixed:
            X, names, cluster_info = fixed["X"]
        else:
            X, names, cluster_info = _level1_design(problem, current, var)
            if fixed is not None:
                fixed["X"] = (X, names, cluster_info)

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
        y = _baseline_category(var, y, obs, mis, draw, rng)
    current[var.name] = y


def _check_range(problem: Problem, var: Variable, imputed: np.ndarray) -> None:
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


def _baseline_category(var: Variable, y, obs, mis, draw, rng):
    """Draw a categorical variable's missing levels from a baseline-category (multinomial) logit model.

    The baseline is the level observed most often (ties: the first); for every other level
    ``k`` a logistic model of "k rather than the baseline" is fitted to the rows observed at one
    of the two (Begg & Gray 1984) by the method's binary model, and its linear predictors under
    drawn parameters (and, multilevel, drawn cluster intercepts) are the logits ``eta_k``; each
    missing row then takes level ``k`` with probability ``exp(eta_k) / sum_l exp(eta_l)``
    (``eta_baseline = 0``). A level never observed (in these rows) is never drawn.
    """
    codes = var.values
    counts = np.bincount(codes[obs].astype(int), minlength=var.n_categories)
    baseline = int(np.argmax(counts))
    logits = np.full((int(mis.sum()), var.n_categories), -np.inf)
    logits[:, baseline] = 0.0
    for k in range(var.n_categories):
        if k == baseline or counts[k] == 0:
            continue
        fit_rows = obs & ((codes == k) | (codes == baseline))
        logits[:, k] = draw((codes == k).astype(float), fit_rows, mis, "logits", f"{var.name}[{k}]")
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    cumulative = np.cumsum(prob / prob.sum(axis=1, keepdims=True), axis=1)
    y = y.copy()
    y[mis] = np.minimum((rng.random(cumulative.shape[0])[:, None] > cumulative).sum(axis=1), var.n_categories - 1)
    return y


def recorded_fallbacks(problem: Problem, strata_name: str | None) -> tuple[dict, list]:
    """What the draws of all chains recorded, as structured fall-backs and as notes.

    Returns
    -------
    fallbacks : dict
        ``{variable: {"strata": k, "of": n, "reasons": {reason: count}}}``
        (stratified imputation: the strata that fell back to the flat model).
    notes : list of str
        One note per variable that fell back in some stratum, had its
        cluster means left out, or was imputed far beyond its observed range.
    """
    notes, fallbacks = [], {}
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
    return fallbacks, notes
