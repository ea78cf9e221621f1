# A reference for hmlib's random-slope logistic imputation (hmlib.stats.imputation.slopes_logistic: a binary
# variable imputed with a random intercept and slope per patient; tests/test_random_slope_logistic_imputation.py
# checks against it). mice's 2l.bin takes random slopes (type 2) but draws every patient's effects from
# N(0, Psi*), ignoring the patient's recorded values; it is run beside, for contrast. The reference is brms: the
# same imputation model fitted as a Bayesian logistic model on the recorded rows, and the missing values drawn from
# the posterior predictive distribution (each patient's effects from the posterior given the patient's values):
# with x the only incomplete variable that is the exact posterior imputation of the model.
# Run from this folder:  Rscript random_slope_binary_imputation.R [sites]   (needs R with brms, rstan, mice, lme4
# and jsonlite; Debian: apt-get install r-cran-brms r-cran-rstan r-cran-mice r-cran-lme4 r-cran-jsonlite). About 4
# minutes (the Stan model compiles first).
#
# With the argument `sites`: random_slope_binary_sites_registry.csv (--binary --sites 30, seed 20261208: the
# patients in 30 sites, site effects on x, on y and on x's missingness; truth sd(site) 0.5), the imputation model
# with the site means of y, t and treat and `+ (1 | site)`, the analysis model with `+ (1 | site)`; brms only (mice
# has no three-level 2l.bin). Writes random_slope_binary_sites_imputation.json.
#
# Data: random_slope_binary_registry.csv (bench/random_slope_imputation_truth.py --binary --write-test-data, seed
# 20261207): 300 patients, up to 8 visits (t in years), a 0/1 finding x with each patient's own level and trend,
# missing for about 30% at random given y and t. Truth: y = 1 + 0.4 t + 0.35 x + 0.5 treat + (1 + t | patient),
# sd(t|patient) 0.5.
#
# Imputation model of x, hmlib's default design: x ~ y + t + treat + patient means of y and t + (1 + t | patient),
# logistic. brms: default priors (flat on the coefficients, half-t(3, 0, 2.5) on the SDs, LKJ(1)), columns
# z-scored, 2 chains of 2,000 after 1,000 warm-up; m = 100 evenly spaced posterior predictive draws. mice: 2l.bin
# with the same predictors (patient -2, t 2, y and the means 1), m = 100, maxit = 1.
# Analysis of each completed set: lmer(y ~ t + x + treat + (1 + t | patient), REML = FALSE); Rubin's rules.
# Writes random_slope_binary_imputation.json: per method ("brms", "mice_2l_bin") the pooled estimate, SE, between-
# and within-imputation variance of each fixed effect, the slope SD's mean and SD over imputations, the wall
# seconds, and brms's imputation model (each term's posterior mean and SD); m, the seed, the versions.
suppressPackageStartupMessages({ library(lme4); library(jsonlite); library(brms); library(posterior); library(mice) })
source("lme4_controls.R")   # tight_lmer
source("brms_checks.R")     # brms_checks: largest R-hat, divergent transitions
source(file.path("..", "..", "bench", "r", "stan_boost.R"))
use_system_boost()

sites <- "sites" %in% commandArgs(trailingOnly = TRUE)
seed <- if (sites) 20261208 else 20261207
set.seed(seed)
m <- 100
d <- read.csv(if (sites) "random_slope_binary_sites_registry.csv" else "random_slope_binary_registry.csv")
d$visit <- NULL
for (v in c("y", "t")) d[[paste0("p_", v)]] <- ave(d[[v]], d$patient)
columns <- c("y", "t", "treat", "p_y", "p_t")
if (sites) {
  for (v in c("y", "t", "treat")) d[[paste0("s_", v)]] <- ave(d[[v]], d$site)
  columns <- c(columns, "s_y", "s_t", "s_treat")
}
obs <- !is.na(d$x)
mis <- which(!obs)
analysis <- if (sites) y ~ t + x + treat + (1 + t | patient) + (1 | site) else y ~ t + x + treat + (1 + t | patient)
imputation <- as.formula(paste("x ~", paste(columns, collapse = " + "), "+ (1 + t | patient)",
                               if (sites) "+ (1 | site)" else ""))

