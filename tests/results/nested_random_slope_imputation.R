# References for hmlib's random-slope imputation with a site level above the patients (visits in patients in
# sites: hmlib.stats.imputation.slopes_kernel with hc/K; tests/test_nested_random_slope_imputation.py checks
# against them). No R package in Debian imputes this model by chained equations (miceadds' ml.lmer, which does,
# is not packaged; mice's 2l.pan has two levels), so the imputation model is fitted two ways:
#
# (1) brms (the reference the test checks): `x | mi() ~ ... + (1 + t | patient) + (1 | site)`, a Bayesian fit in
#     which the missing x are parameters; m = 100 completed sets are 100 evenly spaced posterior draws of them (2
#     chains of 2,000 after 1,000 warm-up). The exact posterior draw of the same model, brms's default priors
#     (flat on the coefficients, half-t(3, 0, 2.5) on the SDs, LKJ(1)); all columns z-scored first.
# (2) lme4, in ml.lmer's way (as three_level_imputation.R does for random intercepts), for contrast: lmer on the
#     recorded rows, then per imputation beta ~ N(beta_hat, vcov), sigma^2 = sigma_hat^2 (n - p) / chi2_{n-p}, each
#     patient's (intercept, slope) from N(mode, condVar) and each site's from N(mode, condVar), all drawn
#     independently with the variance components held at their estimates. On this registry that gives x's
#     coefficient 0.286 against brms's (and hmlib's) 0.31: drawing beta apart from the effects it was estimated
#     with adds noise to the imputed x that is unrelated to y, which attenuates x's coefficient (and inflates its
#     between-imputation variance by half). Written beside (1), not used by the test.
#
# Run from this folder:  Rscript nested_random_slope_imputation.R   (needs R with brms, rstan, lme4, MASS and
# jsonlite; Debian: apt-get install r-cran-brms r-cran-rstan r-cran-lme4 r-cran-mass r-cran-jsonlite). About 5
# minutes (the Stan model compiles first).
#
# Data: random_slope_sites_registry.csv (bench/random_slope_imputation_truth.py --sites 30 --write-test-data,
# seed 20261206): 300 patients in 30 sites, up to 8 visits (t in years), x missing for about 30% at random given y,
# t and the site. Truth: y = 1 + 0.4 t + 0.35 x + 0.5 treat + (1 + t | patient) + site, sd(t|patient) 0.5,
# sd(site) 0.5; x has its own patient trend and a site effect (SD 0.7).
#
# Imputation model of x (the only incomplete variable: one model, no chained equations), hmlib's default design:
#   x ~ y + t + treat + patient means of y and t + site means of y, t and treat + (1 + t | patient) + (1 | site)
# Analysis of each completed set: lmer(y ~ t + x + treat + (1 + t | patient) + (1 | site), REML = FALSE); Rubin's
# rules for the fixed effects; the SDs' mean and SD over imputations. Writes nested_random_slope_imputation.json:
# per method ("brms", "ml_lmer") the pooled estimate, SE, between- and within-imputation variance of each fixed
# effect, the SDs over imputations and the wall seconds of the imputation and of the analyses; m, the seed, the
# versions.
suppressPackageStartupMessages({ library(lme4); library(jsonlite); library(MASS); library(brms)
                                  library(posterior) })
source("lme4_controls.R")   # tight_lmer
source("brms_checks.R")     # brms_checks: largest R-hat, divergent transitions
source(file.path("..", "..", "bench", "r", "stan_boost.R"))
use_system_boost()

set.seed(20261206)
m <- 100
d <- read.csv("random_slope_sites_registry.csv")
d$patient <- factor(d$patient); d$site <- factor(d$site)
for (v in c("y", "t")) d[[paste0("p_", v)]] <- ave(d[[v]], d$patient)
for (v in c("y", "t", "treat")) d[[paste0("s_", v)]] <- ave(d[[v]], d$site)
obs <- !is.na(d$x)
mis <- which(!obs)
columns <- c("y", "t", "treat", "p_y", "p_t", "s_y", "s_t", "s_treat")

