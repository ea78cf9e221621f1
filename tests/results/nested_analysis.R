# Reference fits with lme4 for hmlib's analysis model with levels above the cluster
# (params `higher_levels`): tests/test_nested_analysis.py checks against them.
# Run from this folder:  Rscript nested_analysis.R   (needs R with lme4 and jsonlite;
# Debian: apt-get install r-cran-lme4 r-cran-jsonlite)
#
# Data: nested_trial.csv in this folder, a trial-shaped registry simulated by hmlib
# (hmlib.simulate.scale.trial_registry(5, n_patients=6000, n_hospitals=100, n_countries=10),
# with age and sbp centred and scaled and a gaussian score added; written by
# `python tests/test_nested_analysis.py --write-data`, see nested_trial() there): patients in
# hospitals in countries, a binary outcome with missing values, an incomplete binary
# predictor, four categorical predictors. Rows with a missing value in a model column are left out, as
# hmlib's complete-case analysis does (lme4's na.action = na.omit).
#
# Models: the report's analysis model with nested random intercepts,
#   binomial: dead_or_dependent ~ predictors + (1 | country) + (1 | country:hospital)  (Laplace)
#   gaussian: score ~ age_c + sex + conscious + (1 | country) + (1 | country:hospital)  (ML)
# and, for the misattribution the nested model removes, the two-level binomial model
# (1 | hospital). Tight optimizer tolerances (lme4's defaults stop glmer's optimizer early).
# Writes nested_analysis.json: per case the formula, fixed effects (estimate, SE), the SD
# of each level, the residual SD (gaussian), logLik and the rows and groups used.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })

source("lme4_controls.R")  # tight_lmer, tight_glmer

d <- read.csv("nested_trial.csv", stringsAsFactors = TRUE)
predictors <- "age_c + sex + sbp_c + conscious + stroke_type + aspirin + atrial_fib"

fit_case <- function(name, formula, binomial = TRUE) {
  f <- as.formula(formula)
  warnings <- character()
  m <- withCallingHandlers(if (binomial) glmer(f, data = d, family = binomial(), control = tight_glmer) else
    lmer(f, data = d, REML = FALSE, control = tight_lmer),
    warning = function(w) { warnings <<- c(warnings, conditionMessage(w)); invokeRestart("muffleWarning") })
  cf <- summary(m)$coefficients
  vc <- as.data.frame(VarCorr(m))
  vc <- vc[vc$grp != "Residual", ]
  list(name = name, formula = formula, family = if (binomial) "binomial" else "gaussian",
       fixed = lapply(setNames(seq_len(nrow(cf)), rownames(cf)),
                      function(i) list(estimate = cf[i, 1], std_error = cf[i, 2])),
       sd = as.list(setNames(vc$sdcor, vc$grp)),
       residual_sd = if (binomial) NULL else sigma(m),
       logLik = as.numeric(logLik(m)), singular = isSingular(m), warnings = warnings, n_used = nobs(m), n_groups = as.list(ngrps(m)))
}

cases <- list(
  fit_case("nested_binomial", paste("dead_or_dependent ~", predictors, "+ (1 | country) + (1 | country:hospital)")),
  fit_case("nested_gaussian", "score ~ age_c + sex + conscious + (1 | country) + (1 | country:hospital)",
           binomial = FALSE),
  fit_case("two_level_binomial", paste("dead_or_dependent ~", predictors, "+ (1 | hospital)"))
)
writeLines(toJSON(cases, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), "nested_analysis.json")
cat("wrote nested_analysis.json with", length(cases), "cases\n")
