# Reference numbers for the joint model's incomplete categorical predictors (issue 17, part B).
#
# Data (written by hmlib's simulator, hmlib/simulate/categorical_focus.py):
#   joint_categorical_nominal.csv = categorical_focus_registry(17, n_sites=30, n_patients=1200)
#   joint_categorical_ordinal.csv = categorical_focus_registry(18, n_sites=30, n_patients=1200, ordinal=True)
# Columns site, outcome (0/1), age, severity (standard normal), band (normal / raised / high, empty = missing).
#
# 1. brms: the joint model's categorical submodels on the rows where band is recorded (there band is
#    complete, so the submodel's posterior does not depend on the outcome model), with hmlib's default
#    priors stated on age and severity standardised as hmlib does (population SD over the rows used):
#      nominal  band ~ age_z + sev_z + (1 | site), categorical(refcat = "normal")   (baseline-category logit)
#      ordinal  band ~ age_z + sev_z + (1 | site), cumulative("logit"), normal < raised < high
#    Intercepts Normal(m_k, 2.5) (m_k: observed log odds of level k against normal; ordinal: logit of the
#    observed share at or below each cut), coefficients Normal(0, 2.5), cluster SDs half-Normal(0, 1).
#    brms's mi() takes no categorical variable, so the joint model with missing bands cannot be run in brms.
# 2. jomo: substantive-model-compatible multilevel imputation (jomo.glmer: the analysis model
#    outcome ~ age + severity + band + (1 | site), band imputed from a latent-normal model with site random
#    effects) on the full incomplete data, 20 imputations, glmer fits pooled by Rubin's rules: the
#    multilevel-MI comparator of the joint model with missing bands. Wall seconds are recorded.
#
#   Rscript tests/results/joint_categorical.R [out.json] [brms seeds] [parts: brms,jomo]
# (run from the repository root; R 4.2.2, brms 2.18.0, jomo 2.7.4, lme4 on these machines)

