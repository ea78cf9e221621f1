"""The statistics of step 1 (diagnose): where, how and why data are missing, by cluster.

Every function takes a patient-level frame plus column names and returns an
aggregated table (by cluster, by variable or by pattern) or a result object.
Nothing here is suppressed or narrated: :mod:`hmlib.steps.diagnose` runs these
analyses on the registry, applies small-cell suppression (:mod:`hmlib.privacy`)
to everything it publishes and writes the sentences.

Modules
-------
``counts``                per-cluster missing counts and the shared argument checks
``rates``                 Wilson intervals; missing rates by variable and by cluster; heatmap table
``funnel``                funnel plots with exact binomial control limits
``gaps``                  structural versus sporadic gaps; missing-data patterns
``indicator_models``      random-intercept models of a missingness indicator (variation, predictors)
``outcome_correlation``   missingness propensity against the outcome's cluster effects (at each level)
``levels``                a missingness indicator's variation at each level (clusters in countries)

Terms and algorithms
--------------------
Missingness indicator
    ``R_ij = 1`` when variable ``v`` is missing for patient ``i`` of cluster
    ``j``. Shares are ``sum_i R_ij / n_j``.
Wilson interval
    The score interval for a binomial proportion (Wilson 1927; Newcombe 1998
    method 3), without continuity correction; ``k = 3, n = 10`` gives
    (0.1078, 0.6032).
Funnel plot
    Cluster missing rates against cluster size, with control limits around the
    pooled rate ``p0`` (total missing over total rows). The limits are *exact
    binomial* quantiles with Spiegelhalter's interpolation between the integer
    steps (Spiegelhalter 2005, appendix A.1.1): for tail probability ``q``,
    ``r = F^-1(q)``, ``a = (F(r) - q) / (F(r) - F(r - 1))`` and the limit is
    ``(r - a) / n``. Limits at 95% and 99.8% by default; a cluster beyond the
    99.8% limits is called an outlier. No overdispersion adjustment is made:
    when missingness varies between clusters (see below) many clusters fall
    outside, which is itself the finding.
Between-cluster variation
    Random-intercept logistic model ``logit P(R_ij = 1) = x_ij' b + u_j``,
    ``u_j ~ N(0, s^2)`` (:func:`hmlib.stats.mixed.fit_random_intercept`), reported as
    the cluster SD ``s`` on the logit scale, the latent-scale ICC
    ``s^2 / (s^2 + pi^2 / 3)`` (Snijders & Bosker 2012, section 17.3) and the
    likelihood-ratio test of ``s = 0`` referred to the 50:50 mixture of
    chi2_0 and chi2_1 (Self & Liang 1987). The likelihood is integrated by
    10-point adaptive Gauss-Hermite quadrature (as lme4's ``nAGQ = 10``)
    when the model has at most ``AGHQ_MAX_ROWS`` (50,000) rows, and by the
    Laplace approximation above that. Quadrature costs about three times as
    much (the whole diagnosis of 20,000 patients in 500 clusters takes about
    3 s with it, 1 s with Laplace, on a 2-core machine) and matters most for
    small clusters; above 50,000 rows the diagnosis would otherwise take
    tens of seconds, and such registries usually have clusters large enough
    for Laplace. ``nagq`` overrides the choice.
Predictors of missingness, within and between clusters
    Each numeric covariate ``x`` is split into its cluster mean
    ``m_j`` (over the patients of the cluster with ``x`` recorded) and the
    within-cluster deviation ``x_ij - m_j`` (Neuhaus & Kalbfleisch 1998;
    the "within-between" or hybrid model). Both parts are standardised: the
    between part by the SD of the cluster means over clusters, the within part
    by the SD of the deviations over patients, so the odds ratios are per SD of
    each part. Categorical covariates enter as treatment-coded 0/1 columns
    (reference: the alphabetically first level; term ``name[level]``). All
    covariates enter one random-intercept logistic model of ``R``; patients
    with any covariate missing are left out of that model and counted
    (``n_dropped`` and per covariate ``dropped_by_covariate``).
Structural and sporadic gaps
    Per cluster and variable: *complete* (nothing missing), *structural*
    (missing for every patient of the cluster, or share missing above
    ``structural_share``, default 0.9), otherwise *sporadic*.
Missing-data patterns
    The set of variables missing for a patient, written as their names in the
    order given (``"lactate, sbp"``) or ``"complete"``. Patterns of fewer than
    ``min_cell`` patients are pooled into one row; if the pooled count is
    itself from 1 to ``min_cell - 1``, the next smallest patterns are pooled
    too until it is not (else it could be recovered from the total).
Missingness propensity and outcome
    The empirical-Bayes (conditional mode) cluster effects of the missingness
    model of the focus variable are correlated over clusters with those of a
    random-intercept model of the outcome on the predictors observed for every
    patient. Pearson and Spearman correlations with Fisher-z intervals (for
    Spearman with the variance ``1.06 / (m - 3)`` of Fieller, Hartley &
    Pearson 1957). Conditional modes are shrunk towards zero, more in small
    clusters, and carry estimation error, so this correlation is a screening
    number; the joint model of step 4 estimates the correlation properly.

References
----------
Wilson EB (1927). Probable inference, the law of succession, and statistical
inference. JASA 22:209-212. Newcombe RG (1998). Two-sided confidence intervals
for the single proportion. Stat Med 17:857-872.
Spiegelhalter DJ (2005). Funnel plots for comparing institutional
performance. Stat Med 24:1185-1202.
Self SG, Liang KY (1987). JASA 82:605-610.
Snijders TAB, Bosker RJ (2012). Multilevel Analysis, 2nd ed. Sage.
Neuhaus JM, Kalbfleisch JD (1998). Between- and within-cluster covariate
effects in the analysis of clustered data. Biometrics 54:638-645.
Fieller EC, Hartley HO, Pearson ES (1957). Tests for rank correlation
coefficients I. Biometrika 44:470-481.
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., ch. 4
(missing-data patterns) and ch. 7 (multilevel data). CRC.
"""

