# Reference multiple-imputation runs in R (mice + lme4) on the simulated
# registry, timed on this machine, for bench/bench_vs_mice.py.
#
# Methods (analysis model for each: glmer(outcome ~ lactate + age + severity
# + (1 | site), binomial, Laplace), fitted to every imputed data set and
# pooled with mice::pool, i.e. Rubin's rules with Barnard-Rubin df):
#
#   flat_pmm     mice "pmm" for lactate, site not used (the flat comparator)
#   2l_pan_ri    mice "2l.pan" for lactate: random intercept only (site
#                coded -2, predictors coded 1 = fixed effects), with age and
#                severity z-scored in the imputation model (the outcome is
#                0/1 and enters as it is). With --cluster-means the
#                predictors are coded 3 (fixed effect + cluster mean), the
#                form of hmlib's multilevel imputation model.
#
# The site SD is summarised over the m fits as the geometric mean
# exp(mean(log sd)), which is what hmlib's log-scale pooling gives as its
# point estimate.
#
# Usage:
#   Rscript bench/r/mice_reference.R --data tests/results/sim_registry.csv \
#       --out bench/results/mice_reference.json [--m 20] [--maxit 10] \
#       [--seed 1] [--methods flat_pmm,2l_pan_ri] [--cluster-means]
#
# Needs (Debian): r-base-core r-cran-mice r-cran-lme4 r-cran-pan
# r-cran-jsonlite r-cran-broom.mixed. Bench only: never needed by hmlib.

started_all <- proc.time()[["elapsed"]]
args <- commandArgs(trailingOnly = TRUE)
option <- function(name, default) {
  i <- match(paste0("--", name), args)
  if (is.na(i)) default else args[[i + 1]]
}
data_path <- option("data", "tests/results/sim_registry.csv")
out_path <- option("out", "bench/results/mice_reference.json")
m <- as.integer(option("m", "20"))
maxit <- as.integer(option("maxit", "10"))
seed <- as.integer(option("seed", "1"))
methods <- strsplit(option("methods", "flat_pmm,2l_pan_ri"), ",")[[1]]
cluster_means <- "--cluster-means" %in% args

t0 <- proc.time()[["elapsed"]]
suppressPackageStartupMessages({
  library(mice)
  library(lme4)
  library(broom.mixed)
  library(jsonlite)
})
load_s <- proc.time()[["elapsed"]] - t0

data <- read.csv(data_path)
data <- data[, c("site", "outcome", "age", "severity", "lactate")]
data$site <- as.integer(data$site)
formula <- outcome ~ lactate + age + severity + (1 | site)

analyse <- function(imp) {
  # glmer on every completed data set, then mice::pool (Rubin's rules)
  t_fit <- proc.time()[["elapsed"]]
  fits <- lapply(seq_len(imp$m), function(k) {
    glmer(formula, data = complete(imp, k), family = binomial)
  })
  fit_s <- proc.time()[["elapsed"]] - t_fit
  t_pool <- proc.time()[["elapsed"]]
  pooled <- pool(as.mira(fits))
  s <- summary(pooled, conf.int = TRUE)
  pool_s <- proc.time()[["elapsed"]] - t_pool
  sds <- vapply(fits, function(f) as.data.frame(VarCorr(f))$sdcor[1], numeric(1))
  terms <- as.character(s$term)
  terms[terms == "(Intercept)"] <- "Intercept"
  list(
    analyse_s = fit_s, pool_s = pool_s,
    estimates = data.frame(term = terms, estimate = s$estimate, std_error = s$std.error,
                           ci_lower = s[["2.5 %"]], ci_upper = s[["97.5 %"]], df = s$df,
                           fmi = pooled$pooled$fmi),
    site_sd = list(geometric_mean = exp(mean(log(sds))), mean = mean(sds), per_imputation = sds)
  )
}

run_method <- function(name) {
  t_imp <- proc.time()[["elapsed"]]
  if (name == "flat_pmm") {
    meth <- make.method(data)
    meth[] <- ""
    meth["lactate"] <- "pmm"
    pred <- make.predictorMatrix(data)
    pred[, ] <- 0
    pred["lactate", c("outcome", "age", "severity")] <- 1
    imp <- mice(data, m = m, maxit = maxit, method = meth, predictorMatrix = pred, seed = seed,
                printFlag = FALSE)
    what <- sprintf("mice pmm for lactate from outcome, age, severity (site not used); m = %d, maxit = %d",
                    m, maxit)
  } else if (name == "2l_pan_ri") {
    work <- data
    work$age_z <- as.numeric(scale(work$age))
    work$severity_z <- as.numeric(scale(work$severity))
    meth <- make.method(work)
    meth[] <- ""
    meth["lactate"] <- "2l.pan"
    pred <- make.predictorMatrix(work)
    pred[, ] <- 0
    code <- if (cluster_means) 3 else 1
    pred["lactate", c("outcome", "age_z", "severity_z")] <- code
    pred["lactate", "site"] <- -2
    imp <- mice(work, m = m, maxit = maxit, method = meth, predictorMatrix = pred, seed = seed,
                printFlag = FALSE)
    what <- sprintf(paste("mice 2l.pan for lactate: site -2, outcome/age_z/severity_z coded %d",
                          "(%s), random intercept only; m = %d, maxit = %d"),
                    code, if (cluster_means) "fixed + cluster mean" else "fixed", m, maxit)
  } else {
    stop(sprintf("unknown method '%s'; methods are flat_pmm, 2l_pan_ri", name))
  }
  impute_s <- proc.time()[["elapsed"]] - t_imp
  result <- analyse(imp)
  c(list(what = what, impute_s = impute_s,
         total_s = impute_s + result$analyse_s + result$pool_s), result)
}

results <- list()
for (name in methods) results[[name]] <- run_method(name)

out <- list(
  data = basename(data_path), n_patients = nrow(data), n_sites = length(unique(data$site)),
  n_missing_lactate = sum(is.na(data$lactate)),
  analysis_model = "glmer(outcome ~ lactate + age + severity + (1 | site), family = binomial)",
  r_version = R.version.string,
  packages = list(mice = as.character(packageVersion("mice")), lme4 = as.character(packageVersion("lme4")),
                  pan = as.character(packageVersion("pan")),
                  broom.mixed = as.character(packageVersion("broom.mixed"))),
  settings = list(m = m, maxit = maxit, seed = seed, cluster_means = cluster_means),
  package_load_s = load_s,
  script_s = proc.time()[["elapsed"]] - started_all,
  timing_note = "elapsed seconds on this machine; impute_s + analyse_s + pool_s = total_s per method",
  methods = results
)
dir.create(dirname(out_path), showWarnings = FALSE, recursive = TRUE)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_path)
cat(sprintf("wrote %s\n", out_path))
