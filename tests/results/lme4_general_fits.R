# Reference fits with lme4 for hmlib's general mixed-model fitter (nested random
# intercepts, correlated random slopes): tests/test_mixed_general.py checks against them.
# Run from this folder:  Rscript lme4_general_fits.R   (needs R with lme4 and jsonlite)
#
# Data: general_*.csv in this folder are simulated by hmlib (written by
# `python tests/test_mixed_general.py --write-data`, seeds in that module; y gaussian,
# yb binary, same design and random effects); the real data sets are ../../data/real/.
#
# Each model is fitted twice: with tight optimizer tolerances (the reference: lme4's
# defaults stop the optimizer at a deviance change of about 1e-8 for lmer and 1e-5 for
# glmer's Nelder-Mead, which leaves the estimates off by 1e-4 .. 1e-2) and with lme4's
# default control, whose logLik and warnings are recorded too. Writes
# lme4_general_fits.json: per case the formula, family, fixed effects (estimate, SE), the
# VarCorr table (SDs and correlations), theta, residual SD, logLik, isSingular, rows and groups used;
# for two cases also the conditional modes with their conditional SDs (ranef, condVar).
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })

source("lme4_controls.R")  # tight_lmer, tight_glmer

read_data <- function(file, prep) {
  path <- if (startsWith(file, "general_")) file else file.path("..", "..", "data", "real", file)
  prep(read.csv(path, check.names = FALSE))
}

modes <- function(m) {
  re <- ranef(m, condVar = TRUE)
  lapply(setNames(names(re), names(re)), function(g) {
    r <- re[[g]]
    v <- attr(r, "postVar")
    list(cluster = rownames(r),
         effects = lapply(setNames(seq_along(r), names(r)), function(j) r[[j]]),
         sd = lapply(setNames(seq_along(r), names(r)), function(j) sqrt(v[j, j, ])))
  })
}

fit_case <- function(name, file, formula, family = NULL, prep = identity, with_modes = FALSE) {
  d <- read_data(file, prep)
  f <- as.formula(formula)
  fit <- function(control) {
    warnings <- character()
    m <- withCallingHandlers(
      if (is.null(family)) lmer(f, data = d, REML = FALSE, control = control) else
        glmer(f, data = d, family = family, control = control),
      warning = function(w) { warnings <<- c(warnings, conditionMessage(w)); invokeRestart("muffleWarning") })
    list(model = m, warnings = warnings)
  }
  ref <- fit(if (is.null(family)) tight_lmer else tight_glmer)
  default <- fit(if (is.null(family)) lmerControl() else glmerControl())
  m <- ref$model
  cf <- summary(m)$coefficients
  vc <- as.data.frame(VarCorr(m))
  vc <- vc[vc$grp != "Residual", ]
  out <- list(
    name = name, data = file, formula = formula,
    family = if (is.null(family)) "gaussian" else "binomial",
    method = if (is.null(family)) "ML (REML = FALSE)" else "ML, Laplace (nAGQ = 1)",
    fixed = lapply(setNames(seq_len(nrow(cf)), rownames(cf)),
                   function(i) list(estimate = cf[i, 1], std_error = cf[i, 2])),
    varcorr = lapply(seq_len(nrow(vc)), function(i)
      list(grp = vc$grp[i], var1 = vc$var1[i], var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
           sdcor = vc$sdcor[i])),
    theta = unname(getME(m, "theta")),
    residual_sd = if (is.null(family)) sigma(m) else NULL,
    logLik = as.numeric(logLik(m)),
    singular = isSingular(m),
    warnings = ref$warnings,
    logLik_default_control = as.numeric(logLik(default$model)),
    warnings_default_control = default$warnings,
    n_used = nobs(m),
    n_groups = as.list(ngrps(m))
  )
  if (with_modes) out$modes <- modes(m)
  out
}

pbc_prep <- function(d) { d$year <- d$day / 365; d }

cases <- list(
  fit_case("nested2_gaussian", "general_nested2.csv",
           "y ~ x1 + x2 + (1 | country) + (1 | country:hospital)"),
  fit_case("nested2_binomial", "general_nested2.csv",
           "yb ~ x1 + x2 + (1 | country) + (1 | country:hospital)", binomial(), with_modes = TRUE),
  fit_case("nested3_gaussian", "general_nested3.csv",
           "y ~ x1 + x2 + (1 | country) + (1 | country:region) + (1 | country:region:hospital)"),
  fit_case("nested3_binomial", "general_nested3.csv",
           "yb ~ x1 + x2 + (1 | country) + (1 | country:region) + (1 | country:region:hospital)", binomial()),
  fit_case("slopes_gaussian", "general_slopes.csv",
           "y ~ time + treat + age + (1 + time | patient)", with_modes = TRUE),
  fit_case("slopes_binomial", "general_slopes_binomial.csv",
           "yb ~ time + treat + age + (1 + time | patient)", binomial()),
  fit_case("brandsma_slopes", "brandsma.csv",
           "lpo ~ iqv + ses + sex + (1 + iqv | sch)"),
  fit_case("pbcseq_slopes", "pbcseq.csv",
           "log(bili) ~ trt + age + sex + year + albumin + (1 + year | id)", prep = pbc_prep),
  fit_case("cdystonia_nested", "cdystonia.csv",
           "twstrs ~ treat + week + age + sex + (1 | site) + (1 | site:patient_id)"),
  fit_case("cdystonia_nested_slopes", "cdystonia.csv",
           "twstrs ~ treat + week + age + sex + (1 | site) + (1 + week | site:patient_id)"),
  # cases added later go at the end, so that the test IDs of the earlier ones stay
  fit_case("slopes_uncorrelated_gaussian", "general_slopes.csv",
           "y ~ time + treat + age + (1 | patient) + (0 + time | patient)"),
  fit_case("slope_only_gaussian", "general_slopes.csv",
           "y ~ time + treat + age + (0 + time | patient)"),
  fit_case("slopes_singular_gaussian", "general_slopes_singular.csv",
           "y ~ time + treat + age + (1 + time | patient)")
)
writeLines(toJSON(cases, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "lme4_general_fits.json")
cat("wrote lme4_general_fits.json with", length(cases), "cases\n")
