# mice's 2l.pan with a random slope (type 2), the reference for hmlib's random-slope imputation
# (hmlib.stats.imputation.random_slopes; tests/test_random_slope_imputation.py checks against it).
# Run from this folder:  Rscript random_slope_imputation.R   (needs R with mice, pan, lme4 and jsonlite;
# Debian: apt-get install r-cran-mice r-cran-pan r-cran-lme4 r-cran-jsonlite). About 5 minutes.
#
# Data.
# (a) random_slope_registry.csv, bench/random_slope_imputation_truth.py --write-test-data (seed 20261204):
#     300 patients, up to 8 visits (t in years, jittered; dropout), lab value x missing for 30% at random given
#     y and t. Truth: x's coefficient 0.35, sd(t|patient) 0.5.
#     Imputation model of x: 2l.pan, patient -2, t 4 (fixed + random slope + patient mean), y 3 (fixed + patient
#     mean), treat 1 (fixed); hmlib's default design (cluster means of the slopes and predictors; treat's mean is
#     treat itself and is dropped there as collinear).
#     Analysis: lmer(y ~ t + x + treat + (1 + t | patient), REML = FALSE).
# (b) ../../shared/data/real/cdystonia.csv (109 patients x 6 scheduled weeks; twstrs missing at 23 missed visits).
#     Imputation model of twstrs: 2l.pan, patient_id -2, week_s 2 (random slope; week standardised, see below),
#     treatment dummies, age and sex 1. No patient means: week's is constant on the full grid and the others are
#     patient-level (hmlib drops them as constant or collinear).
#     Analysis: lmer(twstrs ~ week + treat + age + sex + (1 + week | patient_id), REML = FALSE).
# (c) ../../shared/data/real/pbcseq.csv (312 patients, 1-16 visits; chol missing at 42% of visits, never recorded
#     for 8 patients; day = days since enrolment, 0..5152). Imputation model of lchol = log(chol), standardised
#     (lchol_z; back-transformed after imputation): 2l.pan, id -2, day_s 4 (day standardised; random slope +
#     patient mean), lbili = log(bili) 3, albumin 3, age, trt and male 1 (hmlib: the same with day as it is).
#     Analysis: lmer(lbili ~ years + lchol + albumin + age + trt + male + (1 + years | id), REML = FALSE),
#     years = day / 365.25.
# (d) the trap of #16 on data (a): the same as (a) with t in days (t * 365.25) as the slope column, one seed.
#
# Why week_s in (b), day_s and lchol_z in (c): 2l.pan's prior on the random-effects covariance is inverse-Wishart with identity scale in the
# user's units (mice passes Dinv = diag(q) to pan), so a slope per day or per week is swamped by it; (c) measures
# that. hmlib standardises internally, so it is given week (or days) as they are. In (c) the target is standardised too:
# log(chol) has variance 0.15, and the identity prior scale would be large against it.
#
# Each setting is run with 5 seeds, m = 20 each (maxit = 1: x is the only incomplete variable, and each 2l.pan call
# runs pan for 500 iterations from scratch). Rubin's rules per seed and over all 100 imputations. Written:
# per term the pooled estimate over the 100 (estimate, within, between, std_error), its Monte Carlo SE
# sqrt(between / 100), the 5 seeds' pooled estimates (their SD estimates the Monte Carlo SE of one m = 20 run,
# which is sqrt(between / 20)), and the mean and SD over imputations of the slope SD.
suppressPackageStartupMessages({ library(mice); library(lme4); library(jsonlite) })
source("lme4_controls.R")   # tight_lmer: the optimum itself (lme4's defaults stop early on cdystonia)

seeds <- 20261204 + 0:4
m <- 20

impute_and_analyse <- function(data, target, types, formula, slope, seed, prepare = identity) {
  meth <- make.method(data); meth[] <- ""; meth[target] <- "2l.pan"
  pred <- make.predictorMatrix(data); pred[, ] <- 0
  pred[target, names(types)] <- types
  imp <- mice(data, m = m, method = meth, predictorMatrix = pred, maxit = 1, printFlag = FALSE, seed = seed)
  fits <- lapply(seq_len(m), function(i) lmer(formula, data = prepare(complete(imp, i)), REML = FALSE,
                                                  control = tight_lmer))
  list(est = sapply(fits, fixef), var = sapply(fits, function(f) diag(as.matrix(vcov(f)))),
       slope_sd = sapply(fits, function(f) attr(VarCorr(f)[[1]], "stddev")[[slope]]))
}

