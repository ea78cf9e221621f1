"""Multiple imputation of two-level (patients in clusters) data by chained equations.

The package holds the imputation engine and the statistics around it; its
public names are re-exported here. The rooms:

- :mod:`~hmlib.stats.imputation.chained`: :func:`impute` (the chained-equations
  driver), :class:`ImputationResult`, :func:`split_rhat`;
- :mod:`~hmlib.stats.imputation.problem`: the model columns checked and coded;
- :mod:`~hmlib.stats.imputation.univariate`: one variable's update under each
  method, and the "few clusters" rules;
- :mod:`~hmlib.stats.imputation.kernels`: the draws (Gibbs sampler, regression
  and logistic draws, predictive mean matching) and their priors;
- :mod:`~hmlib.stats.imputation.ri_logistic`: the maximum-likelihood fit
  behind 2l.bin, warm-started within a chain (Newton steps with the analytic
  Laplace Hessian);
- :mod:`~hmlib.stats.imputation.variation`: between-cluster variation of a
  variable (ICC) and the residual-variance check behind 2l.pan vs 2l.norm;
- :mod:`~hmlib.stats.imputation.random_slopes`: the random-slope kernel
  (2l.pan type 2, on standardised columns) and
  :func:`~hmlib.stats.imputation.random_slopes.impute_random_slopes` for one
  variable with complete predictors (not yet used by :func:`impute`);
- :mod:`~hmlib.stats.imputation.carried_forward`: last observation carried
  forward for visits within patients, a named single-imputation comparator
  (:func:`~hmlib.stats.imputation.carried_forward.last_observation_carried_forward`).

Nothing here takes a :class:`hmlib.data.Registry` (the step's adapter,
:func:`hmlib.steps.imputation.impute_registry`, does).

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
effects; the level directly above the cluster has a random intercept
instead, :mod:`~hmlib.stats.imputation.three_level`). Random slopes are
added only where asked (``random_slopes``, usually the visit time:
:mod:`~hmlib.stats.imputation.slopes_kernel`), on standardised columns:
random slopes on unscaled predictors are what made R's ``2l.pan`` badly
biased on the reference registry (``/work/shared/reference/README.md``). Every predictor column is
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
  maximum likelihood (Laplace) on the observed rows: a chain's first fit
  of a variable by :func:`hmlib.stats.mixed.fit_random_intercept`, its later
  fits from the previous estimate by Newton steps with the analytic
  Hessian, to the same maximum (:mod:`~hmlib.stats.imputation.ri_logistic`);
  ``beta* ~ N(beta_hat, cov)``, ``log tau* ~ N(log tau_hat, se^2)`` (capped
  at 5 on the logit scale), then
  each ``u*_j`` from the normal approximation at the mode of its
  conditional posterior given ``beta*, tau*`` and the cluster's observed
  values (``N(0, tau*^2)`` for a cluster without observed value); values
  are drawn from ``expit(x' beta* + u*_j)``. If the fit fails (e.g. the
  variable is observed in one cluster only) the flat logistic draw is used
  and noted.
- Categorical with more than two levels (nominal or ordinal):
  baseline-category logits (the multinomial logit model of mice's
  ``polyreg``). The baseline is the level observed most often; for each
  other level ``k`` the chosen approach's binary model of "``k`` rather than
  the baseline" is fitted to the rows observed at one of the two (Begg &
  Gray 1984: individualised logistic regressions, consistent for the
  multinomial logit's coefficients), its parameters drawn as for a binary
  variable, and its linear predictor is the logit ``eta_k`` of level ``k``;
  each missing value is then drawn with probabilities ``exp(eta_k) /
  sum_l exp(eta_l)``. The multilevel version has a random intercept per
  contrast (2l.bin, with the cluster means of the other variables), so a
  cluster's imputed levels follow its own mix, shrunk towards the pooled
  one; a cluster that never records the variable gets each contrast's
  intercept from that contrast's cluster distribution.

  Why this model. Every contrast is a logistic model fitted by the same
  lme4-checked random-intercept fitter as a binary variable
  (:func:`hmlib.stats.mixed.fit_random_intercept`), with the same priors,
  fall-backs and few-cluster rules: no second sampler to tune and
  monitor, ``K - 1`` Laplace fits per iteration. Nested dichotomies (level
  0 against the rest, then level 1 against the rest of the rest, ...; the
  engine's earlier model) are as cheap but depend on the order of the
  levels, which hmlib sorts alphabetically: on the reference registry
  (``tests/results/categorical_registry.csv``) the multilevel normal-vs-high
  coefficient was -1.127 with the sorted order and -1.091 with the clinical
  one (10 seeds each, Monte Carlo SE 0.006 and 0.017), a change of 0.14 of
  its standard error made by the labels alone. Baseline-category logits
  depend on no order; an ordinal variable is imputed as nominal (no
  order-constrained model: hmlib does not know the order of text labels),
  which costs a little efficiency and no bias. jomo's latent normal model
  also correlates the contrasts' cluster effects, which these independent
  random intercepts do not.

  Checked (``tests/test_categorical_imputation.py``; references by
  ``tests/results/categorical_imputation.R``, several seeds on each side,
  pooled coefficients of the analysis model compared within Monte Carlo
  error): flat imputation against mice's ``polyreg`` and, on ordinal data,
  ``polr``; multilevel imputation against jomo's multilevel latent-normal
  model (``jomo1rancat``) given the same predictors. With the cluster means
  of the predictors (this engine's default) the two models part a little:
  on the nominal reference data hmlib's normal-vs-high coefficient is
  -1.143 and jomo's -1.073 (0.27 of its SE; -1.111 and -1.091 without the
  means), a difference of the models (independent logistic contrasts
  against correlated latent normals), not of Monte Carlo error; the truth
  study checks the default against the truth. mice's ``polyreg`` and
  ``polr`` impute from the fitted
  model without drawing its parameters (improper imputation), so their
  pooled standard errors are too small; the standard errors are compared
  with their bootstrapped, proper versions. Truth by simulation:
  ``bench/categorical_truth.py``; speed beside jomo:
  ``bench/bench_categorical_vs_jomo.py``.
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
chain: missing values start as random draws from the observed values (or,
with ``start``, as in given completed data sets: a warm start), and
``iterations`` rounds of the chained equations follow (variables with
missing values visited in the order predictors, outcome, cluster
covariates). Chain ``k`` uses ``numpy.random.Generator(PCG64)`` seeded by
child ``k`` of ``SeedSequence(seed)``, so results depend only on the seed.

Speed. BLAS is held to one thread while the chains run (threaded BLAS on a
busy machine made the small solves several times slower; the numbers are the
same). When only one variable has missing values its design is the same in
every iteration of every chain, so its deterministic parts (the 2l.bin fit,
the Gibbs sampler's per-cluster sums) are computed once and reused: the same
numbers as recomputing them (:meth:`~hmlib.stats.imputation.problem.Problem.fixed_cache`).
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
Begg CB, Gray R (1984). Calculation of polychotomous logistic regression
parameters using individualized regressions. Biometrika 71(1):11-18.
Quartagno M, Carpenter JR (2019). Multiple imputation for discrete data:
evaluation of the joint latent normal model. Biom J 61(4):1003-1019.
von Hippel PT (2007). Regression with missing Ys: an improved strategy for
analyzing multiply imputed data. Sociol Methodol 37:83-117.
Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner PC (2021).
Rank-normalization, folding, and localization: an improved R-hat. Bayesian
Anal 16(2):667-718.
"""

from __future__ import annotations

from hmlib.stats.imputation.chained import (CONTINUOUS_METHODS, METHODS, ImputationResult, fit_starts, impute,
                                            split_rhat)
from hmlib.stats.imputation.variation import (ResidualVarianceCheck, cluster_variation, completed_variation,
                                              residual_variance_check)

__all__ = ["METHODS", "CONTINUOUS_METHODS", "ImputationResult", "impute", "split_rhat", "fit_starts",
           "ResidualVarianceCheck", "residual_variance_check", "cluster_variation", "completed_variation"]
