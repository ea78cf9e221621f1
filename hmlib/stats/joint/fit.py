"""Fitting the joint model: prepare, choose, build, sample with nutpie, summarise.

:func:`fit_joint_model` takes a frame and explicit arguments (the report's
adapter from a checked registry is :func:`hmlib.steps.joint_model.fit_registry`).
Its sampler sizes default to the full run sizes of :mod:`hmlib.settings`
(``fast=True``: the fast ones). nutpie's NUTS uses a low-rank mass matrix
when the model has at most :data:`LOW_RANK_MAX_PARAMETERS` unconstrained
parameters, else a diagonal one. nutpie is imported when a model is fitted,
so that importing hmlib stays quick.

A fit that finishes by itself. With ``time_budget_minutes``, a run that
misses the convergence gate goes on sampling: its chains are continued to
1.25, 1.5, 1.75 and 2 times their draws, checking the gate at each, and then, if still
needed, a new run with twice the warm-up and draws is made, within the
budget (:mod:`hmlib.stats.joint.sampling`). A run that misses the gate with
divergent transitions is followed instead by a run of the model rebuilt with
every level's effects non-centred
(:func:`~hmlib.stats.joint.parameterisation.fallback_parameterisation`),
at most once, and kept only if it diverges less often per draw. The result
records every run (sizes, checkpoints, seed, seconds, gate, divergences,
fall-back) and says what was done in its
convergence message; the reported run's sizes and seed given explicitly,
with ``parameterisation=`` the choices it sampled when it was the fall-back
(``settings["parameterisation"]`` names them), reproduce it.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from hmlib.exceptions import FitError
from hmlib.settings import run_sizes
from hmlib.progress import report
from hmlib.stats.joint.data import JointData, prepare_joint_data
from hmlib.stats.joint.imputations import focus_by_cluster
from hmlib.stats.joint.model import build_joint_model
from hmlib.stats.joint.parameterisation import (choose_parameterisation, choose_quadrature_nodes,
                                                fallback_parameterisation, ml_fits)
from hmlib.stats.joint.priors import check_priors
from hmlib.stats.joint.result import JointModelResult
from hmlib.stats.joint.slopes import random_part_terms, random_part_to_original_scale
from hmlib.stats.joint.sampling import extension_count, extension_hint, extension_text, sample_until_gate
from hmlib.stats.joint.summaries import draw_diagnostics, gate_message, outcome_to_original_scale, summarise_draws

__all__ = ["LOW_RANK_MAX_PARAMETERS", "fit_joint_model"]

#: Largest number of unconstrained parameters for which ``adaptation="auto"``
#: picks nutpie's low-rank mass matrix.
LOW_RANK_MAX_PARAMETERS = 500
#: Model variables not kept in the trace: sampling coordinates, observed
#: variables and potentials (the reported quantities are derived from the rest).
_NOT_TRACED = ("miss_indicator", "miss_prior", "miss_slope", "miss_resid_sd", "outcome_cluster_level",
               "outcome_prior", "outcome_slope", "outcome_resid_sd")


def fit_joint_model(frame: pd.DataFrame, *, outcome: str, predictors, cluster: str, family: str,
                    seed: int | None = None, levels: dict | None = None, focus: str | None = None,
                    ordinal=None,
                    draws: int | None = None, tune: int | None = None, chains: int | None = None,
                    fast: bool = False, priors: dict | None = None, distributions: dict | None = None,
                    parameterisation: dict | None = None, missing_values: str = "marginal",
                    missingness_model: bool = True, quadrature_nodes: int | str = "auto", cores: int | None = None,
                    adaptation: str = "auto", keep_trace: bool = False,
                    time_budget_minutes: float | None = None, higher_levels=(),
                    random_slopes=()) -> JointModelResult:
    """Fit the joint model (:mod:`hmlib.stats.joint`) with nutpie and summarise it.

    Parameters
    ----------
    frame : pandas.DataFrame
        The data (read only).
    outcome, cluster : str
    predictors : sequence of str
    family : {"binomial", "gaussian"}
    seed : int
        Seeds the sampler and the post-hoc imputation draws (required).
    levels : dict, optional
        ``{column: levels}`` of categorical predictors (first = reference).
    focus : str, optional
        Default: the incomplete predictor with most missing values.
    ordinal : sequence of str or dict, optional
        Categorical predictors with an ordinal (cumulative logit) submodel,
        optionally with their order (see
        :func:`~hmlib.stats.joint.data.prepare_joint_data`); the other
        categorical predictors with three or more levels get a nominal
        (baseline-category logit) one.
    draws, tune, chains : int, optional
        Per chain; default the joint-model sizes of
        :func:`hmlib.settings.run_sizes` (full: 1000, 1000, 2; fast: 500, 500, 2).
    fast : bool
        Take the fast sizes for the defaults above; the convergence message
        of a failed gate then says the settings were small.
    priors : dict, optional
        Overrides of :data:`~hmlib.stats.joint.priors.DEFAULT_PRIORS`, e.g.
        ``{"cluster_sd": ("halfstudentt", 3, 2.5)}``.
    distributions : dict, optional
        ``{column: "normal" | "lognormal"}`` (default by :func:`~hmlib.stats.joint.data.choose_distribution`).
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
        takes the fewest of :data:`~hmlib.stats.joint.parameterisation.QUADRATURE_CANDIDATES`
        whose log-likelihood error is below
        :data:`~hmlib.stats.joint.parameterisation.QUADRATURE_TOLERANCE` at a
        pessimistic plug-in (:func:`~hmlib.stats.joint.parameterisation.choose_quadrature_nodes`).
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
    time_budget_minutes : float, optional
        Extend the sampling automatically when the convergence gate fails
        (module docstring) while the whole fit stays within this many
        minutes. None or 0: never extend.
    higher_levels : sequence of str, optional
        Levels above the cluster (params ``higher_levels``): nested random
        intercepts in every submodel; the summary gains ``sd(<level>)``
        rows (outermost first) before ``sd(<cluster>)``.
    random_slopes : sequence of str, optional
        Complete numeric predictors (usually time) with a random slope at
        the cluster level, correlated with the random intercept (LKJ prior;
        :mod:`hmlib.stats.joint.slopes`), in the outcome and every
        incomplete continuous predictor's submodel. The summary gains
        ``sd(<slope>|<cluster>)`` and ``cor(<slope>|<cluster>)`` after
        ``sd(<cluster>)``, all on the user's scale (``sd(<cluster>)`` is then
        the SD of the intercepts at slope predictor 0, as in lme4). With
        ``higher_levels`` those levels have random intercepts only.

    Returns
    -------
    JointModelResult

    Raises
    ------
    FitError
        Bad arguments or data the model cannot take (see
        :func:`~hmlib.stats.joint.data.prepare_joint_data`).

    Examples
    --------
    >>> result = fit_joint_model(frame, outcome="mortality_30d", predictors=["age", "lactate"],
    ...                          cluster="site", family="binomial", seed=1)   # doctest: +SKIP
    >>> result.to_estimates()                                                 # doctest: +SKIP
    """
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if seed is None:
        raise FitError("fit_joint_model needs seed= (an integer) so that the run can be repeated.")
    fast = bool(fast)
    sizes = run_sizes(fast)
    draws = int(draws if draws is not None else sizes.joint_draws)
    tune = int(tune if tune is not None else sizes.joint_tune)
    chains = int(chains if chains is not None else sizes.joint_chains)
    if draws < 4 or tune < 0 or chains < 1:
        raise FitError(f"need draws >= 4, tune >= 0 and chains >= 1; got {draws}, {tune}, {chains}.")
    checked_priors = check_priors(priors)
    jd = prepare_joint_data(frame, outcome=outcome, predictors=predictors, cluster=cluster, family=family,
                            levels=levels, focus=focus, distributions=distributions,
                            missing_values=missing_values, missingness_model=missingness_model, ordinal=ordinal,
                            higher_levels=higher_levels, random_slopes=random_slopes)
    fits = ml_fits(jd)
    choice, shares = choose_parameterisation(jd, fits, parameterisation)
    quadrature_error = None
    if quadrature_nodes == "auto":
        quadrature_nodes, quadrature_error = choose_quadrature_nodes(jd, fits)
    elif isinstance(quadrature_nodes, str):
        raise FitError(f"quadrature_nodes must be an integer or 'auto', got {quadrature_nodes!r}.")
    model = build_joint_model(jd, priors=checked_priors, parameterisation=choice,
                              quadrature_nodes=quadrature_nodes)
    t_built = time.perf_counter()
    report("joint model", 0, (tune + draws) * chains, unit="draws", detail="compiling the sampler")
    compiled, n_free, adaptation = _compile(model, adaptation)
    t_compiled = time.perf_counter()
    budget_s = 60.0 * float(time_budget_minutes) if time_budget_minutes else None
    sampled = {"choice": choice}      # the reported run's parameterisation (the fall-back's once it is used)
    fallback = _fallback(jd, choice, parameterisation, sampled, priors=checked_priors,
                         quadrature_nodes=quadrature_nodes, adaptation=adaptation)
    runs = sample_until_gate(compiled, lambda post: _summary_table(jd, post), draws=draws, tune=tune,
                             chains=chains, cores=cores, seed=int(seed), adaptation=adaptation, budget_s=budget_s,
                             start_wall=start_wall, fallback=fallback)
    trace, post, divergences, (original, summary, correlation), attempts = runs
    if not attempts[-1]["fallback"]:
        sampled["choice"] = choice     # no fall-back, or one given up for doing no better
    t_sampled, cpu_sampled = time.perf_counter(), time.process_time()
    draws, tune = attempts[-1]["draws"], attempts[-1]["tune"]
    hint = extension_hint(attempts, fast=fast, budget_s=budget_s, elapsed_s=t_sampled - start_wall)
    converged, message = gate_message(summary, divergences, hint)
    extensions = extension_count(attempts)
    if converged and extensions:
        message = f"{message[:-1]}; {extension_text(attempts, budget_s)}"

    build_s = t_built - start_wall
    compile_s = t_compiled - t_built
    sampling_s = t_sampled - t_compiled
    used = build_s + compile_s + sampling_s
    table = summary.set_index("term")
    ess_per_second = {"cluster_sd": float(table.loc[f"sd({jd.cluster})", "ess_bulk"] / used)}
    if jd.focus_term is not None and jd.focus_term in table.index:
        ess_per_second["focus"] = float(table.loc[jd.focus_term, "ess_bulk"] / used)

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20261127]))
    imputations = focus_by_cluster(jd, post, rng)
    t_post = time.perf_counter()
    timing = {"build_s": build_s, "compile_s": compile_s, "sampling_s": sampling_s,
              "post_s": t_post - t_sampled, "total_s": t_post - start_wall,
              "cpu_s": cpu_sampled - start_cpu}
    settings = {
        "draws": draws, "tune": tune, "chains": chains, "seed": int(seed), "fast": fast,
        "missing_values": missing_values, "quadrature_nodes": int(quadrature_nodes),
        "quadrature_error_check": quadrature_error,
        "missingness_model": jd.missingness_model,
        "parameterisation": {jd.display_key(k): v for k, v in sampled["choice"].items()},
        "information_share": {jd.display_key(k): v for k, v in shares.items()},
        "distributions": {c.name: c.distribution for c in jd.continuous},
        "binary_summed_out": [b.name for b in jd.binaries],
        "categorical_summed_out": {c.name: ("ordinal" if c.ordinal else "nominal") for c in jd.categoricals},
        "priors": checked_priors, "sampler": f"nutpie NUTS, {adaptation} mass-matrix adaptation",
        "adaptation": adaptation, "n_parameters": n_free,
        "time_budget_minutes": float(time_budget_minutes) if time_budget_minutes else None,
        "extensions": extensions, "attempts": attempts,
    }
    return JointModelResult(
        data=jd, summary=summary, converged=converged, convergence_message=message, divergences=divergences,
        timing=timing, ess_per_second=ess_per_second, settings=settings, correlation=correlation,
        n_patients=jd.n, n_clusters=jd.n_clusters, n_dropped_outcome=jd.n_dropped_outcome,
        draws={k: original[k] for k in original} | ({"re_corr": _correlation_draws(jd, post, original)}
                                                     if jd.missingness_model else {}),
        imputations=imputations, trace=trace if keep_trace else None,
        sd_draws=_cluster_sd_draws(post))


def _fallback(jd: JointData, choice: dict, override: dict | None, sampled: dict, *, priors: dict,
              quadrature_nodes: int, adaptation: str):
    """The ``fallback`` of :func:`~hmlib.stats.joint.sampling.sample_until_gate`: a callable that builds and
    compiles the model with every level's effects non-centred (None: nothing to switch) and records its
    choices in ``sampled["choice"]``."""
    def fallback():
        switched = fallback_parameterisation(jd, choice, override)
        if switched is None:
            return None
        report("joint model", 0, 1, unit="draws", detail="divergent transitions: compiling the non-centred model")
        rebuilt = build_joint_model(jd, priors=priors, parameterisation=switched, quadrature_nodes=quadrature_nodes)
        sampled["choice"] = switched
        return _compile(rebuilt, adaptation)[0]
    return fallback


def _cluster_sd_draws(post: dict) -> dict:
    """Every cluster SD's draws (chain, draw); a nominal submodel's SDs, one per level, as ``<name>[<j>]``, and
    its slopes' SDs, per level and slope, as ``<name>[<j>,<s>]``."""
    out = {}
    for name, values in post.items():
        if not name.endswith("_cluster_sd"):
            continue
        if values.ndim == 2:
            out[name] = values
        else:
            out |= {f"{name}[{','.join(map(str, at))}]": values[(..., *at)] for at in np.ndindex(values.shape[2:])}
    return out


