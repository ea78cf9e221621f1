# Reference fits with lme4 for step 1's partition of missingness by level (params
# `higher_levels`): tests/test_missingness_levels.py checks
# hmlib.stats.missingness.missingness_level_variation against them.
# Run from this folder:  Rscript missingness_levels.R   (needs R with lme4 and jsonlite;
# Debian: apt-get install r-cran-lme4 r-cran-jsonlite)
#
# Data: nested_trial.csv in this folder (6,000 patients in 100 hospitals in 10 countries,
# simulated by hmlib; see nested_analysis.R), whose outcome is lost to follow-up by country
# and whose atrial fibrillation is unrecorded by hospital (and `either`: a patient with one of
# them unrecorded); and the real
# ../../data/real/cdystonia.csv (visits in 109 patients in 9 sites, missed visits). All of these
# put the variation at one level (the other SD is 0, a boundary fit); level_missingness.csv
# (3,600 patients in 120 hospitals in 20 countries, hmlib.simulate.missingness.
# level_missingness_registry(2, n_countries=20, hospitals_per_country=6, per_hospital=30); written
# by `python tests/test_missingness_levels.py --write-data`) has both levels non-zero.
#
# Per variable, the missingness indicator's intercept-only model with nested random
# intercepts (Laplace), the model without each level in turn, and their likelihood-ratio
# statistics 2 (logLik full - logLik without). Writes missingness_levels.json: per case
# the SD of each level, logLik of every model and the statistics.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
source("lme4_controls.R")  # tight_lmer, tight_glmer

fit <- function(d, random) {
  f <- as.formula(paste("missing ~ 1 +", paste0("(1 | ", random, ")", collapse = " + ")))
  glmer(f, data = d, family = binomial(), control = tight_glmer)
}

partition <- function(name, d, variable, levels) {
  d$missing <- as.integer(is.na(d[[variable]]))
  # nested terms: (1 | country) + (1 | country:hospital)
  term <- function(keep) sapply(seq_along(keep), function(i) paste(keep[seq_len(i)], collapse = ":"))
  full <- fit(d, term(levels))
  vc <- as.data.frame(VarCorr(full))
  without <- lapply(setNames(levels, levels), function(l) {
    kept <- setdiff(levels, l)
    # the kept levels stay nested in one another; an inner level keeps its full path
    m <- fit(d, sapply(seq_along(kept), function(i) paste(levels[seq_len(match(kept[i], levels))], collapse = ":")))
    as.numeric(logLik(m))
  })
  two_level <- fit(d, paste(levels, collapse = ":"))
  list(name = name, variable = variable, levels = levels,
       sd = as.list(setNames(vc$sdcor, levels[match(vc$grp, term(levels))])),
       logLik = as.numeric(logLik(full)),
       logLik_without = without,
       lrt = lapply(without, function(l) 2 * (as.numeric(logLik(full)) - l)),
       two_level_sd = as.data.frame(VarCorr(two_level))$sdcor,
       singular = isSingular(full), n_used = nobs(full))
}

trial <- read.csv("nested_trial.csv")
# a patient with the outcome or atrial fibrillation unrecorded: varies at both levels
trial$either <- ifelse(is.na(trial$dead_or_dependent) | is.na(trial$atrial_fib), NA, 1)
# without the hospitals that (almost) never record atrial fibrillation (step 1's structural gaps)
sporadic <- trial[ave(as.numeric(is.na(trial$atrial_fib)), trial$hospital) <= 0.9, ]
levels3 <- read.csv("level_missingness.csv")
dystonia <- read.csv(file.path("..", "..", "data", "real", "cdystonia.csv"))
cases <- list(
  partition("trial_outcome", trial, "dead_or_dependent", c("country", "hospital")),
  partition("trial_atrial_fib", trial, "atrial_fib", c("country", "hospital")),
  partition("trial_either", trial, "either", c("country", "hospital")),
  partition("trial_either_sporadic", sporadic, "either", c("country", "hospital")),
  partition("simulated_both_levels", levels3, "v", c("country", "hospital")),
  partition("cdystonia_twstrs", dystonia, "twstrs", c("site", "patient_id"))
)
writeLines(toJSON(cases, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), "missingness_levels.json")
cat("wrote missingness_levels.json with", length(cases), "cases\n")
