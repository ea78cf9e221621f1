# Reference multiple imputations of a categorical predictor in R (mice, jomo),
# for tests/test_categorical_imputation.py and bench/bench_categorical_vs_jomo.py.
#
# Data: a registry with a three-level lactate_band (normal, raised, high)
# missing by site, two sites never recording it (categorical_registry.csv,
# made by hmlib.simulate.categorical.categorical_registry(11, n_sites = 30,
# n_patients = 2000); truth in its docstring). Only lactate_band is missing.
#
# Analysis model, fitted to each completed data set:
#   glmer(outcome ~ lactate_band + age + severity + (1 | site), binomial),
#   Laplace, the band's reference level "high" (levels sorted as hmlib does),
# pooled by Rubin's rules (the mean of the m estimates; total variance
# W + (1 + 1/m) B).
#
# Methods (each imputation model predicts the band from outcome, age and
# severity):
#   flat_polyreg  mice "polyreg" (multinomial logit, nnet), site not used
#   flat_polr     mice "polr" (proportional odds, MASS), the band ordered
#                 normal < raised < high, site not used. In mice 3.15,
#                 mice.impute.polr's augment() step rebuilds the factor as
#                 as.factor(levels(y)[...]): the order is lost and the
#                 levels sorted alphabetically, so polr is fitted to the
#                 order high < normal < raised and its draws are nonsense
#                 (pooled normal-vs-high coefficient -0.78 against polyreg's
#                 -1.15 on the ordinal data); the band is therefore recoded
#                 1 < 2 < 3 (alphabetical = ordinal) for polr and decoded
#                 afterwards
#   flat_polyreg_boot, flat_polr_boot
#                 the same, each imputation's model fitted to a bootstrap
#                 sample of the rows with a recorded band: mice's polyreg
#                 and polr impute from the fitted model without drawing its
#                 parameters (improper imputation, too little
#                 between-imputation variance); the bootstrap makes them
#                 proper (Rubin 1987, approximate Bayesian bootstrap), so
#                 their pooled standard errors are the ones to compare
#   jomo          jomo::jomo1rancat: the band as a latent normal (two latent
#                 variables) with a random intercept per site (an
#                 unstructured 2 x 2 covariance), outcome, z(age) and
#                 z(severity) as fixed effects; nburn burn-in iterations,
#                 nbetween iterations between imputations
#   jomo_means    the same with the site means of outcome, z(age) and
#                 z(severity) as further fixed effects: the predictors of
#                 hmlib's multilevel imputation model (its default,
#                 cluster_means = True; Grund et al. 2018)
#
# The same script makes categorical_imputation_ordinal.json from
# categorical_registry_ordinal.csv (categorical_registry(12, n_sites = 30,
# n_patients = 2000, ordinal = TRUE): the band drawn from a proportional-odds
# model with a site random intercept, the data polr is made for):
#   Rscript tests/results/categorical_imputation.R --data tests/results/categorical_registry_ordinal.csv \
#       --out tests/results/categorical_imputation_ordinal.json --seeds 1,2,3,4,5,6,7,8
#
# Each method is run with every seed of --seeds (m imputations each), so the
# spread of the pooled estimates over seeds gives their Monte Carlo error.
#
# Usage (from the repository root):
#   Rscript tests/results/categorical_imputation.R [--data tests/results/categorical_registry.csv]
#       [--out tests/results/categorical_imputation.json] [--m 20] [--maxit 5]
#       [--seeds 1,2,3,4,5] [--methods flat_polyreg,flat_polr,jomo] [--nburn 1000] [--nbetween 200]
#       [--merge]   # keep the other methods already in --out
# Needs R with mice, nnet, MASS, jomo, lme4, jsonlite.

args <- commandArgs(trailingOnly = TRUE)
option <- function(name, default) {
  i <- match(paste0("--", name), args)
  if (is.na(i)) default else args[[i + 1]]
}
data_path <- option("data", "tests/results/categorical_registry.csv")
out_path <- option("out", "tests/results/categorical_imputation.json")
m <- as.integer(option("m", "20"))
maxit <- as.integer(option("maxit", "5"))
seeds <- as.integer(strsplit(option("seeds", "1,2,3,4,5"), ",")[[1]])
methods <- strsplit(option("methods", "flat_polyreg,flat_polr,jomo"), ",")[[1]]
nburn <- as.integer(option("nburn", "1000"))
nbetween <- as.integer(option("nbetween", "200"))
merge <- "--merge" %in% args

suppressPackageStartupMessages({
  library(mice)
  library(jomo)
  library(lme4)
  library(jsonlite)
})

raw <- read.csv(data_path, na.strings = c("", "NA"))
levels_sorted <- sort(unique(raw$lactate_band[!is.na(raw$lactate_band)]), method = "radix")
data <- data.frame(site = raw$site, outcome = raw$outcome, age = raw$age, severity = raw$severity,
                   lactate_band = factor(raw$lactate_band, levels = levels_sorted))
formula <- outcome ~ lactate_band + age + severity + (1 | site)

