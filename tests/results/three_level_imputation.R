# A three-level imputation reference with lme4, for hmlib's multilevel imputation with `higher_levels`
# (random intercepts for the hospital and the country; tests/test_three_level_imputation.py checks
# against it). No R package in Debian imputes three levels (miceadds' ml.lmer, which does, is not
# packaged), so this script writes that model out with lme4, in ml.lmer's way.
# Run from this folder:  Rscript three_level_imputation.R   (needs R with lme4 and jsonlite;
# Debian: apt-get install r-cran-lme4 r-cran-jsonlite)
#
# Data: three_level_registry.csv, hmlib.simulate.studies.three_level_registry(1) (written by
# `python tests/test_three_level_imputation.py --write-data`): 4,320 patients in 144 hospitals in
# 24 countries, x missing for 37% at random given y and the country, never recorded in two
# countries; y and age complete. Truth: x's coefficient 0.5, sd(country) 0.5, sd(hospital) 0.3.
#
# Imputation model of x (the only incomplete variable, so one model, no chained equations):
#   x ~ y + age + hospital means of y and age + country means of y and age
#       + (1 | country) + (1 | country:hospital)          (lmer, ML, on the recorded rows)
# and per imputation: beta ~ N(beta_hat, vcov), sigma^2 = sigma_hat^2 (n - p) / chi2_{n-p}, each country's
# and hospital's effect from N(mode, condVar) (lme4's conditional modes and variances; a unit without
# a recorded x from N(0, SD^2)), x = X beta + country + hospital + N(0, sigma^2). The variance
# components are held at their estimates (as ml.lmer does); hmlib draws them too.
# Analysis of each completed set: glmer(y ~ x + age + (1 | country) + (1 | country:hospital), Laplace);
# Rubin's rules. Writes three_level_imputation.json: pooled estimate, SE, between- and within-imputation
# variance of each term, m, the seed, and the wall seconds of imputation + analysis.
suppressPackageStartupMessages({ library(lme4); library(jsonlite); library(MASS) })

set.seed(20261203)
m <- 100
start <- proc.time()[["elapsed"]]
d <- read.csv("three_level_registry.csv")
d$hospital <- factor(d$hospital); d$country <- factor(d$country)
for (v in c("y", "age")) {
  d[[paste0("h_", v)]] <- ave(d[[v]], d$hospital)
  d[[paste0("c_", v)]] <- ave(d[[v]], d$country)
}
obs <- !is.na(d$x)
fit <- lmer(x ~ y + age + h_y + h_age + c_y + c_age + (1 | country) + (1 | country:hospital), data = d[obs, ],
            REML = FALSE)
X <- model.matrix(~ y + age + h_y + h_age + c_y + c_age, d)
re <- ranef(fit, condVar = TRUE)
vc <- as.data.frame(VarCorr(fit))
sd_of <- function(grp) vc$sdcor[vc$grp == grp]
draw_effects <- function(grp, ids) {
  mode <- re[[grp]][, 1]
  csd <- sqrt(attr(re[[grp]], "postVar")[1, 1, ])
  names(mode) <- names(csd) <- rownames(re[[grp]])
  out <- rnorm(length(ids), 0, sd_of(grp))                 # units without a recorded x
  known <- ids %in% names(mode)
  out[known] <- rnorm(sum(known), mode[ids[known]], csd[ids[known]])
  setNames(out, ids)
}
n_obs <- sum(obs); p <- ncol(X)
pooled <- list()
for (i in seq_len(m)) {
  beta <- mvrnorm(1, fixef(fit), vcov(fit))
  sigma <- sigma(fit) * sqrt((n_obs - p) / rchisq(1, n_obs - p))
  countries <- levels(d$country)
  hospitals <- unique(paste(d$country, d$hospital, sep = ":"))
  v <- draw_effects("country", countries)
  u <- draw_effects("country:hospital", hospitals)
  mis <- which(!obs)
  done <- d
  done$x[mis] <- as.vector(X[mis, ] %*% beta) + v[as.character(d$country[mis])] +
    u[paste(d$country[mis], d$hospital[mis], sep = ":")] + rnorm(length(mis), 0, sigma)
  a <- glmer(y ~ x + age + (1 | country) + (1 | country:hospital), data = done, family = binomial())
  pooled[[i]] <- summary(a)$coefficients[, 1:2]
}
est <- sapply(pooled, function(t) t[, 1]); se <- sapply(pooled, function(t) t[, 2])
qbar <- rowMeans(est); ubar <- rowMeans(se^2); b <- apply(est, 1, var)
total <- ubar + (1 + 1 / m) * b
out <- list(m = m, seed = 20261203, wall_s = proc.time()[["elapsed"]] - start,
            imputation_model = list(fixed = as.list(fixef(fit)), sd = as.list(setNames(vc$sdcor, vc$grp))),
            pooled = lapply(setNames(names(qbar), names(qbar)), function(t)
              list(estimate = qbar[[t]], std_error = sqrt(total[[t]]), between = b[[t]], within = ubar[[t]])))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "three_level_imputation.json")
cat("wrote three_level_imputation.json in", round(out$wall_s, 1), "s\n")
