# Reference for step 1's correlation of missingness with the outcome at each level (params
# `higher_levels`): tests/test_level_correlation.py checks
# hmlib.stats.missingness.missingness_outcome_correlation_by_level against it.
# Run from this folder:  Rscript level_correlation.R   (needs R with lme4 and jsonlite;
# Debian: apt-get install r-cran-lme4 r-cran-jsonlite)
#
# Data: level_correlation.csv (2,400 patients in 80 hospitals in 16 countries,
# hmlib.simulate.missingness.level_outcome_missingness_registry(4, n_countries=16,
# hospitals_per_country=5, per_hospital=30); written by
# `python tests/test_level_correlation.py --write-data`): v missing with country and hospital
# intercepts, a continuous outcome y and a binary outcome yb whose country intercepts correlate
# 0.8 with the missingness's; and nested_trial.csv (see nested_analysis.R), atrial
# fibrillation's missingness against the binary outcome dead_or_dependent.
#
# Per case: the missingness indicator's model and the outcome's model, each with the fully
# observed predictors and nested random intercepts (1 | country) + (1 | country:hospital)
# (glmer Laplace; lmer ML for a continuous outcome), then at each level the Pearson and
# Spearman correlations of the two models' conditional modes (ranef) over the units in both.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })
source("lme4_controls.R")  # tight_lmer, tight_glmer

case <- function(name, d, variable, outcome, family, covariates) {
  d$missing <- as.integer(is.na(d[[variable]]))
  rhs <- paste(c(covariates, "(1 | country)", "(1 | country:hospital)"), collapse = " + ")
  m <- glmer(as.formula(paste("missing ~", rhs)), data = d, family = binomial(), control = tight_glmer)
  o <- if (family == "gaussian") {
    lmer(as.formula(paste(outcome, "~", rhs)), data = d, REML = FALSE, control = tight_lmer)
  } else {
    glmer(as.formula(paste(outcome, "~", rhs)), data = d[!is.na(d[[outcome]]), ], family = binomial(),
          control = tight_glmer)
  }
  rm <- ranef(m); ro <- ranef(o)
  sds <- function(fit) { vc <- as.data.frame(VarCorr(fit)); setNames(as.list(vc$sdcor), vc$grp) }
  level <- function(group) {
    a <- rm[[group]]; b <- ro[[group]]
    keys <- intersect(rownames(a), rownames(b))
    x <- a[keys, 1]; y <- b[keys, 1]
    # an SD at its boundary (< 1e-4) leaves modes of rounding noise: no correlation
    if (sds(m)[[group]] < 1e-4 || sds(o)[[group]] < 1e-4) return(list(n_units = length(keys), pearson = NA,
                                                                       spearman = NA))
    list(n_units = length(keys), pearson = cor(x, y), spearman = cor(x, y, method = "spearman"))
  }
  list(name = name, variable = variable, outcome = outcome, family = family, covariates = covariates,
       country = level("country"), hospital = level("country:hospital"),
       missingness_sd = sds(m), outcome_sd = sds(o))
}

sim <- read.csv("level_correlation.csv")
trial <- read.csv("nested_trial.csv", stringsAsFactors = TRUE)
cases <- list(
  case("simulated_gaussian", sim, "v", "y", "gaussian", "x"),
  case("simulated_binomial", sim, "v", "yb", "binomial", "x"),
  case("trial_atrial_fib", trial, "atrial_fib", "dead_or_dependent", "binomial", c("age_c", "sbp_c", "sex"))
)
writeLines(toJSON(cases, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), "level_correlation.json")
cat("wrote level_correlation.json with", length(cases), "cases\n")
