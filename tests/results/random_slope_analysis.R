# Reference fits with lme4 for the report's analysis model with random slopes (params
# `random_slopes`, issue #16): tests/test_random_slopes_report.py checks hmlib's
# hmlib.stats.design.fit_analysis_model against them (fixed effects to 1e-3 relative to
# their SE, SDs and correlation to 1e-2).
# Run from this folder:  Rscript random_slope_analysis.R   (R with lme4 and jsonlite;
# Debian: apt-get install r-cran-lme4 r-cran-jsonlite)
#
# Data: the real repeated-measures sets in data/real/ (see data/real/README.md).
#   cdystonia (gaussian, ML): twstrs ~ treat + week + age + sex + (1 | site) + (1 + week | site:patient_id)
#   pbcseq (binomial, Laplace): ascites ~ trt + age + sex + year + albumin + platelet + (1 + year | id)
#     with year = day / 365.25; rows with a missing value in a model column left out (na.omit), as
#     hmlib's complete-case analysis does.
# Tight optimizer tolerances (lme4's defaults stop early). Writes random_slope_analysis.json: per
# case the fixed effects (estimate, SE), the SDs and correlation of the random effects, logLik, rows.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })

source("lme4_controls.R")  # tight_lmer, tight_glmer

fit_case <- function(name, d, formula, binomial) {
  f <- as.formula(formula)
  warnings <- character()
  m <- withCallingHandlers(if (binomial) glmer(f, data = d, family = binomial(), control = tight_glmer) else
    lmer(f, data = d, REML = FALSE, control = tight_lmer),
    warning = function(w) { warnings <<- c(warnings, conditionMessage(w)); invokeRestart("muffleWarning") })
  cf <- summary(m)$coefficients
  vc <- as.data.frame(VarCorr(m))
  vc <- vc[vc$grp != "Residual", ]
  term <- ifelse(is.na(vc$var2), ifelse(vc$var1 == "(Intercept)", paste0("sd(", vc$grp, ")"),
                                        paste0("sd(", vc$var1, "|", vc$grp, ")")),
                 paste0("cor(", vc$var2, "|", vc$grp, ")"))
  list(name = name, formula = formula, family = if (binomial) "binomial" else "gaussian",
       fixed = lapply(setNames(seq_len(nrow(cf)), rownames(cf)),
                      function(i) list(estimate = cf[i, 1], std_error = cf[i, 2])),
       random = as.list(setNames(vc$sdcor, term)),
       residual_sd = if (binomial) NULL else sigma(m),
       loglik = as.numeric(logLik(m)), n_obs = nobs(m), warnings = warnings)
}

cd <- read.csv("../../data/real/cdystonia.csv", stringsAsFactors = TRUE)
pbc <- read.csv("../../data/real/pbcseq.csv", stringsAsFactors = TRUE)
pbc$year <- pbc$day / 365.25
pbc <- na.omit(pbc[, c("id", "ascites", "trt", "age", "sex", "year", "albumin", "platelet")])

cases <- list(
  fit_case("cdystonia", cd, "twstrs ~ treat + week + age + sex + (1 | site) + (1 + week | site:patient_id)", FALSE),
  fit_case("pbcseq", pbc, "ascites ~ trt + age + sex + year + albumin + platelet + (1 + year | id)", TRUE)
)
write_json(list(lme4 = as.character(packageVersion("lme4")), cases = cases), "random_slope_analysis.json",
           auto_unbox = TRUE, digits = NA, pretty = TRUE)