suppressPackageStartupMessages({
  library(brms)
  library(posterior)
  library(jomo)
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
out_file <- if (length(args) >= 1) args[1] else "tests/results/joint_categorical.json"
n_seeds <- if (length(args) >= 2) as.integer(args[2]) else 1L
here <- "tests/results"
levels_band <- c("normal", "raised", "high")
pop_sd <- function(x) sqrt(mean((x - mean(x))^2))

observed_rows <- function(file) {
  d <- read.csv(file.path(here, file), na.strings = "")
  d <- d[!is.na(d$band), ]
  d$site <- factor(d$site)
  d$age_z <- (d$age - mean(d$age)) / pop_sd(d$age)
  d$sev_z <- (d$severity - mean(d$severity)) / pop_sd(d$severity)
  d
}

summarise_fit <- function(fit) {
  s <- summarise_draws(as_draws_df(fit), "mean", "sd", "mcse_mean", "ess_bulk", "rhat")
  s <- s[!grepl("^(r_|lp__|lprior|Intercept$|b_mu.*_Intercept$)", s$variable) | grepl("^b_", s$variable), ]
  out <- lapply(seq_len(nrow(s)), function(i) list(mean = s$mean[i], sd = s$sd[i], mcse = s$mcse_mean[i],
                                                   ess_bulk = s$ess_bulk[i], rhat = s$rhat[i]))
  names(out) <- s$variable
  out
}

brms_submodel <- function(ordinal) {
  file <- if (ordinal) "joint_categorical_ordinal.csv" else "joint_categorical_nominal.csv"
  d <- observed_rows(file)
  counts <- table(factor(d$band, levels = levels_band)) + 0.5
  if (ordinal) {
    d$band <- factor(d$band, levels = levels_band, ordered = TRUE)
    loc <- qlogis(cumsum(counts)[1:2] / sum(counts))
    formula <- bf(band ~ age_z + sev_z + (1 | site), family = cumulative("logit"))
    priors <- c(set_prior(sprintf("normal(%.10f, 2.5)", loc[1]), class = "Intercept", coef = "1"),
                set_prior(sprintf("normal(%.10f, 2.5)", loc[2]), class = "Intercept", coef = "2"),
                set_prior("normal(0, 2.5)", class = "b"),
                set_prior("normal(0, 1)", class = "sd"))
  } else {
    d$band <- factor(d$band, levels = levels_band)
    loc <- log(counts[2:3] / counts[1])
    formula <- bf(band ~ age_z + sev_z + (1 | site), family = categorical(refcat = "normal"))
    priors <- c(set_prior(sprintf("normal(%.10f, 2.5)", loc[1]), class = "Intercept", dpar = "muraised"),
                set_prior(sprintf("normal(%.10f, 2.5)", loc[2]), class = "Intercept", dpar = "muhigh"),
                set_prior("normal(0, 2.5)", class = "b", dpar = "muraised"),
                set_prior("normal(0, 2.5)", class = "b", dpar = "muhigh"),
                set_prior("normal(0, 1)", class = "sd", dpar = "muraised"),
                set_prior("normal(0, 1)", class = "sd", dpar = "muhigh"))
  }
  compiled <- brm(formula, data = d, prior = priors, chains = 0, seed = 1)
  runs <- lapply(seq_len(n_seeds), function(seed) {
    start <- proc.time()[["elapsed"]]
    fit <- update(compiled, recompile = FALSE, chains = 4, iter = 2000, warmup = 1000, seed = seed, refresh = 0)
    list(seed = seed, seconds = proc.time()[["elapsed"]] - start, parameters = summarise_fit(fit))
  })
  list(n = nrow(d), n_sites = nlevels(d$site), prior_locations = as.numeric(loc), runs = runs)
}

jomo_pooled <- function(file, m = 20) {
  d <- read.csv(file.path(here, file), na.strings = "")
  # jomo reads the number of categories from numeric factor labels: normal, raised, high -> 1, 2, 3
  d$band <- factor(match(d$band, levels_band), levels = 1:3)
  # the cluster stays numeric: jomo.glmer 2.7-4 loses the category counts when it is a factor
  start <- proc.time()[["elapsed"]]
  imp <- jomo.glmer(outcome ~ age + severity + band + (1 | site), data = d[, c("site", "outcome", "age",
                    "severity", "band")], level = c(1, 1, 1, 1, 1), nburn = 1000, nbetween = 200, nimp = m,
                    output = 0)
  imp_seconds <- proc.time()[["elapsed"]] - start
  fits <- lapply(seq_len(m), function(i) {
    di <- imp[imp$Imputation == i, ]
    di$band <- factor(di$band, levels = 1:3)
    glmer(outcome ~ age + severity + band + (1 | clus), data = di, family = binomial)
  })
  terms <- c("age", "severity", "band2", "band3")
  est <- sapply(fits, function(f) fixef(f)[terms])
  var <- sapply(fits, function(f) diag(as.matrix(vcov(f)))[terms])
  qbar <- rowMeans(est)
  ubar <- rowMeans(var)
  b <- apply(est, 1, stats::var)
  total <- ubar + (1 + 1 / m) * b
  site_sd <- mean(sapply(fits, function(f) attr(VarCorr(f)$clus, "stddev")))
  list(m = m, seconds_imputation = imp_seconds, seconds_total = proc.time()[["elapsed"]] - start,
       terms = setNames(lapply(seq_along(terms), function(k) list(estimate = qbar[[k]], std_error = sqrt(total[[k]]))),
                        c("age", "severity", "band[raised]", "band[high]")),
       site_sd = site_sd)
}

# Each part is written as soon as it is done (a part already in out_file is kept unless asked for again).
parts <- if (length(args) >= 3) strsplit(args[3], ",")[[1]] else c("brms", "jomo")
result <- if (file.exists(out_file)) fromJSON(out_file, simplifyVector = FALSE) else list()
save <- function() {
  result$versions <- list(R = R.version.string, brms = as.character(packageVersion("brms")),
                          jomo = as.character(packageVersion("jomo")), lme4 = as.character(packageVersion("lme4")))
  write_json(result, out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE)
}
if ("brms" %in% parts) {
  result$brms_nominal <- brms_submodel(FALSE); save()
  result$brms_ordinal <- brms_submodel(TRUE); save()
}
if ("jomo" %in% parts) {
  set.seed(2026)
  result$jomo_nominal <- jomo_pooled("joint_categorical_nominal.csv"); save()
  result$jomo_ordinal <- jomo_pooled("joint_categorical_ordinal.csv"); save()
}
