"""Bayesian joint model of an outcome and its incomplete predictors, with clusters.

The model is the one brms writes as ``bf(y ~ x + z + (1|site)) +
bf(x | mi() ~ z + (1|site))`` (Buerkner 2017), extended: every incomplete
predictor gets its own submodel, incomplete binary and categorical
predictors are summed out (which brms's ``mi()`` cannot do), and a
missingness submodel shares a correlated cluster effect with the outcome.
It is fitted with PyMC and sampled by nutpie.

Model
-----
Rows ``i`` sit in clusters ``j = j[i]``. Predictors are *complete* (no missing
value; design ``Z``, numeric columns standardised, categorical columns
treatment coded as in :func:`hmlib.stats.design.design_matrix`) or *incomplete*.
The joint density factorises as ``p(y | x, z) prod_k p(x_k | z)``:

- outcome: ``g(E y_i) = a + Z_i b_z + sum_k b_k x_ik + u_j``, binomial with
  logit link or gaussian (``y`` standardised, residual SD ``sigma_y``);
- incomplete continuous predictor ``k`` (standardised):
  ``x_ik ~ N(c_k + Z_i d_k + v_kj, sigma_k)``; a positive, right-skewed
  variable (all observed values > 0 and sample skewness > 1, see
  :data:`LOGNORMAL_SKEWNESS`) is modelled on the log scale (lognormal)
  unless ``distributions`` says otherwise; the outcome always uses it on its
  original (standardised) scale;
- incomplete binary predictor ``k``: ``logit P(x_ik = 1) = c_k + Z_i d_k + v_kj``;
- incomplete categorical predictor with levels ``0..L-1`` (0 the reference;
  treatment coded in the outcome, one term per other level): nominal,
  ``log P(x = l) / P(x = 0) = c_kl + Z_i d_kl + v_klj`` (baseline-category
  logit, one cluster intercept and SD per level, as brms's ``categorical``
  with ``(1|site)``); ordinal (``ordinal=`` / the params' ``ordinal:``),
  ``logit P(rank(x) >= l) = Z_i d_k + v_kj - theta_kl`` with ordered cut
  points (cumulative logit, brms's ``cumulative``);
- cluster intercepts ``u_j ~ N(0, tau_y)``, ``v_kj ~ N(0, tau_k)``, independent
  across submodels (as brms's ``(1|site)`` in two formulae);
- with ``random_slopes`` (complete numeric predictors, usually time; not
  with levels above the cluster): the outcome and every incomplete
  predictor submodel have a random intercept and
  slope(s) per cluster with an unstructured covariance, LKJ(``lkj_eta``) on
  the correlations and the cluster-SD prior on every SD (brms's ``(1 + month
  | patient)`` in each formula; a nominal categorical submodel one block per
  non-reference level, as brms's ``categorical`` family); the missingness submodel's intercept joins
  the outcome's covariance, and time is a fixed predictor of every submodel
  (:mod:`~hmlib.stats.joint.slopes`, where the user-scale reporting is).

The outcome is not a predictor in the predictor submodels: the factorisation
``p(y | x) p(x)`` already lets the outcome inform the missing values. The
incomplete predictors are conditionally independent given ``Z`` and their
cluster effects (each submodel sees the complete predictors only); rows with
a missing outcome are left out (as brms does for a response without
``mi()``).

Missing values. A missing binary or categorical value is summed out: the
row's outcome likelihood is ``sum_x p(y | x) p(x)`` over the levels of each
of the row's missing discrete predictors (2 terms per binary, L per
categorical, their product when several are missing); the likelihood equals
brute-force enumeration of every completion to 1e-8
(``tests/test_joint_categorical.py``, JOINT-CAT-001). A missing value of the *focus* variable is, by default
(``missing_values="marginal"``), integrated out by Gauss-Hermite quadrature
on its submodel's normal (or log-normal) distribution; for a gaussian
outcome and a normal focus the integral is exact in closed form. The number
of nodes is the fewest of :data:`QUADRATURE_CANDIDATES` whose summed
log-likelihood error is below :data:`QUADRATURE_TOLERANCE` at a pessimistic
plug-in (5 on the reference registry, error 6e-6). The posterior of every
parameter is then that of the model with latent missing values (up to that
quadrature error), with one parameter fewer per missing value and a
posterior that a low-rank mass matrix can learn; on the reference registry
this gives 4.9 times (focus coefficient) and 3.0 times (cluster SD) the
effective samples per second of the latent version, and 53 and 30 times
brms's, measured in the same run on the same machine, compile time included
(``bench/bench_joint.py --brms``). For a binary outcome the row sums are taken on
the probability scale (sigmoids, no log-sum-exp), three times cheaper. Draws
of the missing focus values are made afterwards from their exact conditional
``p(x | y, theta)`` (rejection sampling against the outcome likelihood) for
a thinned set of :data:`~hmlib.stats.joint.imputations.IMPUTATION_DRAWS` posterior draws. Other incomplete
continuous predictors, and every one with ``missing_values="latent"`` (brms's
approach), are latent parameters, one per missing value.

Missingness submodel (shared parameter). With ``missingness_model=True`` the
indicator ``r_i`` (focus missing) follows ``logit P(r_i = 1) = e + Z_i f + w_j``
with ``(u_j, w_j)`` bivariate normal, SDs ``tau_y, tau_r`` and correlation
``rho``. ``rho`` answers, inside the model, whether clusters that leave the
focus variable unrecorded differ in their latent outcome propensity. The
assumption is that missingness depends on the cluster's latent outcome
propensity ``u_j`` and on the complete predictors, **not on the unobserved
value itself**: the missing values are missing at random given the random
effects. Values missing because they would have been high (MNAR at the patient
level) are outside this model; see the sensitivity step for that. For visits
in patients (params ``time`` or ``random_slopes``) step 4 leaves the
submodel out by default
(:func:`hmlib.steps.joint_model.missingness_submodel_on`): where a visit's
value goes missing because of that visit's outcome, the patient's shared
effect takes up part of a persistent predictor's effect (5-8% of the
coefficient of a summed-out yes/no or categorical predictor in
``bench/joint_random_slopes_truth.py``, with random slopes or without).

Priors (defaults, :data:`DEFAULT_PRIORS`, all on standardised scales):
``Normal(0, 2.5)`` on coefficients, ``Normal(m, 2.5)`` on intercepts (``m``
the logit of the observed rate for binary responses, 0 otherwise),
``HalfNormal(1)`` on cluster and residual SDs, ``LKJ(2)`` on the 2 x 2
correlation (``(rho + 1) / 2 ~ Beta(2, 2)``). Override with ``priors=``;
:func:`priors_table` writes them out.

Parameterisation. Cluster intercepts are centred (``u_j ~ N(0, tau)``) when the
data inform them well and non-centred (``u_j = tau z_j``) otherwise
(Betancourt & Girolami 2015; Papaspiliopoulos et al. 2007). The rule, per
submodel, uses a maximum-likelihood fit (:mod:`hmlib.stats.mixed`) on the rows the
submodel uses: with cluster information ``I_j = n_j tau^2 / s^2``
(``s^2`` the residual variance, or ``1 / (p (1 - p))`` for binary responses)
the submodel is centred when the average of ``I_j / (1 + I_j)`` over clusters
is at least :data:`CENTRED_SHARE` (0.6). Measured (``bench/bench_joint.py``
and the truth study's generator, bulk ESS of the outcome's site SD from 2 x
1000 draws): share 0.50 -> centred 286 and 437, non-centred 595 and 574;
share 0.64 -> centred 958, non-centred 733; share 0.69 -> centred 988,
non-centred 576. In the correlated outcome/missingness pair each of the two
follows its own rule (``u_j = tau_y z1_j`` and
``w_j = tau_r (rho z1_j + sqrt(1 - rho^2) z2_j)``, with ``u`` or ``w`` drawn
directly when centred). When the missingness effects are centred and the
outcome's are not (recording varies a lot between clusters, the outcome
little), the regression runs the other way: ``w_j`` drawn directly and
``u_j = tau_y (rho w_j / tau_r + sqrt(1 - rho^2) z_j)``, in the same
``(slope, resid)`` coordinates with the same priors (the same model,
``tests/test_joint_model.py`` JOINT-PRIOR-003). In the usual order rho moves
only together with hundreds of weakly informed ``z1_j``; here it is a
regression coefficient on effects the data pin down. Measured on the trial
shape (19,435 patients, 466 hospitals in 36 countries; outcome share 0.26,
missingness 0.89; 2 x 1000 draws, same seed, same machine): bulk ESS of rho
204 in the usual order, 897 in this one, 82 with both non-centred; sampling
164 s and 115 s. With levels above the cluster the ML fits have nested
intercepts and each level follows the rule with its own SD, the clusters with
their SD within their units and the level directly above with its units' rows
(``<submodel>@above``): a two-level fit's SD holds the variation between the
units too and called the clusters centred where they are weakly informed (on
the nested truth study's registries the outcome's share fell from 0.64 to 0.26
and the missingness's from 0.94 to 0.16).

Reporting. Coefficients are transformed back to the original scale of each
predictor (and of a gaussian outcome) draw by draw; estimates are posterior
means, ``std_error`` the posterior SD, intervals 95% equal-tailed. The
convergence gate asks, for every reported quantity, R-hat <= 1.01, bulk and
tail ESS >= 400 (tail ESS at the 5% and 95% quantiles, as Stan's
``posterior``), and no divergent transition (Vehtari et al. 2021).

Sampling. nutpie's NUTS with a low-rank mass matrix when the model has at
most :data:`LOW_RANK_MAX_PARAMETERS` unconstrained parameters (it learns the
correlation of intercepts, cluster effects and SDs: on the reference
registry 2.0 times the ESS per second of a diagonal one for both), else diagonal (with thousands of parameters
the low-rank update costs more than it saves; diagonal, 20,000 patients in
500 sites take 85 s with the gate passed, ``bench/bench_joint.py --parts large``).

Prior sensitivity without refitting. :meth:`JointModelResult.posterior_draws`
keeps the draws of the contract terms and of every cluster SD (no data
row); :func:`reweight_cluster_sd_prior` turns them into the posterior under
another prior on the cluster SDs by Pareto-smoothed importance sampling,
reporting Pareto k and the effective number of draws so that a caller
refits only when the weights cannot be trusted. On the demo registry the
reweighted focus coefficient and site SD agree with full refits within 1.6
Monte Carlo SEs for half-normal(0.5), half-normal(2.5) and half-Cauchy(1)
(Pareto k 0.20-0.45), in 0.01 s against 100-140 s per refit
(``bench/prior_reweighting.py``).

Validation (``tests/test_joint_model.py``, ``bench/``). The summed-out and
integrated-out likelihoods equal brute-force enumeration and adaptive
numerical integration. On ``tests/results/sim_registry.csv`` the posterior
mean of the lactate coefficient is 0.346 (4 seeds) and of the site SD
0.659; brms with the same priors (3 seeds) gives 0.349 and 0.661, within
Monte Carlo error; brms with its own default priors (5 seeds) 0.335 and
0.661, the lactate difference (0.11 posterior SD) being the priors'.
With random slopes on time (``tests/test_joint_random_slopes.py``,
JOINT-BRMS-RS-001; 147 patients, 553 visits, x missing in 25%) every
posterior mean (fixed effects, ``sd(patient)``, ``sd(month|patient)``,
``cor(month|patient)``, ``sigma``) is within 0.05 posterior SD of brms's
with the same priors; with the missingness submodel in the outcome's
covariance (JOINT-BRMS-RS-002, ``corr(missingness, outcome)`` included)
within 0.09 posterior SD, every difference within 4 combined Monte Carlo SEs.
Over 100 simulated registries with known truth (4,000 patients in 40
sites, missingness submodel on; ``bench/joint_truth.py``) the posterior
means of the lactate coefficient and the site SD are off by -5.2% and +3.3%
(Monte Carlo SEs 2.8% and 1.9%), their 90% intervals cover 87% and 87% (MC
SE 3), and 95 of the 100 fits passed the gate; the missingness/outcome
correlation (truth 0.5, which the submodel only approximates) comes out
22% low.

Where things are
----------------
- :mod:`~hmlib.stats.joint.data`: :func:`prepare_joint_data`, :class:`JointData`
  (complete, binary, categorical and continuous predictors; scales; the focus);
- :mod:`~hmlib.stats.joint.priors`: :data:`DEFAULT_PRIORS`, their checks,
  table, PyMC families and densities;
- :mod:`~hmlib.stats.joint.parameterisation`: the centring and quadrature
  rules, from maximum-likelihood fits of each submodel;
- :mod:`~hmlib.stats.joint.model`: :func:`build_joint_model`, the PyMC model;
- :mod:`~hmlib.stats.joint.slopes`: random slopes (LKJ covariances) and their
  ``sd(<slope>|<cluster>)``, ``cor(<slope>|<cluster>)`` rows on the user's scale;
- :mod:`~hmlib.stats.joint.fit`: :func:`fit_joint_model` (nutpie);
- :mod:`~hmlib.stats.joint.summaries`: original scale, diagnostics, the gate;
- :mod:`~hmlib.stats.joint.result`: :class:`JointModelResult`;
- :mod:`~hmlib.stats.joint.imputations`: draws of the missing focus values,
  partial pooling and posterior predictive checks by cluster;
- :mod:`~hmlib.stats.joint.reweighting`: :class:`PosteriorDraws` and
  :func:`reweight_cluster_sd_prior`.

The engine takes frames and explicit arguments and shows nothing: the
report's step (:mod:`hmlib.steps.joint_model`) fits it on a checked
registry with the run's sizes, suppresses small per-cluster counts and
writes the artifact.

References
----------
Buerkner P-C (2017). brms: An R package for Bayesian multilevel models using
Stan. J Stat Softw 80(1). (``mi()`` terms: vignette "Handle missing values".)
Betancourt M, Girolami M (2015). Hamiltonian Monte Carlo for hierarchical
models. In: Current Trends in Bayesian Methodology with Applications.
Papaspiliopoulos O, Roberts GO, Skold M (2007). A general framework for the
parametrization of hierarchical models. Stat Sci 22:59-73.
Ibrahim JG, Chen M-H, Lipsitz SR (2002). Bayesian methods for generalized
linear models with covariates missing at random. Can J Stat 30:55-78.
Little RJA (1995). Modeling the drop-out mechanism in repeated-measures
studies. JASA 90:1112-1121 (shared-parameter models).
Lewandowski D, Kurowicka D, Joe H (2009). Generating random correlation
matrices based on vines and extended onion method. J Multivar Anal 100.
Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner P-C (2021).
Rank-normalization, folding, and localization: an improved R-hat. Bayesian
Anal 16:667-718.

Examples
--------
>>> import pandas as pd
>>> frame = pd.read_csv("data/demo/demo_registry.csv")           # doctest: +SKIP
>>> result = fit_joint_model(frame, outcome="mortality_30d", predictors=["age", "severity", "lactate"],
...                          cluster="site", family="binomial", seed=1)   # doctest: +SKIP
>>> result.to_estimates()                                       # doctest: +SKIP
"""