def _compile(model, adaptation: str):
    """Compile with nutpie; returns ``(compiled model, free parameters, adaptation to use)``."""
    import nutpie

    if adaptation not in ("auto", "diag", "low_rank"):
        raise FitError(f"adaptation must be 'auto', 'diag' or 'low_rank', got {adaptation!r}.")
    keep = [name for name in model.named_vars if not name.endswith("_z")
            and not name.endswith("_observed") and not name.startswith("outcome_marginal")
            and name not in _NOT_TRACED]
    compiled = nutpie.compile_pymc_model(model, var_names=keep)
    n_free = int(sum(np.size(v) for v in model.initial_point().values()))
    if adaptation == "auto":
        adaptation = "low_rank" if n_free <= LOW_RANK_MAX_PARAMETERS else "diag"
    return compiled, n_free, adaptation


def _summary_table(jd: JointData, post: dict):
    """Original-scale draws, the summary table (one row per reported quantity) and the correlation's posterior."""
    gaussian = jd.family == "gaussian"
    original = outcome_to_original_scale(
        jd, post["outcome_intercept"], post["outcome_coef"], post["outcome_cluster_sd"],
        post["outcome_sigma"] if gaussian else None,
        higher_sds=[post[f"outcome_above{l}_cluster_sd"] for l in range(len(jd.higher))])
    if jd.slopes:
        original |= random_part_to_original_scale(jd, post["outcome_cluster_stds"], post["outcome_cluster_corr"])
    rows = []
    order = ["Intercept", *jd.term_order, *(f"sd({h.name})" for h in jd.higher), f"sd({jd.cluster})",
             *random_part_terms(jd)] + (["sigma"] if gaussian else [])
    for term in order:
        rows.append({"term": term, **summarise_draws(original[term]), **draw_diagnostics(original[term])})
    correlation = None
    if jd.missingness_model:
        rho = _correlation_draws(jd, post, original)
        rows.append({"term": "corr(missingness, outcome)", **summarise_draws(rho), **draw_diagnostics(rho)})
        correlation = {**summarise_draws(rho), "prob_positive": float(np.mean(rho > 0))}
    return original, pd.DataFrame(rows), correlation


def _correlation_draws(jd: JointData, post: dict, original: dict) -> np.ndarray:
    """The missingness/outcome correlation's draws: with random slopes, with the intercept at slope predictors 0
    (the user's scale, as ``sd(<cluster>)``)."""
    return original["corr(missingness, outcome)"] if jd.slopes else post["re_corr"]