analyse <- function(completed, imputation_s) {
  start <- proc.time()[["elapsed"]]
  fits <- lapply(completed, function(done) lmer(y ~ t + x + treat + (1 + t | patient) + (1 | site), data = done,
                                                REML = FALSE, control = tight_lmer))
  analysis_s <- proc.time()[["elapsed"]] - start
  est <- sapply(fits, fixef); var <- sapply(fits, function(f) diag(as.matrix(vcov(f))))
  qbar <- rowMeans(est); ubar <- rowMeans(var); b <- apply(est, 1, var)
  total <- ubar + (1 + 1 / length(fits)) * b
  slope_sd <- sapply(fits, function(f) attr(VarCorr(f)$patient, "stddev")[["t"]])
  site_sd <- sapply(fits, function(f) attr(VarCorr(f)$site, "stddev")[[1]])
  list(imputation_s = imputation_s, analysis_s = analysis_s,
       pooled = lapply(setNames(names(qbar), names(qbar)), function(t)
         list(estimate = qbar[[t]], std_error = sqrt(total[[t]]), between = b[[t]], within = ubar[[t]])),
       sds = list("sd(t|patient)" = list(mean = mean(slope_sd), sd = sd(slope_sd)),
                  "sd(site)" = list(mean = mean(site_sd), sd = sd(site_sd))))
}

# (1) brms: the missing x drawn from the joint posterior
start <- proc.time()[["elapsed"]]
z <- d
centre <- sapply(c("x", columns), function(v) mean(d[[v]], na.rm = TRUE))
scale <- sapply(c("x", columns), function(v) sd(d[[v]], na.rm = TRUE))
for (v in c("x", columns)) z[[v]] <- (d[[v]] - centre[[v]]) / scale[[v]]
fit_b <- brm(bf(x | mi() ~ y + t + treat + p_y + p_t + s_y + s_t + s_treat + (1 + t | patient) + (1 | site)),
             data = z, chains = 2, cores = 2, iter = 3000, warmup = 1000, seed = 20261206, refresh = 0,
             silent = 2)
ymi <- as_draws_matrix(fit_b, variable = "^Ymi", regex = TRUE)
keep <- round(seq(1, nrow(ymi), length.out = m))
completed <- lapply(keep, function(k) { done <- d; done$x[mis] <- centre[["x"]] + scale[["x"]] * as.vector(ymi[k, ])
                                        done })
brms_s <- proc.time()[["elapsed"]] - start
brms_out <- c(analyse(completed, brms_s), brms_checks(fit_b))

# (2) lme4 in ml.lmer's way (for contrast; see the header)
start <- proc.time()[["elapsed"]]
fit <- lmer(x ~ y + t + treat + p_y + p_t + s_y + s_t + s_treat + (1 + t | patient) + (1 | site), data = d[obs, ],
            REML = FALSE, control = tight_lmer)
X <- model.matrix(~ y + t + treat + p_y + p_t + s_y + s_t + s_treat, d)
re <- ranef(fit, condVar = TRUE)
vc <- VarCorr(fit)
n_obs <- sum(obs); p <- ncol(X)
draw_patients <- function() {
  ids <- levels(d$patient)
  out <- mvrnorm(length(ids), c(0, 0), vc$patient)                      # patients without a recorded x
  rownames(out) <- ids
  mode <- as.matrix(re$patient); pv <- attr(re$patient, "postVar")
  for (k in seq_len(nrow(mode))) out[rownames(mode)[k], ] <- mvrnorm(1, mode[k, ], pv[, , k])
  out
}
draw_sites <- function() {
  ids <- levels(d$site)
  out <- setNames(rnorm(length(ids), 0, attr(vc$site, "stddev")), ids)
  mode <- re$site[, 1]; csd <- sqrt(attr(re$site, "postVar")[1, 1, ])
  out[rownames(re$site)] <- rnorm(length(mode), mode, csd)
  out
}
completed <- vector("list", m)
for (i in seq_len(m)) {
  beta <- mvrnorm(1, fixef(fit), as.matrix(vcov(fit)))
  sigma <- sigma(fit) * sqrt((n_obs - p) / rchisq(1, n_obs - p))
  b <- draw_patients(); v <- draw_sites()
  pid <- as.character(d$patient[mis]); sid <- as.character(d$site[mis])
  done <- d
  done$x[mis] <- as.vector(X[mis, ] %*% beta) + b[pid, 1] + b[pid, 2] * d$t[mis] + v[sid] +
    rnorm(length(mis), 0, sigma)
  completed[[i]] <- done
}
lmer_out <- c(analyse(completed, proc.time()[["elapsed"]] - start),
              list(imputation_model = list(fixed = as.list(fixef(fit)),
                                           sd = list(patient = as.list(attr(vc$patient, "stddev")),
                                                     site = attr(vc$site, "stddev")[[1]], residual = sigma(fit)))))

out <- list(m = m, seed = 20261206,
            versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                            brms = as.character(packageVersion("brms"))),
            brms = brms_out, ml_lmer = lmer_out)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "nested_random_slope_imputation.json")
cat("wrote nested_random_slope_imputation.json: brms x", brms_out$pooled$x$estimate, "in", round(brms_s, 1),
    "s; ml.lmer way x", lmer_out$pooled$x$estimate, "\n")