from __future__ import annotations

from hmlib.stats.missingness.categories import LevelMixResult, level_counts_by_cluster, level_mix
from hmlib.stats.missingness.funnel import FunnelResult, binomial_control_limits, missingness_funnel
from hmlib.stats.missingness.gaps import GapResult, classify_gaps, missingness_patterns
from hmlib.stats.missingness.indicator_models import (AGHQ_MAX_ROWS, ClusterVariationResult,
                                                      MissingnessPredictorsResult,
                                                      missingness_cluster_variation, missingness_predictors)
from hmlib.stats.missingness.levels import LevelVariationResult, missingness_level_variation
from hmlib.stats.missingness.outcome_correlation import (LevelCorrelationResult, OutcomeCorrelationResult,
                                                         fisher_interval, missingness_outcome_correlation,
                                                         missingness_outcome_correlation_by_level)
from hmlib.stats.missingness.rates import (missingness_by_cluster, missingness_heatmap_table,
                                           missingness_overview, wilson_interval)

__all__ = [
    "AGHQ_MAX_ROWS",
    "wilson_interval",
    "missingness_by_cluster",
    "missingness_overview",
    "missingness_heatmap_table",
    "binomial_control_limits",
    "FunnelResult",
    "missingness_funnel",
    "ClusterVariationResult",
    "missingness_cluster_variation",
    "MissingnessPredictorsResult",
    "missingness_predictors",
    "GapResult",
    "classify_gaps",
    "missingness_patterns",
    "OutcomeCorrelationResult",
    "fisher_interval",
    "missingness_outcome_correlation",
    "LevelCorrelationResult",
    "missingness_outcome_correlation_by_level",
    "level_counts_by_cluster",
    "LevelMixResult",
    "level_mix",
    "LevelVariationResult",
    "missingness_level_variation",
]