analyse <- function(completed) {
  # completed: list of m data frames; Rubin's rules by hand
  t0 <- proc.time()[["elapsed"]]
  fits <- lapply(completed, function(d) {
    d$lactate_band <- factor(as.character(d$lactate_band), levels = levels_sorted)
    glmer(formula, data = d, family = binomial)
  })
  est <- sapply(fits, fixef)
  se <- sapply(fits, function(f) sqrt(diag(as.matrix(vcov(f)))))
  sd_site <- sapply(fits, function(f) as.data.frame(VarCorr(f))$sdcor[1])
  k <- ncol(est)
  W <- rowMeans(se^2)
  B <- apply(est, 1, var)
  out <- lapply(rownames(est), function(term) list(
    estimate = mean(est[term, ]), std_error = sqrt(W[[term]] + (1 + 1 / k) * B[[term]]),
    within_se = sqrt(W[[term]]), between_sd = sqrt(B[[term]])))
  names(out) <- rownames(est)
  list(estimates = out, site_sd_log_mean = exp(mean(log(pmax(sd_site, 1e-8)))),
       analyse_s = proc.time()[["elapsed"]] - t0)
}

# polyreg and polr on a bootstrap sample of the observed rows (mice looks the methods up by name)
bootstrapped <- function(impute) {
  function(y, ry, x, wy = NULL, ...) {
    if (is.null(wy)) wy <- !ry
    b <- sample(which(ry), sum(ry), replace = TRUE)
    rr <- c(rep(TRUE, length(b)), rep(FALSE, sum(wy)))
    impute(unlist(list(y[b], y[wy])), rr, rbind(x[b, , drop = FALSE], x[wy, , drop = FALSE]), wy = !rr, ...)
  }
}
mice.impute.polyregboot <- bootstrapped(mice.impute.polyreg)
mice.impute.polrboot <- bootstrapped(mice.impute.polr)

ORDINAL <- c("normal", "raised", "high")

impute_mice <- function(method, seed) {
  d <- data[, c("outcome", "age", "severity", "lactate_band")]
  ordinal <- method %in% c("polr", "polrboot")
  if (ordinal) {
    # codes 1 < 2 < 3: mice's polr then labels its draws correctly (see the header)
    d$lactate_band <- factor(match(as.character(d$lactate_band), ORDINAL), levels = 1:3, ordered = TRUE)
  }
  meth <- c(outcome = "", age = "", severity = "", lactate_band = method)
  t0 <- proc.time()[["elapsed"]]
  imp <- mice(d, m = m, maxit = maxit, method = meth, seed = seed, printFlag = FALSE)
  seconds <- proc.time()[["elapsed"]] - t0
  completed <- lapply(seq_len(m), function(i) {
    d <- complete(imp, i)
    if (ordinal) d$lactate_band <- ORDINAL[as.integer(as.character(d$lactate_band))]
    cbind(site = data$site, d)
  })
  list(completed = completed, impute_s = seconds)
}

impute_jomo <- function(seed, cluster_means = FALSE) {
  set.seed(seed)
  Y <- data.frame(lactate_band = data$lactate_band)
  X <- data.frame(intercept = 1, outcome = data$outcome, age = as.vector(scale(data$age)),
                  severity = as.vector(scale(data$severity)))
  clus <- as.integer(factor(data$site))
  if (cluster_means) {
    for (col in c("outcome", "age", "severity")) X[[paste0("mean_", col)]] <- ave(X[[col]], clus)
  }
  t0 <- proc.time()[["elapsed"]]
  imp <- jomo1rancat(Y.cat = Y, Y.numcat = nlevels(data$lactate_band), X = X, clus = clus,
                     nburn = nburn, nbetween = nbetween, nimp = m, output = 0)
  seconds <- proc.time()[["elapsed"]] - t0
  completed <- lapply(seq_len(m), function(i) {
    rows <- imp[imp$Imputation == i, ]
    data.frame(site = data$site, outcome = data$outcome, age = data$age, severity = data$severity,
               lactate_band = factor(levels_sorted[as.integer(rows$lactate_band)], levels = levels_sorted))
  })
  list(completed = completed, impute_s = seconds)
}

results <- list()
for (method in methods) {
  runs <- list()
  for (seed in seeds) {
    imp <- switch(method,
                  flat_polyreg = impute_mice("polyreg", seed),
                  flat_polr = impute_mice("polr", seed),
                  flat_polyreg_boot = impute_mice("polyregboot", seed),
                  flat_polr_boot = impute_mice("polrboot", seed),
                  jomo = impute_jomo(seed),
                  jomo_means = impute_jomo(seed, cluster_means = TRUE))
    pooled <- analyse(imp$completed)
    runs[[length(runs) + 1]] <- c(list(seed = seed, impute_s = imp$impute_s), pooled)
    cat(method, "seed", seed, "impute", round(imp$impute_s, 1), "s, analyse", round(pooled$analyse_s, 1), "s\n")
  }
  results[[method]] <- runs
}

record <- list(
  data = basename(data_path), n = nrow(data), n_missing = sum(is.na(data$lactate_band)),
  levels = levels_sorted, analysis_model = deparse(formula), m = m, maxit = maxit, seeds = seeds,
  nburn = nburn, nbetween = nbetween,
  versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                  mice = as.character(packageVersion("mice")), jomo = as.character(packageVersion("jomo")),
                  lme4 = as.character(packageVersion("lme4"))),
  methods = results)
if (merge && file.exists(out_path)) {
  kept <- fromJSON(out_path, simplifyVector = FALSE)$methods
  record$methods <- c(kept[setdiff(names(kept), names(results))], results)
}
writeLines(toJSON(record, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_path)
cat("wrote", out_path, "\n")
