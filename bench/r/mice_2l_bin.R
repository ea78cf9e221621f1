# mice's 2l.bin on the small-cluster registries of bench/ri_logistic_small_clusters.py: the R counterpart of
# hmlib's random-intercept logistic imputation. The same model, fitted by glmer (Laplace), beta drawn from the
# normal approximation at the fit, as hmlib; but 2l.bin draws the intercept variance from a Wishart around the
# fit and each site's intercept from N(0, psi*), without the site's recorded values (mice 3.15.0's
# mice.impute.2l.bin), where hmlib draws the log SD from its normal approximation and each site's intercept given
# the site's recorded values.
#
# Input: a CSV of registries stacked with a `registry` column (site, outcome, age, x; x missing). For each registry:
# the site means of the outcome and of age are added (hmlib's default imputation design), x is imputed by mice
# 2l.bin (site -2, outcome, age and both means 1), m imputations, maxit = 1 (x is the only incomplete variable);
# each completed set is analysed by glmer(outcome ~ x + age + (1 | site), binomial, Laplace) and pooled by
# Rubin's rules. Writes, per registry, the pooled x (and its 95% interval, Rubin's 1987 degrees of freedom), age,
# their SEs, and the seconds of the imputation alone.
#
# Usage: Rscript bench/r/mice_2l_bin.R registries.csv out.json [m] [seed]
# Needs (Debian): r-base-core r-cran-mice r-cran-lme4 r-cran-jsonlite. Bench only: never needed by hmlib.
suppressPackageStartupMessages({ library(mice); library(lme4); library(jsonlite) })
args <- commandArgs(trailingOnly = TRUE)
all <- read.csv(args[[1]])
m <- if (length(args) >= 3) as.integer(args[[3]]) else 20L
seed <- if (length(args) >= 4) as.integer(args[[4]]) else 1L

one <- function(d) {
  d$registry <- NULL
  d$site <- as.integer(d$site)
  d$m_outcome <- ave(d$outcome, d$site)
  d$m_age <- ave(d$age, d$site)
  pred <- make.predictorMatrix(d)
  pred[, ] <- 0
  pred["x", c("outcome", "age", "m_outcome", "m_age")] <- 1
  pred["x", "site"] <- -2
  method <- setNames(rep("", ncol(d)), names(d))
  method["x"] <- "2l.bin"
  start <- proc.time()[["elapsed"]]
  imp <- mice(d, m = m, maxit = 1, method = method, predictorMatrix = pred, seed = seed, printFlag = FALSE)
  seconds <- proc.time()[["elapsed"]] - start
  fits <- lapply(seq_len(m), function(i) glmer(outcome ~ x + age + (1 | site), data = complete(imp, i),
                                               family = binomial))
  est <- sapply(fits, fixef)
  var <- sapply(fits, function(f) diag(as.matrix(vcov(f))))
  qbar <- rowMeans(est)
  within <- rowMeans(var)
  between <- apply(est, 1, var)
  total <- within + (1 + 1 / m) * between
  df <- (m - 1) * (1 + within / ((1 + 1 / m) * between))^2     # Rubin (1987)
  half <- qt(0.975, df) * sqrt(total)
  list(x = unname(qbar["x"]), x_se = unname(sqrt(total["x"])), x_ci_lower = unname(qbar["x"] - half["x"]),
       x_ci_upper = unname(qbar["x"] + half["x"]), age = unname(qbar["age"]), age_se = unname(sqrt(total["age"])),
       imputation_seconds = seconds)
}

out <- lapply(split(all, all$registry), one)
write_json(list(m = m, seed = seed, mice = as.character(packageVersion("mice")),
                lme4 = as.character(packageVersion("lme4")), registries = out),
           args[[2]], auto_unbox = TRUE, digits = NA, pretty = TRUE)