rubin <- function(est, var) {
  k <- ncol(est)
  b <- apply(est, 1, var); ubar <- rowMeans(var)
  list(estimate = rowMeans(est), within = ubar, between = b, std_error = sqrt(ubar + (1 + 1 / k) * b))
}

setting <- function(data, target, types, formula, slope, run_seeds, prepare = identity) {
  start <- proc.time()[["elapsed"]]
  runs <- lapply(run_seeds, function(s) impute_and_analyse(data, target, types, formula, slope, s, prepare))
  est <- do.call(cbind, lapply(runs, `[[`, "est")); var <- do.call(cbind, lapply(runs, `[[`, "var"))
  all <- rubin(est, var)
  per_seed <- sapply(runs, function(r) rowMeans(r$est))
  if (is.null(dim(per_seed))) per_seed <- matrix(per_seed, nrow = 1, dimnames = list(rownames(est), NULL))
  sds <- unlist(lapply(runs, `[[`, "slope_sd"))
  terms <- rownames(est)
  list(m_per_seed = m, seeds = run_seeds, wall_s = proc.time()[["elapsed"]] - start,
       pooled = lapply(setNames(terms, terms), function(t) list(
         estimate = all$estimate[[t]], within = all$within[[t]], between = all$between[[t]],
         std_error = all$std_error[[t]], mc_se = sqrt(all$between[[t]] / ncol(est)),
         seed_estimates = I(unname(per_seed[t, ])))),
       slope_sd = list(mean = mean(sds), sd = sd(sds), mc_se = sd(sds) / sqrt(length(sds))))
}

sim <- read.csv("random_slope_registry.csv")
sim_formula <- y ~ t + x + treat + (1 + t | patient)
out <- list(mice_version = as.character(packageVersion("mice")), pan_version = as.character(packageVersion("pan")),
            lme4_version = as.character(packageVersion("lme4")))
out$simulated <- setting(sim, "x", c(patient = -2, t = 4, y = 3, treat = 1), sim_formula, "t", seeds)
cat("simulated done\n")

dys <- read.csv("../../../shared/data/real/cdystonia.csv")
dys <- data.frame(patient_id = dys$patient_id, week = dys$week, week_s = as.vector(scale(dys$week)),
                  t5000 = as.numeric(dys$treat == "5000U"), tplacebo = as.numeric(dys$treat == "Placebo"),
                  age = dys$age, male = as.numeric(dys$sex == "M"), twstrs = dys$twstrs)
out$cdystonia <- setting(dys, "twstrs", c(patient_id = -2, week_s = 2, t5000 = 1, tplacebo = 1, age = 1, male = 1),
                         twstrs ~ week + t5000 + tplacebo + age + male + (1 + week | patient_id), "week", seeds)
cat("cdystonia done\n")

pbc <- read.csv("../../../shared/data/real/pbcseq.csv")
lchol <- log(pbc$chol)
centre <- mean(lchol, na.rm = TRUE); spread <- sd(lchol, na.rm = TRUE)
pbc <- data.frame(id = pbc$id, years = pbc$day / 365.25, day_s = as.vector(scale(pbc$day)), lbili = log(pbc$bili),
                  albumin = pbc$albumin, age = pbc$age, trt = pbc$trt, male = as.numeric(pbc$sex == "m"),
                  lchol_z = (lchol - centre) / spread)
back <- function(d) { d$lchol <- centre + spread * d$lchol_z; d }
out$pbcseq <- setting(pbc, "lchol_z", c(id = -2, day_s = 4, lbili = 3, albumin = 3, age = 1, trt = 1, male = 1),
                      lbili ~ years + lchol + albumin + age + trt + male + (1 + years | id), "years", seeds,
                      prepare = back)
cat("pbcseq done\n")

sim$t_days <- sim$t * 365.25
out$trap_days <- setting(sim, "x", c(patient = -2, t_days = 4, y = 3, treat = 1), sim_formula, "t", seeds[1])
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "random_slope_imputation.json")
cat("wrote random_slope_imputation.json\n")