from hmlib.stats.joint.data import (LOGNORMAL_SKEWNESS, BinaryPredictor, CategoricalPredictor, ContinuousPredictor,
                                    JointData, choose_distribution, prepare_joint_data)
from hmlib.stats.joint.fit import LOW_RANK_MAX_PARAMETERS, fit_joint_model
from hmlib.stats.joint.model import build_joint_model
from hmlib.stats.joint.parameterisation import CENTRED_SHARE, QUADRATURE_CANDIDATES, QUADRATURE_TOLERANCE
from hmlib.stats.joint.priors import DEFAULT_PRIORS, priors_table
from hmlib.stats.joint.result import JointModelResult
from hmlib.stats.joint.reweighting import PosteriorDraws, PriorReweighting, model_fingerprint, reweight_cluster_sd_prior
from hmlib.stats.joint.summaries import GATE, METHOD, outcome_to_original_scale

__all__ = ["DEFAULT_PRIORS", "LOGNORMAL_SKEWNESS", "METHOD", "GATE", "LOW_RANK_MAX_PARAMETERS", "CENTRED_SHARE",
           "QUADRATURE_CANDIDATES", "QUADRATURE_TOLERANCE", "JointData", "ContinuousPredictor", "BinaryPredictor",
           "CategoricalPredictor",
           "JointModelResult", "prepare_joint_data", "build_joint_model", "fit_joint_model", "priors_table",
           "choose_distribution", "outcome_to_original_scale", "PosteriorDraws", "PriorReweighting",
           "reweight_cluster_sd_prior", "model_fingerprint"]