analyse <- function(completed, imputation_s) {
  start <- proc.time()[["elapsed"]]
  fits <- lapply(completed, function(done) lmer(analysis, data = done, REML = FALSE, control = tight_lmer))
  analysis_s <- proc.time()[["elapsed"]] - start
  est <- sapply(fits, fixef); var <- sapply(fits, function(f) diag(as.matrix(vcov(f))))
  qbar <- rowMeans(est); ubar <- rowMeans(var); b <- apply(est, 1, var)
  total <- ubar + (1 + 1 / length(fits)) * b
  slope_sd <- sapply(fits, function(f) attr(VarCorr(f)$patient, "stddev")[["t"]])
  sds <- list("sd(t|patient)" = list(mean = mean(slope_sd), sd = sd(slope_sd)))
  if (sites) {
    site_sd <- sapply(fits, function(f) attr(VarCorr(f)$site, "stddev")[[1]])
    sds[["sd(site)"]] <- list(mean = mean(site_sd), sd = sd(site_sd))
  }
  list(imputation_s = imputation_s, analysis_s = analysis_s,
       pooled = lapply(setNames(names(qbar), names(qbar)), function(t)
         list(estimate = qbar[[t]], std_error = sqrt(total[[t]]), between = b[[t]], within = ubar[[t]])),
       sds = sds)
}

# brms: the posterior predictive draws of the missing x
start <- proc.time()[["elapsed"]]
z <- d
for (v in columns) z[[v]] <- (d[[v]] - mean(d[[v]])) / sd(d[[v]])
z$patient <- factor(z$patient)
if (sites) z$site <- factor(z$site)
fit_b <- brm(imputation, family = bernoulli(), data = z[obs, ], chains = 2, cores = 2, iter = 3000, warmup = 1000,
             seed = seed, refresh = 0, silent = 2)
ndraws <- 2 * 2000
keep <- round(seq(1, ndraws, length.out = m))
pred <- posterior_predict(fit_b, newdata = z[mis, ], draw_ids = keep, allow_new_levels = TRUE,
                          sample_new_levels = "gaussian")
completed <- lapply(seq_len(m), function(i) { done <- d; done$x[mis] <- pred[i, ]; done })
brms_s <- proc.time()[["elapsed"]] - start
# the imputation model's posterior (mean and SD of each coefficient, SD and correlation; columns z-scored over all
# rows with the sample SD): hmlib's sampler on the same design is checked against it (RSL-IMP-001)
post <- as_draws_df(fit_b)
terms <- grep("^(b_|sd_|cor_)", names(post), value = TRUE)
imputation_model <- lapply(setNames(terms, terms), function(k) list(mean = mean(post[[k]]), sd = sd(post[[k]])))
brms_out <- c(analyse(completed, brms_s), brms_checks(fit_b), list(imputation_model = imputation_model))

if (sites) {
  out <- list(m = m, seed = seed, versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                                                  brms = as.character(packageVersion("brms"))),
              brms = brms_out)
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "random_slope_binary_sites_imputation.json")
  cat("wrote random_slope_binary_sites_imputation.json: brms x", brms_out$pooled$x$estimate, "\n")
  quit(save = "no")
}

# mice 2l.bin with a random slope (for contrast)
start <- proc.time()[["elapsed"]]
md <- d[, c("patient", "t", "treat", "x", "y", "p_y", "p_t")]
meth <- make.method(md); meth[] <- ""; meth["x"] <- "2l.bin"
pred_m <- make.predictorMatrix(md); pred_m[, ] <- 0
pred_m["x", c("patient", "t", "treat", "y", "p_y", "p_t")] <- c(-2, 2, 1, 1, 1, 1)
imp <- mice(md, m = m, method = meth, predictorMatrix = pred_m, maxit = 1, printFlag = FALSE, seed = 20261207)
mice_s <- proc.time()[["elapsed"]] - start
mice_out <- analyse(lapply(seq_len(m), function(i) complete(imp, i)), mice_s)

out <- list(m = m, seed = seed,
            versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                            brms = as.character(packageVersion("brms")), mice = as.character(packageVersion("mice"))),
            brms = brms_out, mice_2l_bin = mice_out)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "random_slope_binary_imputation.json")
cat("wrote random_slope_binary_imputation.json: brms x", brms_out$pooled$x$estimate, "in", round(brms_s, 1),
    "s; mice 2l.bin x", mice_out$pooled$x$estimate, "in", round(mice_s, 1), "s\n")
