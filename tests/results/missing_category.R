# Reference fits of the missing-category model (step 2's missing-indicator
# model for a categorical focus) with lme4, for tests/test_categorical_focus.py.
# Run from this folder:  Rscript missing_category.R   (R with lme4 and jsonlite)
#
# The focus's missing values become a level of their own, "missing", placed
# after the observed levels, so the reference level stays the first observed
# one (levels sorted in C-locale order, as hmlib sorts them). Rows with a
# missing value in another model variable are dropped, as lme4 and hmlib do.
#
# For each case: the fixed effects (estimate, standard error), the cluster
# SD, logLik and n. With `by_cluster = TRUE` also the cluster-specific effect
# of the missing level: within each cluster that has both recorded and
# missing values, glm(y ~ 1 + missing, offset = the common model's fixed part
# without the missing level's term), and the DerSimonian-Laird pooling of
# those estimates (tau, random-effects mean, heterogeneity p), which is what
# hmlib.stats.complete_case.indicator_effects_by_cluster computes.
suppressPackageStartupMessages({ library(lme4); library(jsonlite) })

c_sort <- function(x) sort(unique(x), method = "radix")

with_missing_level <- function(x) {
  x <- as.character(x)
  observed <- c_sort(x[!is.na(x)])
  x[is.na(x)] <- "missing"
  factor(x, levels = c(observed, "missing"))
}

as_factor <- function(x) factor(as.character(x), levels = c_sort(as.character(x[!is.na(x)])))

dersimonian_laird <- function(est, se) {
  w <- 1 / se^2
  fixed <- sum(w * est) / sum(w)
  q <- sum(w * (est - fixed)^2)
  k <- length(est)
  tau2 <- max(0, (q - (k - 1)) / (sum(w) - sum(w^2) / sum(w)))
  w_re <- 1 / (se^2 + tau2)
  list(tau = sqrt(tau2), mean = sum(w_re * est) / sum(w_re), q_p = pchisq(q, k - 1, lower.tail = FALSE),
       n_estimable = k)
}

by_cluster <- function(model, focus, cluster, family) {
  X <- getME(model, "X")
  beta <- fixef(model)
  term <- paste0(focus, "missing")
  x <- X[, term]
  offset <- as.vector(X %*% beta) - beta[[term]] * x
  y <- getME(model, "y")
  groups <- as.character(model@frame[[cluster]])
  rows <- list()
  for (g in c_sort(groups)) {
    sel <- groups == g
    xs <- x[sel]
    if (sum(xs) == 0 || sum(xs) == sum(sel)) next
    if (family == "binomial" && (length(unique(y[sel & x > 0])) < 2 || length(unique(y[sel & x <= 0])) < 2)) next
    fam <- if (family == "binomial") binomial() else gaussian()
    fit <- glm(y[sel] ~ xs, offset = offset[sel], family = fam)
    cf <- summary(fit)$coefficients
    if (abs(cf[2, 1]) > 20) next
    rows[[g]] <- list(cluster = g, raw = cf[2, 1], raw_se = cf[2, 2])
  }
  est <- sapply(rows, `[[`, "raw")
  se <- sapply(rows, `[[`, "raw_se")
  c(list(table = unname(rows)), dersimonian_laird(est, se))
}

fit_case <- function(name, file, outcome, focus, predictors, cluster, family, factors = character(0),
                     prep = identity, clusters = FALSE) {
  path <- if (file.exists(file)) file else file.path("..", "..", "data", "real", file)
  d <- prep(read.csv(path, check.names = FALSE, na.strings = c("", "NA")))
  for (col in factors) d[[col]] <- as_factor(d[[col]])
  d[[focus]] <- with_missing_level(d[[focus]])
  d[[cluster]] <- as.character(d[[cluster]])
  f <- as.formula(paste(outcome, "~", paste(c(predictors), collapse = " + "), "+ (1 |", cluster, ")"))
  m <- if (family == "gaussian") lmer(f, data = d, REML = FALSE) else
    glmer(f, data = d, family = binomial, nAGQ = 1,
          control = glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
  cf <- summary(m)$coefficients
  out <- list(
    name = name, data = file, formula = deparse(f, width.cutoff = 500L), family = family,
    method = if (family == "gaussian") "ML (REML = FALSE)" else "ML, Laplace (nAGQ = 1)",
    focus = focus, focus_levels = levels(d[[focus]]),
    fixed = lapply(setNames(seq_len(nrow(cf)), rownames(cf)),
                   function(i) list(estimate = cf[i, 1], std_error = cf[i, 2])),
    cluster_sd = as.data.frame(VarCorr(m))$sdcor[1],
    logLik = as.numeric(logLik(m)), n_used = nobs(m), n_clusters = as.integer(ngrps(m)[1])
  )
  if (clusters) out$by_cluster <- by_cluster(m, focus, cluster, family)
  out
}

cases <- list(
  fit_case("categorical_registry", "categorical_registry.csv", "outcome", "lactate_band",
           c("lactate_band", "age", "severity"), "site", "binomial", clusters = TRUE),
  fit_case("opt_hisp", "opt_periodontal.csv", "preterm", "Hisp",
           c("Group", "Age", "Black", "Education", "Public.Asstce", "Hisp"), "Clinic", "binomial",
           factors = c("Group", "Black", "Education", "Public.Asstce")),
  fit_case("opt_use_tob", "opt_periodontal.csv", "preterm", "Use.Tob",
           c("Group", "Age", "Black", "Education", "Public.Asstce", "BMI", "Use.Tob"), "Clinic", "binomial",
           factors = c("Group", "Black", "Education", "Public.Asstce")),
  fit_case("brandsma_den", "brandsma.csv", "lpo", "den", c("iqv", "ses", "sex", "lpr", "den"), "sch",
           "gaussian", factors = "sex")
)
writeLines(toJSON(cases, auto_unbox = TRUE, digits = NA, pretty = TRUE), "missing_category.json")
cat("wrote missing_category.json with", length(cases), "cases\n")
